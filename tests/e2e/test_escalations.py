"""Escalations end to end in the sandbox: an agent reacts :rotating_light: to a customer
message in #support and a private incident room opens, exactly once, whatever Slack or
the workers do."""

from __future__ import annotations

import json
import os
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest

from controlroom.testing import HubHarness, running_hub, sign_slack_request
from controlroom.workflows.escalations.flow import Services
from controlroom.workflows.escalations.ledger import Source, State
from controlroom.workflows.escalations.workflow import workflow

PRIYA, MARCUS, SOFIA, DAN = "U0SUPPORT1", "U0T2LEAD01", "U0ACCTMGR1", "U0ENG00001"
OVERRIDES: dict[str, Any] = {
    "workflows.escalations": {"tier2_lead": MARCUS},
    "policy": {
        "rules": [{"action": "escalations.open", "users": [PRIYA], "usergroups": ["S0T2ONCALL"]}]
    },
}
PG_ADMIN_URL = os.environ.get(
    "CONTROLROOM_TEST_PG_URL", "postgresql://postgres@127.0.0.1:5432/postgres"
)
ACME = "Acme's checkout is failing, jane@acme.example says the payment page spins forever"


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def database_url(request: pytest.FixtureRequest) -> Iterator[str | None]:
    """``None`` (the embedded SQLite default) or a fresh PostgreSQL database."""
    if request.param == "sqlite":
        yield None
        return
    name = f"cr_esc_e2e_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(PG_ADMIN_URL, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    try:
        yield PG_ADMIN_URL.rsplit("/", 1)[0] + "/" + name
    finally:
        with psycopg.connect(PG_ADMIN_URL, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def rooms(h: HubHarness, prefix: str = "incident-") -> list[Any]:
    return [c for c in h.sandbox.state.channels.values() if c.name.startswith(prefix)]


def bot_replies(h: HubHarness, ts: str) -> list[dict[str, Any]]:
    return [m for m in h.sandbox.state.replies("support", ts)[1:] if m.get("bot_id")]


def flow(h: HubHarness) -> Services:
    svc = h.hub.services["escalations"]["flow"]
    assert isinstance(svc, Services)
    return svc


def everything(message: dict[str, Any]) -> str:
    return json.dumps(message.get("blocks", []))


async def replay(h: HubHarness, body: dict[str, Any]) -> httpx.Response:
    """Re-deliver ``body`` as a Slack retry: same event_id, a fresh timestamp and signature."""
    raw = json.dumps(body).encode()
    headers = sign_slack_request(raw, h.sandbox.signing_secret, int(time.time()) - 7)
    headers |= {
        "Content-Type": "application/json",
        "X-Slack-Retry-Num": "1",
        "X-Slack-Retry-Reason": "http_timeout",
    }
    async with httpx.AsyncClient() as client:
        return await client.post(f"{h.hub_url}/slack/events", content=raw, headers=headers)


async def test_a_reaction_opens_one_complete_room_however_often_it_is_repeated(
    tmp_path: Path, database_url: str | None
) -> None:
    year = datetime.now(UTC).year
    async with running_hub(
        tmp_path, workflows=[workflow], overrides=OVERRIDES, database_url=database_url
    ) as h:
        ts = await h.act.post_message("priya", "support", ACME)
        await h.act.add_reaction("priya", "support", ts, "rotating_light")
        await h.settle()

        (room,) = rooms(h)
        assert room.name == f"incident-acme-{year}-001"
        assert room.is_private
        assert {PRIYA, MARCUS, SOFIA} <= set(room.members)
        assert DAN not in room.members

        (briefing,) = h.sandbox.state.messages(room.id)
        assert h.sandbox.state.pins[room.id] == [briefing["ts"]]
        card = everything(briefing)
        assert "Acme Corporation" in card
        assert "Enterprise" in card and "$1.25M" in card
        assert f"<@{SOFIA}>" in card
        assert f"/archives/{h.sandbox.channel('support').id}/p{ts.replace('.', '')}" in card
        assert "jane@acme.example" in card
        assert f"Escalated by <@{PRIYA}>" in card

        (pointer,) = bot_replies(h, ts)
        assert pointer["text"] == f"Escalated to <#{room.id}> by <@{PRIYA}>"

        esc = await flow(h).ledger.by_source(Source(h.sandbox.team_id, "C0SUPPORT1", ts))
        assert esc is not None and esc.state == State.DONE
        assert esc.room_channel_id == room.id and esc.customer_name == "Acme Corporation"

        # someone else reacts: no second room, one thread reply linking the room
        await h.act.add_reaction("marcus", "support", ts, "rotating_light")
        await h.settle()
        await h.act.add_reaction("marcus", "support", ts, "sos")
        await h.act.remove_reaction("marcus", "support", ts, "rotating_light")
        await h.act.add_reaction("marcus", "support", ts, "rotating_light")
        await h.settle()
        assert len(rooms(h)) == 1
        replies = bot_replies(h, ts)
        assert [r["text"] for r in replies] == [
            pointer["text"],
            f"Already escalated to <#{room.id}>",
        ]

        # Slack re-delivers the original event (same event_id, fresh signature)
        original = next(
            b
            for b in h.sandbox.deliverer.emitted
            if b["event"]["type"] == "reaction_added" and b["event"]["user"] == PRIYA
        )
        resp = await replay(h, original)
        assert resp.status_code == 200
        await h.settle()
        assert len(rooms(h)) == 1
        assert len(bot_replies(h, ts)) == 2
        assert len(h.sandbox.state.messages(room.id)) == 1

        steps = [e.action for e in await h.hub.audit.tail(100, action="escalations.*")]
        for step in ("claimed", "name_reserved", "channel_created", "invited", "briefed"):
            assert f"escalations.{step}" in steps
        assert steps.count("escalations.opened") == 1
        assert (await h.hub.audit.verify()).ok


@pytest.mark.parametrize(
    "step", ["channel_created", "invited", "briefed", "pinned", "pointer_posted"]
)
async def test_a_worker_killed_mid_flow_still_yields_exactly_one_complete_room(
    tmp_path: Path, step: str, database_url: str | None
) -> None:
    """The job dies right after a Slack side effect, before the ledger records it (for
    ``channel_created``: between ``conversations.create`` and the ledger; for ``briefed``
    and ``pointer_posted``: between ``chat.postMessage`` and the ledger), and runs again:
    the re-run finds the post by its idempotency key instead of posting it twice."""
    year = datetime.now(UTC).year
    async with running_hub(
        tmp_path, workflows=[workflow], overrides=OVERRIDES, database_url=database_url
    ) as h:
        killed: list[str] = []

        async def die_once(reached: str) -> None:
            if reached == step and not killed:
                killed.append(reached)
                raise RuntimeError(f"worker killed after {reached}")

        flow(h).after_step = die_once
        ts = await h.act.post_message("priya", "support", ACME)
        await h.act.add_reaction("priya", "support", ts, "rotating_light")
        await h.settle()

        assert killed == [step]
        (room,) = rooms(h)
        assert room.name == f"incident-acme-{year}-001"
        assert {PRIYA, MARCUS, SOFIA} <= set(room.members)
        (briefing,) = h.sandbox.state.messages(room.id)
        assert "*Matched by*\\nemail domain acme.example" in everything(briefing)
        assert h.sandbox.state.pins[room.id] == [briefing["ts"]]
        assert len(bot_replies(h, ts)) == 1
        esc = await flow(h).ledger.by_source(Source(h.sandbox.team_id, "C0SUPPORT1", ts))
        assert esc is not None and esc.state == State.DONE and esc.room_channel_id == room.id
        jobs = await h.hub.queue.list_jobs(task="run_task")
        (opening,) = [j for j in jobs if j.args["handler"] == "escalations.open_room"]
        assert opening.status == "succeeded" and opening.attempts == 1
        adopted = await h.hub.audit.tail(10, action="escalations.room_adopted")
        assert [e.details["room"] for e in adopted] == (
            [room.id] if step == "channel_created" else []
        )
        invited = await h.hub.audit.tail(10, action="escalations.invited")
        assert len(invited) == 1
        assert (await h.hub.audit.verify()).ok


async def test_the_tier2_on_call_group_is_invited_when_configured(tmp_path: Path) -> None:
    overrides = {**OVERRIDES, "workflows.escalations": {"tier2_lead": "S0T2ONCALL"}}
    async with running_hub(tmp_path, workflows=[workflow], overrides=overrides) as h:
        ts = await h.act.post_message("priya", "support", ACME)
        await h.act.add_reaction("priya", "support", ts, "rotating_light")
        await h.settle()
        (room,) = rooms(h)
        lena, dan = h.sandbox.user("lena").id, h.sandbox.user("dan").id
        assert {PRIYA, MARCUS, dan, lena, SOFIA} <= set(room.members)
