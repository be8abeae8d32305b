"""The digests workflow wired into the hub, against the sandbox: ingest of events
(messages, thread replies, edits, deletions, reactions, the no-digest marker), backfill
with paginated history, fail-closed coverage, and ``/digest now``."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy import delete

from controlroom.testing import HubHarness, running_hub
from controlroom.workflows.digests.config import DigestsConfig, latest_tick
from controlroom.workflows.digests.model import Message
from controlroom.workflows.digests.runner import DigestsRuntime, channel_policies, read_history
from controlroom.workflows.digests.store import DigestStore, digest_messages
from controlroom.workflows.digests.workflow import enqueue_due, workflow

AURORA = "C0AURORA01"
LEADERSHIP = "G0LEADDIGE"


def _quiet_cron() -> str:
    """Weekdays at a whole hour twelve hours from now in Paris: no real tick falls while
    these tests run, nor inside the catch-up window a hub looks back over when it starts
    (a fixed 09:00 made them fail between 09:00 and 10:00 Paris time)."""
    hour = (datetime.now(ZoneInfo("Europe/Paris")).hour + 12) % 24
    return f"0 {hour} * * 1-5"


CRON = _quiet_cron()


def digests_overrides(**settings: Any) -> dict[str, Any]:
    """One digest of #proj-aurora; keyword arguments go to the digest, or to
    ``[workflows.digests]`` when they are its settings."""
    entry: dict[str, Any] = {
        "name": "aurora",
        "channels": ["proj-aurora"],
        "cron": CRON,
        "timezone": "Europe/Paris",
    }
    top: dict[str, Any] = {"history_retry_delay": 0.0}
    for key, value in settings.items():
        (top if key in DigestsConfig.model_fields else entry)[key] = value
    return {
        "workflows.digests": {"digests": [entry], **top},
        "queue.backoff_base": 0.01,
        "queue.backoff_cap": 0.05,
    }


@asynccontextmanager
async def digests_hub(tmp_path: Path, **digest: Any) -> AsyncIterator[HubHarness]:
    async with running_hub(
        tmp_path, workflows=[workflow], overrides=digests_overrides(**digest)
    ) as h:
        await h.settle()  # the backfill on start
        yield h


def runtime(h: HubHarness) -> DigestsRuntime:
    rt = h.hub.services["digests"]["runtime"]
    assert isinstance(rt, DigestsRuntime)
    return rt


def store(h: HubHarness) -> DigestStore:
    return runtime(h).store


async def test_messages_replies_edits_and_deletions_are_stored_as_slack_has_them(
    tmp_path: Path,
) -> None:
    async with digests_hub(tmp_path) as h:
        root = await h.act.post_message("tomas", "proj-aurora", "Should we ship on Friday?")
        reply = await h.act.post_message("dan", "proj-aurora", "Yes, Friday works", root)
        edited = await h.act.post_message("kenji", "proj-aurora", "I'll write the notes")
        gone = await h.act.post_message("sofia", "proj-aurora", "the password is hunter2")
        await h.settle()
        await h.act.edit_message("kenji", "proj-aurora", edited, "I'll write the notes by Friday")
        await h.act.delete_message("sofia", "proj-aurora", gone)
        await h.settle()
        s = store(h)
        row = await s.get_row(AURORA, reply)
        assert row is not None
        assert (row["status"], row["thread_ts"], row["text"]) == ("live", root, "Yes, Friday works")
        row = await s.get_row(AURORA, edited)
        assert row is not None
        assert row["text"] == "I'll write the notes by Friday"
        assert row["edited"] is not None
        row = await s.get_row(AURORA, gone)
        assert row is not None
        assert (row["status"], row["text"], row["user"]) == ("deleted", "", None)
        window = await s.window([AURORA], 0, 1e12)
        assert [m.ts for m in window] == [root, reply, edited]


async def test_a_message_with_the_marker_is_never_stored(tmp_path: Path) -> None:
    async with digests_hub(tmp_path) as h:
        secret = await h.act.post_message(
            "sofia", "proj-aurora", "[no-digest] the Acme contract is worth 2M"
        )
        later = await h.act.post_message("sofia", "proj-aurora", "nothing to hide here")
        await h.settle()
        await h.act.edit_message("sofia", "proj-aurora", later, "Actually [NO-DIGEST] salary talk")
        await h.settle()
        for ts in (secret, later):
            row = await store(h).get_row(AURORA, ts)
            assert row is not None
            assert (row["status"], row["text"], row["user"]) == ("excluded", "", None)
        assert await store(h).window([AURORA], 0, 1e12) == []


async def test_channels_not_opted_in_are_not_stored(tmp_path: Path) -> None:
    async with digests_hub(tmp_path) as h:
        ts = await h.act.post_message("priya", "support", "Acme checkout is down")
        await h.settle()
        assert await store(h).get_row("C0SUPPORT1", ts) is None


async def test_reactions_are_kept_per_person_and_removed(tmp_path: Path) -> None:
    async with digests_hub(tmp_path) as h:
        ts = await h.act.post_message("tomas", "proj-aurora", "TODO: book the launch room")
        await h.act.add_reaction("dan", "proj-aurora", ts, "white_check_mark")
        await h.act.add_reaction("kenji", "proj-aurora", ts, "white_check_mark")
        await h.act.add_reaction("kenji", "proj-aurora", ts, "eyes")
        await h.settle()
        await h.act.remove_reaction("kenji", "proj-aurora", ts, "eyes")
        await h.settle()
        [msg] = await store(h).window([AURORA], 0, 1e12)
        assert msg.reactions == ("white_check_mark",)
        row = await store(h).get_row(AURORA, ts)
        assert row is not None
        assert row["reactions"] == '{"white_check_mark":["U0ENG00001","U0ENG00003"]}'


def next_tick(cron: str, tz: str, after: float) -> datetime:
    """The first tick of ``cron`` in ``tz`` after ``after``."""
    probe = datetime.fromtimestamp(after, UTC).astimezone(ZoneInfo(tz))
    tick = latest_tick(cron, probe)
    while tick.timestamp() <= after:
        probe += timedelta(hours=1)
        tick = latest_tick(cron, probe)
    return tick


async def run_backfill(h: HubHarness, channels: list[str]) -> None:
    await h.hub.queue.enqueue(
        "run_task",
        {"handler": "digests.backfill", "args": {"channels": channels}, "team_id": ""},
    )
    await h.settle()


async def test_backfill_reads_every_page_and_thread_and_forgets_what_slack_deleted(
    tmp_path: Path,
) -> None:
    async with digests_hub(tmp_path, history_page_size=5, clock_skew=0.0) as h:
        tops = [await h.act.post_message("tomas", "proj-aurora", f"update {i}") for i in range(12)]
        replies = [
            await h.act.post_message("dan", "proj-aurora", f"reply {i}", tops[3]) for i in range(7)
        ]
        await h.settle()
        # events were missed: the store lost most rows, and one message was deleted in
        # Slack without an event reaching us
        h.sandbox.state.remove_message(AURORA, tops[5])
        s = store(h)
        await s.db.run(
            lambda conn: conn.execute(
                delete(digest_messages).where(digest_messages.c.ts != tops[5])
            )
        )
        assert [m.ts for m in await s.window([AURORA], 0, 1e12)] == [tops[5]]
        before = len(h.sandbox.state.calls)
        await run_backfill(h, [AURORA])
        window = await s.window([AURORA], 0, 1e12)
        expected = sorted([t for t in tops if t != tops[5]] + replies, key=float)
        assert [m.ts for m in window] == expected
        assert {m.thread_ts for m in window if m.ts in replies} == {tops[3]}
        row = await s.get_row(AURORA, tops[5])
        assert row is not None and row["status"] == "deleted"
        calls = h.sandbox.state.calls[before:]
        history = [c for c in calls if c.method == "conversations.history"]
        thread = [c for c in calls if c.method == "conversations.replies"]
        assert len(history) == 3  # 11 messages, 5 a page
        assert [bool(c.params.get("cursor")) for c in history] == [False, True, True]
        assert len(thread) == 2  # the root and 7 replies, 5 a page
        assert all(c.error is None for c in calls)


async def test_when_the_history_cannot_be_read_the_digest_says_it_is_incomplete(
    tmp_path: Path,
) -> None:
    async with digests_hub(tmp_path, catch_up_minutes=1) as h:
        await h.act.post_message("tomas", "proj-aurora", "We decided to ship Aurora on Monday.")
        await h.settle()
        h.sandbox.faults.set("conversations.history", error_rate=1.0)
        tick = next_tick(CRON, "Europe/Paris", time.time() + 5)
        await enqueue_due(h.hub, tick + timedelta(seconds=10))
        await h.settle()
        [post] = [m for m in h.sandbox.state.messages("leadership-digest") if m.get("bot_id")]
        text = json.dumps(post["blocks"])
        assert "could not be read completely" in text
        assert "history incomplete" in text
        assert "ship Aurora on Monday" in text  # what the events brought is still shown
        run = await store(h).get_run("aurora", tick.isoformat())
        assert run is not None
        assert (run.state, run.complete) == ("posted", False)
        failed = [c for c in h.sandbox.state.calls if c.method == "conversations.history"]
        assert failed and all(c.error == "internal_error" for c in failed[-3:])


async def test_digest_now_previews_to_the_caller_only_and_is_audited(tmp_path: Path) -> None:
    async with digests_hub(tmp_path) as h:
        await h.act.post_message("tomas", "proj-aurora", "We decided to go with Postgres.")
        await h.settle()
        before = {m["ts"] for m in h.sandbox.state.messages("proj-aurora")}
        result = await h.act.run_command("dan", "proj-aurora", "/digest", "now")
        assert result.ok
        assert result.body["text"] == "Working on it\u2026"
        await h.settle()
        previews = [e for e in h.sandbox.state.ephemerals("dan") if e.get("blocks")]
        assert len(previews) == 1
        text = json.dumps(previews[0]["blocks"])
        assert "We decided to go with Postgres." in text
        assert "Preview: aurora" in previews[0]["text"]
        assert [e for e in h.sandbox.state.ephemerals("tomas") if e.get("blocks")] == []
        assert {m["ts"] for m in h.sandbox.state.messages("proj-aurora")} == before
        assert not [m for m in h.sandbox.state.messages("leadership-digest") if m.get("bot_id")]
        [entry] = await h.hub.audit.tail(5, action="digests.preview")
        assert (entry.actor, entry.target, entry.outcome) == (
            "U0ENG00001",
            f"channel:{AURORA}",
            "previewed",
        )
        # the preview does not count as a digest: nothing is carried or claimed
        assert await store(h).runs("aurora") == []
        # from another channel, for a channel the caller is a member of
        await h.act.run_command("dan", "general", "/digest", "now <#C0AURORA01|proj-aurora>")
        await h.settle()
        previews = [e for e in h.sandbox.state.ephemerals("dan") if e.get("blocks")]
        assert len(previews) == 2
        assert "We decided to go with Postgres." in json.dumps(previews[1]["blocks"])


async def test_digest_now_refuses_a_channel_the_caller_is_not_in(tmp_path: Path) -> None:
    async with digests_hub(tmp_path) as h:
        await h.act.post_message("tomas", "proj-aurora", "We decided to go with Postgres.")
        await h.settle()
        await h.act.run_command("priya", "support", "/digest", "now #proj-aurora")
        await h.act.run_command("priya", "support", "/digest", "now")
        await h.settle()
        shown = json.dumps(h.sandbox.state.ephemerals("priya"))
        assert "Postgres" not in shown
        assert "only preview the digest of a channel you are a member of" in shown
        assert "not read by any digest" in shown
        entries = await h.hub.audit.tail(5, action="digests.preview")
        assert sorted((e.outcome, e.target) for e in entries) == [
            ("denied", f"channel:{AURORA}"),
            ("not_opted_in", "channel:C0SUPPORT1"),
        ]


async def test_digest_with_bad_arguments_answers_with_the_usage(tmp_path: Path) -> None:
    async with digests_hub(tmp_path) as h:
        result = await h.act.run_command("dan", "proj-aurora", "/digest", "please")
        assert "/digest now" in result.body["text"]
        result = await h.act.run_command("dan", "proj-aurora", "/digest", "now <script>")
        await h.settle()
        shown = json.dumps(h.sandbox.state.ephemerals("dan"))
        assert "not a channel" in shown


async def test_reconcile_reads_threads_started_before_the_window(tmp_path: Path) -> None:
    async with digests_hub(tmp_path, clock_skew=0.0) as h:
        root = await h.act.post_message("tomas", "proj-aurora", "Launch checklist thread")
        await asyncio.sleep(0.05)
        start = time.time()
        kept = await h.act.post_message("dan", "proj-aurora", "DB migration ready", root)
        gone = await h.act.post_message("kenji", "proj-aurora", "CDN config ready", root)
        await h.settle()
        # missed events: an edit and a deletion in the thread, made in Slack silently
        h.sandbox.state.get_message(AURORA, kept)["text"] = "DB migration done"
        h.sandbox.state.remove_message(AURORA, gone)
        await asyncio.sleep(0.05)
        ctx = await h.hub.context(h.hub.registry.handlers["digests.backfill"])
        policies = await channel_policies(ctx)
        complete = await read_history(ctx, AURORA, start, time.time(), policies[AURORA])
        assert complete
        window = await store(h).window([AURORA], start, time.time())
        assert [(m.ts, m.text) for m in window] == [(kept, "DB migration done")]
        row = await store(h).get_row(AURORA, gone)
        assert row is not None and row["status"] == "deleted"


async def test_backfill_on_start_skips_channels_that_have_messages(tmp_path: Path) -> None:
    async with digests_hub(tmp_path) as h:
        await h.act.post_message("tomas", "proj-aurora", "We decided to go with Postgres.")
        await h.settle()
        before = len(h.sandbox.state.calls)
        await h.hub.queue.enqueue(
            "run_task",
            {"handler": "digests.backfill", "args": {"only_empty": True}, "team_id": ""},
        )
        await h.settle()
        calls = h.sandbox.state.calls[before:]
        assert [c for c in calls if c.method == "conversations.history"] == []
        await store(h).db.run(lambda conn: conn.execute(delete(digest_messages)))
        await h.hub.queue.enqueue(
            "run_task",
            {"handler": "digests.backfill", "args": {"only_empty": True}, "team_id": ""},
        )
        await h.settle()
        [m] = await store(h).window([AURORA], 0, 1e12)
        assert m.text == "We decided to go with Postgres."


async def test_the_daily_purge_forgets_messages_past_retention(tmp_path: Path) -> None:
    async with digests_hub(tmp_path, retention_days=1) as h:
        recent = await h.act.post_message("tomas", "proj-aurora", "fresh news")
        await h.settle()
        old = Message(channel=AURORA, ts=f"{time.time() - 2 * 86400:.6f}", user="U1", text="old")
        await store(h).save_message(old, excluded=False, now=time.time(), mode="new")
        await h.hub.queue.enqueue("run_schedule", {"handler": "digests.purge"})
        await h.settle()
        assert [m.ts for m in await store(h).window([AURORA], 0, 1e12)] == [recent]
