"""The intake routes over ASGI with a real SqliteQueue: verify, parse, commit, then answer;
duplicates answered and not run again; every refusal a 4xx with a reason and no job."""

from __future__ import annotations

import asyncio
import hashlib
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import httpx
import pytest
from prometheus_client import CollectorRegistry
from starlette.applications import Starlette

from controlroom.config import Settings
from controlroom.edge.http import SLACK_PATHS, EdgeMetrics, edge_routes
from controlroom.edge.replay import MemoryReplayCache
from controlroom.envelope import Envelope
from controlroom.queue.sqlite import SqliteQueue

from .conftest import (
    GENERIC_OLD_SECRET,
    GENERIC_SECRET,
    GITHUB_OLD_SECRET,
    GITHUB_SECRET,
    GITLAB_TOKEN,
    JENKINS_SECRET,
    NOW,
    Edge,
    edge_app,
    fixture_bytes,
    hook_headers,
    slack_headers,
)

FORM = "application/x-www-form-urlencoded"
MENTION = fixture_bytes("slack/events/test_app.app_mention_event_body.json")
COMMAND = fixture_bytes("slack/events/test_slash_command.slash_command_body.txt")
VIEW = urlencode(
    {"payload": fixture_bytes("slack/events/test_view_submission.body.json").decode()}
).encode()


def github_headers(body: bytes, secret: str = GITHUB_SECRET, **extra: str) -> dict[str, str]:
    import hmac

    digest = hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()
    headers = {
        "Content-Type": "application/json",
        "X-Hub-Signature-256": f"sha256={digest}",
        "X-GitHub-Event": "workflow_run",
        "X-GitHub-Delivery": "72d3162e-cc78-11e3-81ab-4c9367dc0958",
    }
    headers.update(extra)
    return headers


# -- Slack ----------------------------------------------------------------------------


async def test_event_is_committed_before_the_200_is_sent(edge: Edge) -> None:
    response = await edge.client.post(
        "/slack/events", content=MENTION, headers=slack_headers(MENTION)
    )
    assert (response.status_code, response.content) == (200, b"")
    [env] = await edge.envelopes()
    assert (env.kind, env.dedupe_key, env.team_id, env.transport) == (
        "event",
        "Ev111",
        "T111",
        "http",
    )
    assert env.body == json.loads(MENTION)
    assert env.received_at == NOW
    assert edge.metric("controlroom_edge_requests_total", source="slack", outcome="accepted") == 1
    assert edge.metric("controlroom_edge_ack_seconds_count", source="slack") == 1


async def test_slack_retry_of_the_same_event_is_answered_200_and_dispatched_once(
    edge: Edge,
) -> None:
    first = await edge.client.post("/slack/events", content=MENTION, headers=slack_headers(MENTION))
    retry = await edge.client.post(
        "/slack/events",
        content=MENTION,
        headers=slack_headers(
            MENTION,
            ts=NOW + 61,
            **{"X-Slack-Retry-Num": "1", "X-Slack-Retry-Reason": "http_timeout"},
        ),
    )
    assert (first.status_code, retry.status_code) == (200, 200)
    jobs = await edge.dispatch_jobs()
    assert len(jobs) == 1
    [env] = await edge.envelopes()
    assert env.retry_num == 0
    assert edge.metric("controlroom_edge_requests_total", source="slack", outcome="duplicate") == 1


async def test_first_delivery_seen_as_a_retry_records_its_retry_number(edge: Edge) -> None:
    headers = slack_headers(MENTION, **{"X-Slack-Retry-Num": "2"})
    assert (
        await edge.client.post("/slack/events", content=MENTION, headers=headers)
    ).status_code == 200
    [env] = await edge.envelopes()
    assert env.retry_num == 2


@pytest.mark.parametrize("path", SLACK_PATHS)
async def test_every_slack_path_accepts_every_kind_of_body(edge: Edge, path: str) -> None:
    response = await edge.client.post(
        path, content=COMMAND, headers=slack_headers(COMMAND, content_type=FORM)
    )
    assert response.status_code == 200
    [env] = await edge.envelopes()
    assert env.kind == "command"


async def test_url_verification_is_answered_with_the_challenge_and_not_enqueued(edge: Edge) -> None:
    body = fixture_bytes("slack/events/url_verification.json")
    response = await edge.client.post("/slack/events", content=body, headers=slack_headers(body))
    assert response.status_code == 200
    assert response.json() == {"challenge": "3eZbrw1aBm2rZgRNFdxV2595E9CY3gmdALWMmHkvFXO7tYXAYM8P"}
    assert await edge.dispatch_jobs() == []


async def test_url_verification_must_be_signed_too(edge: Edge) -> None:
    body = fixture_bytes("slack/events/url_verification.json")
    response = await edge.client.post(
        "/slack/events", content=body, headers={"Content-Type": "application/json"}
    )
    assert response.status_code == 401
    assert "challenge" not in response.text


async def test_ssl_check_and_app_rate_limited_are_answered_200_without_a_job(edge: Edge) -> None:
    ssl = b"ssl_check=1&token=x"
    limited = json.dumps(
        {"type": "app_rate_limited", "team_id": "T1", "minute_rate_limited": 1}
    ).encode()
    r1 = await edge.client.post(
        "/slack/commands", content=ssl, headers=slack_headers(ssl, content_type=FORM)
    )
    r2 = await edge.client.post("/slack/events", content=limited, headers=slack_headers(limited))
    assert (r1.status_code, r2.status_code) == (200, 200)
    assert await edge.dispatch_jobs() == []
    assert edge.metric("controlroom_edge_requests_total", source="slack", outcome="control") == 2


async def test_slash_command_inline_answer_is_the_response_body_and_runs_after_commit(
    edge: Edge,
) -> None:
    committed: list[Envelope | None] = []

    async def reply(env: Envelope) -> dict[str, Any]:
        committed.append(await edge.queue.get_envelope(env.id))
        return {"response_type": "ephemeral", "text": "On it"}

    edge.inline.handlers["command"] = reply
    response = await edge.client.post(
        "/slack/commands", content=COMMAND, headers=slack_headers(COMMAND, content_type=FORM)
    )
    assert response.status_code == 200
    assert response.json() == {"response_type": "ephemeral", "text": "On it"}
    assert committed and committed[0] is not None
    assert committed[0].dedupe_key == "command:111.111.xxx"
    assert edge.metric("controlroom_edge_inline_total", outcome="ok") == 1


async def test_view_submission_errors_are_answered_inline(edge: Edge) -> None:
    async def validate(env: Envelope) -> dict[str, Any]:
        return {"response_action": "errors", "errors": {"hspI": "Too short"}}

    edge.inline.handlers["view_submission"] = validate
    response = await edge.client.post(
        "/slack/interactivity", content=VIEW, headers=slack_headers(VIEW, content_type=FORM)
    )
    assert response.json() == {"response_action": "errors", "errors": {"hspI": "Too short"}}
    [env] = await edge.envelopes()
    assert env.kind == "view_submission"


async def test_inline_handler_over_budget_is_abandoned_and_answered_empty(edge: Edge) -> None:
    async def slow(env: Envelope) -> dict[str, Any]:
        await asyncio.sleep(30)
        return {"text": "too late"}

    edge.inline.handlers["command"] = slow
    response = await edge.client.post(
        "/slack/commands", content=COMMAND, headers=slack_headers(COMMAND, content_type=FORM)
    )
    assert (response.status_code, response.content) == (200, b"")
    assert len(await edge.envelopes()) == 1
    assert edge.metric("controlroom_edge_inline_total", outcome="timeout") == 1


async def test_failing_inline_handler_is_answered_empty_and_the_envelope_kept(edge: Edge) -> None:
    async def broken(env: Envelope) -> dict[str, Any]:
        raise RuntimeError("boom")

    edge.inline.handlers["command"] = broken
    response = await edge.client.post(
        "/slack/commands", content=COMMAND, headers=slack_headers(COMMAND, content_type=FORM)
    )
    assert (response.status_code, response.content) == (200, b"")
    assert len(await edge.envelopes()) == 1
    assert edge.metric("controlroom_edge_inline_total", outcome="error") == 1


async def test_inline_handler_does_not_run_again_for_a_duplicate(edge: Edge) -> None:
    async def reply(env: Envelope) -> dict[str, Any]:
        return {"text": "hi"}

    edge.inline.handlers["command"] = reply
    for ts in (NOW, NOW + 1):
        headers = slack_headers(COMMAND, ts=ts, content_type=FORM)
        assert (
            await edge.client.post("/slack/commands", content=COMMAND, headers=headers)
        ).status_code == 200
    assert len(edge.inline.ran) == 1
    assert len(await edge.dispatch_jobs()) == 1


# -- webhooks -------------------------------------------------------------------------

WORKFLOW_RUN = fixture_bytes("ci/github-workflow_run.completed.json")


async def test_github_delivery_is_committed_then_answered_202(edge: Edge) -> None:
    response = await edge.client.post(
        "/hooks/gh", content=WORKFLOW_RUN, headers=github_headers(WORKFLOW_RUN)
    )
    assert response.status_code == 202
    [env] = await edge.envelopes()
    assert response.json() == {"envelope_id": env.id, "duplicate": False}
    assert (env.kind, env.source, env.provider_event) == ("webhook", "hook:gh", "workflow_run")
    assert env.dedupe_key == "hook:gh:72d3162e-cc78-11e3-81ab-4c9367dc0958"
    assert env.body == json.loads(WORKFLOW_RUN)


async def test_github_redelivery_is_answered_202_and_not_run_again(edge: Edge) -> None:
    first = await edge.client.post(
        "/hooks/gh", content=WORKFLOW_RUN, headers=github_headers(WORKFLOW_RUN)
    )
    again = await edge.client.post(
        "/hooks/gh",
        content=WORKFLOW_RUN,
        headers=github_headers(WORKFLOW_RUN, secret=GITHUB_OLD_SECRET),
    )
    assert (first.status_code, again.status_code) == (202, 202)
    assert again.json() == {"envelope_id": first.json()["envelope_id"], "duplicate": True}
    assert len(await edge.dispatch_jobs()) == 1


async def test_gitlab_delivery_dedupes_on_idempotency_key(edge: Edge) -> None:
    body = fixture_bytes("ci/gitlab-pipeline_hook.json")
    headers = {
        "Content-Type": "application/json",
        "X-Gitlab-Token": GITLAB_TOKEN,
        "X-Gitlab-Event": "Pipeline Hook",
        "X-Gitlab-Event-UUID": "13792a34-cac6-4fda-95a8-c58e00a3954e",
        "Idempotency-Key": "f5e5f430-f57b-4e6e-9fac-d9128cd7232f",
    }
    assert (await edge.client.post("/hooks/gl", content=body, headers=headers)).status_code == 202
    [env] = await edge.envelopes()
    assert (env.provider_event, env.dedupe_key) == (
        "Pipeline Hook",
        "hook:gl:f5e5f430-f57b-4e6e-9fac-d9128cd7232f",
    )


async def test_jenkins_notification_takes_its_event_from_the_build_phase(edge: Edge) -> None:
    body = fixture_bytes("ci/jenkins-notification.completed.json")
    headers = hook_headers(
        JENKINS_SECRET, body, **{"Content-Type": "application/json;charset=UTF-8"}
    )
    assert (await edge.client.post("/hooks/ci", content=body, headers=headers)).status_code == 202
    [env] = await edge.envelopes()
    assert (env.source, env.provider_event) == ("hook:ci", "COMPLETED")
    assert env.dedupe_key == "hook:ci:sha256:" + hashlib.sha256(body).hexdigest()


async def test_generic_hook_with_the_previous_secret_and_an_event_field(edge: Edge) -> None:
    body = json.dumps({"event": "ticket.escalated", "id": 7}).encode()
    headers = hook_headers(GENERIC_OLD_SECRET, body, **{"Idempotency-Key": "tick-7"})
    assert (await edge.client.post("/hooks/crm", content=body, headers=headers)).status_code == 202
    [env] = await edge.envelopes()
    assert (env.provider_event, env.dedupe_key) == ("ticket.escalated", "hook:crm:tick-7")


# -- refusals -------------------------------------------------------------------------

BIG = b'{"type":"event_callback","pad":"' + b"x" * 70_000 + b'"}'
GENERIC = b'{"event":"x"}'


def _cases() -> list[tuple[str, str, bytes, dict[str, str], int, str]]:
    """(name, path, body, headers, status, reason)"""
    sig = slack_headers(MENTION)
    return [
        (
            "unsigned",
            "/slack/events",
            MENTION,
            {"Content-Type": "application/json"},
            401,
            "missing X-Slack-Signature header",
        ),
        (
            "bad signature",
            "/slack/events",
            MENTION,
            {**sig, "X-Slack-Signature": "v0=" + "1" * 64},
            401,
            "signature mismatch",
        ),
        ("body changed", "/slack/events", MENTION + b" ", sig, 401, "signature mismatch"),
        (
            "stale",
            "/slack/events",
            MENTION,
            slack_headers(MENTION, ts=NOW - 301),
            401,
            "stale request",
        ),
        (
            "future",
            "/slack/events",
            MENTION,
            slack_headers(MENTION, ts=NOW + 301),
            401,
            "timestamp is more than 300 seconds in the future",
        ),
        (
            "timestamp text",
            "/slack/events",
            MENTION,
            {**sig, "X-Slack-Request-Timestamp": "soon"},
            400,
            "X-Slack-Request-Timestamp is not a unix timestamp",
        ),
        (
            "too large",
            "/slack/events",
            BIG,
            slack_headers(BIG),
            413,
            "body larger than 65536 bytes",
        ),
        (
            "content type",
            "/slack/events",
            MENTION,
            slack_headers(MENTION, content_type="text/plain"),
            415,
            "unsupported content type",
        ),
        ("not json", "/slack/events", b"{", slack_headers(b"{"), 400, "body is not valid JSON"),
        (
            "unknown type",
            "/slack/events",
            b'{"type":"x"}',
            slack_headers(b'{"type":"x"}'),
            400,
            "unsupported Slack payload type",
        ),
        (
            "unknown hook",
            "/hooks/nope",
            GENERIC,
            hook_headers(GENERIC_SECRET, GENERIC),
            404,
            "unknown webhook source",
        ),
        (
            "hook unsigned",
            "/hooks/crm",
            GENERIC,
            {"Content-Type": "application/json"},
            401,
            "missing X-ControlRoom-Signature header",
        ),
        (
            "hook wrong secret",
            "/hooks/crm",
            GENERIC,
            hook_headers(JENKINS_SECRET, GENERIC),
            401,
            "signature mismatch",
        ),
        (
            "hook stale",
            "/hooks/crm",
            GENERIC,
            hook_headers(GENERIC_SECRET, GENERIC, ts=NOW - 400),
            401,
            "stale request",
        ),
        (
            "hook not json",
            "/hooks/crm",
            GENERIC,
            {**hook_headers(GENERIC_SECRET, GENERIC), "Content-Type": "text/plain"},
            415,
            "webhook body must be JSON",
        ),
        (
            "hook array",
            "/hooks/crm",
            b"[]",
            hook_headers(GENERIC_SECRET, b"[]"),
            400,
            "body must be a JSON object",
        ),
        (
            "github no event",
            "/hooks/gh",
            GENERIC,
            github_headers(GENERIC, **{"X-GitHub-Event": ""}),
            400,
            "missing X-GitHub-Event header",
        ),
        (
            "github bad delivery",
            "/hooks/gh",
            GENERIC,
            github_headers(GENERIC, **{"X-GitHub-Delivery": "a b"}),
            400,
            "malformed X-GitHub-Delivery header",
        ),
        (
            "gitlab bad token",
            "/hooks/gl",
            GENERIC,
            {"Content-Type": "application/json", "X-Gitlab-Token": "guess"},
            401,
            "token mismatch",
        ),
        (
            "hook too large",
            "/hooks/crm",
            b"{" + b" " * 300_000 + b"}",
            {"Content-Type": "application/json"},
            413,
            "body larger than 262144 bytes",
        ),
        (
            "bad length",
            "/hooks/crm",
            GENERIC,
            {**hook_headers(GENERIC_SECRET, GENERIC), "Content-Length": "12x"},
            400,
            "invalid Content-Length header",
        ),
    ]


@pytest.mark.parametrize(
    ("path", "body", "headers", "status", "reason"),
    [case[1:] for case in _cases()],
    ids=[case[0] for case in _cases()],
)
async def test_bad_input_gets_a_4xx_with_its_reason_and_no_job(
    edge: Edge, path: str, body: bytes, headers: dict[str, str], status: int, reason: str
) -> None:
    response = await edge.client.post(path, content=body, headers=headers)
    assert response.status_code == status
    assert response.text == reason or response.text.startswith(reason)
    assert response.headers["content-type"].startswith("text/plain")
    assert "\n" not in response.text
    assert await edge.dispatch_jobs() == []
    source = path.removeprefix("/hooks/") if path.startswith("/hooks/") else "slack"
    label = (
        "slack" if source == "slack" else (f"hook:{source}" if source != "nope" else "hook:unknown")
    )
    assert edge.metric("controlroom_edge_requests_total", source=label, outcome="rejected") == 1


async def test_a_replayed_slack_request_is_refused(edge: Edge) -> None:
    headers = slack_headers(MENTION)
    assert (
        await edge.client.post("/slack/events", content=MENTION, headers=headers)
    ).status_code == 200
    replay = await edge.client.post("/slack/events", content=MENTION, headers=headers)
    assert (replay.status_code, replay.text) == (401, "replayed request: signature already used")
    assert edge.metric("controlroom_edge_rejections_total", source="slack", reason="replay") == 1


async def test_an_oversized_streamed_body_is_refused_without_reading_it_all(edge: Edge) -> None:
    sent: list[int] = []

    async def chunks() -> AsyncIterator[bytes]:
        for _ in range(100):
            sent.append(1)
            yield b"x" * 8192

    response = await edge.client.post(
        "/slack/events",
        content=chunks(),
        headers=slack_headers(b"", content_type="application/json"),
    )
    assert response.status_code == 413
    assert len(sent) < 100
    assert await edge.dispatch_jobs() == []


async def test_a_signed_but_unacceptable_slack_body_asks_slack_not_to_retry(edge: Edge) -> None:
    body = b'{"type":"x"}'
    response = await edge.client.post("/slack/events", content=body, headers=slack_headers(body))
    assert response.status_code == 400
    assert response.headers["x-slack-no-retry"] == "1"


async def test_other_methods_are_refused(edge: Edge) -> None:
    assert (await edge.client.get("/slack/events")).status_code == 405
    assert (await edge.client.get("/hooks/gh")).status_code == 405


async def test_slack_intake_without_a_signing_secret_is_refused(queue: SqliteQueue) -> None:
    app = Starlette(
        routes=edge_routes(
            Settings(),
            queue,
            replay=MemoryReplayCache(),
            inline=None,
            metrics=EdgeMetrics(CollectorRegistry()),
        )
    )
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="http://e"
    ) as client:
        response = await client.post(
            "/slack/events", content=MENTION, headers=slack_headers(MENTION)
        )
    assert (response.status_code, response.text) == (404, "Slack HTTP intake is not configured")


async def test_an_unreachable_queue_is_a_503_so_that_slack_retries(tmp_path: Path) -> None:
    queue = SqliteQueue(tmp_path / "q.db")
    await queue.open()
    await queue.close()  # accept() on a closed queue fails
    app = edge_app(queue)
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="http://e"
    ) as client:
        response = await client.post(
            "/slack/events", content=MENTION, headers=slack_headers(MENTION)
        )
    assert (response.status_code, response.text) == (503, "queue unavailable, retry later")
    assert "x-slack-no-retry" not in response.headers


async def test_replicas_sharing_the_sql_replay_cache_refuse_each_others_replays(
    tmp_path: Path, queue: SqliteQueue
) -> None:
    from controlroom.edge.replay import SqlReplayCache
    from controlroom.store.db import Database

    db = Database(f"sqlite:///{tmp_path / 'hub.db'}")
    try:
        clients = []
        for _ in range(2):
            app = edge_app(queue, replay=SqlReplayCache(db))
            clients.append(
                httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://e")
            )
        headers = slack_headers(MENTION)
        first = await clients[0].post("/slack/events", content=MENTION, headers=headers)
        replayed = await clients[1].post("/slack/events", content=MENTION, headers=headers)
        for client in clients:
            await client.aclose()
    finally:
        db.dispose()
    assert (first.status_code, replayed.status_code) == (200, 401)
    assert replayed.text == "replayed request: signature already used"


async def test_github_ping_is_accepted_as_a_ping_event(edge: Edge) -> None:
    body = fixture_bytes("ci/github-ping.json")
    headers = github_headers(body, **{"X-GitHub-Event": "ping", "X-GitHub-Delivery": "ping-1"})
    assert (await edge.client.post("/hooks/gh", content=body, headers=headers)).status_code == 202
    [env] = await edge.envelopes()
    assert (env.provider_event, env.dedupe_key) == ("ping", "hook:gh:ping-1")


async def test_a_body_sent_in_several_chunks_is_joined_before_it_is_verified(edge: Edge) -> None:
    async def chunks() -> AsyncIterator[bytes]:
        for start in range(0, len(MENTION), 97):
            yield MENTION[start : start + 97]

    response = await edge.client.post(
        "/slack/events", content=chunks(), headers=slack_headers(MENTION)
    )
    assert response.status_code == 200
    [env] = await edge.envelopes()
    assert env.body == json.loads(MENTION)


async def test_a_client_gone_before_its_body_ends_is_refused_and_nothing_is_stored(
    queue: SqliteQueue, clock: Any
) -> None:
    app = edge_app(queue, clock=clock)
    incoming = [
        {"type": "http.request", "body": MENTION[:50], "more_body": True},
        {"type": "http.disconnect"},
    ]
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return incoming.pop(0)

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    scope = {
        "type": "http",
        "method": "POST",
        "path": "/slack/events",
        "headers": [(k.lower().encode(), v.encode()) for k, v in slack_headers(MENTION).items()],
        "query_string": b"",
    }
    await app(scope, receive, send)
    assert sent[0]["status"] == 400
    assert sent[1]["body"] == b"client disconnected"
    assert await queue.list_jobs(limit=10) == []
