"""The operator commands on a PostgreSQL database (distributed mode)."""

from __future__ import annotations

import asyncio
import json
import os
import secrets
from collections.abc import Iterator

import psycopg
import pytest
import typer
from typer.testing import CliRunner

from controlroom.config import Secret
from controlroom.security.audit import AuditLog
from controlroom.security.crypto import load_cipher
from controlroom.security.installations import Installation, InstallationStore
from controlroom.store.db import Database

from .conftest import Env

PG_URL = os.environ.get("CONTROLROOM_TEST_PG_URL", "postgresql://postgres@127.0.0.1:5432/postgres")

pytestmark = pytest.mark.postgres


@pytest.fixture
def pg_url() -> Iterator[str]:
    name = f"cr_cli_{secrets.token_hex(6)}"
    with psycopg.connect(PG_URL, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    try:
        yield f"{PG_URL.rsplit('/', 1)[0]}/{name}"
    finally:
        with psycopg.connect(PG_URL, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def test_audit_and_installs_commands_on_postgresql(
    env: Env, app: typer.Typer, runner: CliRunner, pg_url: str
) -> None:
    env.write_config(f'database_url = "{pg_url}"\n')
    assert runner.invoke(app, ["secrets", "init-key"]).exit_code == 0
    db = Database(pg_url)
    try:
        db.create_all()

        async def seed() -> None:
            log = AuditLog(db)
            for outcome in ("allowed", "denied", "allowed"):
                await log.record(actor="U0RELMGR01", action="deploys.rollback", outcome=outcome)
            await InstallationStore(db, load_cipher(env.data_dir)).save(
                Installation(team_id="T0PGTEAM01", bot_token=Secret("xoxb-pg-token"))
            )

        asyncio.run(seed())
    finally:
        db.dispose()
    verified = runner.invoke(app, ["audit", "verify"])
    assert verified.exit_code == 0 and verified.stdout == "chain of 3 entries verified\n"
    denied = runner.invoke(app, ["audit", "tail", "--json", "--outcome", "denied"])
    assert [json.loads(x)["seq"] for x in denied.stdout.splitlines()] == [2]
    listed = runner.invoke(app, ["installs", "list", "--json"])
    assert json.loads(listed.stdout)["team_id"] == "T0PGTEAM01"
    with psycopg.connect(pg_url, autocommit=True) as conn:
        conn.execute("UPDATE audit_log SET actor = 'U0ATTACKER' WHERE seq = 3")
    tampered = runner.invoke(app, ["audit", "verify"])
    assert tampered.exit_code == 1 and "at entry 3: entry 3 was altered" in tampered.stderr
    rotated = runner.invoke(app, ["secrets", "rotate-key"])
    assert rotated.exit_code == 0 and "0 keystore entries and 1 installation" in rotated.stdout
