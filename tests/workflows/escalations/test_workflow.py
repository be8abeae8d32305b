"""The escalations workflow through the hub and the sandbox: configuration, who may
escalate where, ambiguous and unknown customers, a CRM that is down and comes back,
resolving and archiving, the shortcut and the slash command."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from controlroom.errors import ConfigError
from controlroom.testing import HubHarness, running_hub
from controlroom.workflows.escalations.config import EscalationsConfig
from controlroom.workflows.escalations.flow import Services
from controlroom.workflows.escalations.ledger import Escalation, Source, State
from controlroom.workflows.escalations.messages import (
    ACTION_NO_CUSTOMER,
    ACTION_PICK_CUSTOMER,
    ACTION_RESOLVE,
    ACTION_SET_CUSTOMER,
)
from controlroom.workflows.escalations.workflow import CALLBACK_ESCALATE, workflow

from ._fakes import FakeHubSpot, serve

PRIYA, MARCUS, SOFIA, DAN = "U0SUPPORT1", "U0T2LEAD01", "U0ACCTMGR1", "U0ENG00001"
POLICY = {"rules": [{"action": "escalations.open", "users": [PRIYA, MARCUS]}]}
YEAR = datetime.now(UTC).year

ACCOUNTS = """
accounts:
  - {id: ACC-1, name: Acme Corporation, aliases: [Acme], domains: [acme.example],
     tier: Enterprise, arr: 1250000, open_cases: 3, owner_email: sofia@northwind.example}
  - {id: ACC-2, name: Acme Widgets Ltd, aliases: [Acme], domains: [acmewidgets.example],
     tier: Growth, owner_email: nobody@elsewhere.example}
  - {id: ACC-3, name: Globex Corporation, aliases: [Globex], domains: [globex.example],
     tier: Business, owner_email: sofia@northwind.example}
"""


def settings_for(tmp_path: Path, **escalations: Any) -> dict[str, Any]:
    accounts = tmp_path / "accounts.yaml"
    accounts.write_text(ACCOUNTS, encoding="utf-8")
    cfg = {
        "tier2_lead": MARCUS,
        "crm": {"kind": "file", "path": str(accounts)},
        "archive_after": 0.05,
    }
    return {"workflows.escalations": {**cfg, **escalations}, "policy": POLICY}


@pytest.fixture
async def hub(tmp_path: Path) -> AsyncIterator[HubHarness]:
    async with running_hub(tmp_path, workflows=[workflow], overrides=settings_for(tmp_path)) as h:
        yield h


def rooms(h: HubHarness) -> list[Any]:
    return [c for c in h.sandbox.state.channels.values() if c.name.startswith("incident-")]


def blocks_text(message: dict[str, Any]) -> str:
    return json.dumps(message.get("blocks", []))


async def escalation(h: HubHarness, ts: str, channel: str = "C0SUPPORT1") -> Escalation:
    svc = h.hub.services["escalations"]["flow"]
    assert isinstance(svc, Services)
    esc = await svc.ledger.by_source(Source(h.sandbox.team_id, channel, ts))
    assert esc is not None
    return esc


async def escalate(h: HubHarness, text: str, user: str = "priya") -> str:
    ts = await h.act.post_message(user, "support", text)
    await h.act.add_reaction(user, "support", ts, "rotating_light")
    await h.settle()
    return str(ts)


# -- configuration -------------------------------------------------------------------------


def test_the_defaults_watch_support_for_rotating_light() -> None:
    cfg = EscalationsConfig()
    assert cfg.reactions == ("rotating_light",)
    assert cfg.channels == ("support",)
    assert cfg.room_name == "incident-{customer}-{yyyy}-{seq:03}"
    assert cfg.allows_channel("C0SUPPORT1", "support")
    assert not cfg.allows_channel("C0GENERAL1", "general")


def test_reaction_and_channel_spellings_are_normalised() -> None:
    cfg = EscalationsConfig.model_validate(
        {"reactions": ":sos:", "channels": ["#support", "C0VIPCUST1"], "tier2_lead": "S0T2ONCALL"}
    )
    assert cfg.reactions == ("sos",)
    assert cfg.channels == ("support", "C0VIPCUST1")
    assert cfg.lead_is_group


async def test_bad_configuration_names_every_key(tmp_path: Path) -> None:
    bad = {
        "workflows.escalations": {
            "reactions": [],
            "channels": ["Not A Channel!"],
            "room_name": "incident-{customer}",
            "tier2_lead": "marcus",
            "archive_after": -1,
            "resolve": {"order": ["channel", "horoscope"]},
        }
    }
    with pytest.raises(ConfigError) as caught:
        async with running_hub(tmp_path, workflows=[workflow], overrides=bad):
            pass
    keys = {key for key, _, _ in caught.value.problems}
    assert keys == {
        "workflows.escalations.reactions",
        "workflows.escalations.channels",
        "workflows.escalations.room_name",
        "workflows.escalations.tier2_lead",
        "workflows.escalations.archive_after",
        "workflows.escalations.resolve.order",
    }
    assert "must contain {seq}" in str(caught.value)


async def test_a_bad_crm_section_is_reported_with_its_key(tmp_path: Path) -> None:
    bad = {"workflows.escalations": {"crm": {"kind": "hubspot"}}}
    with pytest.raises(ConfigError) as caught:
        async with running_hub(tmp_path, workflows=[workflow], overrides=bad):
            pass
    assert [key for key, _, _ in caught.value.problems] == ["workflows.escalations.crm.token"]


def test_the_manifest_asks_for_what_the_flow_uses() -> None:
    assert set(workflow.scopes) >= {
        "reactions:read",
        "channels:history",
        "groups:write",
        "chat:write",
        "pins:write",
        "users:read",
        "users:read.email",
        "usergroups:read",
        "commands",
        "channels:read",
        "groups:read",
    }
    assert workflow.events == ("reaction_added",)
    assert set(workflow.commands) == {"/escalate"}
    assert workflow.shortcuts == {CALLBACK_ESCALATE: "Escalate"}
    assert workflow.interactivity


# -- who may escalate, where -----------------------------------------------------------------


async def test_a_user_the_policy_does_not_allow_is_told_why_and_no_room_opens(
    hub: HubHarness,
) -> None:
    ts = await hub.act.post_message("priya", "support", "Acme's checkout is failing")
    await hub.act.add_reaction("dan", "support", ts, "rotating_light")
    await hub.settle()
    assert rooms(hub) == []
    (told,) = hub.sandbox.state.ephemerals("dan")
    assert "not allowed to open escalations" in told["text"]
    assert "escalations.open" in told["text"]
    (denied,) = await hub.hub.audit.tail(5, action="escalations.open")
    assert (denied.actor, denied.outcome) == (DAN, "denied")
    assert (await hub.hub.audit.verify()).ok


async def test_other_reactions_and_other_channels_are_ignored(hub: HubHarness) -> None:
    ts = await hub.act.post_message("priya", "support", "Acme's checkout is failing")
    await hub.act.add_reaction("priya", "support", ts, "eyes")
    elsewhere = await hub.act.post_message("sofia", "proj-aurora", "Acme wants a demo")
    await hub.act.add_reaction("sofia", "proj-aurora", elsewhere, "rotating_light")
    await hub.settle()
    assert rooms(hub) == []
    assert hub.sandbox.state.ephemerals("sofia") == []
    assert await hub.hub.audit.tail(5, action="escalations.open") == []


# -- customers -------------------------------------------------------------------------------


async def test_an_ambiguous_customer_opens_the_room_and_asks_the_agent_to_pick(
    hub: HubHarness,
) -> None:
    ts = await escalate(hub, "Acme says the export is broken again")
    (room,) = rooms(hub)
    assert room.name == f"incident-unknown-{YEAR}-001"
    assert SOFIA not in room.members
    (briefing,) = hub.sandbox.state.messages(room.id)
    assert "Several customers match (Acme Corporation, Acme Widgets Ltd)" in blocks_text(briefing)

    (picker,) = hub.sandbox.state.ephemerals("priya")
    options = picker["blocks"][0]["accessory"]["options"]
    esc = await escalation(hub, ts)
    assert [o["value"] for o in options] == [f"{esc.id}|ACC-1", f"{esc.id}|ACC-2"]

    await hub.act.select_option(
        "priya", "support", picker["ts"], ACTION_PICK_CUSTOMER, options[0]["value"]
    )
    await hub.settle()
    assert SOFIA in hub.sandbox.channel(room.id).members
    (briefing,) = hub.sandbox.state.messages(room.id)
    card = blocks_text(briefing)
    assert "Acme Corporation" in card and "chosen by the agent" in card
    assert f"<@{SOFIA}>" in card
    assert (await escalation(hub, ts)).customer_name == "Acme Corporation"
    assert [e.actor for e in await hub.hub.audit.tail(5, action="escalations.customer_set")] == [
        PRIYA
    ]
    (done,) = hub.sandbox.state.ephemerals("priya")
    assert done["text"] == "Customer set to Acme Corporation."


async def test_none_of_these_dismisses_the_picker(hub: HubHarness) -> None:
    await escalate(hub, "Acme says the export is broken again")
    (picker,) = hub.sandbox.state.ephemerals("priya")
    await hub.act.click_button("priya", "support", picker["ts"], ACTION_NO_CUSTOMER)
    await hub.settle()
    assert hub.sandbox.state.ephemerals("priya") == []
    assert len(await hub.hub.audit.tail(5, action="escalations.customer_none")) == 1


async def test_an_unknown_customer_opens_the_room_with_a_set_customer_button(
    hub: HubHarness,
) -> None:
    ts = await escalate(hub, "checkout is broken for everyone since the deploy")
    (room,) = rooms(hub)
    assert room.name == f"incident-unknown-{YEAR}-001"
    (briefing,) = hub.sandbox.state.messages(room.id)
    assert "Customer unknown" in blocks_text(briefing)
    assert ACTION_SET_CUSTOMER in blocks_text(briefing)
    assert hub.sandbox.state.ephemerals("priya") == []

    await hub.act.click_button("priya", room.id, briefing["ts"], ACTION_SET_CUSTOMER)
    (modal,) = hub.act.open_views("priya")
    rejected = await hub.act.submit_view("priya", modal["id"], {"customer": {"query": "acme"}})
    assert "Several match" in rejected.body["errors"]["customer"]
    accepted = await hub.act.submit_view("priya", modal["id"], {"customer": {"query": "globex"}})
    assert accepted.body == {"response_action": "clear"}
    await hub.settle()
    (briefing,) = hub.sandbox.state.messages(room.id)
    assert "Globex Corporation" in blocks_text(briefing)
    assert ACTION_SET_CUSTOMER not in blocks_text(briefing)
    assert SOFIA in hub.sandbox.channel(room.id).members
    assert (await escalation(hub, ts)).customer_name == "Globex Corporation"


@pytest.fixture
async def hubspot() -> AsyncIterator[tuple[FakeHubSpot, str]]:
    fake = FakeHubSpot()
    async with serve(fake.app()) as url:
        yield fake, url


async def test_a_crm_that_is_down_still_opens_the_room_and_the_briefing_follows_later(
    tmp_path: Path, hubspot: tuple[FakeHubSpot, str]
) -> None:
    fake, url = hubspot
    fake.fail = [503, 503]
    crm = {
        "kind": "hubspot",
        "token": fake.token,
        "base_url": url,
        "attempts": 1,
        "tier_property": "tier",
    }
    overrides = {
        "allow_plaintext_secrets": True,
        "workflows.escalations": {"crm": crm, "crm_retry_interval": 0.05, "tier2_lead": MARCUS},
        "policy": POLICY,
    }
    async with running_hub(tmp_path, workflows=[workflow], overrides=overrides) as h:
        ts = await h.act.post_message(
            "priya", "support", "Checkout fails, jane@acme.example says payments spin"
        )
        await h.act.add_reaction("priya", "support", ts, "rotating_light")
        await h.settle()
        (room,) = rooms(h)
        assert room.name == f"incident-unknown-{YEAR}-001"
        assert {PRIYA, MARCUS} <= set(room.members)
        (briefing,) = h.sandbox.state.messages(room.id)
        card = blocks_text(briefing)
        assert "Acme Corporation" in card and "Enterprise" in card
        assert "CRM unavailable" not in card
        # the account manager is not in the workspace: listed, not fatal
        assert "dana.whitfield@controlroom.example (not in this workspace)" in card
        assert fake.fail == []
        assert len(fake.searches) == 1
        retries = await h.hub.audit.tail(10, action="escalations.crm_retry")
        assert [e.outcome for e in retries] == ["unavailable"]
        assert len(await h.hub.audit.tail(10, action="escalations.crm_recovered")) == 1
        esc = await escalation(h, ts)
        assert esc.state == State.DONE and not esc.crm_pending
        assert esc.customer_name == "Acme Corporation"


async def test_the_briefing_says_the_crm_is_unavailable_until_it_answers(
    tmp_path: Path, hubspot: tuple[FakeHubSpot, str]
) -> None:
    fake, url = hubspot
    fake.fail = [503] * 10
    crm = {"kind": "hubspot", "token": fake.token, "base_url": url, "attempts": 1}
    overrides = {
        "allow_plaintext_secrets": True,
        "workflows.escalations": {"crm": crm, "crm_retry_interval": 0.05, "crm_retry_limit": 2},
        "policy": POLICY,
    }
    async with running_hub(tmp_path, workflows=[workflow], overrides=overrides) as h:
        ts = await escalate(h, "Checkout fails, jane@acme.example says payments spin")
        (room,) = rooms(h)
        (briefing,) = h.sandbox.state.messages(room.id)
        assert "CRM unavailable" in blocks_text(briefing)
        assert ACTION_SET_CUSTOMER in blocks_text(briefing)
        retries = await h.hub.audit.tail(10, action="escalations.crm_retry")
        assert [e.details["again"] for e in retries] == [True, False]
        assert (await escalation(h, ts)).crm_pending


# -- resolving -------------------------------------------------------------------------------


async def test_resolve_posts_a_summary_in_the_thread_and_archives_the_room_later(
    tmp_path: Path,
) -> None:
    overrides = settings_for(tmp_path, archive_after=0.2)
    async with running_hub(tmp_path, workflows=[workflow], overrides=overrides) as h:
        ts = await escalate(h, "Checkout failing, jane@acme.example says")
        (room,) = rooms(h)
        assert room.name == f"incident-acme-{YEAR}-001"
        (briefing,) = h.sandbox.state.messages(room.id)
        await h.act.click_button("marcus", room.id, briefing["ts"], ACTION_RESOLVE)
        await h.settle()
        summary = h.sandbox.state.replies("support", ts)[-1]
        assert summary["text"].startswith(
            f"Incident for Acme Corporation resolved by <@{MARCUS}> after"
        )
        assert h.sandbox.channel(room.id).is_archived
        esc = await escalation(h, ts)
        assert esc.state == State.ARCHIVED and esc.resolved_by == MARCUS
        assert esc.summary_ts == summary["ts"]
        steps = [e.action for e in await h.hub.audit.tail(20, action="escalations.*")]
        assert steps[-3:] == [
            "escalations.resolved",
            "escalations.archive_scheduled",
            "escalations.archived",
        ]


async def test_a_second_resolve_is_refused_with_who_resolved(hub: HubHarness) -> None:
    await escalate(hub, "Checkout failing, jane@acme.example says")
    (room,) = rooms(hub)
    (briefing,) = hub.sandbox.state.messages(room.id)
    await hub.act.click_button("marcus", room.id, briefing["ts"], ACTION_RESOLVE)
    await hub.settle()
    await hub.act.click_button("priya", room.id, briefing["ts"], ACTION_RESOLVE)
    await hub.settle()
    told = hub.sandbox.state.ephemerals("priya")
    assert told[-1]["text"] == f"This incident is already resolved by <@{MARCUS}>."


async def test_a_tampered_resolve_value_is_rejected(hub: HubHarness) -> None:
    await escalate(hub, "Checkout failing, jane@acme.example says")
    await escalate(hub, "Globex dashboards are down")
    first, second = sorted(rooms(hub), key=lambda c: c.name)
    (briefing,) = hub.sandbox.state.messages(first.id)
    other = await hub.hub.services["escalations"]["flow"].ledger.by_room(
        hub.sandbox.team_id, second.id
    )
    await hub.act.click_button(
        "priya", first.id, briefing["ts"], ACTION_RESOLVE, value=str(other.id)
    )
    await hub.settle()
    assert not hub.sandbox.channel(second.id).is_archived
    assert (await hub.hub.services["escalations"]["flow"].ledger.get(other.id)).state == State.DONE
    assert hub.sandbox.state.ephemerals("priya")[-1]["text"] == (
        "This button does not belong to this room."
    )


# -- other ways in ---------------------------------------------------------------------------


async def test_the_message_shortcut_escalates_a_thread_reply(hub: HubHarness) -> None:
    root = await hub.act.post_message("sofia", "support", "Globex renewal call notes")
    reply = await hub.act.post_message(
        "sofia", "support", "Globex now reports login failures", thread_ts=root
    )
    await hub.act.message_shortcut("priya", "support", reply, CALLBACK_ESCALATE)
    await hub.settle()
    (room,) = rooms(hub)
    assert room.name == f"incident-globex-{YEAR}-001"
    assert {PRIYA, SOFIA, MARCUS} <= set(room.members)
    (briefing,) = hub.sandbox.state.messages(room.id)
    assert "Globex now reports login failures" in blocks_text(briefing)
    assert f"?thread_ts={root}" in blocks_text(briefing)
    pointer = hub.sandbox.state.replies("support", root)[-1]
    assert pointer["text"] == f"Escalated to <#{room.id}> by <@{PRIYA}>"


async def test_escalate_command_takes_a_permalink_or_a_description(hub: HubHarness) -> None:
    ts = await hub.act.post_message("sofia", "support", "Globex dashboards are down")
    link = f"{hub.sandbox.public_url}/archives/C0SUPPORT1/p{ts.replace('.', '')}"
    await hub.act.run_command("priya", "support", "/escalate", f"<{link}>")
    await hub.act.run_command(
        "priya", "support", "/escalate", "<!channel> jane@acme.example gets 500s"
    )
    await hub.act.run_command("priya", "support", "/escalate", "")
    await hub.settle()
    told = [m["text"] for m in hub.sandbox.state.ephemerals("priya")]
    assert any(t.startswith("Usage: `/escalate <link to a message>`") for t in told)
    names = sorted(c.name.rsplit("-", 1) for c in rooms(hub))
    assert [n[0] for n in names] == [f"incident-acme-{YEAR}", f"incident-globex-{YEAR}"]
    assert sorted(n[1] for n in names) == ["001", "002"]
    posted = hub.sandbox.state.messages("support")[-1]
    assert posted["text"] == f"<@{PRIYA}> escalated: @\u200bchannel jane@acme.example gets 500s"
    acme = next(c for c in rooms(hub) if c.name.startswith("incident-acme"))
    (briefing,) = hub.sandbox.state.messages(acme.id)
    assert f"*Original message* from <@{PRIYA}>" in blocks_text(briefing)


async def test_two_agents_reacting_at_once_get_one_room(hub: HubHarness) -> None:
    ts = await hub.act.post_message("dan", "support", "jane@acme.example: checkout is down")
    await hub.act.add_reaction("priya", "support", ts, "rotating_light")
    await hub.act.add_reaction("marcus", "support", ts, "rotating_light")
    await hub.settle()
    (room,) = rooms(hub)
    esc = await escalation(hub, ts)
    assert esc.escalated_by in (PRIYA, MARCUS)
    replies = [m["text"] for m in hub.sandbox.state.replies("support", ts)[1:]]
    assert len(replies) == 2
    assert f"Escalated to <#{room.id}> by <@{esc.escalated_by}>" in replies
    assert any(r.startswith(("Already escalated", "This message is already")) for r in replies)
    # the author is internal (an engineer), so they are in the room too
    assert {esc.escalated_by, MARCUS, DAN, SOFIA} <= set(room.members)


async def test_a_room_name_someone_took_by_hand_gets_a_suffix(hub: HubHarness) -> None:
    await hub.act.create_channel("marcus", f"incident-acme-{YEAR}-001")
    ts = await escalate(hub, "Checkout failing, jane@acme.example says")
    esc = await escalation(hub, ts)
    assert esc.room_name == f"incident-acme-{YEAR}-001-2"
    room = hub.sandbox.channel(esc.room_channel_id or "")
    assert room.is_private and room.name == esc.room_name
    (renamed,) = await hub.hub.audit.tail(5, action="escalations.room_renamed")
    assert renamed.details["clash"] == f"incident-acme-{YEAR}-001"


async def test_channels_can_be_allowed_by_id(tmp_path: Path) -> None:
    overrides = settings_for(tmp_path, channels=["C0AURORA01"])
    async with running_hub(tmp_path, workflows=[workflow], overrides=overrides) as h:
        await escalate(h, "jane@acme.example: checkout is down")
        assert rooms(h) == []
        ts = await h.act.post_message("sofia", "proj-aurora", "Globex cannot log in")
        await h.act.add_reaction("sofia", "proj-aurora", ts, "rotating_light")
        await h.settle()
        assert rooms(h) == []  # sofia is not allowed by the policy
        await h.act.join_channel("priya", "proj-aurora")
        await h.act.add_reaction("priya", "proj-aurora", ts, "rotating_light")
        await h.settle()
        (room,) = rooms(h)
        assert room.name == f"incident-globex-{YEAR}-001"


async def test_escalate_command_with_a_link_to_nothing_says_so(hub: HubHarness) -> None:
    link = f"{hub.sandbox.public_url}/archives/C0SUPPORT1/p1700000000000100"
    await hub.act.run_command("priya", "support", "/escalate", link)
    await hub.act.run_command("priya", "random", "/escalate", "the printer is on fire")
    await hub.settle()
    assert rooms(hub) == []
    told = {m["text"] for m in hub.sandbox.state.ephemerals("priya")}
    assert told == {
        "I cannot find (or cannot read) that message.",
        "Run `/escalate <text>` in a support channel.",
    }
    assert await hub.hub.audit.tail(5, action="escalations.requested") == []


async def test_someone_outside_the_room_cannot_resolve_it(hub: HubHarness) -> None:
    ts = await escalate(hub, "Checkout failing, jane@acme.example says")
    (room,) = rooms(hub)
    assert DAN not in room.members
    (briefing,) = hub.sandbox.state.messages(room.id)
    await hub.act.click_button("dan", room.id, briefing["ts"], ACTION_RESOLVE)
    await hub.settle()
    assert (await escalation(hub, ts)).state == State.DONE
    assert hub.sandbox.state.ephemerals("dan")[-1]["text"] == (
        "Only people in this room can resolve it."
    )
    (decision,) = await hub.hub.audit.tail(5, action="escalations.resolve", outcome="denied")
    assert decision.actor == DAN and decision.details["kind"] == "authorization"
    (refusal,) = await hub.hub.audit.tail(5, action="escalations.resolve_rejected")
    assert (refusal.actor, refusal.outcome) == (DAN, "denied")


async def test_the_sweeper_resumes_a_flow_whose_job_died_for_good(tmp_path: Path) -> None:
    overrides = {**settings_for(tmp_path, sweep_after=0.001), "queue.max_attempts": 1}
    async with running_hub(tmp_path, workflows=[workflow], overrides=overrides) as h:
        svc = h.hub.services["escalations"]["flow"]
        failures: list[str] = []

        async def slack_is_down(step: str) -> None:
            if step == "invited" and not failures:
                failures.append(step)
                raise RuntimeError("Slack is down")

        svc.after_step = slack_is_down
        ts = await escalate(h, "Checkout failing, jane@acme.example says")
        (room,) = rooms(h)
        assert (await escalation(h, ts)).state == State.CHANNEL_CREATED
        dead = await h.hub.queue.list_jobs(task="run_task", status="dead")
        assert [j.args["handler"] for j in dead] == ["escalations.open_room"]

        await h.hub.queue.enqueue("run_schedule", {"handler": "escalations.sweep", "tick": 1.0})
        await h.settle()
        assert rooms(h) == [room]
        esc = await escalation(h, ts)
        assert esc.state == State.DONE and esc.room_channel_id == room.id
        assert {PRIYA, MARCUS, SOFIA} <= set(h.sandbox.channel(room.id).members)
        assert len(h.sandbox.state.messages(room.id)) == 1
        (resumed,) = await h.hub.audit.tail(5, action="escalations.resumed")
        assert resumed.details["state"] == "channel_created"
