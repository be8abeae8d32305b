"""The distributed job queue: PostgreSQL through ``procrastinate``.

procrastinate is the job engine: its table and SQL functions store, fetch (with
``lock`` ordering: jobs sharing a lock run one at a time in id order), retry, finish and
cancel jobs; its periodic-defer function de-duplicates ticks across workers; its worker
heartbeats and stalled-job query drive crash recovery. Around it we keep:

- ``cr_queue_inbox``: envelopes, ``dedupe_key`` UNIQUE, so de-duplication lasts until
  ``purge_inbox`` removes the envelope (after the retention, once its jobs finished).
  ``accept`` inserts the envelope and defers the ``dispatch`` job through the SAME
  connection and transaction (procrastinate's ``defer_job_async(connection=...)``), so
  both commit or neither does;
- ``cr_queue_jobs``: per-job metadata procrastinate has no column for (our attempt count,
  which ``RetryLater`` does not spend, the budget, the idempotency key, the envelope id,
  the last error). ``idem_lock`` is UNIQUE; it is cleared when a job is cancelled.

Every procrastinate job's queue is its task name, so a worker fetches (and LISTENs for)
only the tasks it has registered. Status mapping: todo->queued, doing->running,
succeeded->succeeded, failed->dead, cancelled/aborted->cancelled.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import random
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from datetime import UTC, datetime
from typing import Any

import psycopg
import structlog
from procrastinate import PsycopgConnector, sql
from procrastinate.exceptions import ConnectorException
from procrastinate.jobs import Job
from procrastinate.manager import JobManager
from procrastinate.schema import SchemaManager
from psycopg.rows import dict_row
from psycopg.types.json import Jsonb
from psycopg_pool import AsyncConnectionPool

from controlroom.envelope import Envelope
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
from controlroom.queue._pg_sql import (
    FINISHED,
    FROM_STATUS,
    PURGE_INBOX,
    PURGE_JOBS,
    SCHEMA,
    SELECT_JOBS,
    TO_STATUS,
)
from controlroom.queue._worker import run_worker_loop
from controlroom.queue.base import (
    AcceptResult,
    Backoff,
    JobInfo,
    JobStatus,
    PeriodicSpec,
    TaskFn,
)

__all__ = ["PostgresQueue"]

_log = structlog.get_logger("controlroom.queue")
_SCHEMA_LOCK = 0x636F6E74726F6C  # an arbitrary advisory-lock key: "control"


class _Skip(Exception):
    """Raised inside a transaction to roll it back (an idempotency key was taken)."""


def _dt(epoch: float) -> datetime:
    return datetime.fromtimestamp(epoch, tz=UTC)


def _job_id(job_id: str) -> int:
    try:
        return int(job_id)
    except ValueError:
        raise JobNotFound(job_id) from None


class PostgresQueue:
    """``JobQueue`` on PostgreSQL; any number of processes may share the database."""

    def __init__(
        self,
        url: str,
        *,
        backoff: Backoff = Backoff(),  # noqa: B008 - frozen dataclass, safe default
        default_max_attempts: int = 5,
        lease_seconds: float = 30.0,
        clock: Callable[[], float] = time.time,
        rng: random.Random | None = None,
        poll_interval: float = 1.0,
        retention_seconds: float = 7 * 86400.0,
        periodic_max_lateness: float = 600.0,
        pool_size: int = 10,
        pool_min_size: int = 1,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        if default_max_attempts < 1:
            raise QueueError("default_max_attempts must be at least 1")
        if lease_seconds <= 0:
            raise QueueError("lease_seconds must be positive")
        if not 1 <= pool_min_size <= pool_size:
            raise QueueError(
                f"the queue pool needs 1 <= min size ({pool_min_size}) <= max size ({pool_size})"
            )
        self.url = url
        self.backoff = backoff
        self.default_max_attempts = default_max_attempts
        self.lease_seconds = lease_seconds
        self.poll_interval = poll_interval
        self.retention_seconds = retention_seconds
        self.periodic_max_lateness = periodic_max_lateness
        self._clock = clock
        self._rng = rng or random.Random()
        self._sleep = sleep
        self._connector = PsycopgConnector(conninfo=url, min_size=pool_min_size, max_size=pool_size)
        self._jobs = JobManager(self._connector)
        self._tasks: dict[str, TaskFn] = {}
        self._periodics: dict[str, PeriodicSpec] = {}
        self._wakers: set[asyncio.Event] = set()
        self._opened = False
        self._worker_id: int | None = None
        self._worker_lock = asyncio.Lock()
        self._beat: asyncio.Task[None] | None = None
        self._last_purge = 0.0
        self._last_recovery = 0.0
        self._periodic_due = 0.0

    # -- lifecycle ------------------------------------------------------------------
    @property
    def _pool(self) -> AsyncConnectionPool[Any]:
        pool: AsyncConnectionPool[Any] = self._connector.pool
        return pool

    async def open(self) -> None:
        if self._opened:
            return
        try:
            # Probe once first: the pool would retry a bad URL silently for 30 s.
            probe = await psycopg.AsyncConnection.connect(self.url, connect_timeout=10)
            await probe.close()
            await self._connector.open_async()
            async with self._pool.connection() as conn, conn.transaction():
                await conn.execute("SELECT pg_advisory_xact_lock(%s)", (_SCHEMA_LOCK,))
                cur = await conn.execute("SELECT to_regclass('procrastinate_jobs') IS NOT NULL")
                row = await cur.fetchone()
                if not (row and row[0]):
                    await conn.execute(SchemaManager.get_schema())
                await conn.execute(SCHEMA)
        except (psycopg.Error, OSError, ConnectorException) as exc:
            with contextlib.suppress(Exception):
                await self._connector.close_async()
            cause = exc.__cause__ if isinstance(exc, ConnectorException) else exc
            raise QueueError(f"cannot open the PostgreSQL queue: {cause or exc}") from exc
        self._opened = True

    async def close(self) -> None:
        if not self._opened:
            return
        self._opened = False
        if self._beat is not None:
            self._beat.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._beat
            self._beat = None
        if self._worker_id is not None:
            with contextlib.suppress(Exception):
                await self._jobs.unregister_worker(self._worker_id)
            self._worker_id = None
        await self._connector.close_async()

    async def __aenter__(self) -> PostgresQueue:
        await self.open()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    @contextlib.asynccontextmanager
    async def _tx(self) -> AsyncIterator[psycopg.AsyncConnection[Any]]:
        if not self._opened:
            raise QueueError("the queue is not open")
        try:
            async with self._pool.connection() as conn, conn.transaction():
                yield conn
        except (psycopg.Error, ConnectorException) as exc:
            # procrastinate wraps psycopg's error in a bare "Database error."
            cause = exc.__cause__ if isinstance(exc, ConnectorException) else exc
            text = str(cause or exc).strip()
            detail = text.splitlines()[0] if text else type(exc).__name__
            raise QueueError(f"the PostgreSQL queue failed: {detail}") from exc

    @staticmethod
    async def _rows(
        conn: psycopg.AsyncConnection[Any], query: str, params: Any = None
    ) -> list[dict[str, Any]]:
        async with conn.cursor(row_factory=dict_row) as cur:
            await cur.execute(query, params)
            if cur.description is None:
                return []
            return await cur.fetchall()

    def _wake(self) -> None:
        for event in self._wakers:
            event.set()

    def _add_waker(self, event: asyncio.Event) -> None:
        self._wakers.add(event)

    def _remove_waker(self, event: asyncio.Event) -> None:
        self._wakers.discard(event)

    # -- intake -----------------------------------------------------------------------
    async def accept(self, envelope: Envelope, *, dispatch: bool = True) -> AcceptResult:
        try:
            async with self._tx() as conn:
                inserted = await self._rows(
                    conn,
                    "INSERT INTO cr_queue_inbox (id, dedupe_key, body, received_at)"
                    " VALUES (%s, %s, %s, %s) ON CONFLICT (dedupe_key) DO NOTHING RETURNING id",
                    (envelope.id, envelope.dedupe_key, envelope.to_json(), envelope.received_at),
                )
                if not inserted:
                    found = await self._rows(
                        conn,
                        "SELECT id FROM cr_queue_inbox WHERE dedupe_key = %s",
                        (envelope.dedupe_key,),
                    )
                    return AcceptResult(envelope_id=found[0]["id"], duplicate=True)
                if not dispatch:
                    return AcceptResult(envelope_id=envelope.id, duplicate=False)
                await self._defer(
                    conn,
                    task=DISPATCH_TASK,
                    args={"envelope_id": envelope.id},
                    lock_key=None,
                    idempotency_key=None,
                    run_at=None,
                    max_attempts=self.default_max_attempts,
                    envelope_id=envelope.id,
                )
        except QueueError as exc:
            raise QueueError(f"envelope {envelope.id} could not be stored: {exc}") from exc
        if dispatch:
            self._wake()
        return AcceptResult(envelope_id=envelope.id, duplicate=False)

    async def get_envelope(self, envelope_id: str) -> Envelope | None:
        async with self._tx() as conn:
            rows = await self._rows(
                conn, "SELECT body FROM cr_queue_inbox WHERE id = %s", (envelope_id,)
            )
        return Envelope.from_json(rows[0]["body"]) if rows else None

    # -- jobs -------------------------------------------------------------------------
    async def _defer(
        self,
        conn: psycopg.AsyncConnection[Any],
        *,
        task: str,
        args: Mapping[str, Any],
        lock_key: str | None,
        idempotency_key: str | None,
        run_at: float | None,
        max_attempts: int,
        envelope_id: str | None,
        periodic: tuple[str, int] | None = None,
    ) -> int | None:
        """Insert a job and its metadata on ``conn``; raise ``_Skip`` (which rolls the
        transaction back) when ``idempotency_key`` is taken. For a periodic, return None
        when the tick was deferred already."""
        now = self._clock()
        if periodic is None:
            deferred = await self._jobs.defer_job_async(
                Job(
                    queue=task,
                    task_name=task,
                    lock=lock_key,
                    queueing_lock=None,
                    task_kwargs=dict(args),
                    scheduled_at=None if run_at is None else _dt(run_at),
                ),
                connection=conn,
            )
            job_id: int | None = deferred.id
        else:
            periodic_id, timestamp = periodic
            rows = await self._rows(
                conn,
                sql.queries["defer_periodic_job"],
                {
                    "queue": task,
                    "lock": lock_key,
                    "queueing_lock": None,
                    "task_name": task,
                    "priority": 0,
                    "periodic_id": periodic_id,
                    "defer_timestamp": timestamp,
                    "args": Jsonb(dict(args)),
                },
            )
            job_id = rows[0]["id"]
            if job_id is None:
                return None
        meta = await self._rows(
            conn,
            "INSERT INTO cr_queue_jobs (job_id, attempts, max_attempts, idempotency_key,"
            " idem_lock, envelope_id, created_at, updated_at)"
            " VALUES (%s, 0, %s, %s, %s, %s, %s, %s)"
            " ON CONFLICT (idem_lock) DO NOTHING RETURNING job_id",
            (job_id, max_attempts, idempotency_key, idempotency_key, envelope_id, now, now),
        )
        if not meta:
            raise _Skip
        return job_id

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
        budget = self.default_max_attempts if max_attempts is None else max_attempts
        if budget < 1:
            raise QueueError("max_attempts must be at least 1")
        payload = json.loads(dump_args(args))
        run_at = self._clock() + delay if delay > 0 else None
        try:
            async with self._tx() as conn:
                job_id = await self._defer(
                    conn,
                    task=task,
                    args=payload,
                    lock_key=lock_key,
                    idempotency_key=idempotency_key,
                    run_at=run_at,
                    max_attempts=budget,
                    envelope_id=envelope_id,
                )
        except _Skip:
            return None
        self._wake()
        return str(job_id)

    def register(self, task: str, fn: TaskFn) -> None:
        if not task:
            raise QueueError("a task needs a name")
        if len(task) > 128:
            raise QueueError(f"task name {task[:20]!r}... is longer than 128 characters")
        self._tasks[task] = fn

    def add_periodic(self, spec: PeriodicSpec) -> None:
        check_periodic(spec)
        self._periodics[spec.name] = spec

    async def fire_due_periodics(self) -> list[str]:
        """Defer the current tick of every periodic not deferred yet by any worker
        (procrastinate's periodic-defer function records each tick once); ticks older
        than ``periodic_max_lateness`` are skipped. Return the ids of the new jobs."""
        now = self._clock()
        fired: list[str] = []
        for spec in list(self._periodics.values()):
            tick = latest_tick(spec, now)
            if now - tick > self.periodic_max_lateness:
                continue
            try:
                async with self._tx() as conn:
                    job_id = await self._defer(
                        conn,
                        task=spec.task,
                        args={**spec.args, "tick": tick},
                        lock_key=None,
                        idempotency_key=f"periodic:{spec.name}:{tick:.0f}",
                        run_at=None,
                        max_attempts=self.default_max_attempts,
                        envelope_id=None,
                        periodic=(spec.name, int(tick)),
                    )
            except _Skip:
                continue
            if job_id is not None:
                fired.append(str(job_id))
        if fired:
            self._wake()
        return fired

    # -- running jobs -------------------------------------------------------------------
    async def _ensure_worker(self) -> int:
        async with self._worker_lock:
            if self._worker_id is None:
                self._worker_id = await self._jobs.register_worker()
                self._beat = asyncio.create_task(self._heartbeat())
            return self._worker_id

    async def _heartbeat(self) -> None:
        while True:
            await self._sleep(self.lease_seconds / 3.0)
            try:
                await self._beat_once()
            except Exception as exc:
                _log.warning("worker heartbeat failed", error=describe_error(exc))

    async def _beat_once(self) -> None:
        """Refresh this worker's heartbeat; if another worker pruned it as stalled (it
        missed heartbeats), register afresh: its jobs in flight are fenced off and will
        be recovered elsewhere, so only new jobs run under the new id."""
        if self._worker_id is None:
            return
        async with self._tx() as conn:
            rows = await self._rows(
                conn,
                "UPDATE procrastinate_workers SET last_heartbeat = now() WHERE id = %s"
                " RETURNING id",
                (self._worker_id,),
            )
        if not rows:
            _log.warning("worker was pruned as stalled; registering again")
            self._worker_id = await self._jobs.register_worker()

    async def _claim(self, limit: int) -> list[JobInfo]:
        tasks = list(self._tasks)
        if not tasks or limit < 1:
            return []
        worker = await self._ensure_worker()
        claimed: list[JobInfo] = []
        reregistered = False
        while len(claimed) < limit:
            try:
                job = await self._jobs.fetch_job(queues=tasks, worker_id=worker)
            except ConnectorException as exc:
                fk = isinstance(exc.__cause__, psycopg.errors.ForeignKeyViolation)
                if not fk or reregistered:
                    raise
                await self._beat_once()  # our worker row was pruned: register again
                worker = await self._ensure_worker()
                reregistered = True
                continue
            if job is None:
                break
            claimed.append(await self.get_job(str(job.id)))
        return claimed

    async def _settle(
        self,
        job_id: str,
        *,
        finish: str | None = None,
        retry_at: float | None = None,
        attempts: int | None = None,
        error: str | None = None,
    ) -> None:
        """Finish (``succeeded``/``failed``) or re-queue a job this worker runs. A job
        no longer ``doing`` under this worker (recovered as stalled) is left alone."""
        async with self._tx() as conn:
            rows = await self._rows(
                conn,
                "SELECT status::text AS status, worker_id FROM procrastinate_jobs"
                " WHERE id = %s FOR UPDATE",
                (int(job_id),),
            )
            if not rows or rows[0]["status"] != "doing" or rows[0]["worker_id"] != self._worker_id:
                _log.warning("job was taken over before it finished", job_id=job_id)
                return
            await self._update_meta(conn, int(job_id), attempts=attempts, error=error)
            await self._transition(conn, int(job_id), finish=finish, retry_at=retry_at)
        self._wake()

    async def _update_meta(
        self,
        conn: psycopg.AsyncConnection[Any],
        job_id: int,
        *,
        attempts: int | None,
        error: str | None,
    ) -> None:
        await conn.execute(
            "UPDATE cr_queue_jobs SET attempts = COALESCE(%s, attempts),"
            " last_error = COALESCE(%s, last_error), updated_at = %s WHERE job_id = %s",
            (attempts, error, self._clock(), job_id),
        )

    async def _transition(
        self,
        conn: psycopg.AsyncConnection[Any],
        job_id: int,
        *,
        finish: str | None,
        retry_at: float | None,
    ) -> None:
        if finish is not None:
            await conn.execute(
                sql.queries["finish_job"],
                {"job_id": job_id, "status": finish, "delete_job": False},
            )
        else:
            await conn.execute(
                sql.queries["retry_job"],
                {
                    "job_id": job_id,
                    "retry_at": _dt(self._clock() if retry_at is None else retry_at),
                    "new_priority": None,
                    "new_queue_name": None,
                    "new_lock": None,
                },
            )

    async def _execute(self, job: JobInfo) -> JobInfo:
        fn = self._tasks[job.task]
        try:
            await fn(job)
        except PermanentError as exc:
            await self._settle(
                job.id, finish="failed", attempts=job.attempts + 1, error=describe_error(exc)
            )
        except RetryLater as exc:
            await self._settle(
                job.id,
                retry_at=self._clock() + max(0.0, exc.delay),
                error=describe_error(exc),
            )
        except asyncio.CancelledError:
            # Stopped from outside (shutdown): hand the job back without spending an attempt.
            await asyncio.shield(self._settle(job.id, retry_at=self._clock()))
            raise
        except Exception as exc:
            attempts = job.attempts + 1
            if attempts >= job.max_attempts:
                await self._settle(
                    job.id, finish="failed", attempts=attempts, error=describe_error(exc)
                )
            else:
                delay = self.backoff.delay(attempts, self._rng)
                await self._settle(
                    job.id,
                    retry_at=self._clock() + delay,
                    attempts=attempts,
                    error=describe_error(exc),
                )
        else:
            await self._settle(job.id, finish="succeeded")
        return await self.get_job(job.id)

    async def run_one(self) -> JobInfo | None:
        claimed = await self._claim(1)
        if not claimed:
            return None
        return await self._execute(claimed[0])

    async def recover_stalled(self) -> int:
        """Re-queue (or dead-letter, when its budget is spent) every running job whose
        worker stopped heart-beating for ``lease_seconds``; return how many."""
        stalled = await self._jobs.get_stalled_jobs(seconds_since_heartbeat=self.lease_seconds)
        recovered = 0
        for job in stalled:
            if job.id is None:
                continue
            async with self._tx() as conn:
                rows = await self._rows(
                    conn,
                    "SELECT j.status::text AS status, j.worker_id, m.attempts, m.max_attempts,"
                    " (w.id IS NULL OR w.last_heartbeat < now() - make_interval(secs => %s))"
                    " AS stale"
                    " FROM procrastinate_jobs AS j"
                    " LEFT JOIN procrastinate_workers AS w ON w.id = j.worker_id"
                    " LEFT JOIN cr_queue_jobs AS m ON m.job_id = j.id"
                    " WHERE j.id = %s FOR UPDATE OF j",
                    (self.lease_seconds, job.id),
                )
                if not rows or rows[0]["status"] != "doing" or not rows[0]["stale"]:
                    continue
                row = rows[0]
                attempts = (row["attempts"] or 0) + 1
                budget = row["max_attempts"] or self.default_max_attempts
                error = f"worker {row['worker_id']} stopped heart-beating"
                await self._update_meta(conn, job.id, attempts=attempts, error=error)
                finish = "failed" if attempts >= budget else None
                await self._transition(conn, job.id, finish=finish, retry_at=None)
                recovered += 1
        if recovered:
            _log.warning("recovered stalled jobs", count=recovered)
            self._wake()
        await self._jobs.prune_stalled_workers(self.lease_seconds * 10)
        return recovered

    async def purge(self) -> None:
        """Delete succeeded and cancelled jobs older than the retention."""
        await self._jobs.delete_old_jobs(
            nb_hours=max(1, int(self.retention_seconds // 3600)),
            include_cancelled=True,
            include_aborted=True,
        )

    async def _purge_batches(self, query: str, older_than: float, batch: int) -> int:
        """Run one purge ``query`` batch by batch, each in its own transaction."""
        if older_than < 0:
            raise QueueError("older_than must not be negative")
        if batch < 1:
            raise QueueError("a purge batch must be at least 1 row")
        params = {"cutoff": self._clock() - older_than, "batch": batch, "finished": FINISHED}
        purged = 0
        while True:
            async with self._tx() as conn:
                cur = await conn.execute(query, params)
                deleted = max(0, cur.rowcount)
            purged += deleted
            if deleted < batch:
                return purged

    async def purge_inbox(self, older_than: float, *, batch: int = 500) -> int:
        """Delete old envelopes no live job names (see ``JobQueue.purge_inbox``)."""
        return await self._purge_batches(PURGE_INBOX, older_than, batch)

    async def purge_jobs(self, older_than: float, *, batch: int = 500) -> int:
        """Delete finished jobs last updated before the cut-off (by our clock, which
        ``cr_queue_jobs.updated_at`` records), ``batch`` per transaction."""
        return await self._purge_batches(PURGE_JOBS, older_than, batch)

    async def _maintain(self) -> None:
        now = self._clock()
        if self._periodics and now >= self._periodic_due:
            await self.fire_due_periodics()
            self._periodic_due = min(next_tick(s, now) for s in self._periodics.values())
        if now - self._last_recovery >= self.lease_seconds / 2.0:
            self._last_recovery = now
            await self.recover_stalled()
        if now - self._last_purge > 3600.0:
            self._last_purge = now
            await self.purge()

    async def _next_wakeup(self) -> float:
        candidates = [self.poll_interval]
        async with self._tx() as conn:
            rows = await self._rows(
                conn,
                "SELECT extract(epoch FROM min(scheduled_at) - now())::float8 AS wait"
                " FROM procrastinate_jobs WHERE status = 'todo' AND scheduled_at > now()"
                " AND queue_name = ANY(%s)",
                (list(self._tasks),),
            )
        if rows and rows[0]["wait"] is not None:
            candidates.append(rows[0]["wait"])
        if self._periodics:
            candidates.append(self._periodic_due - self._clock())
        return max(0.0, min(candidates))

    async def run_worker(self, *, concurrency: int, stop: Callable[[], bool] | None = None) -> None:
        await self._ensure_worker()

        async def on_notification(**_: Any) -> None:
            self._wake()

        listener = asyncio.create_task(
            self._jobs.listen_for_jobs(on_notification=on_notification, queues=list(self._tasks))
        )
        try:
            await run_worker_loop(self, concurrency=concurrency, stop=stop)
        finally:
            listener.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await listener

    # -- operators -------------------------------------------------------------------------
    def _to_job(self, row: Mapping[str, Any]) -> JobInfo:
        created = row["created_at"] or 0.0
        return JobInfo(
            id=str(row["id"]),
            task=row["task_name"],
            args=dict(row["args"]),
            status=TO_STATUS.get(row["status"], "queued"),
            attempts=row["attempts"] if row["attempts"] is not None else row["engine_attempts"],
            max_attempts=row["max_attempts"] or self.default_max_attempts,
            lock_key=row["lock"],
            idempotency_key=row["idempotency_key"],
            run_at=row["scheduled"] if row["scheduled"] is not None else created,
            created_at=created,
            updated_at=row["updated_at"] or created,
            last_error=row["last_error"],
            envelope_id=row["envelope_id"],
        )

    async def list_jobs(
        self, *, status: JobStatus | None = None, task: str | None = None, limit: int = 100
    ) -> list[JobInfo]:
        if status is not None and status not in ALL_STATUSES:
            raise QueueError(f"unknown job status {status!r}")
        clauses: list[str] = []
        params: list[Any] = []
        if status is not None:
            clauses.append("j.status::text = ANY(%s)")
            params.append(FROM_STATUS[status])
        if task is not None:
            clauses.append("j.task_name = %s")
            params.append(task)
        where = (" WHERE " + " AND ".join(clauses)) if clauses else ""
        async with self._tx() as conn:
            rows = await self._rows(
                conn, SELECT_JOBS + where + " ORDER BY j.id DESC LIMIT %s", (*params, max(0, limit))
            )
        return [self._to_job(r) for r in rows]

    async def get_job(self, job_id: str) -> JobInfo:
        async with self._tx() as conn:
            rows = await self._rows(conn, SELECT_JOBS + " WHERE j.id = %s", (_job_id(job_id),))
        if not rows:
            raise JobNotFound(job_id)
        return self._to_job(rows[0])

    async def retry_job(self, job_id: str) -> None:
        async with self._tx() as conn:
            rows = await self._rows(
                conn,
                "SELECT status::text AS status FROM procrastinate_jobs WHERE id = %s FOR UPDATE",
                (_job_id(job_id),),
            )
            if not rows:
                raise JobNotFound(job_id)
            if rows[0]["status"] != "failed":
                status = TO_STATUS.get(rows[0]["status"], rows[0]["status"])
                raise QueueError(f"job {job_id} is {status}; only dead jobs are retried")
            await self._revive(conn, int(job_id))
        self._wake()

    async def _revive(self, conn: psycopg.AsyncConnection[Any], job_id: int) -> None:
        await conn.execute(
            "UPDATE cr_queue_jobs SET attempts = 0, updated_at = %s WHERE job_id = %s",
            (self._clock(), job_id),
        )
        await self._transition(conn, job_id, finish=None, retry_at=None)

    async def retry_all_dead(self) -> int:
        async with self._tx() as conn:
            rows = await self._rows(
                conn,
                "SELECT id FROM procrastinate_jobs WHERE status = 'failed' ORDER BY id FOR UPDATE",
            )
            for row in rows:
                await self._revive(conn, row["id"])
        if rows:
            self._wake()
        return len(rows)

    async def cancel_jobs(self, *, where_args: Mapping[str, Any], reason: str) -> int:
        if not where_args:
            raise QueueError("cancel_jobs needs at least one argument to match")
        where = json.loads(dump_args(where_args))
        async with self._tx() as conn:
            rows = await self._rows(
                conn,
                "SELECT id, args FROM procrastinate_jobs WHERE status = 'todo' AND args @> %s"
                " FOR UPDATE",
                (Jsonb(where),),
            )
            ids = [r["id"] for r in rows if args_match(r["args"], where)]
            if ids:
                await conn.execute(
                    "UPDATE procrastinate_jobs SET status = 'cancelled' WHERE id = ANY(%s)",
                    (ids,),
                )
                await conn.execute(
                    "UPDATE cr_queue_jobs SET idem_lock = NULL, last_error = %s, updated_at = %s"
                    " WHERE job_id = ANY(%s)",
                    (f"cancelled: {reason}"[:2000], self._clock(), ids),
                )
        return len(ids)

    async def counts(self) -> dict[str, int]:
        found = empty_counts()
        async with self._tx() as conn:
            rows = await self._rows(
                conn,
                "SELECT status::text AS status, count(*) AS n FROM procrastinate_jobs"
                " GROUP BY status",
            )
        for row in rows:
            found[TO_STATUS.get(row["status"], "queued")] += row["n"]
        return found

    async def ping(self) -> None:
        async with self._tx() as conn:
            await conn.execute("SELECT 1 FROM cr_queue_jobs LIMIT 1")
