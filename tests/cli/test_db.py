"""``controlroom db``: run the migrations by hand, show the revision, check the schema,
on the configured SQLite file and on PostgreSQL."""

from __future__ import annotations

import os
import secrets
import sqlite3
from collections.abc import Iterator

import psycopg
import pytest
import typer
from typer.testing import CliRunner

from controlroom.store.db import Database
from controlroom.store.migrations import head_revision

from .conftest import Env

HEAD = head_revision()
PG_URL = os.environ.get("CONTROLROOM_TEST_PG_URL", "postgresql://postgres@127.0.0.1:5432/postgres")


def test_current_and_check_refuse_a_database_that_does_not_exist(
    env: Env, app: typer.Typer, runner: CliRunner
) -> None:
    for command in ("current", "check"):
        result = runner.invoke(app, ["db", command])
        assert result.exit_code == 1
        assert result.stderr.startswith(f"error: no database at {env.db_path}")
    assert not env.db_path.exists()


def test_upgrade_creates_the_database_then_current_and_check_report_it_at_head(
    env: Env, app: typer.Typer, runner: CliRunner
) -> None:
    upgraded = runner.invoke(app, ["db", "upgrade"])
    assert (upgraded.exit_code, upgraded.stdout) == (
        0,
        f"upgraded the database from none to {HEAD} (head)\n",
    )
    current = runner.invoke(app, ["db", "current"])
    assert (current.exit_code, current.stdout) == (0, f"{HEAD} (head)\n")
    checked = runner.invoke(app, ["db", "check"])
    assert (checked.exit_code, checked.stdout) == (
        0,
        f"revision: {HEAD} (head)\nthe database matches the models\n",
    )
    again = runner.invoke(app, ["db", "upgrade"])
    assert (again.exit_code, again.stdout) == (0, f"the database is already at {HEAD} (head)\n")


def test_a_database_made_before_migrations_is_behind_until_upgrade_adopts_it(
    env: Env, app: typer.Typer, runner: CliRunner
) -> None:
    db = Database(f"sqlite:///{env.db_path}")
    try:
        db.create_all()
    finally:
        db.dispose()
    current = runner.invoke(app, ["db", "current"])
    assert current.stdout == (
        f"none: not migrated yet (head is {HEAD}); run `controlroom db upgrade`\n"
    )
    checked = runner.invoke(app, ["db", "check"])
    assert checked.exit_code == 1
    assert checked.stderr == (
        f"error: the database is at revision none, not at head {HEAD}; "
        "run `controlroom db upgrade`\n"
    )
    adopted = runner.invoke(app, ["db", "upgrade"])
    assert adopted.exit_code == 0
    assert adopted.stdout == (
        f"adopted a database made before migrations: now at {HEAD} (head); "
        "its tables and rows were kept\n"
    )
    assert runner.invoke(app, ["db", "check"]).exit_code == 0


def test_check_names_what_differs_from_the_models(
    env: Env, app: typer.Typer, runner: CliRunner
) -> None:
    assert runner.invoke(app, ["db", "upgrade"]).exit_code == 0
    with sqlite3.connect(env.db_path) as conn:
        conn.execute("DROP INDEX ix_escalations_state")
        conn.execute("ALTER TABLE workflow_state ADD COLUMN owner TEXT")
    checked = runner.invoke(app, ["db", "check"])
    assert checked.exit_code == 1
    assert checked.stdout.splitlines()[1:] == [
        "  index ix_escalations_state on escalations: missing from the database",
        "  column workflow_state.owner: not in the models",
    ]
    assert "differ (2 differences above)" in checked.stderr


def test_a_database_from_a_newer_version_is_named_and_not_touched(
    env: Env, app: typer.Typer, runner: CliRunner
) -> None:
    assert runner.invoke(app, ["db", "upgrade"]).exit_code == 0
    with sqlite3.connect(env.db_path) as conn:
        conn.execute("UPDATE alembic_version SET version_num = '9999'")
    current = runner.invoke(app, ["db", "current"])
    assert current.stdout.startswith("9999: newer than this version of Control Room knows")
    upgraded = runner.invoke(app, ["db", "upgrade"])
    assert upgraded.exit_code == 1
    assert "revision 9999, which this version of Control Room does not know" in upgraded.stderr


def test_the_controlroom_command_has_the_db_commands(env: Env, runner: CliRunner) -> None:
    from controlroom.cli import app

    result = runner.invoke(app, ["db", "upgrade", "--config", str(env.config)])
    assert (result.exit_code, result.stdout.splitlines()[-1]) == (
        0,
        f"upgraded the database from none to {HEAD} (head)",
    )


@pytest.fixture
def pg_env(env: Env) -> Iterator[str]:
    """A new PostgreSQL database, named by the configuration's ``database_url``."""
    name = f"cr_cli_db_{secrets.token_hex(6)}"
    with psycopg.connect(PG_URL, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    url = f"{PG_URL.rsplit('/', 1)[0]}/{name}"
    env.write_config(f'database_url = "{url}"\n')
    try:
        yield url
    finally:
        with psycopg.connect(PG_URL, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.mark.postgres
def test_upgrade_current_and_check_on_postgresql(
    pg_env: str, app: typer.Typer, runner: CliRunner
) -> None:
    assert runner.invoke(app, ["db", "current"]).stdout.startswith("none: not migrated yet")
    assert runner.invoke(app, ["db", "upgrade"]).stdout == (
        f"upgraded the database from none to {HEAD} (head)\n"
    )
    assert runner.invoke(app, ["db", "current"]).stdout == f"{HEAD} (head)\n"
    assert runner.invoke(app, ["db", "check"]).exit_code == 0
    with psycopg.connect(pg_env, autocommit=True) as conn:
        conn.execute("ALTER TABLE audit_log ALTER COLUMN target TYPE varchar(2048)")
    checked = runner.invoke(app, ["db", "check"])
    assert checked.exit_code == 1
    assert checked.stdout.splitlines()[1:] == [
        "  column audit_log.target: type is VARCHAR(length=2048) in the database, "
        "String(length=1024) in the models"
    ]


def test_an_unreachable_postgresql_is_an_error_not_a_traceback(
    env: Env, app: typer.Typer, runner: CliRunner
) -> None:
    env.write_config('database_url = "postgresql://postgres@127.0.0.1:9/none"\n')
    result = runner.invoke(app, ["db", "current"])
    assert result.exit_code == 1
    assert result.stderr.startswith("error: database error: ")
