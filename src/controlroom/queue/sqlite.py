"""The embedded job queue: one SQLite file in WAL mode, one writer thread with group
commit, leases for crash recovery, per-key locks, backoff with full jitter, dead letters
and periodic jobs that fire once per tick (see ``controlroom.queue.base``)."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import random
import sqlite3
import threading
import time
import uuid
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Mapping
from pathlib import Path
from typing import Any

from controlroom.envelope import Envelope, new_id
from controlroom.errors import JobNotFound, PermanentError, QueueError, RetryLater
from controlroom.queue._common import (
    ALL_STATUSES,
    DISPATCH_TASK,
    args_match,
    check_periodic,
    describe_error,
    dump_args,
    empty_counts,
    latest_tick,
    next_tick,
)
from controlroom.queue._worker import run_worker_loop
from controlroom.queue._writer import SqliteWriter, Synchronous, connect
from controlroom.queue.base import (
    FINISHED_STATUSES,
    AcceptResult,
    Backoff,
    JobInfo,
    JobStatus,
    PeriodicSpec,
    TaskFn,
)

__all__ = ["SqliteQueue"]

# Envelopes accepted by this process kept in memory for their dispatch jobs (about
# 1.5 KB each): the newest 2,048, a few seconds of a busy workspace.
_RECENT_ENVELOPES = 2048


_SCHEMA = """
CREATE TABLE IF NOT EXISTS queue_inbox (
    id TEXT PRIMARY KEY,
    dedupe_key TEXT NOT NULL UNIQUE,
    json TEXT NOT NULL,
    received_at REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS queue_jobs (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    id TEXT NOT NULL UNIQUE,
    task TEXT NOT NULL,
    args TEXT NOT NULL,
    status TEXT NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 0,
    max_attempts INTEGER NOT NULL,
    lock_key TEXT,
    idempotency_key TEXT,
    run_at REAL NOT NULL,
    lease_until REAL,
    worker_id TEXT,
    last_error TEXT,
    envelope_id TEXT,
    created_at REAL NOT NULL,
    updated_at REAL NOT NULL
);
CREATE UNIQUE INDEX IF NOT EXISTS queue_jobs_idempotency_live ON queue_jobs (idempotency_key)
    WHERE idempotency_key IS NOT NULL AND status <> 'cancelled';
CREATE INDEX IF NOT EXISTS queue_jobs_due ON queue_jobs (status, run_at);
CREATE INDEX IF NOT EXISTS queue_jobs_lock ON queue_jobs (lock_key, seq) WHERE lock_key IS NOT NULL;
CREATE INDEX IF NOT EXISTS queue_jobs_updated ON queue_jobs (status, updated_at);
CREATE TABLE IF NOT EXISTS queue_periodic_ticks (
    name TEXT PRIMARY KEY,
    last_tick REAL NOT NULL
);
"""

# A job is claimable when it is due (or its runner's lease ran out) and no job enqueued
# before it with the same lock key is still queued or running. The two cases are two
# queries, merged in (run_at, seq) order: as one query with an OR, SQLite collected every
# due job and sorted them to return a handful (a claim cost grew with the backlog); alone,
# the queued case walks queue_jobs_due, whose order is (status, run_at, seq), and stops
# at the limit.
_CLAIMABLE = """
SELECT * FROM queue_jobs AS j
WHERE {due}
  AND j.task IN ({tasks})
  AND (j.lock_key IS NULL OR NOT EXISTS (
        SELECT 1 FROM queue_jobs AS e
        WHERE e.lock_key = j.lock_key AND e.seq < j.seq
          AND e.status IN ('queued', 'running')))
ORDER BY j.run_at, j.seq
LIMIT :limit
"""
_DUE_QUEUED = "j.status = 'queued' AND j.run_at <= :now"
_DUE_LEASE_EXPIRED = "j.status = 'running' AND j.lease_until < :now"
_CLAIMABLE_CASES = (_DUE_QUEUED, _DUE_LEASE_EXPIRED)


def _row_to_job(row: sqlite3.Row) -> JobInfo:
    status: JobStatus = row["status"]
    return JobInfo(
        id=row["id"],
        task=row["task"],
        args=json.loads(row["args"]),
        status=status,
        attempts=row["attempts"],
        max_attempts=row["max_attempts"],
        lock_key=row["lock_key"],
        idempotency_key=row["idempotency_key"],
        run_at=row["run_at"],
        created_at=row["created_at"],
        updated_at=row["updated_at"],
        last_error=row["last_error"],
        envelope_id=row["envelope_id"],
    )


class SqliteQueue:
    """``JobQueue`` on one SQLite file. Several processes may share the file: writes
    are serialised by SQLite's lock, and each process has one writer thread."""

    def __init__(
        self,
        path: str | Path,
        *,
        backoff: Backoff = Backoff(),  # noqa: B008 - frozen dataclass, safe default
        default_max_attempts: int = 5,
        lease_seconds: float = 60.0,
        clock: Callable[[], float] = time.time,
        rng: random.Random | None = None,
        poll_interval: float = 1.0,
        retention_seconds: float = 7 * 86400.0,
        periodic_max_lateness: float = 600.0,
        synchronous: Synchronous = "FULL",
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        if default_max_attempts < 1:
            raise QueueError("default_max_attempts must be at least 1")
        if lease_seconds <= 0:
            raise QueueError("lease_seconds must be positive")
        if str(path) in ("", ":memory:"):
            raise QueueError("SqliteQueue needs a file: readers and the writer share it")
        self.path = str(path)
        self.backoff = backoff
        self.default_max_attempts = default_max_attempts
        self.lease_seconds = lease_seconds
        self.poll_interval = poll_interval
        self.retention_seconds = retention_seconds
        self.periodic_max_lateness = periodic_max_lateness
        self._clock = clock
        self._rng = rng or random.Random()
        self._sleep = sleep
        self._synchronous: Synchronous = synchronous
        self._writer = SqliteWriter(self.path, synchronous=synchronous)
        self._readers = threading.local()
        self._reader_lock = threading.Lock()
        self._reader_conns: list[sqlite3.Connection] = []
        self._recent: OrderedDict[str, str] = OrderedDict()
        self._tasks: dict[str, TaskFn] = {}
        self._periodics: dict[str, PeriodicSpec] = {}
        self._wakers: set[asyncio.Event] = set()
        self._opened = False
        self._last_purge = 0.0
        self._periodic_due = 0.0
        self.worker_id = f"{uuid.uuid4().hex[:12]}"

    # -- lifecycle ------------------------------------------------------------------
    async def open(self) -> None:
        if self._opened:
            return
        Path(self.path).parent.mkdir(parents=True, exist_ok=True)
        await asyncio.to_thread(self._create_schema)
        self._writer = SqliteWriter(self.path, synchronous=self._synchronous)
        await asyncio.to_thread(self._writer.start)
        self._opened = True

    def _create_schema(self) -> None:
        conn = connect(self.path)
        try:
            conn.execute("BEGIN IMMEDIATE")
            for statement in _SCHEMA.split(";"):
                if statement.strip():
                    conn.execute(statement)
            conn.execute("COMMIT")
        except sqlite3.Error as exc:
            raise QueueError(f"cannot create the queue tables in {self.path}: {exc}") from exc
        finally:
            conn.close()

    async def close(self) -> None:
        if not self._opened:
            return
        self._opened = False
        self._recent.clear()
        await asyncio.to_thread(self._writer.stop)
        with self._reader_lock:
            conns, self._reader_conns = self._reader_conns, []
            self._readers = threading.local()
        for conn in conns:
            conn.close()

    async def __aenter__(self) -> SqliteQueue:
        await self.open()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    def _wake(self) -> None:
        for event in self._wakers:
            event.set()

    async def _read(self, fn: Callable[[sqlite3.Connection], Any]) -> Any:
        """Run a read on a connection of its own (WAL readers never block the writer)."""
        if not self._opened:
            raise QueueError("the queue is not open")

        def work() -> Any:
            # One read connection per thread of the default executor, kept open: opening
            # a connection (and its PRAGMAs) per read cost more than most reads.
            conn: sqlite3.Connection | None = getattr(self._readers, "conn", None)
            if conn is None:
                conn = connect(self.path)
                self._readers.conn = conn
                with self._reader_lock:
                    self._reader_conns.append(conn)
            return fn(conn)

        try:
            return await asyncio.to_thread(work)
        except sqlite3.Error as exc:
            raise QueueError(f"cannot read the queue at {self.path}: {exc}") from exc

    # -- intake -----------------------------------------------------------------------
    async def accept(self, envelope: Envelope, *, dispatch: bool = True) -> AcceptResult:
        data = envelope.to_json()
        now = self._clock()
        job_id = new_id() if dispatch else ""
        max_attempts = self.default_max_attempts

        def op(conn: sqlite3.Connection) -> AcceptResult:
            cur = conn.execute(
                "INSERT INTO queue_inbox (id, dedupe_key, json, received_at) VALUES (?, ?, ?, ?)"
                " ON CONFLICT (dedupe_key) DO NOTHING",
                (envelope.id, envelope.dedupe_key, data, envelope.received_at),
            )
            if cur.rowcount == 0:
                row = conn.execute(
                    "SELECT id FROM queue_inbox WHERE dedupe_key = ?", (envelope.dedupe_key,)
                ).fetchone()
                return AcceptResult(envelope_id=row["id"], duplicate=True)
            if not dispatch:
                return AcceptResult(envelope_id=envelope.id, duplicate=False)
            _insert_job(
                conn,
                job_id=job_id,
                task=DISPATCH_TASK,
                args=dump_args({"envelope_id": envelope.id}),
                max_attempts=max_attempts,
                lock_key=None,
                idempotency_key=None,
                run_at=now,
                envelope_id=envelope.id,
                now=now,
            )
            return AcceptResult(envelope_id=envelope.id, duplicate=False)

        result: AcceptResult = await self._writer.submit(op)
        if dispatch and not result.duplicate:
            self._remember(envelope.id, data)
            self._wake()
        return result

    def _remember(self, envelope_id: str, data: str) -> None:
        """Keep the stored JSON of an envelope a job of this process will read next."""
        recent = self._recent
        recent[envelope_id] = data
        if len(recent) > _RECENT_ENVELOPES:
            recent.popitem(last=False)

    async def get_envelope(self, envelope_id: str) -> Envelope | None:
        # An envelope committed by this process moments ago is read from memory (its
        # dispatch job runs here, in embedded mode): no thread hop, no read. The JSON is
        # kept, not the object, so every reader gets its own copy of the body.
        data = self._recent.get(envelope_id)
        if data is not None:
            return Envelope.from_json(data)

        def op(conn: sqlite3.Connection) -> Envelope | None:
            sql = "SELECT json FROM queue_inbox WHERE id = ?"
            row = conn.execute(sql, (envelope_id,)).fetchone()
            return None if row is None else Envelope.from_json(row["json"])

        result: Envelope | None = await self._read(op)
        return result

    # -- jobs -------------------------------------------------------------------------
    async def enqueue(
        self,
        task: str,
        args: Mapping[str, Any],
        *,
        lock_key: str | None = None,
        idempotency_key: str | None = None,
        delay: float = 0.0,
        max_attempts: int | None = None,
        envelope_id: str | None = None,
    ) -> str | None:
        if not task:
            raise QueueError("a job needs a task name")
        attempts_budget = self.default_max_attempts if max_attempts is None else max_attempts
        if attempts_budget < 1:
            raise QueueError("max_attempts must be at least 1")
        payload = dump_args(args)
        now = self._clock()
        job_id = new_id()

        def op(conn: sqlite3.Connection) -> str | None:
            inserted = _insert_job(
                conn,
                job_id=job_id,
                task=task,
                args=payload,
                max_attempts=attempts_budget,
                lock_key=lock_key,
                idempotency_key=idempotency_key,
                run_at=now + max(0.0, delay),
                envelope_id=envelope_id,
                now=now,
            )
            return job_id if inserted else None

        result: str | None = await self._writer.submit(op)
        if result is not None:
            self._wake()
        return result

    def register(self, task: str, fn: TaskFn) -> None:
        if not task:
            raise QueueError("a task needs a name")
        self._tasks[task] = fn

    def add_periodic(self, spec: PeriodicSpec) -> None:
        check_periodic(spec)
        self._periodics[spec.name] = spec

    async def fire_due_periodics(self) -> list[str]:
        """Enqueue the current tick of every periodic whose tick has not fired yet (in
        any process sharing the file); return the ids of the jobs enqueued. Ticks older
        than ``periodic_max_lateness`` (missed while nothing ran) are skipped."""
        now = self._clock()
        fired: list[str] = []
        budget = self.default_max_attempts
        for spec in list(self._periodics.values()):
            tick = latest_tick(spec, now)
            job_id = new_id()
            args = dump_args({**spec.args, "tick": tick})
            fire = now - tick <= self.periodic_max_lateness

            def op(
                conn: sqlite3.Connection,
                spec: PeriodicSpec = spec,
                tick: float = tick,
                job_id: str = job_id,
                args: str = args,
                fire: bool = fire,
            ) -> bool:
                row = conn.execute(
                    "SELECT last_tick FROM queue_periodic_ticks WHERE name = ?", (spec.name,)
                ).fetchone()
                if row is not None and row["last_tick"] >= tick:
                    return False
                conn.execute(
                    "INSERT INTO queue_periodic_ticks (name, last_tick) VALUES (?, ?)"
                    " ON CONFLICT (name) DO UPDATE SET last_tick = excluded.last_tick",
                    (spec.name, tick),
                )
                if not fire:
                    return False
                return _insert_job(
                    conn,
                    job_id=job_id,
                    task=spec.task,
                    args=args,
                    max_attempts=budget,
                    lock_key=None,
                    idempotency_key=f"periodic:{spec.name}:{tick:.0f}",
                    run_at=now,
                    envelope_id=None,
                    now=now,
                )

            if await self._writer.submit(op):
                fired.append(job_id)
        if fired:
            self._wake()
        return fired

    def _next_periodic_at(self, now: float) -> float | None:
        ticks = [next_tick(spec, now) for spec in self._periodics.values()]
        return min(ticks) if ticks else None

    # -- running jobs -------------------------------------------------------------------
    async def _claim(self, limit: int) -> list[JobInfo]:
        tasks = list(self._tasks)
        if not tasks or limit < 1:
            return []
        now = self._clock()
        lease_until = now + self.lease_seconds
        worker = self.worker_id
        names = ", ".join(f":t{i}" for i in range(len(tasks)))
        queries = [_CLAIMABLE.format(due=due, tasks=names) for due in _CLAIMABLE_CASES]
        params: dict[str, Any] = {"now": now, "limit": limit}
        params.update({f"t{i}": name for i, name in enumerate(tasks)})

        def op(conn: sqlite3.Connection) -> list[JobInfo]:
            claimed: list[JobInfo] = []
            rows = [row for query in queries for row in conn.execute(query, params)]
            rows.sort(key=lambda row: (row["run_at"], row["seq"]))
            for row in rows[:limit]:
                attempts = row["attempts"]
                if row["status"] == "running":
                    # Its worker stopped heart-beating (killed): that run was an attempt.
                    attempts += 1
                    error = f"lease expired on worker {row['worker_id']}"
                    if attempts >= row["max_attempts"]:
                        conn.execute(
                            "UPDATE queue_jobs SET status = 'dead', attempts = ?, last_error = ?,"
                            " lease_until = NULL, updated_at = ? WHERE seq = ?",
                            (attempts, error, now, row["seq"]),
                        )
                        continue
                    conn.execute(
                        "UPDATE queue_jobs SET attempts = ?, last_error = ? WHERE seq = ?",
                        (attempts, error, row["seq"]),
                    )
                conn.execute(
                    "UPDATE queue_jobs SET status = 'running', lease_until = ?, worker_id = ?,"
                    " updated_at = ? WHERE seq = ?",
                    (lease_until, worker, now, row["seq"]),
                )
                fresh = conn.execute("SELECT * FROM queue_jobs WHERE seq = ?", (row["seq"],))
                claimed.append(_row_to_job(fresh.fetchone()))
            return claimed

        result: list[JobInfo] = await self._writer.submit(op)
        return result

    async def _heartbeat(self, job_id: str) -> None:
        interval = self.lease_seconds / 3.0
        while True:
            await self._sleep(interval)
            extend = _extend_lease(job_id, self.worker_id, self._clock() + self.lease_seconds)
            with contextlib.suppress(QueueError):
                await self._writer.submit(extend)

    async def _finish(self, job_id: str, sql: str, params: tuple[Any, ...]) -> None:
        worker = self.worker_id

        def op(conn: sqlite3.Connection) -> None:
            # Only the worker holding the lease may settle the job (a worker whose lease
            # ran out and was taken over must not overwrite the new run's outcome).
            conn.execute(
                sql + " WHERE id = ? AND status = 'running' AND worker_id = ?",
                (*params, job_id, worker),
            )

        await self._writer.submit(op)
        self._wake()

    async def _execute(self, job: JobInfo) -> JobInfo:
        fn = self._tasks[job.task]
        beat = asyncio.create_task(self._heartbeat(job.id))
        try:
            try:
                await fn(job)
            finally:
                beat.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await beat
        except PermanentError as exc:
            await self._settle_dead(job, job.attempts + 1, describe_error(exc))
        except RetryLater as exc:
            now = self._clock()
            await self._finish(
                job.id,
                "UPDATE queue_jobs SET status = 'queued', run_at = ?, lease_until = NULL,"
                " worker_id = NULL, last_error = ?, updated_at = ?",
                (now + max(0.0, exc.delay), describe_error(exc), now),
            )
        except asyncio.CancelledError:
            # Stopped from outside (shutdown): hand the job back without spending an
            # attempt, so another worker need not wait for the lease to run out.
            now = self._clock()
            await asyncio.shield(
                self._finish(
                    job.id,
                    "UPDATE queue_jobs SET status = 'queued', lease_until = NULL, worker_id = NULL,"
                    " updated_at = ?",
                    (now,),
                )
            )
            raise
        except Exception as exc:
            attempts = job.attempts + 1
            if attempts >= job.max_attempts:
                await self._settle_dead(job, attempts, describe_error(exc))
            else:
                now = self._clock()
                delay = self.backoff.delay(attempts, self._rng)
                await self._finish(
                    job.id,
                    "UPDATE queue_jobs SET status = 'queued', attempts = ?, run_at = ?,"
                    " lease_until = NULL, worker_id = NULL, last_error = ?, updated_at = ?",
                    (attempts, now + delay, describe_error(exc), now),
                )
        else:
            await self._finish(
                job.id,
                "UPDATE queue_jobs SET status = 'succeeded', lease_until = NULL, updated_at = ?",
                (self._clock(),),
            )
        return await self.get_job(job.id)

    async def _settle_dead(self, job: JobInfo, attempts: int, error: str) -> None:
        await self._finish(
            job.id,
            "UPDATE queue_jobs SET status = 'dead', attempts = ?, lease_until = NULL,"
            " last_error = ?, updated_at = ?",
            (attempts, error, self._clock()),
        )

    async def run_one(self) -> JobInfo | None:
        claimed = await self._claim(1)
        if not claimed:
            return None
        return await self._execute(claimed[0])

    async def _next_wakeup(self) -> float:
        """Seconds until the next delayed job of ours is due or a lease of ours runs out
        (capped by the poll interval, which also picks up jobs other processes enqueued
        and jobs unblocked by another process). Jobs already due but blocked by their
        lock key are not counted: the job blocking them wakes the worker when it ends."""
        now = self._clock()
        tasks = list(self._tasks)
        marks = ", ".join("?" for _ in tasks)
        sql = (
            "SELECT MIN(t) AS t FROM ("  # noqa: S608 - placeholders only
            f" SELECT MIN(run_at) AS t FROM queue_jobs WHERE status = 'queued' AND run_at > ?"
            f" AND task IN ({marks})"
            " UNION ALL SELECT MIN(lease_until) FROM queue_jobs WHERE status = 'running'"
            f" AND lease_until > ? AND task IN ({marks}))"
        )

        def op(conn: sqlite3.Connection) -> float | None:
            row = conn.execute(sql, (now, *tasks, now, *tasks)).fetchone()
            value: float | None = row["t"]
            return value

        soonest: float | None = await self._read(op) if tasks else None
        periodic = self._next_periodic_at(now)
        candidates = [self.poll_interval]
        if soonest is not None:
            candidates.append(soonest - now)
        if periodic is not None:
            candidates.append(periodic - now)
        return max(0.0, min(candidates))

    async def purge(self) -> int:
        """Delete succeeded and cancelled jobs older than the retention, a batch per
        write (one DELETE of a long backlog would hold the writer, and every accept
        queued behind it, for as long as it takes)."""
        return await self.purge_jobs(self.retention_seconds)

    async def purge_inbox(self, older_than: float, *, batch: int = 500) -> int:
        """Delete old envelopes no live job names (see ``JobQueue.purge_inbox``).

        Envelopes are stored in the order they were received, so a reader walks the
        inbox in rowid order and stops at the first one inside the retention: a purge
        reads what it deletes plus one batch, never the whole inbox, and needs no index
        on ``received_at`` (which every accept would pay for). Each batch is deleted
        through the writer, which checks again that the envelope is old and that no
        queued, running or dead job names it."""
        _check_purge(older_than, batch)
        cutoff = self._clock() - older_than
        live = [s for s in ALL_STATUSES if s not in FINISHED_STATUSES]
        live_marks = ", ".join("?" for _ in live)
        after = 0
        purged = 0
        while True:

            def find(conn: sqlite3.Connection, after: int = after) -> list[sqlite3.Row]:
                return conn.execute(
                    "SELECT rowid AS rn, id, received_at FROM queue_inbox WHERE rowid > ?"
                    " ORDER BY rowid LIMIT ?",
                    (after, batch),
                ).fetchall()

            rows: list[sqlite3.Row] = await self._read(find)
            old = list(itertools.takewhile(lambda row: row["received_at"] < cutoff, rows))
            if not old:
                break
            after = old[-1]["rn"]
            ids = [row["id"] for row in old]
            marks = ", ".join("?" for _ in ids)
            # The statuses are listed (not negated) so the lookup uses queue_jobs_due.
            sql = (
                f"DELETE FROM queue_inbox WHERE id IN ({marks}) AND received_at < ?"  # noqa: S608 - placeholders only
                " AND id NOT IN (SELECT envelope_id FROM queue_jobs"
                f" WHERE status IN ({live_marks}) AND envelope_id IS NOT NULL)"
            )

            def delete(conn: sqlite3.Connection, sql: str = sql, ids: list[str] = ids) -> int:
                return conn.execute(sql, (*ids, cutoff, *live)).rowcount

            deleted: int = await self._writer.submit(delete)
            purged += deleted
            for envelope_id in ids:
                self._recent.pop(envelope_id, None)
            if len(old) < len(rows) or len(rows) < batch:
                break
        return purged

    async def purge_jobs(self, older_than: float, *, batch: int = 500) -> int:
        """Delete finished jobs last updated before the cut-off, ``batch`` per write
        (the lookup uses the ``(status, updated_at)`` index)."""
        _check_purge(older_than, batch)
        cutoff = self._clock() - older_than
        finished = list(FINISHED_STATUSES)
        marks = ", ".join("?" for _ in finished)
        sql = (
            "DELETE FROM queue_jobs WHERE seq IN (SELECT seq FROM queue_jobs"  # noqa: S608 - placeholders only
            f" WHERE status IN ({marks}) AND updated_at < ? LIMIT ?)"
        )

        def delete(conn: sqlite3.Connection) -> int:
            return conn.execute(sql, (*finished, cutoff, batch)).rowcount

        purged = 0
        while True:
            deleted: int = await self._writer.submit(delete)
            purged += deleted
            if deleted < batch:
                return purged

    async def _maintain(self) -> None:
        now = self._clock()
        if self._periodics and now >= self._periodic_due:
            await self.fire_due_periodics()
            self._periodic_due = self._next_periodic_at(now) or now
        if now - self._last_purge > 3600.0:
            self._last_purge = now
            await self.purge()

    def _add_waker(self, event: asyncio.Event) -> None:
        self._wakers.add(event)

    def _remove_waker(self, event: asyncio.Event) -> None:
        self._wakers.discard(event)

    async def run_worker(self, *, concurrency: int, stop: Callable[[], bool] | None = None) -> None:
        await run_worker_loop(self, concurrency=concurrency, stop=stop)

    # -- operators -------------------------------------------------------------------------
    async def list_jobs(
        self, *, status: JobStatus | None = None, task: str | None = None, limit: int = 100
    ) -> list[JobInfo]:
        if status is not None and status not in ALL_STATUSES:
            raise QueueError(f"unknown job status {status!r}")
        clauses: list[str] = []
        params: list[str] = []
        if status is not None:
            clauses.append("status = ?")
            params.append(status)
        if task is not None:
            clauses.append("task = ?")
            params.append(task)
        where = (" WHERE " + " AND ".join(clauses)) if clauses else ""
        sql = f"SELECT * FROM queue_jobs{where} ORDER BY seq DESC LIMIT ?"  # noqa: S608 - fixed clauses

        def op(conn: sqlite3.Connection) -> list[JobInfo]:
            return [_row_to_job(r) for r in conn.execute(sql, (*params, max(0, limit)))]

        result: list[JobInfo] = await self._read(op)
        return result

    async def get_job(self, job_id: str) -> JobInfo:
        def op(conn: sqlite3.Connection) -> JobInfo | None:
            row = conn.execute("SELECT * FROM queue_jobs WHERE id = ?", (job_id,)).fetchone()
            return None if row is None else _row_to_job(row)

        result: JobInfo | None = await self._read(op)
        if result is None:
            raise JobNotFound(job_id)
        return result

    async def retry_job(self, job_id: str) -> None:
        now = self._clock()

        def op(conn: sqlite3.Connection) -> None:
            row = conn.execute("SELECT status FROM queue_jobs WHERE id = ?", (job_id,)).fetchone()
            if row is None:
                raise JobNotFound(job_id)
            if row["status"] not in ("dead", "failed"):
                raise QueueError(f"job {job_id} is {row['status']}; only dead jobs are retried")
            conn.execute(
                "UPDATE queue_jobs SET status = 'queued', attempts = 0, run_at = ?,"
                " lease_until = NULL, worker_id = NULL, updated_at = ? WHERE id = ?",
                (now, now, job_id),
            )

        await self._writer.submit(op)
        self._wake()

    async def retry_all_dead(self) -> int:
        now = self._clock()

        def op(conn: sqlite3.Connection) -> int:
            cur = conn.execute(
                "UPDATE queue_jobs SET status = 'queued', attempts = 0, run_at = ?,"
                " lease_until = NULL, worker_id = NULL, updated_at = ?"
                " WHERE status IN ('dead', 'failed')",
                (now, now),
            )
            return cur.rowcount

        count: int = await self._writer.submit(op)
        if count:
            self._wake()
        return count

    async def cancel_jobs(self, *, where_args: Mapping[str, Any], reason: str) -> int:
        if not where_args:
            raise QueueError("cancel_jobs needs at least one argument to match")
        now = self._clock()
        # Narrow in SQL on the plain scalar values, then check the full subset in Python.
        scalars = {
            k: v
            for k, v in where_args.items()
            if isinstance(v, str | int | float)
            and not isinstance(v, bool)
            and k.replace("_", "").isalnum()
        }
        sql = "SELECT seq, args FROM queue_jobs WHERE status = 'queued'"
        params: list[Any] = []
        for key, value in scalars.items():
            sql += " AND json_extract(args, ?) = ?"
            params.extend([f'$."{key}"', value])
        message = f"cancelled: {reason}"[:2000]

        def op(conn: sqlite3.Connection) -> int:
            seqs = [
                row["seq"]
                for row in conn.execute(sql, params)
                if args_match(json.loads(row["args"]), where_args)
            ]
            for seq in seqs:
                conn.execute(
                    "UPDATE queue_jobs SET status = 'cancelled', last_error = ?, updated_at = ?"
                    " WHERE seq = ?",
                    (message, now, seq),
                )
            return len(seqs)

        count: int = await self._writer.submit(op)
        if count:
            self._wake()
        return count

    async def counts(self) -> dict[str, int]:
        def op(conn: sqlite3.Connection) -> dict[str, int]:
            found = empty_counts()
            for row in conn.execute("SELECT status, COUNT(*) AS n FROM queue_jobs GROUP BY status"):
                found[row["status"]] = row["n"]
            return found

        result: dict[str, int] = await self._read(op)
        return result

    async def ping(self) -> None:
        await self._read(lambda c: c.execute("SELECT 1 FROM queue_jobs LIMIT 1").fetchall())


def _check_purge(older_than: float, batch: int) -> None:
    if older_than < 0:
        raise QueueError("older_than must not be negative")
    if batch < 1:
        raise QueueError("a purge batch must be at least 1 row")


def _extend_lease(
    job_id: str, worker: str, lease_until: float
) -> Callable[[sqlite3.Connection], None]:
    def op(conn: sqlite3.Connection) -> None:
        conn.execute(
            "UPDATE queue_jobs SET lease_until = ? WHERE id = ? AND status = 'running'"
            " AND worker_id = ?",
            (lease_until, job_id, worker),
        )

    return op


def _insert_job(
    conn: sqlite3.Connection,
    *,
    job_id: str,
    task: str,
    args: str,
    max_attempts: int,
    lock_key: str | None,
    idempotency_key: str | None,
    run_at: float,
    envelope_id: str | None,
    now: float,
) -> bool:
    """Insert a queued job; False when a live job already holds ``idempotency_key``."""
    cur = conn.execute(
        "INSERT INTO queue_jobs (id, task, args, status, attempts, max_attempts, lock_key,"
        " idempotency_key, run_at, envelope_id, created_at, updated_at)"
        " VALUES (?, ?, ?, 'queued', 0, ?, ?, ?, ?, ?, ?, ?)"
        " ON CONFLICT DO NOTHING",
        (
            job_id,
            task,
            args,
            max_attempts,
            lock_key,
            idempotency_key,
            run_at,
            envelope_id,
            now,
            now,
        ),
    )
    return cur.rowcount == 1
