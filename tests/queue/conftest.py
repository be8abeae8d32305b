"""Fixtures for the queue tests: an injectable clock and a factory of queues that
yields SQLite queues on a temporary file and PostgreSQL queues on a database created
for the test module (and dropped after it)."""

from __future__ import annotations

import os
import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest

from controlroom.queue.base import JobQueue

PG_ADMIN_URL = os.environ.get(
    "CONTROLROOM_TEST_PG_URL", "postgresql://postgres@127.0.0.1:5432/postgres"
)

QueueFactory = Callable[..., JobQueue]


class FakeClock:
    """Epoch seconds that move only when a test says so (starts at the real time so a
    database's own ``now()`` agrees with it)."""

    def __init__(self, start: float | None = None) -> None:
        self.now = time.time() if start is None else start

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


def _pg_url(dbname: str) -> str:
    return PG_ADMIN_URL.rsplit("/", 1)[0] + "/" + dbname


@pytest.fixture(scope="module")
def pg_database() -> Iterator[str]:
    """A fresh PostgreSQL database for one test module; yields its URL."""
    name = f"cr_queue_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(PG_ADMIN_URL, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    try:
        yield _pg_url(name)
    finally:
        with psycopg.connect(PG_ADMIN_URL, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def _pg_reset(url: str) -> None:
    """Empty every table of the queue between tests (the schema stays)."""
    with psycopg.connect(url, autocommit=True) as conn:
        rows = conn.execute(
            "SELECT tablename FROM pg_tables WHERE schemaname = 'public'"
            " AND (tablename LIKE 'procrastinate_%' OR tablename LIKE 'cr_queue_%')"
        ).fetchall()
        if rows:
            names = ", ".join(f'"{r[0]}"' for r in rows)
            conn.execute(f"TRUNCATE {names} RESTART IDENTITY CASCADE")


@pytest.fixture(
    params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)],
)
def backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
async def queue_factory(
    backend: str, tmp_path: Path, request: pytest.FixtureRequest
) -> AsyncIterator[QueueFactory]:
    """``make(**kw)`` builds an (unopened) queue on this test's store; every queue it
    built is closed at the end of the test."""
    made: list[JobQueue] = []
    if backend == "sqlite":
        path = tmp_path / "queue.db"

        def make(**kw: Any) -> JobQueue:
            from controlroom.queue.sqlite import SqliteQueue

            q = SqliteQueue(path, **kw)
            made.append(q)
            return q

    else:
        url = request.getfixturevalue("pg_database")
        _pg_reset(url)

        def make(**kw: Any) -> JobQueue:
            from controlroom.queue.postgres import PostgresQueue

            q = PostgresQueue(url, **kw)
            made.append(q)
            return q

    try:
        yield make
    finally:
        for q in made:
            await q.close()
