"""Request verification: Slack v0 (with its published vector), GitHub (with its published
vector), GitLab tokens and Control Room's own scheme for Jenkins and generic senders."""

from __future__ import annotations

import hashlib
import hmac
import time

import pytest

from controlroom.config import HookSource, Secret
from controlroom.edge.replay import MemoryReplayCache
from controlroom.edge.signing import (
    EdgeRejection,
    GitHubVerifier,
    GitLabVerifier,
    SignedHookVerifier,
    SlackVerifier,
    hook_verifier,
    sign_hook,
    sign_slack,
)
from controlroom.errors import VerificationError

from .conftest import Clock, fixture_json

VECTOR = fixture_json("slack/signing-test-vector.json")
VECTOR_TS = 1531420618
GITHUB = fixture_json("ci/github-signing-test-vector.json")


def vector_verifier(now: float, *secrets: str) -> SlackVerifier:
    return SlackVerifier(
        secrets or (VECTOR["signing_secret"],), clock=lambda: now, replay=MemoryReplayCache()
    )


async def reject(coro: object) -> EdgeRejection:
    with pytest.raises(EdgeRejection) as info:
        await coro  # type: ignore[misc]
    return info.value


async def test_slack_published_vector_verifies_with_the_clock_at_its_timestamp() -> None:
    await vector_verifier(VECTOR_TS).verify(VECTOR["headers"], VECTOR["body"].encode())


async def test_slack_published_vector_is_stale_at_the_real_time() -> None:
    err = await reject(
        vector_verifier(time.time()).verify(VECTOR["headers"], VECTOR["body"].encode())
    )
    assert (err.status, err.code) == (401, "stale")
    assert isinstance(err, VerificationError)


async def test_slack_header_names_are_case_insensitive() -> None:
    headers = {k.lower(): v for k, v in VECTOR["headers"].items()}
    await vector_verifier(VECTOR_TS).verify(headers, VECTOR["body"].encode())


@pytest.mark.parametrize("offset", [-300, 0, 300])
async def test_slack_accepts_timestamps_within_five_minutes(offset: int) -> None:
    await vector_verifier(VECTOR_TS + offset).verify(VECTOR["headers"], VECTOR["body"].encode())


async def test_slack_rejects_a_timestamp_301_seconds_old() -> None:
    err = await reject(
        vector_verifier(VECTOR_TS + 301).verify(VECTOR["headers"], VECTOR["body"].encode())
    )
    assert (err.status, err.code) == (401, "stale")
    assert "old" in err.reason


async def test_slack_rejects_a_timestamp_301_seconds_in_the_future() -> None:
    err = await reject(
        vector_verifier(VECTOR_TS - 301).verify(VECTOR["headers"], VECTOR["body"].encode())
    )
    assert (err.status, err.code) == (401, "future")
    assert "future" in err.reason


async def test_slack_rejects_the_same_signature_twice_within_the_window() -> None:
    verifier = vector_verifier(VECTOR_TS)
    await verifier.verify(VECTOR["headers"], VECTOR["body"].encode())
    err = await reject(verifier.verify(VECTOR["headers"], VECTOR["body"].encode()))
    assert (err.status, err.code) == (401, "replay")


async def test_slack_replay_guard_ignores_signatures_that_failed() -> None:
    verifier = vector_verifier(VECTOR_TS)
    await reject(verifier.verify(VECTOR["headers"], VECTOR["body"].encode() + b"x"))
    await verifier.verify(VECTOR["headers"], VECTOR["body"].encode())


async def test_slack_rejects_a_modified_body() -> None:
    err = await reject(
        vector_verifier(VECTOR_TS).verify(VECTOR["headers"], VECTOR["body"].encode() + b"&x=1")
    )
    assert (err.status, err.code, err.reason) == (401, "bad_signature", "signature mismatch")


async def test_slack_rejects_a_wrong_secret_and_never_names_the_secret() -> None:
    err = await reject(
        vector_verifier(VECTOR_TS, "another-secret").verify(
            VECTOR["headers"], VECTOR["body"].encode()
        )
    )
    assert err.status == 401
    assert "another-secret" not in str(err)


async def test_slack_accepts_either_of_two_secrets_during_rotation() -> None:
    body = b'{"type":"event_callback"}'
    clock = Clock(VECTOR_TS)
    verifier = SlackVerifier(["new", "old"], clock=clock, replay=MemoryReplayCache())
    await verifier.verify(sign_slack("old", body, VECTOR_TS), body)
    await verifier.verify(sign_slack("new", body, VECTOR_TS + 1), body)
    err = await reject(verifier.verify(sign_slack("other", body, VECTOR_TS + 2), body))
    assert err.code == "bad_signature"


BAD_SLACK_HEADERS = [
    ({}, 401, "missing_signature"),
    ({"X-Slack-Request-Timestamp": str(VECTOR_TS)}, 401, "missing_signature"),
    ({"X-Slack-Signature": "v0=" + "0" * 64}, 401, "missing_timestamp"),
    (
        {"X-Slack-Signature": "v0=" + "0" * 64, "X-Slack-Request-Timestamp": "abc"},
        400,
        "bad_timestamp",
    ),
    (
        {"X-Slack-Signature": "v0=" + "0" * 64, "X-Slack-Request-Timestamp": "-5"},
        400,
        "bad_timestamp",
    ),
    (
        {"X-Slack-Signature": "v0=" + "0" * 64, "X-Slack-Request-Timestamp": "1.5e9"},
        400,
        "bad_timestamp",
    ),
    (
        {"X-Slack-Signature": "v0=" + "0" * 64, "X-Slack-Request-Timestamp": "9" * 40},
        400,
        "bad_timestamp",
    ),
    (
        {"X-Slack-Signature": "v0=abc", "X-Slack-Request-Timestamp": str(VECTOR_TS)},
        401,
        "bad_signature",
    ),
    (
        {"X-Slack-Signature": "v1=" + "0" * 64, "X-Slack-Request-Timestamp": str(VECTOR_TS)},
        401,
        "bad_signature",
    ),
    (
        {"X-Slack-Signature": "v0=" + "g" * 64, "X-Slack-Request-Timestamp": str(VECTOR_TS)},
        401,
        "bad_signature",
    ),
    (
        {"X-Slack-Signature": "v0=" + "0" * 65, "X-Slack-Request-Timestamp": str(VECTOR_TS)},
        401,
        "bad_signature",
    ),
    (
        {"X-Slack-Signature": "v0=é" + "0" * 63, "X-Slack-Request-Timestamp": str(VECTOR_TS)},
        401,
        "bad_signature",
    ),
    (
        {"X-Slack-Signature": "v0=" + "0" * 64, "X-Slack-Request-Timestamp": str(VECTOR_TS)},
        401,
        "bad_signature",
    ),
]


@pytest.mark.parametrize(("headers", "status", "code"), BAD_SLACK_HEADERS)
async def test_slack_rejects_garbled_missing_and_short_headers(
    headers: dict[str, str], status: int, code: str
) -> None:
    err = await reject(vector_verifier(VECTOR_TS).verify(headers, VECTOR["body"].encode()))
    assert (err.status, err.code) == (status, code)
    assert "\n" not in err.reason


def test_slack_verifier_needs_a_secret() -> None:
    with pytest.raises(ValueError, match="secret"):
        SlackVerifier(["", ""], replay=MemoryReplayCache())


async def test_github_published_vector_verifies() -> None:
    verifier = GitHubVerifier([GITHUB["secret"]])
    await verifier.verify(
        {"X-Hub-Signature-256": GITHUB["X-Hub-Signature-256"]}, GITHUB["payload"].encode()
    )


async def test_github_accepts_the_previous_secret_during_rotation() -> None:
    verifier = GitHubVerifier(["rotated-in", GITHUB["secret"]])
    await verifier.verify(
        {"x-hub-signature-256": GITHUB["X-Hub-Signature-256"]}, GITHUB["payload"].encode()
    )


@pytest.mark.parametrize(
    ("headers", "code"),
    [
        ({}, "missing_signature"),
        ({"X-Hub-Signature": "sha1=7d38cdd689735b008b3c702edd92eea23791c5f6"}, "missing_signature"),
        (
            {"X-Hub-Signature-256": GITHUB["signature_hex"]},
            "bad_signature",
        ),
        ({"X-Hub-Signature-256": "sha256=757107"}, "bad_signature"),
        ({"X-Hub-Signature-256": "sha256=" + "0" * 64}, "bad_signature"),
    ],
)
async def test_github_rejects_missing_malformed_and_wrong_signatures(
    headers: dict[str, str], code: str
) -> None:
    err = await reject(
        GitHubVerifier([GITHUB["secret"]]).verify(headers, GITHUB["payload"].encode())
    )
    assert (err.status, err.code) == (401, code)


async def test_github_rejects_a_modified_payload() -> None:
    err = await reject(
        GitHubVerifier([GITHUB["secret"]]).verify(
            {"X-Hub-Signature-256": GITHUB["X-Hub-Signature-256"]}, b"Hello, World?"
        )
    )
    assert err.reason == "signature mismatch"


async def test_gitlab_token_must_equal_one_of_the_secrets() -> None:
    verifier = GitLabVerifier(["current", "previous"])
    await verifier.verify({"X-Gitlab-Token": "current"}, b"{}")
    await verifier.verify({"x-gitlab-token": "previous"}, b"{}")
    for token in ("", "curren", "current ", "Current", "é"):
        err = await reject(verifier.verify({"X-Gitlab-Token": token}, b"{}"))
        assert err.status == 401
    err = await reject(verifier.verify({}, b"{}"))
    assert err.code == "missing_signature"


def signed_hook(clock: Clock, **kwargs: object) -> SignedHookVerifier:
    return SignedHookVerifier(["now", "before"], clock=clock, replay=MemoryReplayCache(), **kwargs)  # type: ignore[arg-type]


async def test_generic_scheme_matches_its_documented_definition() -> None:
    body = b'{"event":"deployed"}'
    expected = hmac.new(b"now", b"1700000000." + body, hashlib.sha256).hexdigest()
    assert sign_hook("now", body, 1700000000) == f"t=1700000000,v1={expected}"
    await signed_hook(Clock(1700000000)).verify(
        {"X-ControlRoom-Signature": f"t=1700000000,v1={expected}"}, body
    )


async def test_generic_scheme_accepts_the_previous_secret_and_several_v1_entries() -> None:
    body = b"{}"
    clock = Clock(1700000000)
    verifier = signed_hook(clock)
    await verifier.verify({"X-ControlRoom-Signature": sign_hook("before", body, 1700000000)}, body)
    other = sign_hook("unknown", body, 1700000001).split(",")[1]
    good = sign_hook("now", body, 1700000001)
    await verifier.verify({"X-ControlRoom-Signature": f"{good},{other},x=ignored"}, body)


@pytest.mark.parametrize(("offset", "code"), [(301, "stale"), (-301, "future")])
async def test_generic_scheme_has_a_five_minute_window(offset: int, code: str) -> None:
    body = b"{}"
    err = await reject(
        signed_hook(Clock(1700000000 + offset)).verify(
            {"X-ControlRoom-Signature": sign_hook("now", body, 1700000000)}, body
        )
    )
    assert (err.status, err.code) == (401, code)


async def test_generic_scheme_refuses_a_replayed_signature() -> None:
    body = b"{}"
    verifier = signed_hook(Clock(1700000000))
    headers = {"X-ControlRoom-Signature": sign_hook("now", body, 1700000000)}
    await verifier.verify(headers, body)
    err = await reject(verifier.verify(headers, body))
    assert err.code == "replay"


@pytest.mark.parametrize(
    ("value", "status"),
    [
        ("", 401),
        ("garbage", 401),
        ("t=1700000000", 401),
        ("v1=" + "0" * 64, 401),
        ("t=1700000000,t=1700000000,v1=" + "0" * 64, 401),
        ("t=1700000000,v1=zz", 401),
        ("t=abc,v1=" + "0" * 64, 400),
        ("t=1700000000,v1=" + "0" * 64, 401),
        ("t=1700000000,v1=" + "0" * 64 + "," * 3000, 401),
    ],
)
async def test_generic_scheme_rejects_garbled_headers(value: str, status: int) -> None:
    err = await reject(
        signed_hook(Clock(1700000000)).verify({"X-ControlRoom-Signature": value}, b"{}")
    )
    assert err.status == status


async def test_hook_verifier_picks_the_provider_scheme_and_both_secrets() -> None:
    gh = hook_verifier(
        "gh",
        HookSource(
            provider="github", secret=Secret("new"), previous_secret=Secret(GITHUB["secret"])
        ),
    )
    assert isinstance(gh, GitHubVerifier)
    await gh.verify(
        {"X-Hub-Signature-256": GITHUB["X-Hub-Signature-256"]}, GITHUB["payload"].encode()
    )
    assert isinstance(
        hook_verifier("gl", HookSource(provider="gitlab", secret=Secret("t"))), GitLabVerifier
    )
    jenkins = hook_verifier(
        "ci",
        HookSource(provider="jenkins", secret=Secret("s"), previous_secret=Secret("p")),
        clock=lambda: 1700000000,
    )
    await jenkins.verify({"X-ControlRoom-Signature": sign_hook("p", b"{}", 1700000000)}, b"{}")
