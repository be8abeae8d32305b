"""The relational store for workflow state, installations, audit and ledgers.

One SQLAlchemy ``MetaData`` for the whole project: each feature declares its tables on
``metadata`` in its own module, and the Alembic revisions in
``controlroom.store.migrations`` create them (``db.migrate()`` at start). The same schema
runs on SQLite (the embedded default, WAL mode) and PostgreSQL. Calls are synchronous
SQLAlchemy run in a worker thread, so async code awaits ``db.run(fn)`` and never blocks
the event loop.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from sqlalchemy import Engine, MetaData, create_engine, event
from sqlalchemy.engine import Connection
from sqlalchemy.pool import NullPool

if TYPE_CHECKING:
    from controlroom.store.migrations import UpgradeResult

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

    def __init__(self, url: str, *, pool_size: int = 5, max_overflow: int = 10) -> None:
        """``pool_size``/``max_overflow`` size the PostgreSQL pool (the hub passes the
        ``[database]`` settings); SQLite opens a connection per use."""
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
            self.engine = create_engine(
                sa_url, pool_size=pool_size, max_overflow=max_overflow, pool_pre_ping=True
            )

    async def migrate(self) -> UpgradeResult:
        """Bring the schema to the newest revision (safe when several processes start at
        once; adopts a database made by ``create_all``). See
        :mod:`controlroom.store.migrations`."""
        return await asyncio.to_thread(self.migrate_sync)

    def migrate_sync(self) -> UpgradeResult:
        from controlroom.store.migrations import upgrade

        return upgrade(self)

    def create_all(self) -> None:
        """Create the models' missing tables directly, without migrations: a shortcut
        for tests that need a few tables. Processes call :meth:`migrate`."""
        metadata.create_all(self.engine)

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
