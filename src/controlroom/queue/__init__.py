"""The durable job queue: the contract (``base``), the embedded SQLite implementation
and the distributed PostgreSQL one. ``open_queue`` picks by database URL."""

from __future__ import annotations

from typing import Any

from controlroom.errors import QueueError
from controlroom.queue.base import (
    AcceptResult,
    Backoff,
    JobInfo,
    JobQueue,
    JobStatus,
    PeriodicSpec,
    TaskFn,
)
from controlroom.queue.sqlite import SqliteQueue

__all__ = [
    "AcceptResult",
    "Backoff",
    "JobInfo",
    "JobQueue",
    "JobStatus",
    "PeriodicSpec",
    "SqliteQueue",
    "TaskFn",
    "open_queue",
    "sqlite_path",
]


def sqlite_path(database_url: str) -> str:
    """The file path of a ``sqlite:///path`` URL (``sqlite:////abs`` is absolute)."""
    if not database_url.startswith("sqlite:///"):
        raise QueueError(f"not a SQLite URL: {database_url!r}")
    path = database_url.removeprefix("sqlite:///")
    if not path:
        raise QueueError("the SQLite URL names no file (use sqlite:///path/to/file.db)")
    return path


def open_queue(database_url: str, **kw: Any) -> JobQueue:
    """A queue for ``database_url`` (not yet opened: ``await q.open()``).

    ``sqlite:///relative.db`` and ``sqlite:////absolute.db`` give a ``SqliteQueue``;
    ``postgresql://`` (or ``postgres://``, ``postgresql+psycopg://``) a ``PostgresQueue``.
    Keyword arguments go to the implementation's constructor.
    """
    if database_url.startswith("sqlite:"):
        return SqliteQueue(sqlite_path(database_url), **kw)
    for prefix in ("postgresql+psycopg://", "postgresql://", "postgres://"):
        if database_url.startswith(prefix):
            from controlroom.queue.postgres import PostgresQueue

            return PostgresQueue("postgresql://" + database_url.removeprefix(prefix), **kw)
    scheme = database_url.split(":", 1)[0]
    raise QueueError(
        f"unsupported database URL scheme {scheme!r} (use sqlite:/// or postgresql://)"
    )
