"""The deploys workflow through the hub: real CI payloads POSTed to ``/hooks/<source>``
with the providers' real signatures, recorded in the ledger and shown in the sandbox as
one living message per deployment, updated in place, with details in its thread."""

from __future__ import annotations

import hashlib
import hmac
import json
import time
import uuid
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
from pydantic import ValidationError

from controlroom.edge.signing import sign_hook
from controlroom.errors import ConfigError
from controlroom.testing import HubHarness, running_hub
from controlroom.workflows.deploys.ledger import DeployLedger, Deployment
from controlroom.workflows.deploys.messages import ROLLBACK_ACTION_ID
from controlroom.workflows.deploys.workflow import DeploysConfig, workflow

from .conftest import raw

GH_SECRET = "gh-hook-secret"
GL_TOKEN = "gl-hook-token"
JK_SECRET = "jenkins-hook-secret"
ARGO_SECRET = "argo-hook-secret"
DEPLOYS = "C0DEPLOYS1"
HOOKS = {
    "gh": {"provider": "github", "secret": GH_SECRET},
    "gl": {"provider": "gitlab", "secret": GL_TOKEN},
    "jk": {"provider": "jenkins", "secret": JK_SECRET},
    "argo": {"provider": "generic", "secret": ARGO_SECRET},
}
ROUTES: list[dict[str, Any]] = [
    {
        "match": {"provider": "github", "repository": "octo-org/*", "event": "workflow_run.*"},
        "environment": "staging",
        "channel": DEPLOYS,
    },
    {
        "match": {"provider": "gitlab", "event": "Deployment Hook"},
        "service": "test-deployment-webhooks",
        "channel": DEPLOYS,
    },
    {"match": {"provider": "jenkins"}, "environment": "production", "channel": DEPLOYS},
    {"match": {"provider": "generic"}, "channel": DEPLOYS, "rollback": "checkout"},
]
POLICY = {
    "rules": [
        {"action": "deploys.rollback", "environments": ["production"], "users": ["U0RELMGR01"]},
        {"action": "deploys.lock", "usergroups": ["S0RELEASE1"]},
    ]
}


def deploys_config(**extra: Any) -> dict[str, Any]:
    config: dict[str, Any] = {
        "routes": ROUTES,
        "executors": {
            "checkout": {
                "type": "generic",
                "url": "http://127.0.0.1:9/rollback",  # nothing listens: never called here
                "secret": "rollback-secret",
            }
        },
    }
    config.update(extra)
    return config


@asynccontextmanager
async def deploys_hub(
    tmp_path: Path,
    *,
    config: Mapping[str, Any] | None = None,
    policy: Mapping[str, Any] | None = None,
) -> AsyncIterator[HubHarness]:
    overrides = {
        "allow_plaintext_secrets": True,
        "hooks": HOOKS,
        "workflows.deploys": dict(config or deploys_config()),
        "policy": dict(policy or POLICY),
    }
    async with running_hub(tmp_path, workflows=[workflow], overrides=overrides) as h:
        yield h


# -- senders, signed as each provider signs -----------------------------------------------


async def post_hook(h: HubHarness, source: str, body: bytes, headers: dict[str, str]) -> int:
    async with httpx.AsyncClient() as client:
        resp = await client.post(
            f"{h.hub_url}/hooks/{source}",
            content=body,
            headers={"Content-Type": "application/json", **headers},
        )
    return resp.status_code


async def send_github(h: HubHarness, event: str, body: bytes, delivery: str = "") -> int:
    signature = hmac.new(GH_SECRET.encode(), body, hashlib.sha256).hexdigest()
    headers = {
        "X-GitHub-Event": event,
        "X-GitHub-Delivery": delivery or str(uuid.uuid4()),
        "X-Hub-Signature-256": f"sha256={signature}",
    }
    return await post_hook(h, "gh", body, headers)


async def send_gitlab(h: HubHarness, event: str, body: bytes, token: str = GL_TOKEN) -> int:
    headers = {"X-Gitlab-Event": event, "X-Gitlab-Token": token, "Idempotency-Key": uuid4()}
    return await post_hook(h, "gl", body, headers)


async def send_signed(h: HubHarness, source: str, secret: str, body: bytes) -> int:
    headers = {
        "X-ControlRoom-Signature": sign_hook(secret, body, int(time.time())),
        "Idempotency-Key": uuid4(),
    }
    return await post_hook(h, source, body, headers)


def uuid4() -> str:
    return str(uuid.uuid4())


def generic(status: str, version: str, run_id: str, **extra: Any) -> bytes:
    """The documented generic JSON format (what an Argo CD template sends)."""
    payload = {
        "service": "checkout",
        "environment": "production",
        "version": version,
        "status": status,
        "commit": {"sha": version.encode().hex()[:40], "url": f"https://git.example/c/{version}"},
        "author": "Grace Thompson <grace@northwind.example>",
        "url": f"https://argo.example/applications/checkout/{run_id}",
        "run_id": run_id,
        **extra,
    }
    return json.dumps(payload).encode()


# -- reading the results ------------------------------------------------------------------


def ledger(h: HubHarness) -> DeployLedger:
    found = h.hub.services["deploys"]["ledger"]
    assert isinstance(found, DeployLedger)
    return found


def bot_messages(h: HubHarness, channel: str = "deploys") -> list[dict[str, Any]]:
    return [m for m in h.sandbox.state.messages(channel) if m.get("bot_id")]


def thread_replies(h: HubHarness, ts: str, channel: str = "deploys") -> list[dict[str, Any]]:
    return h.sandbox.state.replies(channel, ts)[1:]


def button(message: Mapping[str, Any], action_id: str = ROLLBACK_ACTION_ID) -> dict[str, Any]:
    for block in message.get("blocks", []):
        for element in block.get("elements", []) if block.get("type") == "actions" else []:
            if element.get("action_id") == action_id:
                return dict(element)
    raise AssertionError(f"no {action_id} button in {message.get('text')!r}")


def has_button(message: Mapping[str, Any], action_id: str = ROLLBACK_ACTION_ID) -> bool:
    try:
        button(message, action_id)
    except AssertionError:
        return False
    return True


def ignored(h: HubHarness, provider: str, reason: str) -> float:
    value = h.hub.metrics.get_sample_value(
        "controlroom_deploys_ignored_total", {"provider": provider, "reason": reason}
    )
    return value or 0.0


async def only_deployment(h: HubHarness, service: str) -> Deployment:
    deployments = await ledger(h).recent(service)
    assert len(deployments) == 1, deployments
    return deployments[0]


# -- tests ----------------------------------------------------------------------------------


async def test_a_github_run_posts_one_message_and_updates_it_in_place(tmp_path: Path) -> None:
    async with deploys_hub(tmp_path) as h:
        requested = raw("github/examples/workflow_run/requested.payload.json")
        assert await send_github(h, "workflow_run", requested) == 202
        await h.settle()
        [first] = bot_messages(h)
        assert first["text"].startswith("Deploy queued: octo-repo 3484a3f in staging")

        completed = raw("github/examples/workflow_run/completed.payload.json")
        assert await send_github(h, "workflow_run", completed) == 202
        await h.settle()

        [message] = bot_messages(h)
        assert message["ts"] == first["ts"]
        assert message["text"].startswith("Deployed: octo-repo 3484a3f in staging")
        assert message.get("edited")
        [detail] = thread_replies(h, message["ts"])
        assert detail["text"].startswith("`workflow_run.completed` → *succeeded*")

        dep = await only_deployment(h, "octo-repo")
        assert (dep.status, dep.environment, dep.version) == ("succeeded", "staging", "3484a3f")
        assert (dep.channel, dep.message_ts) == (DEPLOYS, message["ts"])
        notes = await h.hub.audit.tail(10, action="deploys.notify")
        assert [n.outcome for n in notes] == ["posted", "updated", "thread"]
        assert {n.target for n in notes} == {f"deployment:{dep.id}"}


async def test_a_redelivered_github_event_changes_nothing(tmp_path: Path) -> None:
    async with deploys_hub(tmp_path) as h:
        completed = raw("github/examples/workflow_run/completed.payload.json")
        assert await send_github(h, "workflow_run", completed, delivery="d-1") == 202
        await h.settle()
        assert await send_github(h, "workflow_run", completed, delivery="d-1") == 202
        await h.settle()
        [message] = bot_messages(h)
        assert thread_replies(h, message["ts"]) == []
        assert len(await h.hub.audit.tail(10, action="deploys.notify")) == 1


async def test_a_badly_signed_webhook_is_refused_and_records_nothing(tmp_path: Path) -> None:
    async with deploys_hub(tmp_path) as h:
        body = raw("gitlab/deployment_hook.json")
        assert await send_gitlab(h, "Deployment Hook", body, token="wrong") == 401
        await h.settle()
        assert bot_messages(h) == []
        assert await ledger(h).recent("test-deployment-webhooks") == []


async def test_gitlab_and_jenkins_deployments_get_their_own_messages(tmp_path: Path) -> None:
    async with deploys_hub(tmp_path) as h:
        assert await send_gitlab(h, "Deployment Hook", raw("gitlab/deployment_hook.json")) == 202
        jenkins = raw("jenkins/notification-plugin.completed.json")
        assert await send_signed(h, "jk", JK_SECRET, jenkins) == 202
        await h.settle()
        texts = sorted(m["text"] for m in bot_messages(h))
        assert texts[0].startswith("Deployed: asgard c6d86dc in production")
        assert texts[1].startswith("Deployed: test-deployment-webhooks 279484c0 in staging")
        gitlab_dep = await only_deployment(h, "test-deployment-webhooks")
        jenkins_dep = await only_deployment(h, "asgard")
        assert gitlab_dep.provider == "gitlab" and gitlab_dep.run_url.endswith("/jobs/796")
        assert jenkins_dep.run_url == "http://localhost:8080/job/asgard/18/"


async def test_events_that_are_not_deploys_are_ignored_visibly(tmp_path: Path) -> None:
    async with deploys_hub(tmp_path) as h:
        assert await send_github(h, "ping", raw("github/examples/ping/payload.json")) == 202
        assert await send_github(h, "push", raw("github/examples/push/payload.json")) == 202
        # a job event of a repository no route covers
        job = raw("github/examples/workflow_job/in_progress.payload.json")
        assert await send_github(h, "workflow_job", job) == 202
        # a GitLab pipeline: the only GitLab route is for Deployment Hooks
        assert await send_gitlab(h, "Pipeline Hook", raw("gitlab/pipeline_hook.json")) == 202
        # a generic body without its required fields
        assert await send_signed(h, "argo", ARGO_SECRET, b'{"service": "checkout"}') == 202
        await h.settle()
        assert bot_messages(h) == []
        assert ignored(h, "github", "not_a_deploy") == 2
        assert ignored(h, "github", "no_route") == 1
        assert ignored(h, "gitlab", "no_route") == 1
        assert ignored(h, "generic", "malformed") == 1
        failed_jobs = await h.hub.queue.list_jobs(status="dead")
        assert failed_jobs == []


async def test_a_failed_deploy_is_loud_names_the_author_and_offers_the_last_good_version(
    tmp_path: Path,
) -> None:
    async with deploys_hub(tmp_path) as h:
        await send_signed(h, "argo", ARGO_SECRET, generic("succeeded", "v1.4.1", "r1"))
        await h.settle()
        await send_signed(h, "argo", ARGO_SECRET, generic("running", "v1.4.2", "r2"))
        await h.settle()
        failed = generic("failed", "v1.4.2", "r2", details={"failure_reason": "probe failed"})
        await send_signed(h, "argo", ARGO_SECRET, failed)
        await h.settle()

        good, bad = bot_messages(h)[:2]
        assert not has_button(good)
        assert bad["text"] == (
            "Deploy FAILED: checkout v1.4.2 in production by Grace Thompson. "
            "Rollback to v1.4.1 available"
        )
        assert "<@U0RELMGR01>" in json.dumps(bad["blocks"])  # the author, as a mention
        rollback = button(bad)
        assert rollback["style"] == "danger"
        assert rollback["text"]["text"] == "Rollback to v1.4.1"
        assert "confirm" in rollback
        # the failure is broadcast from the thread to the channel
        [detail] = thread_replies(h, bad["ts"])
        assert detail["text"].startswith(":rotating_light: *Deploy of checkout v1.4.2")
        assert detail.get("subtype") == "thread_broadcast"
        assert len(bot_messages(h)) == 3  # the two living messages and the broadcast


async def test_no_rollback_is_offered_without_an_executor_or_a_target(tmp_path: Path) -> None:
    config = deploys_config()
    config["routes"] = [{**ROUTES[3], "rollback": ""}]
    async with deploys_hub(tmp_path, config=config) as h:
        await send_signed(h, "argo", ARGO_SECRET, generic("failed", "v0.9.0", "first"))
        await send_signed(h, "argo", ARGO_SECRET, generic("failed", "v1", "r1", service="billing"))
        await h.settle()
        messages = bot_messages(h)
        assert len(messages) == 2
        assert not any(has_button(m) for m in messages)
        assert all("no rollback is offered" in json.dumps(m["blocks"]) for m in messages)


async def test_the_author_lookup_is_cached_in_state(tmp_path: Path) -> None:
    async with deploys_hub(tmp_path) as h:
        await send_signed(h, "argo", ARGO_SECRET, generic("running", "v2", "r9"))
        await h.settle()
        await send_signed(h, "argo", ARGO_SECRET, generic("succeeded", "v2", "r9"))
        await h.settle()
        lookups = [c for c in h.sandbox.state.calls if c.method == "users.lookupByEmail"]
        assert len(lookups) == 1


async def test_a_deployment_no_route_covers_goes_to_the_default_channel(tmp_path: Path) -> None:
    config = deploys_config(default_channel="C0RELEASES")
    async with deploys_hub(tmp_path, config=config) as h:
        status = raw("github/examples/deployment_status/payload.json")
        assert await send_github(h, "deployment_status", status) == 202
        await h.settle()
        [message] = bot_messages(h, "releases")
        assert message["text"].startswith("Deployed: Hello-World f95f852 in production")
        dep = await only_deployment(h, "Hello-World")
        assert (dep.channel, dep.rollback_executor) == ("C0RELEASES", "")


def test_a_route_naming_an_unknown_executor_is_a_configuration_error() -> None:
    raw_config = deploys_config()
    raw_config["routes"] = [{**ROUTES[3], "rollback": "nope"}]
    raw_config["rollback"] = {"billing/production": "missing"}
    with pytest.raises(ValidationError) as caught:
        DeploysConfig.model_validate(raw_config)
    assert "routes[0].rollback names unknown executor 'nope'" in str(caught.value)


async def test_an_invalid_executor_stops_the_hub_at_start_naming_the_key(tmp_path: Path) -> None:
    config = deploys_config()
    config["executors"] = {"checkout": {"type": "github", "workflow": "rollback.yml"}}
    with pytest.raises(ConfigError) as caught:
        async with deploys_hub(tmp_path, config=config):
            pass  # pragma: no cover
    assert [key for key, _, _ in caught.value.problems] == [
        "workflows.deploys.executors.checkout.github.token"
    ]


async def test_a_channel_the_bot_cannot_post_to_fails_the_job_at_once(tmp_path: Path) -> None:
    config = deploys_config()
    config["routes"] = [{**ROUTES[3], "channel": "C0ARCHIVED"}]  # no such channel
    async with deploys_hub(tmp_path, config=config) as h:
        await send_signed(h, "argo", ARGO_SECRET, generic("succeeded", "v3", "r3"))
        await h.settle()
        [dead] = await h.hub.queue.list_jobs(status="dead")
        assert dead.attempts == 1
        assert "cannot post deployment 1 to channel C0ARCHIVED: channel_not_found" in str(
            dead.last_error
        )
        [failed] = await h.hub.audit.tail(5, action="deploys.notify")
        assert (failed.outcome, failed.details["error"]) == ("failed", "channel_not_found")
