"""Replay caches: a claim is granted once per key until it expires; the SQL cache is shared
by every replica that uses the same database."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import create_engine, func, select, text

from controlroom.edge.replay import MemoryReplayCache, ReplayCache, SqlReplayCache, replay_table
from controlroom.store.db import Database

PG_URL = os.environ.get("CONTROLROOM_TEST_PG_URL", "postgresql://postgres@127.0.0.1:5432/postgres")


async def check_claims(cache: ReplayCache) -> None:
    assert await cache.claim("a", expires_at=110, now=100) is True
    assert await cache.claim("a", expires_at=110, now=105) is False
    assert await cache.claim("b", expires_at=110, now=105) is True
    # once expired, the key may be claimed again
    assert await cache.claim("a", expires_at=130, now=111) is True
    assert await cache.claim("a", expires_at=130, now=120) is False


async def test_memory_cache_grants_each_key_once_until_it_expires() -> None:
    await check_claims(MemoryReplayCache())


async def test_memory_cache_purges_expired_keys() -> None:
    cache = MemoryReplayCache()
    for i in range(50):
        await cache.claim(f"k{i}", expires_at=100 + i, now=90)
    await cache.claim("late", expires_at=500, now=200)
    assert len(cache) == 1


async def test_memory_cache_is_bounded_and_evicts_the_oldest_first() -> None:
    cache = MemoryReplayCache(max_entries=3)
    for key in "abcd":
        assert await cache.claim(key, expires_at=1000, now=0) is True
    assert len(cache) == 3
    assert cache.evicted == 1
    assert await cache.claim("d", expires_at=1000, now=1) is False
    assert await cache.claim("a", expires_at=1000, now=1) is True


async def test_memory_cache_refuses_a_zero_bound() -> None:
    with pytest.raises(ValueError):
        MemoryReplayCache(max_entries=0)


@pytest.fixture
def sqlite_db(tmp_path: Path) -> Iterator[Database]:
    db = Database(f"sqlite:///{tmp_path / 'replay.db'}")
    try:
        yield db
    finally:
        db.dispose()


async def test_sql_cache_grants_each_key_once_until_it_expires(sqlite_db: Database) -> None:
    await check_claims(SqlReplayCache(sqlite_db))


async def test_sql_cache_is_shared_by_replicas(sqlite_db: Database) -> None:
    first, second = SqlReplayCache(sqlite_db), SqlReplayCache(sqlite_db)
    assert await first.claim("sig", expires_at=400, now=100) is True
    assert await second.claim("sig", expires_at=400, now=101) is False


async def test_sql_cache_purges_expired_rows(sqlite_db: Database) -> None:
    ticks = iter([0.0, 1.0, 100.0])
    cache = SqlReplayCache(sqlite_db, purge_interval=60, monotonic=lambda: next(ticks))
    await cache.claim("old", expires_at=110, now=100)
    await cache.claim("other", expires_at=500, now=200)  # purge not due yet
    count = select(func.count()).select_from(replay_table)
    assert sqlite_db.run_sync(lambda c: c.execute(count).scalar_one()) == 2
    await cache.claim("new", expires_at=500, now=200)  # purge due: "old" has expired
    keys = sqlite_db.run_sync(lambda c: sorted(c.execute(select(replay_table.c.key)).scalars()))
    assert keys == ["new", "other"]


@pytest.mark.postgres
async def test_sql_cache_on_postgresql_is_shared_by_replicas() -> None:
    name = f"cr_edge_{uuid.uuid4().hex[:10]}"
    admin = create_engine(
        "postgresql+psycopg://" + PG_URL.split("://", 1)[1], isolation_level="AUTOCOMMIT"
    )
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    db_url = PG_URL.rsplit("/", 1)[0] + f"/{name}"
    dbs = [Database(db_url), Database(db_url)]
    try:
        await check_claims(SqlReplayCache(dbs[0]))
        assert await SqlReplayCache(dbs[0]).claim("x", expires_at=900, now=800) is True
        assert await SqlReplayCache(dbs[1]).claim("x", expires_at=900, now=801) is False
    finally:
        for db in dbs:
            db.dispose()
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE "{name}" WITH (FORCE)'))
        admin.dispose()
