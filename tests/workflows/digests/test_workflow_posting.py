"""Scheduled digests across periods: items carried forward until resolved, a summariser
failure that falls back to the heuristic and says so, a period posted once however
often it is enqueued."""

from __future__ import annotations

import json
import re
import time
from datetime import timedelta
from pathlib import Path
from typing import Any

from controlroom.testing import HubHarness
from controlroom.workflows.digests.runner import DIGEST_EVENT_TYPE
from controlroom.workflows.digests.workflow import enqueue_due
from tests.workflows.digests.test_workflow import CRON, digests_hub, next_tick, runtime, store

TZ = "Europe/Paris"
STATUS = re.compile(r"_(new|still open|resolved)_$")


def digest_posts(h: HubHarness) -> list[dict[str, Any]]:
    return [
        m
        for m in h.sandbox.state.messages("leadership-digest")
        if (m.get("metadata") or {}).get("event_type") == DIGEST_EVENT_TYPE
    ]


def status_of(line: str) -> str:
    found = STATUS.search(line)
    assert found is not None, line
    return found.group(0)


def item_lines(post: dict[str, Any]) -> list[str]:
    return [
        line
        for b in post["blocks"]
        if b["type"] == "section"
        for line in b["text"]["text"].splitlines()
        if line.startswith("\u2022")
    ]


async def test_open_items_are_carried_until_a_reaction_or_an_answer_resolves_them(
    tmp_path: Path,
) -> None:
    async with digests_hub(tmp_path, catch_up_minutes=1) as h:
        say = h.act.post_message
        room = await say(
            "tomas", "proj-aurora", "<@U0ENG00001> will book the launch room by Friday."
        )
        billing = await say("dan", "proj-aurora", "Who owns the billing integration?")
        await say("kenji", "proj-aurora", "I'll write the release notes.")
        await h.settle()
        first = next_tick(CRON, TZ, time.time() + 5)
        await enqueue_due(h.hub, first + timedelta(seconds=10))
        await h.settle()
        [post1] = digest_posts(h)
        lines = item_lines(post1)
        assert len(lines) == 3
        assert all(line.endswith("_new_") for line in lines)

        await h.act.add_reaction("dan", "proj-aurora", room, "white_check_mark")
        await say("kenji", "proj-aurora", "I do, it's on my list.", billing)
        await h.settle()
        second = next_tick(CRON, TZ, first.timestamp())
        await enqueue_due(h.hub, second + timedelta(seconds=10))
        await h.settle()
        post1_again, post2 = digest_posts(h)
        assert post1_again["ts"] == post1["ts"]
        status = {
            ("room" if "launch room" in line else "billing" if "billing" in line else "notes"): (
                status_of(line)
            )
            for line in item_lines(post2)
        }
        assert status == {
            "room": "_resolved_",
            "billing": "_resolved_",
            "notes": "_still open_",
        }
        open_now = await store(h).open_items("aurora")
        assert [i.text for i in open_now] == ["I'll write the release notes."]
        runs = await store(h).runs("aurora")
        assert [r.period for r in runs] == [first.isoformat(), second.isoformat()]
        # the second digest's window starts where the first ended
        assert runs[1].window_start == first.timestamp()


async def test_an_unreachable_model_falls_back_to_the_heuristic_and_the_digest_says_so(
    tmp_path: Path,
) -> None:
    summariser = {"kind": "openai", "model": "llama3.1", "base_url": "http://127.0.0.1:9/v1"}
    async with digests_hub(tmp_path, catch_up_minutes=1, summariser=summariser) as h:
        await h.act.post_message("tomas", "proj-aurora", "We decided to go with Postgres.")
        await h.settle()
        tick = next_tick(CRON, TZ, time.time() + 5)
        await enqueue_due(h.hub, tick + timedelta(seconds=10))
        await h.settle()
        [post] = digest_posts(h)
        text = json.dumps(post["blocks"])
        assert "We decided to go with Postgres." in text
        assert "heuristic used" in text
        assert "LLM error" in text


async def test_a_period_enqueued_again_or_run_again_posts_nothing_more(tmp_path: Path) -> None:
    async with digests_hub(tmp_path, catch_up_minutes=1) as h:
        await h.act.post_message("tomas", "proj-aurora", "We decided to go with Postgres.")
        await h.settle()
        tick = next_tick(CRON, TZ, time.time() + 5)
        keys = await enqueue_due(h.hub, tick + timedelta(seconds=10))
        assert keys == [f"digest:aurora:{tick.isoformat()}"]
        await h.settle()
        assert await enqueue_due(h.hub, tick + timedelta(seconds=50)) == []
        # another worker (or an operator) running the task again for that period
        await h.hub.queue.enqueue(
            "run_task",
            {
                "handler": "digests.post_digest",
                "args": {"digest": "aurora", "period": tick.isoformat()},
                "team_id": "",
            },
            lock_key="digest:aurora",
        )
        await h.settle()
        assert len(digest_posts(h)) == 1
        failed = await h.hub.queue.list_jobs(task="run_task")
        assert {j.status for j in failed} == {"succeeded"}


async def test_a_worker_dying_after_recording_the_first_part_resumes_with_the_second(
    tmp_path: Path,
) -> None:
    async with digests_hub(
        tmp_path, catch_up_minutes=1, channels=["proj-aurora", "releases"], max_blocks=5
    ) as h:
        await h.act.post_message("tomas", "proj-aurora", "We decided to go with Postgres.")
        await h.settle()
        rt = runtime(h)
        attempts: list[int] = []

        async def die() -> None:
            attempts.append(len(digest_posts(h)))
            if len(attempts) == 1:
                raise RuntimeError("worker killed after the first part")

        rt.faults["after_post:0"] = die
        tick = next_tick(CRON, TZ, time.time() + 5)
        await enqueue_due(h.hub, tick + timedelta(seconds=10))
        await h.settle()
        assert attempts == [1]  # the retry skipped the recorded first part
        posts = digest_posts(h)
        assert [p["metadata"]["event_payload"]["part"] for p in posts] == [1, 2]
        assert [p["blocks"][0]["text"]["text"] for p in posts] == [
            "#proj-aurora",
            "#releases (continued)",
        ]
        run = await store(h).get_run("aurora", tick.isoformat())
        assert run is not None
        assert (run.state, run.posted_ts) == ("posted", [p["ts"] for p in posts])
        entries = await h.hub.audit.tail(5, action="digests.*")
        assert [e.action for e in entries] == ["digests.build", "digests.post"]
        assert entries[1].details["resumed"] is True
