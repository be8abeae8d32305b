"""PostgreSQL connection pools are settings (``[database]``): the values an operator sets
reach the SQLAlchemy engine and the queue's psycopg pool of a real hub."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from controlroom.config import load_settings
from controlroom.errors import ConfigError, QueueError
from controlroom.hub import Hub
from controlroom.queue.postgres import PostgresQueue
from controlroom.slack.gate_pg import PostgresGateBackend
from tests.queue.conftest import _pg_reset


@pytest.fixture
def pg_url(pg_database: str) -> Iterator[str]:
    _pg_reset(pg_database)
    yield pg_database


def test_pool_defaults_keep_six_processes_well_under_max_connections_100() -> None:
    db = load_settings(environ={}).database
    listen = 1  # a worker's LISTEN connection
    per_process = db.pool_size + db.max_overflow + db.queue_pool_max + db.gate_pool_max + listen
    assert (db.pool_size, db.max_overflow, db.queue_pool_min, db.queue_pool_max) == (3, 2, 1, 4)
    assert db.gate_pool_max == 4
    assert 6 * per_process <= 85


def test_a_queue_pool_min_above_its_max_is_refused_naming_the_key() -> None:
    with pytest.raises(ConfigError) as caught:
        load_settings(
            environ={
                "CONTROLROOM_DATABASE__QUEUE_POOL_MIN": "5",
                "CONTROLROOM_DATABASE__QUEUE_POOL_MAX": "2",
            }
        )
    [(key, _, reason)] = caught.value.problems
    assert key == "database.queue_pool_max" and "queue_pool_min (5)" in reason


def test_postgres_queue_refuses_a_min_pool_size_above_the_max() -> None:
    with pytest.raises(QueueError, match="min size"):
        PostgresQueue("postgresql://postgres@127.0.0.1/x", pool_size=2, pool_min_size=3)


@pytest.mark.postgres
async def test_configured_pool_sizes_reach_the_engine_and_the_queue_pool(pg_url: str) -> None:
    settings = load_settings(
        environ={
            "CONTROLROOM_DATABASE__POOL_SIZE": "2",
            "CONTROLROOM_DATABASE__MAX_OVERFLOW": "1",
            "CONTROLROOM_DATABASE__QUEUE_POOL_MIN": "2",
            "CONTROLROOM_DATABASE__QUEUE_POOL_MAX": "3",
            "CONTROLROOM_DATABASE__GATE_POOL_MAX": "5",
        },
        overrides={"database_url": pg_url},
    )
    hub = Hub(settings, workflows=[])
    await hub.start()
    try:
        gate = hub.gate.backend
        assert isinstance(gate, PostgresGateBackend)
        await gate.open()
        assert gate._pool.max_size == 5
        pool = hub.db.engine.pool
        assert pool.size() == 2  # type: ignore[attr-defined]
        assert pool._max_overflow == 1  # type: ignore[attr-defined]
        assert isinstance(hub.queue, PostgresQueue)
        queue_pool = hub.queue._pool
        assert (queue_pool.min_size, queue_pool.max_size) == (2, 3)
        assert queue_pool.get_stats()["pool_size"] >= 2  # min_size were opened
    finally:
        await hub.close()


@pytest.mark.postgres
async def test_the_store_engine_opens_at_most_pool_size_plus_max_overflow(pg_url: str) -> None:
    from sqlalchemy import text
    from sqlalchemy.exc import TimeoutError as PoolTimeout

    from controlroom.store.db import Database

    db = Database(pg_url, pool_size=1, max_overflow=1)
    db.engine.pool._timeout = 0.5  # type: ignore[attr-defined]  # fail fast, not in 30 s
    try:
        first, second = db.engine.connect(), db.engine.connect()
        try:
            for conn in (first, second):
                conn.execute(text("SELECT 1"))
            with pytest.raises(PoolTimeout, match="QueuePool limit of size 1 overflow 1"):
                db.engine.connect()
        finally:
            first.close()
            second.close()
    finally:
        db.dispose()
