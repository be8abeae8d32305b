from __future__ import annotations

import asyncio
import sqlite3
from pathlib import Path

import pytest
from sqlalchemy import text

from controlroom.config import Secret
from controlroom.errors import SecretError
from controlroom.security.crypto import Cipher, generate_key
from controlroom.security.installations import Installation, InstallationStore
from controlroom.store.db import Database

BOT = "xoxe.xoxb-1-MTIzNDU2Nzg5MC1ib3QtdG9rZW4tdmFsdWU"
REFRESH = "xoxe-1-My0xLTEyMzQ1Njc4OTAtcmVmcmVzaA"
USER = "xoxp-1111-2222-3333-usertokenvalue"


class Clock:
    def __init__(self) -> None:
        self.now = 1_700_000_000.0

    def __call__(self) -> float:
        return self.now


def _inst(team: str = "T1", enterprise: str = "", **kw: object) -> Installation:
    base: dict[str, object] = {
        "team_id": team,
        "enterprise_id": enterprise,
        "app_id": "A1",
        "bot_id": "B1",
        "bot_user_id": "UBOT",
        "installer_user_id": "UINST",
        "bot_scopes": ("chat:write", "commands"),
        "user_scopes": ("search:read",),
        "bot_token": Secret(BOT),
        "bot_refresh_token": Secret(REFRESH),
        "bot_token_expires_at": 1_700_043_200.0,
        "user_token": Secret(USER),
    }
    base.update(kw)
    return Installation(**base)  # type: ignore[arg-type]


def _database_bytes(path: Path) -> bytes:
    """Checkpoint the WAL so every page is in the main file, then read every file."""
    conn = sqlite3.connect(path)
    try:
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    finally:
        conn.close()
    return b"".join(p.read_bytes() for p in sorted(path.parent.glob(path.name + "*")))


@pytest.fixture
def cipher() -> Cipher:
    return Cipher.from_key(generate_key())


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def store(db: Database, cipher: Cipher, clock: Clock) -> InstallationStore:
    return InstallationStore(db, cipher, clock=clock)


async def test_save_and_find_round_trip(store: InstallationStore) -> None:
    saved = await store.save(_inst())
    found = await store.find("T1")
    assert found is not None
    assert found == saved
    assert found.bot_token is not None and found.bot_token.get() == BOT
    assert found.bot_refresh_token is not None and found.bot_refresh_token.get() == REFRESH
    assert found.user_token is not None and found.user_token.get() == USER
    assert found.bot_scopes == ("chat:write", "commands")
    assert found.active
    assert BOT not in repr(found)
    assert await store.find("T2") is None


async def test_no_token_reaches_the_sqlite_file(tmp_path: Path, cipher: Cipher) -> None:
    db = Database(f"sqlite:///{tmp_path / 'inst.db'}")
    db.create_all()
    try:
        store = InstallationStore(db, cipher)
        await store.save(_inst("T1"))
        await store.save(_inst("T2", enterprise="E1"))
        await store.update_tokens(
            "T1",
            bot_token=Secret("xoxe.xoxb-1-rotatedvalue"),
            bot_refresh_token=Secret("xoxe-1-rotatedrefresh"),
            bot_token_expires_at=1.0,
        )
        assert (await store.find("T1")) is not None
    finally:
        db.dispose()
    blob = _database_bytes(tmp_path / "inst.db")
    assert b"T2" in blob  # the scan does see the rows
    assert b"xox" not in blob
    assert b"usertokenvalue" not in blob


async def test_ciphertext_copied_to_another_row_is_rejected(
    db: Database, store: InstallationStore
) -> None:
    await store.save(_inst("T1", bot_token=Secret("xoxb-team-one")))
    await store.save(_inst("T2", bot_token=Secret("xoxb-team-two")))
    await db.run(
        lambda c: c.execute(
            text(
                "UPDATE installations SET bot_token = "
                "(SELECT bot_token FROM installations WHERE team_id = 'T1') WHERE team_id = 'T2'"
            )
        )
    )
    with pytest.raises(SecretError, match="another row"):
        await store.find("T2")


async def test_ciphertext_moved_to_another_field_is_rejected(
    db: Database, store: InstallationStore
) -> None:
    await store.save(_inst("T1"))
    await db.run(lambda c: c.execute(text("UPDATE installations SET user_token = bot_token")))
    with pytest.raises(SecretError):
        await store.find("T1")


async def test_enterprise_org_install_covers_its_workspaces(store: InstallationStore) -> None:
    await store.save(_inst("", enterprise="E1", is_enterprise_install=True))
    await store.save(_inst("T9", enterprise="E1", bot_token=Secret("xoxb-own-row")))
    org = await store.find("T5", "E1")
    assert org is not None and org.is_enterprise_install
    own = await store.find("T9", "E1")
    assert own is not None and own.bot_token is not None
    assert own.bot_token.get() == "xoxb-own-row"
    assert await store.find("T5", "E2") is None


async def test_mark_needs_reauth_then_reinstall_makes_it_active(
    store: InstallationStore, clock: Clock
) -> None:
    first = await store.save(_inst())
    assert await store.mark_needs_reauth("T1", reason="invalid_refresh_token")
    found = await store.find("T1")
    assert found is not None
    assert (found.status, found.status_reason, found.active) == (
        "needs_reauth",
        "invalid_refresh_token",
        False,
    )
    clock.now += 100
    again = await store.save(_inst(bot_token=Secret("xoxb-new")))
    assert again.active
    assert again.installed_at == first.installed_at
    refound = await store.find("T1")
    assert refound is not None and refound.active and refound.updated_at == clock.now


async def test_delete_removes_the_installation(store: InstallationStore) -> None:
    await store.save(_inst())
    assert await store.delete("T1") is True
    assert await store.delete("T1") is False
    assert await store.find("T1") is None
    assert await store.mark_needs_reauth("T1") is False


async def test_exactly_one_concurrent_worker_gets_the_rotation_lease(
    store: InstallationStore,
) -> None:
    await store.save(_inst())
    results = await asyncio.gather(
        *[store.acquire_rotation_lease("T1", owner=f"worker-{i}") for i in range(8)]
    )
    assert sorted(results) == [False] * 7 + [True]


async def test_rotation_lease_expires_and_can_be_released(
    store: InstallationStore, clock: Clock
) -> None:
    await store.save(_inst())
    assert await store.acquire_rotation_lease("T1", owner="a", seconds=30)
    assert not await store.acquire_rotation_lease("T1", owner="b", seconds=30)
    assert await store.acquire_rotation_lease("T1", owner="a", seconds=30)  # renew
    clock.now += 30
    assert await store.acquire_rotation_lease("T1", owner="b", seconds=30)  # expired
    assert not await store.release_rotation_lease("T1", owner="a")
    assert await store.release_rotation_lease("T1", owner="b")
    async with store.rotation_lease("T1", owner="c") as mine:
        assert mine
        async with store.rotation_lease("T1", owner="d") as theirs:
            assert not theirs
    assert await store.acquire_rotation_lease("T1", owner="d")


async def test_update_tokens_after_refresh(store: InstallationStore) -> None:
    await store.save(_inst())
    assert await store.update_tokens(
        "T1",
        bot_token=Secret("xoxe.xoxb-1-new"),
        bot_refresh_token=Secret("xoxe-1-newrefresh"),
        bot_token_expires_at=1_700_090_000.0,
    )
    found = await store.find("T1")
    assert found is not None and found.bot_token is not None
    assert found.bot_token.get() == "xoxe.xoxb-1-new"
    assert found.expires_within(3600, 1_700_090_000.0 - 3600)
    assert not found.expires_within(3599, 1_700_090_000.0 - 3600)


async def test_master_key_rotation_reencrypts_every_installation(
    store: InstallationStore, cipher: Cipher, db: Database
) -> None:
    await store.save(_inst("T1"))
    await store.save(_inst("T2"))
    new = cipher.rotated()
    assert await store.reencrypt_all(new) == 2
    fresh = InstallationStore(db, new.without_old_keys())
    found = await fresh.find("T2")
    assert found is not None and found.bot_token is not None and found.bot_token.get() == BOT
    assert [i.team_id for i in await fresh.list_all()] == ["T1", "T2"]


async def test_save_refuses_an_installation_without_ids(store: InstallationStore) -> None:
    with pytest.raises(ValueError, match="team_id or an enterprise_id"):
        await store.save(_inst(""))


async def test_app_uninstalled_deletes_the_installation_at_once(store: InstallationStore) -> None:
    await store.save(_inst())
    assert await store.apply_lifecycle_event({"type": "app_uninstalled"}, "T1") == "deleted"
    assert await store.find("T1") is None
    assert await store.apply_lifecycle_event({"type": "app_uninstalled"}, "T1") == "ignored"


async def test_tokens_revoked_for_the_bot_disables_the_installation(
    store: InstallationStore,
) -> None:
    await store.save(_inst())
    event = {"type": "tokens_revoked", "tokens": {"oauth": [], "bot": ["UBOT"]}}
    assert await store.apply_lifecycle_event(event, "T1") == "revoked"
    found = await store.find("T1")
    assert found is not None
    assert (found.status, found.bot_token, found.bot_refresh_token) == ("revoked", None, None)
    assert found.user_token is not None
    assert not found.active


async def test_tokens_revoked_for_the_installer_removes_only_the_user_token(
    store: InstallationStore,
) -> None:
    await store.save(_inst())
    event = {"type": "tokens_revoked", "tokens": {"oauth": ["UINST"]}}
    assert await store.apply_lifecycle_event(event, "T1") == "user_token_removed"
    found = await store.find("T1")
    assert found is not None and found.active
    assert found.user_token is None and found.bot_token is not None


async def test_tokens_revoked_for_someone_else_is_ignored(store: InstallationStore) -> None:
    await store.save(_inst())
    event = {"type": "tokens_revoked", "tokens": {"oauth": ["UOTHER"], "bot": ["UOTHERBOT"]}}
    assert await store.apply_lifecycle_event(event, "T1") == "ignored"
    assert await store.apply_lifecycle_event({"type": "message"}, "T1") == "ignored"
    assert await store.apply_lifecycle_event({"type": "tokens_revoked", "tokens": 3}, "T1") == (
        "ignored"
    )


async def test_a_grid_workspace_is_found_and_updated_by_its_team_id_alone(
    store: InstallationStore,
) -> None:
    await store.save(_inst("T1", enterprise="E1"))
    found = await store.find("T1")
    assert found is not None and found.enterprise_id == "E1"
    assert await store.update_tokens(
        "T1",
        bot_token=Secret("xoxe.xoxb-1-again"),
        bot_refresh_token=None,
        bot_token_expires_at=None,
    )
    again = await store.find("T1", "E1")
    assert again is not None and again.bot_token is not None
    assert again.bot_token.get() == "xoxe.xoxb-1-again"
    await store.save(_inst("T1", enterprise="E1"))  # re-install: still one row
    assert [i.team_id for i in await store.list_all()] == ["T1"]
