"""The job queue contract shared by the embedded (SQLite) and distributed (PostgreSQL)
implementations. One contract-test suite (tests/queue/test_contract.py) runs against both.

Vocabulary:

- an *envelope* is committed to the inbox with ``accept``; the inbox de-duplicates on
  ``Envelope.dedupe_key`` and, in the same transaction, enqueues a ``dispatch`` job
  carrying the envelope id;
- a *job* is a named task with JSON arguments, an optional *lock key* (jobs sharing a key
  run one at a time, in the order they were enqueued), an optional *idempotency key*
  (a second enqueue with the same key is a no-op while the first exists), a run-at time
  and an attempt budget;
- a *task function* is ``async def fn(job: JobInfo) -> None``; raising
  ``PermanentError`` dead-letters at once, ``RetryLater`` re-schedules without spending
  an attempt, any other exception retries with capped exponential backoff and full jitter
  until ``max_attempts``, then dead-letters with the error;
- a *periodic* job fires once per cron tick across all workers and restarts;
- *retention*: ``purge_inbox`` deletes envelopes older than the retention once every job
  naming them has finished (succeeded or cancelled), and ``purge_jobs`` deletes such
  finished jobs. De-duplication therefore lasts as long as the retention: after its
  envelope is purged, a redelivery with the same ``dedupe_key`` is accepted again.
  Envelopes of queued, running, retrying and dead-lettered jobs are kept, so a dead
  letter stays replayable.
"""

from __future__ import annotations

import random
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol, runtime_checkable

from controlroom.envelope import Envelope

__all__ = [
    "FINISHED_STATUSES",
    "AcceptResult",
    "Backoff",
    "JobInfo",
    "JobQueue",
    "JobStatus",
    "PeriodicSpec",
    "TaskFn",
]

JobStatus = Literal["queued", "running", "succeeded", "failed", "dead", "cancelled"]
#: Jobs in these statuses never run again (a dead letter can be retried, so is not one).
FINISHED_STATUSES: tuple[JobStatus, ...] = ("succeeded", "cancelled")


@dataclass(frozen=True, slots=True)
class AcceptResult:
    envelope_id: str
    duplicate: bool


@dataclass(frozen=True, slots=True)
class JobInfo:
    id: str
    task: str
    args: dict[str, Any]
    status: JobStatus
    attempts: int
    max_attempts: int
    lock_key: str | None = None
    idempotency_key: str | None = None
    run_at: float = 0.0
    created_at: float = 0.0
    updated_at: float = 0.0
    last_error: str | None = None
    envelope_id: str | None = None


TaskFn = Callable[[JobInfo], Awaitable[None]]


@dataclass(frozen=True, slots=True)
class Backoff:
    """Capped exponential backoff with full jitter (AWS architecture blog, 2015)."""

    base: float = 1.0
    cap: float = 300.0

    def delay(self, attempt: int, rng: random.Random | None = None) -> float:
        """Delay before retry number ``attempt`` (1 for the first retry)."""
        r = rng or random
        return r.uniform(0.0, min(self.cap, self.base * (2 ** max(0, attempt - 1))))


@dataclass(frozen=True, slots=True)
class PeriodicSpec:
    """``cron`` in five fields, evaluated in ``timezone``; ``task`` receives
    ``{"tick": <epoch seconds of the tick>, **args}``."""

    name: str
    cron: str
    task: str
    timezone: str = "UTC"
    args: Mapping[str, Any] = field(default_factory=dict)


@runtime_checkable
class JobQueue(Protocol):
    """What the edge, the dispatcher, the CLI and workflows need from a queue."""

    async def open(self) -> None:
        """Create tables if needed and start background machinery (writer, lease reaper)."""

    async def close(self) -> None:
        """Flush pending writes and stop; committed work survives."""

    # -- intake ---------------------------------------------------------------
    async def accept(self, envelope: Envelope, *, dispatch: bool = True) -> AcceptResult:
        """Durably commit the envelope and its dispatch job; return only after commit.
        A second envelope with the same ``dedupe_key`` is not stored again. With
        ``dispatch=False`` (no handler is interested, e.g. a busy channel's plain
        messages) the envelope is kept in the inbox, de-duplicated, and no job is made."""

    async def get_envelope(self, envelope_id: str) -> Envelope | None: ...

    # -- jobs -----------------------------------------------------------------
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
        """Durably enqueue; return the job id, or None when ``idempotency_key`` already
        named a job."""

    def register(self, task: str, fn: TaskFn) -> None:
        """Name a task function; workers run jobs of that task with it."""

    def add_periodic(self, spec: PeriodicSpec) -> None: ...

    async def run_worker(self, *, concurrency: int, stop: Callable[[], bool] | None = None) -> None:
        """Run jobs until cancelled (or until ``stop()`` is true)."""

    async def run_one(self) -> JobInfo | None:
        """Run the next due job, if any, in the calling task; for tests and tools."""

    # -- operators ------------------------------------------------------------
    async def list_jobs(
        self, *, status: JobStatus | None = None, task: str | None = None, limit: int = 100
    ) -> list[JobInfo]: ...

    async def get_job(self, job_id: str) -> JobInfo: ...

    async def retry_job(self, job_id: str) -> None:
        """Put a dead (or failed) job back in the queue with a fresh attempt budget."""

    async def retry_all_dead(self) -> int: ...

    async def cancel_jobs(self, *, where_args: Mapping[str, Any], reason: str) -> int:
        """Cancel queued jobs whose args contain ``where_args`` (e.g. a revoked team)."""

    async def purge_inbox(self, older_than: float, *, batch: int = 500) -> int:
        """Delete the envelopes received more than ``older_than`` seconds ago whose jobs
        have all finished (succeeded or cancelled), or that have none; return how many.
        An envelope a queued, running, retrying or dead-lettered job names is kept.
        Deletes ``batch`` rows per transaction so other writes are not held up."""

    async def purge_jobs(self, older_than: float, *, batch: int = 500) -> int:
        """Delete succeeded and cancelled jobs last updated more than ``older_than``
        seconds ago, ``batch`` rows per transaction; return how many. Dead letters and
        live jobs are kept."""

    async def counts(self) -> dict[str, int]:
        """Job counts by status, for /metrics and /readyz."""

    async def ping(self) -> None:
        """Raise if the store cannot be reached (for /readyz)."""
