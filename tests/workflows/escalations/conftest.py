"""Databases for the escalations tables: a real SQLite file per test, and (marker
``postgres``) one fresh PostgreSQL database ``cr_esc_<random>`` per session, emptied
before each test and dropped at the end."""

from __future__ import annotations

import os
import secrets
from collections.abc import Iterator

import psycopg
import pytest
from psycopg import sql
from sqlalchemy import text

from controlroom.store.db import Database, metadata
from controlroom.workflows.escalations.ledger import escalations
from controlroom.workflows.escalations.naming import escalation_sequences

PG_URL = os.environ.get("CONTROLROOM_TEST_PG_URL", "postgresql://postgres@127.0.0.1:5432/postgres")
TABLES = [escalations, escalation_sequences]


@pytest.fixture(scope="session")
def pg_url() -> Iterator[str]:
    name = f"cr_esc_{secrets.token_hex(6)}"
    with psycopg.connect(PG_URL, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    base, _, _ = PG_URL.rpartition("/")
    url = f"{base}/{name}"
    try:
        setup = Database(url)
        metadata.create_all(setup.engine, tables=TABLES)
        setup.dispose()
        yield url
    finally:
        with psycopg.connect(PG_URL, autocommit=True) as conn:
            drop = sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)")
            conn.execute(drop.format(sql.Identifier(name)))


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def db(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Database]:
    if request.param == "sqlite":
        database = Database(f"sqlite:///{tmp_path_factory.mktemp('esc') / 'controlroom.db'}")
        metadata.create_all(database.engine, tables=TABLES)
    else:
        database = Database(request.getfixturevalue("pg_url"))
        database.run_sync(
            lambda c: c.execute(text("TRUNCATE escalations, escalation_sequences RESTART IDENTITY"))
        )
    try:
        yield database
    finally:
        database.dispose()
