"""The distributed rate-gate backend: the gate's buckets in one PostgreSQL table.

Every worker of a distributed deployment reserves from the same rows, so the budgets
are shared. A reservation is one short transaction: lock the call's bucket rows in key
order (``SELECT ... FOR UPDATE``, no deadlocks), plan with the same pure functions as
the in-memory backend (:func:`controlroom.slack.gate.reserve_in`, ``confirm_in``,
``settle_in``), write the new states back with one ``UPDATE ... FROM unnest(...)``,
commit. Rows are created on first
use with ``INSERT ... ON CONFLICT DO NOTHING`` (cached per process).

Why not pyrate-limiter's ``PostgresBucket`` (read in 4.5.1): it keeps one *table* per
bucket with a row per call, serialises writers with ``LOCK TABLE ... NOWAIT`` (a
concurrent caller is *rejected*, not queued, so a busy bucket refuses calls it has room
for), checks one bucket at a time (a post needs the method, channel and cooldown buckets
together, atomically) and cannot book a future slot, which planning needs.
``benchmarks/delivery/gate_backends.py`` measures both (figures in its README).

Time is the gate's clock (wall-clock epoch seconds by default): workers must have
NTP-synchronised clocks; a skew of a few milliseconds shifts a slot by that much, which
the gate's ``safety`` margin absorbs.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

from sqlalchemy import Column, Float, String, Table, Text

from controlroom.slack.gate import (
    EMPTY,
    Bucket,
    BucketState,
    MemoryGateBackend,
    RateGate,
    Reservation,
    confirm_in,
    reserve_in,
    settle_in,
)
from controlroom.store.db import metadata

__all__ = ["GATE_TABLE", "PostgresGateBackend", "gate_for_database", "gate_table"]

GATE_TABLE = "cr_slack_gate"
T = TypeVar("T")
_LOCK_ID = 0x5C6A7E  # advisory lock serialising the table's creation

#: Declared on the project's metadata so migrations include it; ``open()`` also
#: creates it when missing.
gate_table = Table(
    GATE_TABLE,
    metadata,
    Column("key", String(400), primary_key=True),
    Column("kind", String(16), nullable=False),
    Column("period", Float(53), nullable=False),
    Column("size", Float(53), nullable=False),
    Column("tat", Float(53), nullable=False),
    Column("log", Text, nullable=False),
)

_CREATE = """
CREATE TABLE IF NOT EXISTS cr_slack_gate (
    key varchar(400) PRIMARY KEY,
    kind varchar(16) NOT NULL,
    period double precision NOT NULL,
    size double precision NOT NULL,
    tat double precision NOT NULL,
    log text NOT NULL
)
"""

_ENSURE = """
INSERT INTO cr_slack_gate (key, kind, period, size, tat, log)
SELECT k, kd, p, sz, '-infinity'::float8, ''
FROM unnest(%s::text[], %s::text[], %s::float8[], %s::float8[]) AS s(k, kd, p, sz)
ON CONFLICT (key) DO NOTHING
"""

_LOCK = """
SELECT key, tat, log FROM cr_slack_gate WHERE key = ANY(%s::text[]) ORDER BY key FOR UPDATE
"""

_WRITE = """
UPDATE cr_slack_gate AS g
SET kind = u.kind, period = u.period, size = u.size, tat = u.tat, log = u.log
FROM unnest(%s::text[], %s::text[], %s::float8[], %s::float8[], %s::float8[], %s::text[])
    AS u(key, kind, period, size, tat, log)
WHERE g.key = u.key
"""

_COOL = """
INSERT INTO cr_slack_gate (key, kind, period, size, tat, log)
VALUES (%s, 'cooldown', 0, 0, %s, '')
ON CONFLICT (key) DO UPDATE SET tat = GREATEST(cr_slack_gate.tat, EXCLUDED.tat)
"""

_ROWS = """
SELECT key, kind, period, size, tat, log FROM cr_slack_gate
WHERE key LIKE %s ORDER BY key
"""


def _encode(log: tuple[float, ...]) -> str:
    return " ".join(repr(x) for x in log)


def _decode(text: str) -> tuple[float, ...]:
    return tuple(float(x) for x in text.split()) if text else ()


class PostgresGateBackend:
    """Gate buckets shared through PostgreSQL (psycopg 3 async pool)."""

    def __init__(self, url: str, *, min_size: int = 1, max_size: int = 4) -> None:
        self.url = _libpq_url(url)
        self._min_size = min_size
        self._max_size = max_size
        self._pool: Any = None
        self._opening = asyncio.Lock()
        self._known: set[str] = set()

    async def open(self) -> PostgresGateBackend:
        """Open the pool and create the table if needed (idempotent, safe to race)."""
        async with self._opening:
            if self._pool is None:
                from psycopg_pool import AsyncConnectionPool

                pool = AsyncConnectionPool(
                    self.url, min_size=self._min_size, max_size=self._max_size, open=False
                )
                await pool.open()
                try:
                    async with pool.connection() as conn, conn.transaction():
                        # Concurrent CREATE TABLE IF NOT EXISTS can still collide.
                        await conn.execute("SELECT pg_advisory_xact_lock(%s)", (_LOCK_ID,))
                        await conn.execute(_CREATE)
                except BaseException:
                    await pool.close()
                    raise
                self._pool = pool
        return self

    async def reserve(
        self, buckets: Sequence[Bucket], now: float, max_wait: float | None
    ) -> Reservation:
        def compute(states: list[BucketState]) -> tuple[Reservation, list[BucketState] | None]:
            res, new = reserve_in(buckets, states, now, max_wait)
            return res, (new if res.booked else None)

        return await self._transact(buckets, compute)

    async def confirm(self, buckets: Sequence[Bucket], at: float, now: float) -> float:
        def compute(states: list[BucketState]) -> tuple[float, list[BucketState] | None]:
            return confirm_in(buckets, states, at, now)

        return await self._transact(buckets, compute)

    async def settle(self, buckets: Sequence[Bucket], at: float, done: float) -> None:
        def compute(states: list[BucketState]) -> tuple[None, list[BucketState] | None]:
            return None, settle_in(buckets, states, at, done)

        await self._transact(buckets, compute)

    async def _transact(
        self,
        buckets: Sequence[Bucket],
        compute: Callable[[list[BucketState]], tuple[T, list[BucketState] | None]],
    ) -> T:
        """Lock the buckets' rows (key order), compute, write back, commit: one transaction."""
        pool = await self._ready()
        keys = [b.key for b in buckets]
        kinds = [b.kind for b in buckets]
        periods = [b.period for b in buckets]
        sizes = [b.size for b in buckets]
        async with pool.connection() as conn, conn.transaction():
            if not self._known.issuperset(keys):
                await conn.execute(_ENSURE, (keys, kinds, periods, sizes))
            cur = await conn.execute(_LOCK, (keys,))
            found = {
                str(k): BucketState(float(t), _decode(str(lg))) for k, t, lg in await cur.fetchall()
            }
            result, new = compute([found.get(b.key, EMPTY) for b in buckets])
            if new is not None:
                tats = [s.tat for s in new]
                logs = [_encode(s.log) for s in new]
                await conn.execute(_WRITE, (keys, kinds, periods, sizes, tats, logs))
        self._known.update(keys)
        return result

    async def cool(self, key: str, until: float) -> None:
        pool = await self._ready()
        async with pool.connection() as conn:
            await conn.execute(_COOL, (key, until))
        self._known.add(key)

    async def rows(self, prefix: str = "") -> list[tuple[Bucket, BucketState]]:
        pool = await self._ready()
        pattern = prefix.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"
        async with pool.connection() as conn:
            cur = await conn.execute(_ROWS, (pattern,))
            found = await cur.fetchall()
        return [
            (Bucket(str(k), str(kd), float(p), float(sz)), BucketState(float(t), _decode(str(lg))))
            for k, kd, p, sz, t, lg in found
        ]

    async def aclose(self) -> None:
        if self._pool is not None:
            await self._pool.close()
            self._pool = None

    async def _ready(self) -> Any:
        if self._pool is None:
            await self.open()
        return self._pool


def _libpq_url(url: str) -> str:
    for prefix in ("postgresql+psycopg://", "postgres://"):
        if url.startswith(prefix):
            return "postgresql://" + url[len(prefix) :]
    return url


def gate_for_database(database_url: str | None, *, pool_max: int = 4, **options: Any) -> RateGate:
    """The gate for a deployment: budgets in PostgreSQL (shared by every worker, through
    at most ``pool_max`` connections) when the database URL is PostgreSQL, in process
    memory otherwise (the embedded mode). ``options`` go to
    :class:`~controlroom.slack.gate.RateGate` (tiers, max_wait, ...)."""
    if database_url and database_url.split(":", 1)[0].split("+", 1)[0] in (
        "postgres",
        "postgresql",
    ):
        return RateGate(PostgresGateBackend(database_url, max_size=pool_max), **options)
    return RateGate(MemoryGateBackend(), **options)
