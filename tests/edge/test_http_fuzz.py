"""Fuzzing the intake routes: random paths, headers, bodies and content types never make
the edge fail with a 5xx or an exception, and nothing is enqueued unless correctly signed."""

from __future__ import annotations

import hashlib
import hmac
import json
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from controlroom.edge.http import SLACK_PATHS

from .conftest import (
    GENERIC_SECRET,
    GITHUB_SECRET,
    GITLAB_TOKEN,
    JENKINS_SECRET,
    Edge,
    fixture_bytes,
    hook_headers,
    slack_headers,
)

PATHS = [*SLACK_PATHS, "/hooks/gh", "/hooks/gl", "/hooks/ci", "/hooks/crm", "/hooks/unknown"]
HEADER_NAMES = [
    "X-Slack-Signature",
    "X-Slack-Request-Timestamp",
    "X-Slack-Retry-Num",
    "X-Slack-Retry-Reason",
    "X-Hub-Signature-256",
    "X-GitHub-Event",
    "X-GitHub-Delivery",
    "X-Gitlab-Token",
    "X-Gitlab-Event",
    "X-Gitlab-Event-UUID",
    "X-ControlRoom-Signature",
    "Idempotency-Key",
]
CONTENT_TYPES = [
    "application/json",
    "application/json; charset=utf-8",
    "application/x-www-form-urlencoded",
    "application/vnd.api+json",
    "text/plain",
    "multipart/form-data; boundary=x",
    "",
]
SEEDS = [
    fixture_bytes("slack/events/test_app.app_mention_event_body.json"),
    fixture_bytes("slack/events/test_slash_command.slash_command_body.txt"),
    fixture_bytes("slack/events/url_verification.json"),
    b'payload={"type":"block_actions","team":{"id":"T1"},"trigger_id":"1.2.3"}',
    b'{"event":"deploy","build":{"phase":"STARTED"}}',
    b"ssl_check=1",
    b"[]",
    b"",
]
KEYS = ["type", "event", "event_id", "team", "team_id", "trigger_id", "command", "build", "phase"]
header_values = st.binary(max_size=80).map(
    lambda raw: bytes(b for b in raw if b >= 0x20 and b != 0x7F).strip()
)


def mutate(seed: bytes, cut: int, insert: bytes) -> bytes:
    point = cut % (len(seed) + 1)
    return seed[:point] + insert + seed[point:]


bodies = st.one_of(
    st.binary(max_size=600),
    st.builds(mutate, st.sampled_from(SEEDS), st.integers(0, 2000), st.binary(max_size=20)),
    st.sampled_from(SEEDS),
    st.recursive(
        st.none() | st.booleans() | st.integers() | st.text(max_size=10),
        lambda inner: (
            st.lists(inner, max_size=4)
            | st.dictionaries(st.sampled_from(KEYS) | st.text(max_size=8), inner, max_size=4)
        ),
        max_leaves=12,
    ).map(lambda value: json.dumps(value).encode()),
)


def sign(path: str, body: bytes, content_type: str) -> dict[str, str]:
    if path.startswith("/slack/"):
        return slack_headers(body, content_type=content_type)
    if path == "/hooks/gh":
        digest = hmac.new(GITHUB_SECRET.encode(), body, hashlib.sha256).hexdigest()
        return {"Content-Type": content_type, "X-Hub-Signature-256": f"sha256={digest}"}
    if path == "/hooks/gl":
        return {"Content-Type": content_type, "X-Gitlab-Token": GITLAB_TOKEN}
    secret = JENKINS_SECRET if path == "/hooks/ci" else GENERIC_SECRET
    return hook_headers(secret, body, **{"Content-Type": content_type})


@settings(
    max_examples=150,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(
    path=st.sampled_from(PATHS),
    body=bodies,
    content_type=st.one_of(
        st.sampled_from(CONTENT_TYPES), header_values.map(lambda v: v.decode("latin-1"))
    ),
    extra=st.dictionaries(st.sampled_from(HEADER_NAMES), header_values, max_size=5),
    signed=st.booleans(),
)
async def test_random_requests_never_fail_and_never_enqueue_unless_signed(
    edge: Edge, path: str, body: bytes, content_type: str, extra: dict[str, bytes], signed: bool
) -> None:
    before = len(await edge.dispatch_jobs())
    headers: dict[str, Any] = {"Content-Type": content_type.encode("latin-1"), **extra}
    if signed:
        # Correct signature headers; the random extras that do not clash stay.
        headers.update(sign(path, body, content_type))
        headers["Content-Type"] = content_type.encode("latin-1")
    response = await edge.client.post(path, content=body, headers=headers)
    assert response.status_code < 500, response.text
    after = len(await edge.dispatch_jobs())
    if not signed:
        assert response.status_code >= 400
        assert after == before
    if response.status_code >= 400:
        assert after == before
        assert "\n" not in response.text
        assert GITHUB_SECRET not in response.text
