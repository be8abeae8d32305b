"""The Rollback button and ``/deploy`` through the hub and the sandbox: tampered and
stale buttons, second-person approval, failed rollbacks and deploy locks. The rollback
executor is the signed generic POST, received by a fake endpoint on loopback that
verifies the signature."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from controlroom.testing import HubHarness
from controlroom.workflows.deploys.messages import ROLLBACK_ACTION_ID
from controlroom.workflows.deploys.rollback import APPROVE_ACTION_ID

from .conftest import serve
from .fake_ci import FakeRollbackEndpoint
from .test_workflow import (
    ARGO_SECRET,
    POLICY,
    bot_messages,
    button,
    deploys_config,
    deploys_hub,
    generic,
    has_button,
    ledger,
    send_signed,
    thread_replies,
)

GRACE, OMAR, KENJI = "U0RELMGR01", "U0VPENG001", "U0ENG00003"
APPROVAL_POLICY = {
    "rules": [
        {
            "action": "deploys.rollback",
            "environments": ["production"],
            "usergroups": ["S0RELEASE1"],
            "approval": "second_person",
        }
    ]
}


@asynccontextmanager
async def world(
    tmp_path: Path, *, policy: dict[str, Any] | None = None, secret: str = "whsec-good"
) -> AsyncIterator[tuple[HubHarness, FakeRollbackEndpoint]]:
    endpoint = FakeRollbackEndpoint(secret="whsec-good")
    async with serve(endpoint.app()) as base:
        config = deploys_config()
        config["executors"] = {
            "checkout": {"type": "generic", "url": f"{base}/rollback", "secret": secret}
        }
        async with deploys_hub(tmp_path, config=config, policy=policy or POLICY) as h:
            yield h, endpoint


async def failed_checkout(h: HubHarness) -> dict[str, Any]:
    """v1.4.1 deployed, then v1.4.2 failed: returns the failed deploy's message."""
    await send_signed(h, "argo", ARGO_SECRET, generic("succeeded", "v1.4.1", "r1"))
    await h.settle()
    await send_signed(h, "argo", ARGO_SECRET, generic("failed", "v1.4.2", "r2"))
    await h.settle()
    [failed] = [m for m in bot_messages(h) if m["text"].startswith("Deploy FAILED")]
    return failed


def latest(h: HubHarness, ts: str) -> dict[str, Any]:
    return h.sandbox.state.replies("deploys", ts)[0]


def last_ephemeral(h: HubHarness, user: str) -> str:
    return str(h.sandbox.state.ephemerals(user)[-1]["text"])


async def test_tampered_button_values_are_refused_and_audited(tmp_path: Path) -> None:
    async with world(tmp_path) as (h, endpoint):
        failed = await failed_checkout(h)
        good = next(d for d in await ledger(h).recent("checkout") if d.version == "v1.4.1")
        for value in ("not-a-reference", "999:1", f"{good.id}:{good.id}"):
            await h.act.click_button("grace", "deploys", failed["ts"], ROLLBACK_ACTION_ID, value)
            await h.settle()
            assert last_ephemeral(h, "grace") == (
                ":no_entry: This Rollback button is not valid; nothing was done."
            )
        # omar is not in #deploys (chat.postEphemeral refuses): told through response_url
        await h.act.click_button("omar", "deploys", failed["ts"], ROLLBACK_ACTION_ID, "7:x")
        await h.settle()
        assert last_ephemeral(h, "omar").startswith(":no_entry: This Rollback button")
        ephemeral_calls = [c for c in h.sandbox.state.calls if c.method == "chat.postEphemeral"]
        assert ephemeral_calls[-1].error == "user_not_in_channel"
        rejected = await h.hub.audit.tail(10, action="deploys.rollback.click", outcome="rejected")
        assert [e.actor for e in rejected] == [GRACE] * 3 + [OMAR]
        assert {e.details["reason"] for e in rejected} == {
            "the value is not a rollback reference",
            "no deployment 999",
            f"deployment {good.id} is not the one in the clicked message",
        }
        assert endpoint.requests == []
        assert has_button(latest(h, failed["ts"]))
        # nobody was asked the policy: a forged button never reaches authorisation
        assert await h.hub.audit.tail(10, action="deploys.rollback") == []


async def test_an_outdated_button_is_refused(tmp_path: Path) -> None:
    async with world(tmp_path) as (h, endpoint):
        failed = await failed_checkout(h)
        good = next(d for d in await ledger(h).recent("checkout") if d.version == "v1.4.1")
        await ledger(h).mark_suspect(good.id)
        await h.act.click_button("grace", "deploys", failed["ts"], ROLLBACK_ACTION_ID)
        await h.settle()
        assert last_ephemeral(h, "grace").startswith(
            ":information_source: v1.4.1 is no longer the last good version of checkout"
        )
        assert endpoint.requests == []


async def test_a_rollback_needing_approval_waits_for_a_second_authorised_person(
    tmp_path: Path,
) -> None:
    async with world(tmp_path, policy=APPROVAL_POLICY) as (h, endpoint):
        failed = await failed_checkout(h)
        await h.act.click_button("grace", "deploys", failed["ts"], ROLLBACK_ACTION_ID)
        await h.settle()
        assert last_ephemeral(h, "grace").startswith(
            ":hourglass_flowing_sand: A second authorised person must approve"
        )
        request = thread_replies(h, failed["ts"])[-1]
        assert request["text"].startswith(f":raising_hand: <@{GRACE}> asks to roll back")
        assert button(request, APPROVE_ACTION_ID)["text"]["text"] == "Approve rollback"
        assert endpoint.requests == []

        # the requester cannot approve, nor can someone the policy does not allow
        await h.act.click_button("grace", "deploys", request["ts"], APPROVE_ACTION_ID)
        await h.settle()
        await h.act.click_button("kenji", "deploys", request["ts"], APPROVE_ACTION_ID)
        await h.settle()
        assert "cannot approve their own request" in last_ephemeral(h, "grace")
        assert last_ephemeral(h, "kenji").startswith(":no_entry: You cannot approve")
        assert endpoint.requests == []

        # omar (a release manager) approves: the rollback runs once, as grace's
        await h.act.click_button("omar", "deploys", request["ts"], APPROVE_ACTION_ID)
        await h.settle()
        [sent] = endpoint.requests
        assert sent.json["to"]["version"] == "v1.4.1"
        assert sent.json["requested_by"] == GRACE
        final = latest(h, failed["ts"])
        assert final["text"] == "Rolled back: checkout in production to v1.4.1"
        approval = h.sandbox.state.replies("deploys", failed["ts"])[1]
        assert approval["ts"] == request["ts"]
        assert approval["text"].endswith(f"approved by <@{OMAR}>.")
        assert not has_button(approval, APPROVE_ACTION_ID)

        approvals = await h.hub.audit.tail(10, action="deploys.rollback")
        assert [(e.actor, e.outcome) for e in approvals] == [
            (GRACE, "needs_approval"),
            (GRACE, "approval_denied"),
            (KENJI, "approval_denied"),
            (OMAR, "approved"),
        ]
        [started] = await h.hub.audit.tail(5, action="deploys.rollback.start")
        assert (started.actor, started.details["approved_by"]) == (GRACE, OMAR)
        assert (await h.hub.audit.verify()).ok


async def test_a_rejected_rollback_says_so_loudly(tmp_path: Path) -> None:
    async with world(tmp_path, secret="whsec-wrong") as (h, endpoint):
        failed = await failed_checkout(h)
        await h.act.click_button("grace", "deploys", failed["ts"], ROLLBACK_ACTION_ID)
        await h.settle()
        assert len(endpoint.requests) == 1  # refused (bad signature), and not retried
        final = latest(h, failed["ts"])
        assert final["text"] == (
            "ROLLBACK FAILED: checkout in production to v1.4.1 "
            "(rollback endpoint answered 401: bad signature)"
        )
        outcome = thread_replies(h, failed["ts"])[-1]
        assert outcome["text"].startswith(":rotating_light: *Rollback of checkout")
        assert outcome.get("subtype") == "thread_broadcast"
        [done] = await h.hub.audit.tail(5, action="deploys.rollback.outcome")
        assert done.outcome == "failed"
        # the button is gone: a failed rollback is not offered again from Slack
        assert not has_button(final)


async def test_deploy_commands_lock_unlock_and_show_status(tmp_path: Path) -> None:
    async with world(tmp_path) as (h, _):
        failed = await failed_checkout(h)
        await h.act.run_command("kenji", "deploys", "/deploy", "lock checkout production")
        await h.settle()
        assert last_ephemeral(h, "kenji").startswith(
            ":no_entry: You are not allowed to lock checkout in production."
        )
        [denied] = await h.hub.audit.tail(5, action="deploys.lock")
        assert (denied.actor, denied.outcome) == (KENJI, "denied")
        assert await ledger(h).current_lock("checkout", "production") is None

        await h.act.run_command("grace", "deploys", "/deploy", "lock checkout production")
        await h.settle()
        await h.act.run_command("omar", "deploys", "/deploy", "lock checkout production")
        await h.settle()
        assert last_ephemeral(h, "omar") == (
            ":lock: checkout in production is already locked by <@U0RELMGR01>."
        )
        assert ":lock: *production is locked*" in json.dumps(latest(h, failed["ts"])["blocks"])

        await h.act.run_command("grace", "deploys", "/deploy", "status checkout")
        await h.settle()
        status = h.sandbox.state.ephemerals("grace")[-1]
        assert status["text"].startswith("2 recent deploys of checkout; latest v1.4.2")
        assert "production is locked" in json.dumps(status["blocks"])

        await h.act.run_command("grace", "deploys", "/deploy", "unlock checkout production")
        await h.settle()
        assert last_ephemeral(h, "grace") == ":unlock: Unlocked checkout in production."
        assert "locked" not in latest(h, failed["ts"])["text"]
        changes = await h.hub.audit.tail(10, action="deploys.lock.*")
        assert [(e.action, e.actor, e.outcome) for e in changes] == [
            ("deploys.lock.acquire", GRACE, "locked"),
            ("deploys.lock.acquire", OMAR, "already_locked"),
            ("deploys.lock.release", GRACE, "unlocked"),
        ]

        await h.act.run_command("grace", "deploys", "/deploy", "rollback everything")
        await h.settle()
        assert last_ephemeral(h, "grace").startswith("*/deploy* commands:")
