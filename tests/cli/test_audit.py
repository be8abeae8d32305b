"""``controlroom audit``: verify the chain (and find tampering), tail with filters,
export JSON lines and verify an export offline."""

from __future__ import annotations

import asyncio
import json
import sqlite3
import time
from pathlib import Path

import pytest
import typer
from typer.testing import CliRunner

from controlroom.ops._common import parse_since
from controlroom.security.audit import AuditLog
from controlroom.store.db import Database

from .conftest import Env

NOW = time.time()


def _seed(env: Env, entries: list[tuple[float, str, str, str]]) -> None:
    """(age in seconds, actor, action, outcome) -> audit entries at NOW - age."""
    db = Database(f"sqlite:///{env.db_path}")
    try:
        db.create_all()

        async def go() -> None:
            for age, actor, action, outcome in entries:
                log = AuditLog(db, clock=lambda age=age: NOW - age)
                await log.record(
                    actor=actor,
                    action=action,
                    target="svc-api",
                    outcome=outcome,
                    details={"environment": "production"},
                )

        asyncio.run(go())
    finally:
        db.dispose()


ENTRIES = [
    (7200.0, "U0RELMGR01", "deploys.rollback", "allowed"),
    (3600.0, "U0SUPPORT1", "deploys.rollback", "denied"),
    (600.0, "U0T2LEAD01", "escalations.open", "allowed"),
    (120.0, "U0RELMGR01", "admin.reload", "allowed"),
    (30.0, "U0SUPPORT1", "admin.reload", "denied"),
]


def _sql(env: Env, statement: str) -> None:
    with sqlite3.connect(env.db_path) as conn:
        conn.execute(statement)


def test_verify_an_intact_chain(env: Env, app: typer.Typer, runner: CliRunner) -> None:
    _seed(env, ENTRIES)
    result = runner.invoke(app, ["audit", "verify"])
    assert result.exit_code == 0, result.output
    assert result.stdout == "chain of 5 entries verified\n"


def test_verify_names_the_entry_changed_by_a_raw_sql_update(
    env: Env, app: typer.Typer, runner: CliRunner
) -> None:
    _seed(env, ENTRIES)
    _sql(env, "UPDATE audit_log SET outcome = 'allowed' WHERE seq = 2")
    result = runner.invoke(app, ["audit", "verify"])
    assert result.exit_code == 1
    assert result.stdout == ""
    assert result.stderr == (
        "error: audit chain broken at entry 2: entry 2 was altered (hash does not match) "
        "(1 entry before it verified)\n"
    )


def test_verify_finds_a_deleted_entry_and_a_cut_end(
    env: Env, app: typer.Typer, runner: CliRunner
) -> None:
    _seed(env, ENTRIES)
    _sql(env, "DELETE FROM audit_log WHERE seq = 5")
    cut = runner.invoke(app, ["audit", "verify"])
    assert cut.exit_code == 1 and "at entry 5: the log ends at entry 4" in cut.stderr
    _sql(env, "DELETE FROM audit_log WHERE seq = 3")
    gap = runner.invoke(app, ["audit", "verify"])
    assert gap.exit_code == 1 and "at entry 3: entry 3 is missing" in gap.stderr


def test_verify_without_a_database_says_so(env: Env, app: typer.Typer, runner: CliRunner) -> None:
    result = runner.invoke(app, ["audit", "verify"])
    assert result.exit_code == 1
    assert result.stderr.startswith(f"error: no database at {env.db_path}")
    assert not env.db_path.exists()  # not created by looking


def test_tail_shows_the_last_entries_oldest_first_as_json(
    env: Env, app: typer.Typer, runner: CliRunner
) -> None:
    _seed(env, ENTRIES)
    result = runner.invoke(app, ["audit", "tail", "--limit", "2", "--json"])
    assert result.exit_code == 0, result.output
    lines = [json.loads(line) for line in result.stdout.splitlines()]
    assert [(e["seq"], e["actor"], e["action"]) for e in lines] == [
        (4, "U0RELMGR01", "admin.reload"),
        (5, "U0SUPPORT1", "admin.reload"),
    ]
    assert set(lines[0]) == {
        "seq",
        "time",
        "actor",
        "action",
        "target",
        "outcome",
        "envelope_id",
        "details",
        "prev_hash",
        "hash",
    }


@pytest.mark.parametrize(
    ("args", "seqs"),
    [
        (["--actor", "U0SUPPORT1"], [2, 5]),
        (["--action", "deploys.rollback"], [1, 2]),
        (["--action", "admin.*"], [4, 5]),
        (["--outcome", "denied"], [2, 5]),
        (["--since", "15m"], [3, 4, 5]),
        (["--since", "90m", "--outcome", "allowed"], [3, 4]),
        (["--since", "2h", "--actor", "U0RELMGR01"], [4]),
    ],
)
def test_tail_filters(
    env: Env, app: typer.Typer, runner: CliRunner, args: list[str], seqs: list[int]
) -> None:
    _seed(env, ENTRIES)
    result = runner.invoke(app, ["audit", "tail", "--json", *args])
    assert result.exit_code == 0, result.output
    assert [json.loads(line)["seq"] for line in result.stdout.splitlines()] == seqs


def test_tail_since_an_iso_time(env: Env, app: typer.Typer, runner: CliRunner) -> None:
    _seed(env, ENTRIES)
    from controlroom.ops._common import format_time

    since = format_time(NOW - 700)
    result = runner.invoke(app, ["audit", "tail", "--json", "--since", since])
    assert [json.loads(line)["seq"] for line in result.stdout.splitlines()] == [3, 4, 5]


def test_tail_as_a_table(env: Env, app: typer.Typer, runner: CliRunner) -> None:
    _seed(env, ENTRIES)
    result = runner.invoke(app, ["audit", "tail", "--limit", "1"])
    assert result.exit_code == 0, result.output
    assert "admin.reload" in result.stdout and "U0SUPPORT1" in result.stdout
    assert '{"environment": "production"}' in result.stdout
    empty = runner.invoke(app, ["audit", "tail", "--actor", "nobody"])
    assert empty.exit_code == 0 and empty.stderr == "no matching audit entries\n"


@pytest.mark.parametrize("since", ["yesterday", "5 minutes", "-5m", "2026-13-01", ""])
def test_tail_with_a_bad_since_is_a_usage_error(
    env: Env, app: typer.Typer, runner: CliRunner, since: str
) -> None:
    _seed(env, ENTRIES)
    result = runner.invoke(app, ["audit", "tail", "--since", since])
    assert result.exit_code == 2
    assert "--since" in result.stderr and "neither a duration" in result.stderr


def test_parse_since_forms() -> None:
    assert parse_since("30s", 1000.0) == 970.0
    assert parse_since("5m", 1000.0) == 700.0
    assert parse_since("2h", 10_000.0) == 2800.0
    assert parse_since("1d", 100_000.0) == 13_600.0
    assert parse_since("1w", 1_000_000.0) == 395_200.0
    assert parse_since("1970-01-01T00:01:00Z", 0.0) == 60.0
    assert parse_since("1970-01-01T00:01:00", 0.0) == 60.0  # no zone: UTC
    assert parse_since("1970-01-01T01:01:00+01:00", 0.0) == 60.0


def test_export_then_verify_the_file_offline(
    env: Env, app: typer.Typer, runner: CliRunner, tmp_path: Path
) -> None:
    _seed(env, ENTRIES)
    out = tmp_path / "audit.jsonl"
    result = runner.invoke(app, ["audit", "export", str(out)])
    assert result.exit_code == 0, result.output
    lines = out.read_text().splitlines()
    assert len(lines) == 5
    head = json.loads(lines[-1])["hash"]
    assert result.stdout == (
        f"exported 5 entries to {out}; last hash {head} "
        "(keep it: audit verify --file FILE --head HASH)\n"
    )
    ok = runner.invoke(app, ["audit", "verify", "--file", str(out), "--head", head])
    assert ok.exit_code == 0 and ok.stdout == f"chain of 5 entries verified in {out}\n"
    # a truncated export verifies as a chain, but not against the kept head
    out.write_text("\n".join(lines[:4]) + "\n")
    cut = runner.invoke(app, ["audit", "verify", "--file", str(out), "--head", head])
    assert cut.exit_code == 1 and "entries were removed from the end" in cut.stderr


def test_a_tampered_export_is_detected(
    env: Env, app: typer.Typer, runner: CliRunner, tmp_path: Path
) -> None:
    _seed(env, ENTRIES)
    out = tmp_path / "audit.jsonl"
    runner.invoke(app, ["audit", "export", str(out)])
    lines = out.read_text().splitlines()
    entry = json.loads(lines[2])
    entry["actor"] = "U0ATTACKER"
    lines[2] = json.dumps(entry)
    out.write_text("\n".join(lines) + "\n")
    result = runner.invoke(app, ["audit", "verify", "--file", str(out)])
    assert result.exit_code == 1
    assert f"audit chain broken in {out} at entry 3: entry 3 was altered" in result.stderr
    out.write_text("not json\n")
    garbage = runner.invoke(app, ["audit", "verify", "--file", str(out)])
    assert garbage.exit_code == 1 and "line 1 is not an entry" in garbage.stderr


def test_export_to_stdout_and_errors(
    env: Env, app: typer.Typer, runner: CliRunner, tmp_path: Path
) -> None:
    _seed(env, ENTRIES[:2])
    result = runner.invoke(app, ["audit", "export", "-"])
    assert result.exit_code == 0, result.output
    assert [json.loads(line)["seq"] for line in result.stdout.splitlines()] == [1, 2]
    assert result.stderr.startswith("exported 2 entries; last hash ")
    missing = runner.invoke(app, ["audit", "verify", "--file", str(tmp_path / "nope.jsonl")])
    assert missing.exit_code == 1 and "cannot read" in missing.stderr
    to_dir = runner.invoke(app, ["audit", "export", str(tmp_path)])
    assert to_dir.exit_code == 1 and "is a directory" in to_dir.stderr
    head_alone = runner.invoke(app, ["audit", "verify", "--head", "abc"])
    assert head_alone.exit_code == 2 and "--head applies to --file" in head_alone.stderr
