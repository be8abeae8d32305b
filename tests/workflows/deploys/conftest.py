"""Fixtures for the deploys tests: the real CI payloads (tests/fixtures/ci), a clock,
ledgers on SQLite and on a fresh PostgreSQL database, and a loopback HTTP server."""

from __future__ import annotations

import asyncio
import json
import os
import socket
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import psycopg
import pytest
import uvicorn
from starlette.types import ASGIApp

from controlroom.store.db import Database
from controlroom.workflows.deploys.ledger import (
    DeployLedger,
    deliveries_table,
    deployments_table,
    locks_table,
)

FIXTURES = Path(__file__).resolve().parents[2] / "fixtures" / "ci"
PG_ADMIN_URL = os.environ.get(
    "CONTROLROOM_TEST_PG_URL", "postgresql://postgres@127.0.0.1:5432/postgres"
)
TABLES = [deployments_table, deliveries_table, locks_table]


def load(relative: str) -> dict[str, Any]:
    """A fixture payload by path under tests/fixtures/ci."""
    data = json.loads((FIXTURES / relative).read_text(encoding="utf-8"))
    assert isinstance(data, dict)
    return data


def raw(relative: str) -> bytes:
    return (FIXTURES / relative).read_bytes()


class Clock:
    """An aware UTC datetime that moves only when a test says so."""

    def __init__(self, start: datetime | None = None) -> None:
        self.now = start or datetime(2026, 11, 30, 9, 0, tzinfo=UTC)

    def __call__(self) -> datetime:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += timedelta(seconds=seconds)


@pytest.fixture
def clock() -> Clock:
    return Clock()


def _pg_url(dbname: str) -> str:
    return PG_ADMIN_URL.rsplit("/", 1)[0] + "/" + dbname


@pytest.fixture(scope="module")
def pg_database() -> Iterator[str]:
    """A fresh PostgreSQL database for one test module (dropped after it)."""
    name = f"cr_deploys_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(PG_ADMIN_URL, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    try:
        yield _pg_url(name)
    finally:
        with psycopg.connect(PG_ADMIN_URL, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def db(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Database]:
    """A Database with the ledger tables, empty, on SQLite or PostgreSQL."""
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'deploys.db'}"
    else:
        url = request.getfixturevalue("pg_database")
    database = Database(url)
    for table in reversed(TABLES):
        table.drop(database.engine, checkfirst=True)
    for table in TABLES:
        table.create(database.engine)
    try:
        yield database
    finally:
        database.dispose()


@pytest.fixture
def ledger(db: Database, clock: Clock) -> DeployLedger:
    return DeployLedger(db, clock=clock)


def _free_socket() -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    return sock


@asynccontextmanager
async def serve(app: ASGIApp) -> AsyncIterator[str]:
    """Run ``app`` with uvicorn on a real loopback port; yields its base URL."""
    sock = _free_socket()
    port = sock.getsockname()[1]
    config = uvicorn.Config(app, lifespan="off", log_level="warning", ws="none", access_log=False)
    server = uvicorn.Server(config)
    task = asyncio.create_task(server.serve(sockets=[sock]))
    try:
        while not server.started:
            if task.done():
                task.result()
            await asyncio.sleep(0.01)
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        await task
        sock.close()


ServeFactory = Callable[[ASGIApp], Any]
