"""The relational store for workflow state, installations, audit and ledgers.

One SQLAlchemy ``MetaData`` for the whole project: each feature declares its tables on
``metadata`` in its own module. The same schema runs on SQLite (the embedded default,
WAL mode) and PostgreSQL. Calls are synchronous SQLAlchemy run in a worker thread, so
async code awaits ``db.run(fn)`` and never blocks the event loop.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

from sqlalchemy import Engine, MetaData, create_engine, event
from sqlalchemy.engine import Connection
from sqlalchemy.pool import NullPool

__all__ = ["Database", "metadata", "sqlalchemy_url"]

metadata = MetaData()
T = TypeVar("T")


def sqlalchemy_url(url: str) -> str:
    """Map Control Room's database URL to SQLAlchemy's (psycopg 3 driver for PostgreSQL)."""
    if url.startswith("postgres://"):
        url = "postgresql://" + url[len("postgres://") :]
    if url.startswith("postgresql://"):
        return "postgresql+psycopg://" + url[len("postgresql://") :]
    return url


class Database:
    """A pooled engine on the configured URL, with an async ``run`` for blocking work."""

    def __init__(self, url: str) -> None:
        self.url = url
        sa_url = sqlalchemy_url(url)
        self.is_sqlite = sa_url.startswith("sqlite")
        if self.is_sqlite:
            path = sa_url.removeprefix("sqlite:///")
            if path and path != ":memory:":
                Path(path).parent.mkdir(parents=True, exist_ok=True)
            self.engine: Engine = create_engine(
                sa_url, poolclass=NullPool, connect_args={"timeout": 30}
            )
            event.listen(self.engine, "connect", _sqlite_pragmas)
        else:
            self.engine = create_engine(sa_url, pool_size=5, max_overflow=10, pool_pre_ping=True)

    def create_all(self) -> None:
        metadata.create_all(self.engine)

    @staticmethod
    def create_all_on(conn: Connection) -> None:
        """Create missing tables inside the caller's transaction. On PostgreSQL an
        advisory lock makes concurrent starters (several replicas) take turns."""
        if conn.dialect.name == "postgresql":
            conn.exec_driver_sql("SELECT pg_advisory_xact_lock(7243001)")
        metadata.create_all(conn)

    async def run(self, fn: Callable[[Connection], T]) -> T:
        """Run ``fn(conn)`` inside one transaction in a thread; commit on success."""

        def work() -> T:
            with self.engine.begin() as conn:
                return fn(conn)

        return await asyncio.to_thread(work)

    def run_sync(self, fn: Callable[[Connection], T]) -> T:
        with self.engine.begin() as conn:
            return fn(conn)

    def dispose(self) -> None:
        self.engine.dispose()


def _sqlite_pragmas(dbapi_conn: Any, _record: Any) -> None:
    cur = dbapi_conn.cursor()
    cur.execute("PRAGMA journal_mode=WAL")
    cur.execute("PRAGMA synchronous=NORMAL")
    cur.execute("PRAGMA busy_timeout=30000")
    cur.execute("PRAGMA foreign_keys=ON")
    cur.close()
