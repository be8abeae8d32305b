"""Deploys end to end: a failed deploy webhook from GitHub reaches the hub, the sandbox
shows the living message with its Rollback button, people click it, and a fake GitHub
API on loopback (which checks the token as GitHub does) receives exactly one
``workflow_dispatch``, however the clicks race and even when a worker dies mid-way."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import os
import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest

from controlroom.serving import bound_port, serve_asgi
from controlroom.testing import HubHarness, running_hub
from controlroom.workflows.deploys.ledger import DeployLedger
from controlroom.workflows.deploys.messages import ROLLBACK_ACTION_ID
from controlroom.workflows.deploys.support import DeploysRuntime
from controlroom.workflows.deploys.workflow import workflow
from tests.workflows.deploys.fake_ci import FakeGitHub

FIXTURE = (
    Path(__file__).resolve().parents[1]
    / "fixtures/ci/github/examples/workflow_run/completed.payload.json"
)
HOOK_SECRET = "gh-hook-secret"
GOOD_SHA = "1" * 40
BAD_SHA = "2" * 40
GRACE, OMAR, KENJI = "U0RELMGR01", "U0VPENG001", "U0ENG00003"


def workflow_run(run_id: int, sha: str, conclusion: str | None) -> bytes:
    """The real workflow_run fixture, re-pointed at acme/checkout's deploy workflow."""
    payload: dict[str, Any] = json.loads(FIXTURE.read_text(encoding="utf-8"))
    payload["repository"]["full_name"] = "acme/checkout"
    payload["repository"]["html_url"] = "https://github.com/acme/checkout"
    payload["workflow"]["name"] = "deploy"
    run = payload["workflow_run"]
    run.update(id=run_id, head_sha=sha, conclusion=conclusion)
    run["status"] = "completed" if conclusion else "in_progress"
    run["html_url"] = f"https://github.com/acme/checkout/actions/runs/{run_id}"
    return json.dumps(payload).encode()


PG_ADMIN_URL = os.environ.get(
    "CONTROLROOM_TEST_PG_URL", "postgresql://postgres@127.0.0.1:5432/postgres"
)


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def database_url(request: pytest.FixtureRequest) -> Iterator[str | None]:
    """``None`` (the embedded SQLite default) or a fresh PostgreSQL database."""
    if request.param == "sqlite":
        yield None
        return
    name = f"cr_deploys_e2e_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(PG_ADMIN_URL, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    try:
        yield PG_ADMIN_URL.rsplit("/", 1)[0] + "/" + name
    finally:
        with psycopg.connect(PG_ADMIN_URL, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@asynccontextmanager
async def deploys_world(
    tmp_path: Path, database_url: str | None = None
) -> AsyncIterator[tuple[HubHarness, FakeGitHub]]:
    fake = FakeGitHub(repositories={"acme/checkout": {"rollback.yml": {"version", "environment"}}})
    async with serve_asgi(fake.app(), "127.0.0.1", 0) as server:
        github_api = f"http://127.0.0.1:{bound_port(server)}"
        overrides = {
            "allow_plaintext_secrets": True,
            "hooks": {"github": {"provider": "github", "secret": HOOK_SECRET}},
            "workflows.deploys": {
                "routes": [
                    {
                        "match": {
                            "provider": "github",
                            "repository": "acme/*",
                            "workflow": "deploy",
                            "event": "workflow_run.*",
                        },
                        "environment": "production",
                        "channel": "C0DEPLOYS1",
                        "rollback": "github-checkout",
                    }
                ],
                "executors": {
                    "github-checkout": {
                        "type": "github",
                        "token": "ghs_good",
                        "workflow": "rollback.yml",
                        "inputs": {"version": "{commit}", "environment": "{environment}"},
                        "api_url": github_api,
                    }
                },
            },
            "policy": {
                "rules": [
                    {
                        "action": "deploys.rollback",
                        "environments": ["production"],
                        "usergroups": ["S0RELEASE1"],
                    },
                    {"action": "deploys.lock", "usergroups": ["S0RELEASE1"]},
                ]
            },
        }
        async with running_hub(
            tmp_path, workflows=[workflow], overrides=overrides, database_url=database_url
        ) as h:
            yield h, fake


async def send(h: HubHarness, body: bytes) -> None:
    signature = hmac.new(HOOK_SECRET.encode(), body, hashlib.sha256).hexdigest()
    async with httpx.AsyncClient() as client:
        resp = await client.post(
            f"{h.hub_url}/hooks/github",
            content=body,
            headers={
                "Content-Type": "application/json",
                "X-GitHub-Event": "workflow_run",
                "X-GitHub-Delivery": str(uuid.uuid4()),
                "X-Hub-Signature-256": f"sha256={signature}",
            },
        )
    assert resp.status_code == 202


async def failed_deploy(h: HubHarness, good_run: int = 501, bad_run: int = 502) -> str:
    """A good deploy, then a failed one; returns the failed one's message ts."""
    await send(h, workflow_run(good_run, GOOD_SHA, "success"))
    await h.settle()
    await send(h, workflow_run(bad_run, BAD_SHA, None))
    await h.settle()
    await send(h, workflow_run(bad_run, BAD_SHA, "failure"))
    await h.settle()
    [message] = [m for m in messages(h) if "2222222" in m["text"]]
    assert message["text"].startswith("Deploy FAILED: checkout 2222222 in production")
    return str(message["ts"])


def messages(h: HubHarness) -> list[dict[str, Any]]:
    """The bot's top-level messages (not thread broadcasts)."""
    return [
        m
        for m in h.sandbox.state.messages("deploys")
        if m.get("bot_id") and m.get("subtype") != "thread_broadcast"
    ]


def message(h: HubHarness, ts: str) -> dict[str, Any]:
    return h.sandbox.state.replies("deploys", ts)[0]


def has_rollback_button(msg: dict[str, Any]) -> bool:
    return any(
        element.get("action_id") == ROLLBACK_ACTION_ID
        for block in msg.get("blocks", [])
        if block.get("type") == "actions"
        for element in block.get("elements", [])
    )


def runtime(h: HubHarness) -> DeploysRuntime:
    rt = h.hub.services["deploys"]["runtime"]
    assert isinstance(rt, DeploysRuntime)
    return rt


def fail_once(point: str, h: HubHarness, hits: list[str]) -> None:
    """Simulate a worker dying at ``point`` the first time a job gets there."""

    async def die() -> None:
        hits.append(point)
        if hits.count(point) == 1:
            raise RuntimeError(f"worker killed at {point}")

    runtime(h).faults[point] = die


async def test_failed_deploy_unauthorised_click_then_racing_clicks_roll_back_exactly_once(
    tmp_path: Path, database_url: str | None
) -> None:
    async with deploys_world(tmp_path, database_url) as (h, fake):
        ts = await failed_deploy(h)
        assert has_rollback_button(message(h, ts))

        # kenji (an engineer, not a release manager) is refused, privately, and audited
        await h.act.click_button("kenji", "deploys", ts, ROLLBACK_ACTION_ID)
        await h.settle()
        [refusal] = h.sandbox.state.ephemerals("kenji")
        assert refusal["text"].startswith(":no_entry: You are not allowed to roll back checkout")
        [denied] = await h.hub.audit.tail(5, action="deploys.rollback", actor=KENJI)
        assert denied.outcome == "denied"
        assert has_rollback_button(message(h, ts))
        assert fake.requests == []

        # grace and omar click at once; the worker that wins dies right after starting
        # the rollback, and the rollback job's first run dies before sending
        hits: list[str] = []
        fail_once("after_begin_rollback", h, hits)
        fail_once("before_send", h, hits)
        await asyncio.gather(
            h.act.click_button("grace", "deploys", ts, ROLLBACK_ACTION_ID),
            h.act.click_button("omar", "deploys", ts, ROLLBACK_ACTION_ID),
        )
        await h.settle(within=30)

        assert hits == ["after_begin_rollback"] * 2 + ["before_send"] * 2
        assert len(fake.requests) == 1
        [request] = fake.requests
        assert request.path == "/repos/acme/checkout/actions/workflows/rollback.yml/dispatches"
        assert request.headers["authorization"] == "Bearer ghs_good"
        assert request.json["inputs"] == {"version": GOOD_SHA, "environment": "production"}

        ledger: DeployLedger = runtime(h).ledger
        [dep] = [d for d in await ledger.recent("checkout") if d.version == "2222222"]
        assert dep.rollback_state == "rolled_back"
        assert dep.rollback_by in (GRACE, OMAR)
        loser = "omar" if dep.rollback_by == GRACE else "grace"

        final = message(h, ts)
        assert final["text"] == "Rolled back: checkout in production to 1111111"
        assert not has_rollback_button(final)
        blocks = json.dumps(final["blocks"])
        assert f"by <@{dep.rollback_by}>" in blocks
        assert "https://github.com/acme/checkout/actions/runs/7001" in blocks
        # on the way, the message said "Rolling back… by @user"
        updates = await h.hub.audit.tail(50, action="deploys.notify", outcome="updated")
        assert "rolling_back" in [u.details["rollback_state"] for u in updates]
        outcome = h.sandbox.state.replies("deploys", ts)[-1]
        assert outcome["text"].startswith(":leftwards_arrow_with_hook: Rolled back checkout")
        [told] = h.sandbox.state.ephemerals(loser)
        assert "already started by" in told["text"]

        starts = await h.hub.audit.tail(10, action="deploys.rollback.start")
        # the winner started it, died, and its retry resumed it; the loser was told
        assert [(e.actor, e.outcome) for e in starts if e.outcome != "already"] == [
            (dep.rollback_by, "started"),
            (dep.rollback_by, "resumed"),
        ]
        [call] = await h.hub.audit.tail(10, action="deploys.rollback.call")
        [done] = await h.hub.audit.tail(10, action="deploys.rollback.outcome")
        assert (call.outcome, done.outcome) == ("sent", "succeeded")
        clicks = await h.hub.audit.tail(10, action="deploys.rollback.click", outcome="received")
        assert {e.actor for e in clicks} == {KENJI, GRACE, OMAR}
        verified = await h.hub.audit.verify()
        assert verified.ok, verified.reason


async def test_a_locked_environment_refuses_rollback(tmp_path: Path) -> None:
    async with deploys_world(tmp_path) as (h, fake):
        ts = await failed_deploy(h)
        await h.act.run_command(
            "grace", "deploys", "/deploy", "lock checkout production DB migration"
        )
        await h.settle()
        [locked] = h.sandbox.state.ephemerals("grace")
        assert locked["text"].startswith(":lock: Locked checkout in production: DB migration")
        assert "production is locked" in message(h, ts)["text"]

        await h.act.click_button("grace", "deploys", ts, ROLLBACK_ACTION_ID)
        await h.settle()
        refusal = h.sandbox.state.ephemerals("grace")[-1]
        assert refusal["text"] == (
            ":lock: Rollback refused: checkout in production is locked by <@U0RELMGR01>: "
            "DB migration."
        )
        assert fake.requests == []
        [refused] = await h.hub.audit.tail(
            5, action="deploys.rollback.click", outcome="refused_locked"
        )
        assert refused.actor == GRACE
        [lock] = await h.hub.audit.tail(5, action="deploys.lock.acquire")
        assert (lock.actor, lock.outcome) == (GRACE, "locked")

        await h.act.run_command("grace", "deploys", "/deploy", "unlock checkout production")
        await h.settle()
        await h.act.click_button("grace", "deploys", ts, ROLLBACK_ACTION_ID)
        await h.settle()
        assert len(fake.requests) == 1
        assert (await h.hub.audit.verify()).ok
