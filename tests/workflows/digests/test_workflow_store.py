"""The digests store on SQLite and PostgreSQL: events in any order end in the state Slack
has, the marker keeps text out, reactions survive races, retention purges, and a
period is claimed and posted once."""

from __future__ import annotations

import asyncio
import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

from controlroom.store.db import Database
from controlroom.workflows.digests.model import DigestItem, Message
from controlroom.workflows.digests.store import DigestStore

PG_ADMIN_URL = os.environ.get(
    "CONTROLROOM_TEST_PG_URL", "postgresql://postgres@127.0.0.1:5432/postgres"
)
CH = "C0AURORA01"
NOW = 1_800_000_000.0


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def db(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Database]:
    if request.param == "sqlite":
        database = Database(f"sqlite:///{tmp_path / 'digests.db'}")
        database.create_all()
        yield database
        database.dispose()
        return
    name = f"cr_digests_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(PG_ADMIN_URL, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    database = Database(PG_ADMIN_URL.rsplit("/", 1)[0] + "/" + name)
    try:
        database.create_all()
        yield database
    finally:
        database.dispose()
        with psycopg.connect(PG_ADMIN_URL, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def msg(ts: str, text: str, *, edited: str | None = None, thread: str | None = None) -> Message:
    return Message(
        channel=CH, ts=ts, user="U0PM000001", text=text, edited_ts=edited, thread_ts=thread
    )


async def texts(store: DigestStore) -> dict[str, str]:
    return {m.ts: m.text for m in await store.window([CH], 0, 1e12)}


async def test_an_edit_handled_before_its_message_keeps_the_edit(db: Database) -> None:
    s = DigestStore(db)
    edited = msg("1700000000.000100", "v2", edited="1700000050.000000")
    assert await s.save_message(edited, excluded=False, now=NOW, mode="changed") == "inserted"
    original = msg("1700000000.000100", "v1")
    assert await s.save_message(original, excluded=False, now=NOW, mode="new") == "kept"
    # an older edit arriving late does not win either
    older = msg("1700000000.000100", "v1.5", edited="1700000010.000000")
    assert await s.save_message(older, excluded=False, now=NOW, mode="changed") == "kept"
    assert await texts(s) == {"1700000000.000100": "v2"}


async def test_a_deletion_handled_before_its_message_keeps_it_deleted(db: Database) -> None:
    s = DigestStore(db)
    await s.delete_message(CH, "1700000000.000100", now=NOW)
    m = msg("1700000000.000100", "oops, the password is hunter2")
    assert await s.save_message(m, excluded=False, now=NOW, mode="new") == "deleted"
    assert await s.save_message(m, excluded=False, now=NOW, mode="authoritative") == "deleted"
    row = await s.get_row(CH, "1700000000.000100")
    assert row is not None
    assert (row["status"], row["text"], row["user"]) == ("deleted", "", None)
    assert await texts(s) == {}


async def test_an_excluded_message_keeps_no_text_and_an_edit_without_marker_stores_it(
    db: Database,
) -> None:
    s = DigestStore(db)
    m = msg("1700000000.000100", "[no-digest] salaries")
    await s.save_message(m, excluded=True, now=NOW, mode="new")
    row = await s.get_row(CH, m.ts)
    assert row is not None
    assert (row["status"], row["text"], row["user"]) == ("excluded", "", None)
    # the original (with the marker) arriving again changes nothing
    assert await s.save_message(m, excluded=True, now=NOW, mode="new") == "kept"
    fixed = msg(m.ts, "the launch is on Monday", edited="1700000100.000000")
    await s.save_message(fixed, excluded=False, now=NOW, mode="changed")
    assert await texts(s) == {m.ts: "the launch is on Monday"}


async def test_a_reaction_before_its_message_is_kept_until_the_message_arrives(
    db: Database,
) -> None:
    s = DigestStore(db)
    ts = "1700000000.000100"
    await s.react(CH, ts, "white_check_mark", "U0ENG00001", add=True, now=NOW)
    assert await texts(s) == {}  # a pending row is not a message
    assert (
        await s.save_message(msg(ts, "TODO: book the room"), excluded=False, now=NOW, mode="new")
        == "filled"
    )
    [m] = await s.window([CH], 0, 1e12)
    assert (m.text, m.reactions) == ("TODO: book the room", ("white_check_mark",))


async def test_concurrent_reactions_are_all_kept(db: Database) -> None:
    s = DigestStore(db)
    ts = "1700000000.000100"
    await s.save_message(msg(ts, "ship it?"), excluded=False, now=NOW, mode="new")
    users = [f"U0ENG0000{i}" for i in range(6)]
    await asyncio.gather(*(s.react(CH, ts, "+1", u, add=True, now=NOW) for u in users))
    row = await s.get_row(CH, ts)
    assert row is not None
    assert row["reactions"] == '{"+1":[' + ",".join(f'"{u}"' for u in users) + "]}"
    await s.react(CH, ts, "+1", users[0], add=False, now=NOW)
    await s.react(CH, ts, "eyes", users[0], add=False, now=NOW)  # never there: no change
    row = await s.get_row(CH, ts)
    assert row is not None and '"U0ENG00000"' not in row["reactions"]


async def test_purge_removes_messages_past_their_channel_retention(db: Database) -> None:
    s = DigestStore(db)
    day = 86400.0
    for ch, age in ((CH, 20), (CH, 3), ("C0OTHER001", 10), ("C0OLDCHAN1", 30)):
        ts = f"{NOW - age * day:.6f}"
        await s.save_message(
            Message(channel=ch, ts=ts, user="U1", text=f"{age} days"),
            excluded=False,
            now=NOW,
            mode="new",
        )
    removed = await s.purge({CH: 14 * day, "C0OTHER001": 7 * day}, 14 * day, NOW)
    assert removed == 3
    left = await s.window([CH, "C0OTHER001", "C0OLDCHAN1"], 0, 1e12)
    assert [m.text for m in left] == ["3 days"]


async def test_a_period_is_claimed_once_even_when_raced(db: Database) -> None:
    s = DigestStore(db)
    runs = await asyncio.gather(
        *(s.claim("aurora", "2026-12-01T09:00:00+01:00", NOW, NOW) for _ in range(5))
    )
    assert len({r.id for r in runs}) == 1
    assert [r.state for r in await s.runs("aurora")] == ["claimed"]


async def test_a_frozen_run_keeps_its_messages_and_records_each_post_once(db: Database) -> None:
    s = DigestStore(db)
    run = await s.claim("aurora", "p1", NOW, NOW)
    item = DigestItem(kind="action_item", text="update the plan", source_ids=(f"{CH}:1.000000",))
    rendered = [{"text": "part 1", "blocks": []}, {"text": "part 2", "blocks": []}]
    frozen = await s.freeze(
        run,
        rendered=rendered,
        window_start=NOW - 86400,
        complete=True,
        summariser="heuristic",
        items=[item],
        now=NOW,
    )
    assert (frozen.state, frozen.rendered) == ("posting", rendered)
    # a second attempt cannot change what is posted
    again = await s.freeze(
        run,
        rendered=[{"text": "other", "blocks": []}],
        window_start=0,
        complete=False,
        summariser="x",
        items=[],
        now=NOW,
    )
    assert again.rendered == rendered
    await s.record_post(run.id, 0, "111.1")
    await s.record_post(run.id, 0, "222.2")  # recorded already: kept
    with pytest.raises(ValueError):
        await s.record_post(run.id, 5, "333.3")
    await s.record_post(run.id, 1, "444.4")
    await s.mark_posted(run.id, NOW + 5)
    done = await s.get_run("aurora", "p1")
    assert done is not None
    assert (done.state, done.posted_ts, done.finished_at) == ("posted", ["111.1", "444.4"], NOW + 5)
    assert await s.last_window_end("aurora", before=NOW + 1) == NOW
    assert [i.key for i in await s.open_items("aurora")] == [item.key]
    assert await s.open_items("aurora", ["C0OTHER001"]) == []
