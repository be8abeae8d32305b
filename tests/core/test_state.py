"""Workflow state with idempotency keys, on SQLite."""

from __future__ import annotations

from pathlib import Path

from controlroom.store.db import Database
from controlroom.store.state import StateStore


async def test_values_round_trip_and_expire(tmp_path: Path) -> None:
    now = [1000.0]
    db = Database(f"sqlite:///{tmp_path / 's.db'}")
    db.create_all()
    state = StateStore(db, "demo", clock=lambda: now[0])
    await state.set("k", {"a": [1, 2]})
    assert await state.get("k") == {"a": [1, 2]}
    await state.set("k", "replaced", ttl=10)
    assert await state.get("k") == "replaced"
    now[0] += 11
    assert await state.get("k", "gone") == "gone"
    other = StateStore(db, "other", clock=lambda: now[0])
    await state.set("shared-name", 1)
    assert await other.get("shared-name") is None
    db.dispose()


async def test_once_claims_an_idempotency_key_exactly_once(tmp_path: Path) -> None:
    now = [0.0]
    db = Database(f"sqlite:///{tmp_path / 's.db'}")
    db.create_all()
    state = StateStore(db, "demo", clock=lambda: now[0])
    assert await state.once("rollback:42") is True
    assert await state.once("rollback:42") is False
    assert await state.once("short", ttl=5) is True
    now[0] = 6
    assert await state.once("short", ttl=5) is True
    db.dispose()
