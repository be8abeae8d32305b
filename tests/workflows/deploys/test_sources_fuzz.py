"""sources.py never crashes on hostile input: every mutated real payload either
normalises or raises MalformedPayload (answered 400), never anything else."""

from __future__ import annotations

import contextlib
import copy
import math
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from controlroom.workflows.deploys.events import TERMINAL
from controlroom.workflows.deploys.sources import MalformedPayload, normalise, normalise_request

from .conftest import load

CASES = [
    ("github", "workflow_run", "github/examples/workflow_run/completed.payload.json"),
    ("github", "workflow_job", "github/examples/workflow_job/in_progress.payload.json"),
    ("github", "deployment", "github/examples/deployment/payload.json"),
    ("github", "deployment_status", "github/examples/deployment_status/payload.json"),
    ("gitlab", "Pipeline Hook", "gitlab/pipeline_hook.json"),
    ("gitlab", "Job Hook", "gitlab/job_hook.json"),
    ("gitlab", "Deployment Hook", "gitlab/deployment_hook.json"),
    ("jenkins", "", "jenkins/notification-plugin.completed.json"),
    ("generic", "", ""),
]
GENERIC = {
    "service": "checkout",
    "environment": "production",
    "version": "v1",
    "status": "failed",
    "commit": {"sha": "abc", "url": "https://x"},
    "author": "Jane <jane@example.com>",
    "started_at": "2026-11-30T09:00:00Z",
    "details": {"a": "b"},
}
PAYLOADS = {path: (load(path) if path else GENERIC) for _, _, path in CASES}

json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.text(max_size=20),
    lambda children: (
        st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=8), children, max_size=3)
    ),
    max_leaves=6,
)


def _paths(node: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    out = [prefix] if prefix else []
    if isinstance(node, dict):
        for key, value in node.items():
            out += _paths(value, (*prefix, key))
    elif isinstance(node, list):
        for index, value in enumerate(node):
            out += _paths(value, (*prefix, index))
    return out


def _mutate(payload: dict[str, Any], path: tuple[Any, ...], value: Any, delete: bool) -> None:
    node: Any = payload
    for part in path[:-1]:
        node = node[part]
    if delete and isinstance(node, dict):
        del node[path[-1]]
    else:
        node[path[-1]] = value


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    case=st.sampled_from(CASES),
    picks=st.lists(
        st.tuples(st.integers(min_value=0), json_values, st.booleans()), min_size=1, max_size=4
    ),
)
def test_mutated_real_payloads_normalise_or_raise_malformed(
    case: tuple[str, str, str], picks: list[tuple[int, Any, bool]]
) -> None:
    provider, event_name, path = case
    payload = copy.deepcopy(PAYLOADS[path])
    for index, value, delete in picks:
        paths = _paths(payload)
        if not paths:
            break
        _mutate(payload, paths[index % len(paths)], value, delete)
    try:
        result = normalise(provider, payload, event_name=event_name, delivery_id="d")
    except MalformedPayload as exc:
        assert exc.field
        return
    if result.event is None:
        assert result.reason
        return
    event = result.event
    assert event.run_key.startswith(f"{provider}:")
    assert event.status in TERMINAL | {"queued", "in_progress"}
    assert isinstance(event.version, str) and isinstance(event.run_attempt, int)
    for moment in (event.started_at, event.finished_at):
        assert moment is None or moment.tzinfo is not None
    assert all(isinstance(v, str) for v in event.details.values())


@given(body=st.binary(max_size=200))
def test_arbitrary_bodies_never_crash(body: bytes) -> None:
    for provider in ("github", "gitlab", "jenkins", "generic"):
        with contextlib.suppress(MalformedPayload):
            normalise_request(provider, {"X-GitHub-Event": "workflow_run"}, body)


def test_non_finite_numbers_are_tolerated() -> None:
    payload = load("github/examples/workflow_run/completed.payload.json")
    payload["workflow_run"]["run_attempt"] = math.inf
    result = normalise("github", payload, event_name="workflow_run")
    assert result.event is not None
    assert result.event.run_attempt == 1
