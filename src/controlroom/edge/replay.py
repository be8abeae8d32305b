"""Replay guard storage: remembers the signatures of accepted requests until they expire.

A signed request is valid for a window around its timestamp; within that window the exact
same signature must not be accepted twice. ``ReplayCache.claim`` records a key and answers
whether it was new. Two implementations:

- ``MemoryReplayCache``: one process; bounded (oldest entries are evicted first when full)
  and expiring.
- ``SqlReplayCache``: a table on the shared ``metadata`` so every replica of the web tier
  sees the same claims; ``INSERT ... ON CONFLICT`` against the primary key makes the claim
  atomic on SQLite and PostgreSQL alike, and expired rows are purged at most once per
  ``purge_interval`` seconds.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable
from typing import Protocol, runtime_checkable

from sqlalchemy import Column, Float, Index, String, Table, delete
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.engine import Connection

from controlroom.store.db import Database, metadata

__all__ = ["MemoryReplayCache", "ReplayCache", "SqlReplayCache", "replay_table"]

replay_table = Table(
    "edge_replay_guard",
    metadata,
    Column("key", String(200), primary_key=True),
    Column("expires_at", Float, nullable=False),
    Index("ix_edge_replay_guard_expires_at", "expires_at"),
)


@runtime_checkable
class ReplayCache(Protocol):
    """Where verifiers record the signatures they accepted."""

    async def claim(self, key: str, *, expires_at: float, now: float) -> bool:
        """Record ``key`` until ``expires_at``; True if it was not already recorded
        (or its record had expired), False for a replay."""


class MemoryReplayCache:
    """An in-process replay cache holding at most ``max_entries`` live keys.

    When full, the entries closest to expiry are evicted first (``evicted`` counts them);
    size it above the peak number of requests in one signature window.
    """

    def __init__(self, max_entries: int = 100_000) -> None:
        if max_entries < 1:
            raise ValueError("max_entries must be at least 1")
        self.max_entries = max_entries
        self.evicted = 0
        self._entries: OrderedDict[str, float] = OrderedDict()

    def __len__(self) -> int:
        return len(self._entries)

    def _purge(self, now: float) -> None:
        # Entries are kept in insertion order; expiry times are close to insertion order
        # (timestamp + window), so purging from the front is enough in practice, and
        # ``claim`` double-checks the expiry of any key it finds.
        while self._entries:
            key, expires_at = next(iter(self._entries.items()))
            if expires_at > now:
                break
            del self._entries[key]

    async def claim(self, key: str, *, expires_at: float, now: float) -> bool:
        self._purge(now)
        existing = self._entries.get(key)
        if existing is not None and existing > now:
            return False
        self._entries.pop(key, None)
        while len(self._entries) >= self.max_entries:
            self._entries.popitem(last=False)
            self.evicted += 1
        self._entries[key] = expires_at
        return True


class SqlReplayCache:
    """A replay cache shared by all replicas through the relational store.

    The table is declared on ``controlroom.store.db.metadata`` (``db.create_all()`` or the
    migrations create it); the first claim also creates it if it is missing.
    """

    def __init__(
        self,
        db: Database,
        *,
        purge_interval: float = 60.0,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self.db = db
        self.purge_interval = purge_interval
        self._monotonic = monotonic
        self._last_purge: float | None = None
        self._table_ready = False

    def _due_for_purge(self) -> bool:
        now = self._monotonic()
        if self._last_purge is None or now - self._last_purge >= self.purge_interval:
            self._last_purge = now
            return True
        return False

    async def claim(self, key: str, *, expires_at: float, now: float) -> bool:
        purge = self._due_for_purge()

        def work(conn: Connection) -> bool:
            if not self._table_ready:
                replay_table.create(conn, checkfirst=True)
            if purge:
                conn.execute(delete(replay_table).where(replay_table.c.expires_at <= now))
            values = {"key": key, "expires_at": expires_at}
            insert = pg_insert if conn.dialect.name == "postgresql" else sqlite_insert
            ins = insert(replay_table).values(values)
            stmt = ins.on_conflict_do_update(
                index_elements=[replay_table.c.key],
                set_={"expires_at": ins.excluded.expires_at},
                where=replay_table.c.expires_at <= now,
            ).returning(replay_table.c.key)
            # A row comes back when it was inserted, or when an expired one was replaced.
            return conn.execute(stmt).first() is not None

        fresh = await self.db.run(work)
        self._table_ready = True
        return fresh
