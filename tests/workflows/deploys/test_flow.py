"""The domain modules composed as the handlers will compose them: a real webhook body
through sources, the ledger and the message, then rollback clicks against a fake GitHub
on loopback. Exactly one rollback request reaches GitHub, however the clicks race and
even when the job's first worker dies before sending."""

from __future__ import annotations

import asyncio
import json
from typing import Any

from controlroom.config import Secret
from controlroom.workflows.deploys.executors import (
    GitHubRollback,
    GitHubRollbackConfig,
    HttpPolicy,
    RollbackResult,
)
from controlroom.workflows.deploys.ledger import DeployLedger
from controlroom.workflows.deploys.messages import (
    ROLLBACK_ACTION_ID,
    decode_rollback_value,
    deployment_message,
)
from controlroom.workflows.deploys.sources import (
    DeployRoute,
    normalise_request,
    resolve_route,
)

from .conftest import load, serve
from .fake_ci import FakeGitHub

ROUTES = [
    DeployRoute.model_validate(
        {
            "match": {"provider": "github", "repository": "acme/*", "workflow": "deploy"},
            "environment": "production",
            "channel": "C-DEPLOYS",
            "rollback": "github-checkout",
        }
    )
]


def workflow_run(run_id: int, sha: str, conclusion: str | None) -> bytes:
    """The real workflow_run fixture, re-pointed at acme/checkout's deploy workflow."""
    payload: dict[str, Any] = load("github/examples/workflow_run/completed.payload.json")
    payload["repository"]["full_name"] = "acme/checkout"
    payload["repository"]["html_url"] = "https://github.com/acme/checkout"
    payload["workflow"]["name"] = "deploy"
    run = payload["workflow_run"]
    run.update(id=run_id, head_sha=sha, conclusion=conclusion)
    run["status"] = "completed" if conclusion else "in_progress"
    run["html_url"] = f"https://github.com/acme/checkout/actions/runs/{run_id}"
    return json.dumps(payload).encode()


async def receive(ledger: DeployLedger, body: bytes, delivery: str) -> Any:
    headers = {"X-GitHub-Event": "workflow_run", "X-GitHub-Delivery": delivery}
    event = normalise_request("github", headers, body).event
    assert event is not None
    route = resolve_route(ROUTES, event)
    assert route is not None
    return await ledger.upsert_from_event(event, route)


async def click(
    ledger: DeployLedger,
    executor: GitHubRollback,
    value: str,
    user: str,
    job_key: str,
    die_before_send: bool = False,
) -> str:
    """What the rollback job does after authorisation: re-read, guard, send once."""
    ref = decode_rollback_value(value)
    assert ref is not None
    dep = await ledger.get(ref.deployment_id)
    target = await ledger.get(ref.target_id)
    assert dep is not None and target is not None
    current = await ledger.last_good(dep.service, dep.environment, before=dep)
    if current is None or current.id != target.id or not dep.needs_attention:
        return "stale"
    if not await ledger.begin_rollback(dep.id, by=user, target_id=target.id, job_key=job_key):
        return "already"
    if die_before_send:
        return "died"
    if not await ledger.claim_send(dep.id, job_key=job_key):
        return "unknown"
    fresh = await ledger.get(dep.id)
    assert fresh is not None
    result: RollbackResult = await executor.rollback(fresh, target)
    await ledger.finish_rollback(dep.id, ok=result.ok, url=result.url, detail=result.detail)
    return "sent"


async def test_failed_deploy_to_one_rollback_request(ledger: DeployLedger) -> None:
    good_sha = "1" * 40
    bad_sha = "2" * 40
    await receive(ledger, workflow_run(501, good_sha, "success"), "d-1")
    started = await receive(ledger, workflow_run(502, bad_sha, None), "d-2")
    assert started.created
    failed = await receive(ledger, workflow_run(502, bad_sha, "failure"), "d-3")
    assert failed.changed and not failed.created
    duplicate = await receive(ledger, workflow_run(502, bad_sha, "failure"), "d-3")
    assert duplicate.duplicate
    dep = failed.deployment
    assert (dep.service, dep.environment, dep.status, dep.version) == (
        "checkout",
        "production",
        "failed",
        "2222222",
    )
    target = await ledger.last_good("checkout", "production", before=dep)
    assert target is not None and target.version == "1111111"

    message = deployment_message(dep, target=target, user_lookup={}.get)
    button = next(
        e
        for b in message.blocks
        if b["type"] == "actions"
        for e in b["elements"]
        if e["action_id"] == ROLLBACK_ACTION_ID
    )
    assert button["text"]["text"] == "Rollback to 1111111"

    fake = FakeGitHub(repositories={"acme/checkout": {"rollback.yml": {"version", "environment"}}})
    async with serve(fake.app()) as base:
        config = GitHubRollbackConfig(
            token=Secret("ghs_good"),
            workflow="rollback.yml",
            inputs={"version": "{commit}", "environment": "{environment}"},
            api_url=base,
        )
        executor = GitHubRollback(config, policy=HttpPolicy(timeout=5.0))
        # The first job's worker dies after winning; a concurrent click loses; the
        # first job is run again by the queue and sends the one request.
        died = await click(ledger, executor, button["value"], "U0ALICE", "job-1", True)
        outcomes = await asyncio.gather(
            click(ledger, executor, button["value"], "U0BOB", "job-2"),
            click(ledger, executor, button["value"], "U0ALICE", "job-1"),
        )
        again = await click(ledger, executor, button["value"], "U0ALICE", "job-1")
    assert died == "died"
    assert sorted(outcomes) == ["already", "sent"]
    assert again == "already"  # the job ran once more after finishing: nothing to do
    assert len(fake.requests) == 1
    assert fake.requests[0].json["inputs"] == {"version": good_sha, "environment": "production"}

    final = await ledger.get(dep.id)
    assert final is not None
    assert (final.rollback_state, final.rollback_by) == ("rolled_back", "U0ALICE")
    done = deployment_message(final, target=target)
    assert done.text == "Rolled back: checkout in production to 1111111"
    assert "https://github.com/acme/checkout/actions/runs/7001" in json.dumps(done.blocks)
    assert not any(b["type"] == "actions" for b in done.blocks)


async def test_a_click_on_an_outdated_button_is_refused(ledger: DeployLedger) -> None:
    await receive(ledger, workflow_run(601, "a" * 40, "success"), "e-1")
    failed = (await receive(ledger, workflow_run(602, "b" * 40, "failure"), "e-2")).deployment
    target = await ledger.last_good("checkout", "production", before=failed)
    assert target is not None
    value = f"{failed.id}:{target.id}"
    await ledger.mark_suspect(target.id)  # the target itself became suspect meanwhile
    executor = GitHubRollback(
        GitHubRollbackConfig(token=Secret("x"), workflow="r.yml", api_url="http://127.0.0.1:9")
    )
    assert await click(ledger, executor, value, "U0ALICE", "job-9") == "stale"
    stored = await ledger.get(failed.id)
    assert stored is not None and stored.rollback_state is None
