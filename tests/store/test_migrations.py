"""The schema's migrations, on SQLite and PostgreSQL: they build exactly the models'
tables, run once, adopt databases made by ``create_all`` and let concurrent starters
take turns."""

from __future__ import annotations

import asyncio
import json
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import psycopg
import pytest
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import Column, Integer, MetaData, String, Table, inspect, select, text

from controlroom.store.db import Database, metadata
from controlroom.store.migrations import (
    ADVISORY_LOCK_ID,
    INITIAL_REVISION,
    MigrationError,
    alembic_config,
    current_revisions,
    head_revision,
    schema_differences,
)
from controlroom.store.state import StateStore, state_table

HINT = (
    "the models and the migrations disagree: write a revision under "
    "src/controlroom/store/migrations/versions/ for the change"
)


def tables(db: Database) -> set[str]:
    with db.engine.connect() as conn:
        return set(inspect(conn).get_table_names())


def revisions(db: Database) -> tuple[str, ...]:
    with db.engine.connect() as conn:
        return current_revisions(conn)


def diff(db: Database, models: MetaData = metadata) -> list[object]:
    """Alembic's autogenerate comparison of the whole database with ``models``."""
    with db.engine.connect() as conn:
        context = MigrationContext.configure(conn, opts={"compare_type": True})
        return list(compare_metadata(context, models))


def test_upgrade_from_empty_creates_every_table_of_the_metadata(db: Database) -> None:
    result = db.migrate_sync()
    assert (result.before, result.head, result.adopted) == ((), head_revision(), False)
    assert tables(db) == set(metadata.tables) | {"alembic_version"}
    assert revisions(db) == (head_revision(),)


def test_the_migrated_database_and_the_models_do_not_differ(db: Database) -> None:
    """Fails when someone changes a model without writing a migration."""
    db.migrate_sync()
    assert diff(db) == [], HINT


def test_the_comparison_catches_a_model_that_has_no_migration(tmp_path: Path) -> None:
    """The check above can fail: a new table and a new column on copies of the models
    are both reported."""
    db = Database(f"sqlite:///{tmp_path / 'controlroom.db'}")
    try:
        db.migrate_sync()
        models = MetaData()
        for table in metadata.tables.values():
            table.to_metadata(models)
        Table("incident_notes", models, Column("id", Integer, primary_key=True))
        models.tables["workflow_state"].append_column(Column("owner", String(64)))
        kinds = sorted(
            (d[0], d[1].name) if d[0] == "add_table" else (d[0], d[3].name)  # type: ignore[index]
            for d in diff(db, models)
        )
        assert kinds == [("add_column", "owner"), ("add_table", "incident_notes")]
    finally:
        db.dispose()


def test_upgrading_twice_is_a_no_op(db: Database) -> None:
    db.migrate_sync()
    with db.engine.begin() as conn:
        conn.execute(state_table.insert().values(workflow="w", key="k", value="1", updated_at=1))
    again = db.migrate_sync()
    assert (again.before, again.changed, again.adopted) == ((head_revision(),), False, False)
    with db.engine.connect() as conn:
        assert conn.execute(text("SELECT count(*) FROM alembic_version")).scalar() == 1
        assert conn.execute(select(state_table.c.value)).scalars().all() == ["1"]


async def test_a_database_made_by_create_all_is_adopted_and_keeps_its_rows(
    db: Database,
) -> None:
    db.create_all()  # what every start did before migrations
    await StateStore(db, "deploys", clock=lambda: 100.0).set("last", {"id": 7})
    result = await db.migrate()
    assert (result.before, result.adopted) == ((), True)
    assert revisions(db) == (head_revision(),)
    assert await StateStore(db, "deploys", clock=lambda: 100.0).get("last") == {"id": 7}
    assert diff(db) == []


def test_a_database_made_with_only_some_tables_gets_the_missing_ones(tmp_path: Path) -> None:
    """Older deployments created only the tables of the workflows they ran."""
    db = Database(f"sqlite:///{tmp_path / 'controlroom.db'}")
    try:
        metadata.create_all(db.engine, tables=[state_table])
        with db.engine.begin() as conn:
            conn.execute(
                state_table.insert().values(workflow="w", key="k", value="v", updated_at=1)
            )
        assert db.migrate_sync().adopted
        assert tables(db) == set(metadata.tables) | {"alembic_version"}
        with db.engine.connect() as conn:
            assert conn.execute(select(state_table.c.value)).scalars().all() == ["v"]
        assert diff(db) == []
    finally:
        db.dispose()


def test_a_database_a_newer_version_migrated_is_refused_with_its_revision(db: Database) -> None:
    db.migrate_sync()
    with db.engine.begin() as conn:
        conn.execute(text("UPDATE alembic_version SET version_num = '9999'"))
    with pytest.raises(MigrationError, match=r"revision 9999, which this version .* does not"):
        db.migrate_sync()


def test_downgrading_to_base_drops_every_table_the_initial_revision_made(db: Database) -> None:
    db.migrate_sync()
    assert head_revision() == INITIAL_REVISION  # update this test with the second revision
    with db.engine.begin() as conn:
        command.downgrade(alembic_config(conn), "base")
    assert tables(db) == {"alembic_version"}
    assert revisions(db) == ()


def test_the_operator_comparison_ignores_tables_the_models_do_not_own(db: Database) -> None:
    """The job queue keeps its tables in the same database: not a difference."""
    db.migrate_sync()
    with db.engine.begin() as conn:
        conn.execute(text("CREATE TABLE queue_jobs (id INTEGER PRIMARY KEY)"))
        assert schema_differences(conn) == []
        conn.execute(text("DROP INDEX ix_audit_log_time"))
        assert schema_differences(conn) == [
            "index ix_audit_log_time on audit_log: missing from the database"
        ]


async def test_two_starters_in_one_process_both_succeed(url: str) -> None:
    """Two hubs of one process (web and worker in ``up``) migrate at the same time."""
    first, second = Database(url), Database(url)
    try:
        results = await asyncio.gather(first.migrate(), second.migrate())
        assert sorted(r.changed for r in results) == [False, True]
        assert revisions(first) == (head_revision(),)
    finally:
        first.dispose()
        second.dispose()


CHILD = """
import sys
from controlroom.store.db import Database
from controlroom.store.schema import load_all_tables
load_all_tables()
db = Database(sys.argv[1])
print("ready", flush=True)
result = db.migrate_sync()
print("upgraded" if result.changed else "at head", flush=True)
db.dispose()
"""


def start_children(url: str, n: int = 2) -> list[subprocess.Popen[str]]:
    return [
        subprocess.Popen(
            [sys.executable, "-c", CHILD, url],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(n)
    ]


def wait_ready(children: list[subprocess.Popen[str]]) -> None:
    for child in children:
        assert child.stdout is not None
        assert child.stdout.readline() == "ready\n", child.stderr and child.stderr.read()


def outcomes(children: list[subprocess.Popen[str]]) -> list[str]:
    results = []
    for child in children:
        out, err = child.communicate(timeout=60)
        assert child.returncode == 0, err
        results.append(out.strip())
    return sorted(results)


@pytest.mark.postgres
@pytest.mark.slow
def test_two_processes_upgrading_postgresql_at_once_both_succeed(pg_url: str) -> None:
    """Both wait on the advisory lock the test holds, then take turns: one migrates,
    the other finds the database at head."""
    with psycopg.connect(pg_url, autocommit=True) as holder:
        holder.execute("SELECT pg_advisory_lock(%s)", (ADVISORY_LOCK_ID,))
        children = start_children(pg_url)
        wait_ready(children)
        deadline = time.monotonic() + 60
        waiting = 0
        while waiting < 2 and time.monotonic() < deadline:
            row = holder.execute(
                "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND objid = %s"
                " AND NOT granted AND database = (SELECT oid FROM pg_database"
                " WHERE datname = current_database())",
                (ADVISORY_LOCK_ID,),
            ).fetchone()
            waiting = row[0] if row else 0
            time.sleep(0.05)
        assert waiting == 2, "both processes should be waiting on the migration lock"
        holder.execute("SELECT pg_advisory_unlock(%s)", (ADVISORY_LOCK_ID,))
        assert outcomes(children) == ["at head", "upgraded"]
    db = Database(pg_url)
    try:
        assert revisions(db) == (head_revision(),)
        assert diff(db) == []
    finally:
        db.dispose()


@pytest.mark.slow
def test_two_processes_upgrading_sqlite_at_once_both_succeed(tmp_path: Path) -> None:
    """Both block on the file's write lock the test holds, then take turns."""
    path = tmp_path / "controlroom.db"
    holder = sqlite3.connect(path, isolation_level=None)
    try:
        holder.execute("PRAGMA journal_mode=WAL")
        holder.execute("BEGIN IMMEDIATE")
        children = start_children(f"sqlite:///{path}")
        wait_ready(children)
        time.sleep(0.5)  # both are now inside BEGIN IMMEDIATE, waiting (busy_timeout 30 s)
        holder.execute("COMMIT")
        assert outcomes(children) == ["at head", "upgraded"]
    finally:
        holder.close()
    db = Database(f"sqlite:///{path}")
    try:
        assert revisions(db) == (head_revision(),)
    finally:
        db.dispose()


@pytest.mark.slow
def test_every_module_declaring_a_table_is_loaded_before_migrating() -> None:
    """Importing the whole package adds no table that ``load_all_tables`` missed (the
    comparison above sees only the tables it loads)."""
    script = """
import importlib, json, pkgutil
import controlroom
from controlroom.store.db import metadata
from controlroom.store.schema import load_all_tables
load_all_tables()
loaded = sorted(metadata.tables)
for mod in pkgutil.walk_packages(controlroom.__path__, "controlroom."):
    if ".migrations" not in mod.name:
        importlib.import_module(mod.name)
print(json.dumps([loaded, sorted(metadata.tables)]))
"""
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=120, check=True
    )
    loaded, everything = json.loads(done.stdout.strip().splitlines()[-1])
    assert loaded == everything


async def test_a_hub_start_adopts_a_database_made_by_create_all(tmp_path: Path) -> None:
    """What happens to an existing deployment's database at its first start after the
    upgrade to migrations."""
    from controlroom.config import load_settings
    from controlroom.hub import Hub

    settings = load_settings(
        environ={}, overrides={"data_dir": str(tmp_path), "sandbox.enabled": "off"}
    )
    before = Database(settings.effective_database_url)
    try:
        before.create_all()
        assert revisions(before) == ()
    finally:
        before.dispose()
    hub = Hub(settings)
    await hub.start()
    try:
        assert revisions(hub.db) == (head_revision(),)
        with hub.db.engine.connect() as conn:  # the queue's tables sit beside ours
            assert schema_differences(conn) == []
    finally:
        await hub.close()
