from __future__ import annotations

import asyncio
import io
import json
import threading
from pathlib import Path

import pytest
from sqlalchemy import text

from controlroom.security.audit import AuditLog, verify_jsonl
from controlroom.security.redaction import REDACTED, Redactor
from controlroom.store.db import Database


class FakeClock:
    def __init__(self, start: float = 1_700_000_000.25) -> None:
        self.now = start

    def __call__(self) -> float:
        self.now += 1.5
        return self.now


async def _fill(log: AuditLog, n: int = 5) -> None:
    for i in range(n):
        await log.record(
            actor=f"U{i}",
            action="deploys.rollback",
            target=f"svc-{i}",
            outcome="allowed",
            envelope_id=f"env-{i}",
            details={"i": i, "env": "production"},
        )


async def test_entries_chain_and_verify(db: Database) -> None:
    log = AuditLog(db, clock=FakeClock())
    first = await log.record(actor="U1", action="admin.reload", outcome="allowed")
    second = await log.record(
        actor="U2", action="admin.reload", outcome="denied", details={"reason": "not in policy"}
    )
    assert (first.seq, second.seq) == (1, 2)
    assert first.prev_hash == "0" * 64
    assert second.prev_hash == first.hash
    assert second.hash == second.compute_hash()
    assert await log.verify() == type(await log.verify())(True, 2, None, "")


async def test_empty_log_verifies(db: Database) -> None:
    result = await AuditLog(db).verify()
    assert (result.ok, result.count) == (True, 0)


@pytest.mark.parametrize(
    ("column", "value"),
    [
        ("time", "12.5"),
        ("actor", "'UEVIL'"),
        ("action", "'admin.other'"),
        ("target", "'other'"),
        ("outcome", "'denied'"),
        ("envelope_id", "'env-x'"),
        ("envelope_id", "NULL"),
        ("details", "'{\"i\":99}'"),
        ("prev_hash", "'" + "1" * 64 + "'"),
        ("hash", "'" + "2" * 64 + "'"),
    ],
)
async def test_tampering_with_any_field_names_the_first_bad_entry(
    db: Database, column: str, value: str
) -> None:
    log = AuditLog(db, clock=FakeClock())
    await _fill(log)
    await db.run(
        lambda c: c.exec_driver_sql(f"UPDATE audit_log SET {column} = {value} WHERE seq = 3")
    )
    result = await log.verify()
    assert (result.ok, result.first_bad_seq, result.count) == (False, 3, 2)
    assert "entry 3" in result.reason


async def test_deleting_a_middle_row_is_detected(db: Database) -> None:
    log = AuditLog(db, clock=FakeClock())
    await _fill(log)
    await db.run(lambda c: c.execute(text("DELETE FROM audit_log WHERE seq = 2")))
    result = await log.verify()
    assert (result.ok, result.first_bad_seq) == (False, 2)
    assert result.reason == "entry 2 is missing (next entry is 3)"


async def test_deleting_the_last_rows_is_detected_through_the_head(db: Database) -> None:
    log = AuditLog(db, clock=FakeClock())
    await _fill(log)
    await db.run(lambda c: c.execute(text("DELETE FROM audit_log WHERE seq >= 4")))
    result = await log.verify()
    assert (result.ok, result.first_bad_seq, result.count) == (False, 4, 3)
    assert "removed from the end" in result.reason


async def test_appending_after_a_truncation_does_not_hide_it(db: Database) -> None:
    log = AuditLog(db, clock=FakeClock())
    await _fill(log)
    await db.run(lambda c: c.execute(text("DELETE FROM audit_log WHERE seq = 5")))
    await log.record(actor="U9", action="x", outcome="allowed")
    result = await log.verify()
    assert (result.ok, result.first_bad_seq) == (False, 5)


async def test_details_are_redacted_before_storing(db: Database) -> None:
    redactor = Redactor(["registered-secret-value"])
    log = AuditLog(db, redactor=redactor)
    entry = await log.record(
        actor="U1",
        action="installs.save",
        target="T1 xoxb-1-2-abc",
        outcome="ok",
        details={
            "token": "xoxb-1-2-abc",
            "note": "has registered-secret-value",
            "nested": {"headers": {"Authorization": "Bearer zzzzzzzzzz"}},
        },
    )
    assert entry.details == {
        "token": REDACTED,
        "note": f"has {REDACTED}",
        "nested": {"headers": {"Authorization": REDACTED}},
    }
    assert entry.target == f"T1 {REDACTED}"
    raw = await db.run(lambda c: c.execute(text("SELECT details, target FROM audit_log")).all())
    assert "xoxb" not in repr(raw)
    assert "registered-secret-value" not in repr(raw)
    assert (await log.verify()).ok


async def test_tail_filters_and_returns_oldest_first(db: Database) -> None:
    clock = FakeClock(1000.0)
    log = AuditLog(db, clock=clock)
    await log.record(actor="U1", action="admin.reload", outcome="allowed")  # t=1001.5
    await log.record(actor="U2", action="deploys.rollback", outcome="denied")  # 1003
    await log.record(actor="U1", action="admin_x.y", outcome="allowed")  # 1004.5
    await log.record(actor="U1", action="deploys.rollback", outcome="allowed")  # 1006
    assert [e.seq for e in await log.tail(2)] == [3, 4]
    assert [e.seq for e in await log.tail(10, actor="U1")] == [1, 3, 4]
    assert [e.seq for e in await log.tail(10, action="deploys.rollback")] == [2, 4]
    assert [e.seq for e in await log.tail(10, action="admin.*")] == [1]
    assert [e.seq for e in await log.tail(10, since=1004.0)] == [3, 4]
    assert [e.seq for e in await log.tail(10, outcome="denied")] == [2]


async def test_export_jsonl_round_trips_and_verifies_offline(db: Database, tmp_path: Path) -> None:
    log = AuditLog(db, clock=FakeClock())
    await _fill(log, 4)
    buf = io.StringIO()
    assert await log.export_jsonl(buf) == 4
    lines = buf.getvalue().splitlines()
    assert [json.loads(line)["seq"] for line in lines] == [1, 2, 3, 4]
    assert verify_jsonl(io.StringIO(buf.getvalue())).ok
    tampered = buf.getvalue().replace('"actor":"U2"', '"actor":"U7"')
    bad = verify_jsonl(io.StringIO(tampered))
    assert (bad.ok, bad.first_bad_seq) == (False, 3)
    path = tmp_path / "audit.jsonl"
    assert await log.export_jsonl(path) == 4
    assert path.read_text() == buf.getvalue()


async def test_concurrent_appends_from_tasks_keep_one_chain(db: Database) -> None:
    log = AuditLog(db)
    await asyncio.gather(
        *[log.record(actor=f"U{i}", action="x", outcome="allowed") for i in range(20)]
    )
    result = await log.verify()
    assert (result.ok, result.count) == (True, 20)


def test_concurrent_appends_from_threads_with_their_own_engines_keep_one_chain(
    db_url: str, db: Database
) -> None:
    errors: list[BaseException] = []

    def writer(n: int) -> None:
        own = Database(db_url)
        try:
            log = AuditLog(own)

            async def go() -> None:
                for i in range(8):
                    await log.record(actor=f"W{n}", action="x", target=str(i), outcome="ok")

            asyncio.run(go())
        except BaseException as exc:
            errors.append(exc)
        finally:
            own.dispose()

    threads = [threading.Thread(target=writer, args=(n,)) for n in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert errors == []
    result = asyncio.run(AuditLog(db).verify())
    assert (result.ok, result.count) == (True, 32)


async def test_odd_details_are_stored_as_valid_json(db: Database) -> None:
    log = AuditLog(db)
    nan = await log.record(
        actor="U1",
        action="x",
        outcome="ok",
        details={"ratio": float("nan"), "big": float("inf"), 3: "int key"},
    )
    assert nan.details == {"ratio": "nan", "big": "inf", "3": "int key"}
    huge = await log.record(actor="U1", action="x", outcome="ok", details={"blob": "a" * 20000})
    assert huge.details == {"truncated": True, "keys": ["blob"]}
    assert (await log.verify()).ok
