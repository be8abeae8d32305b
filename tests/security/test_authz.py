from __future__ import annotations

import tomllib
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
from slack_sdk.web.async_client import AsyncWebClient
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from controlroom.errors import AuthorizationDenied, ConfigError
from controlroom.security.audit import AuditLog
from controlroom.security.authz import (
    Authorizer,
    Policy,
    SlackUsergroupResolver,
    StaticUsergroups,
)
from controlroom.security.redaction import RateLimitedLogger
from controlroom.store.db import Database

from .conftest import serve_asgi

POLICY_TOML = """
[[policy.rules]]
action = "deploys.rollback"
environments = ["production"]
usergroups = ["S0TIER2"]
channels = ["C0DEPLOYS"]

[[policy.rules]]
action = "deploys.rollback"
environments = ["staging"]
users = ["*"]

[[policy.rules]]
action = "admin.*"
users = ["UADMIN1"]

[[policy.rules]]
action = "escalations.open"
users = ["U123"]
approval = "second_person"

[[policy.rules]]
action = "escalations.open"
usergroups = ["S0ONCALL"]
"""


def _policy() -> Policy:
    return Policy.from_config(tomllib.loads(POLICY_TOML)["policy"])


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
async def audit(tmp_path: Path) -> AsyncIterator[AuditLog]:
    db = Database(f"sqlite:///{tmp_path / 'authz.db'}")
    db.create_all()
    try:
        yield AuditLog(db, clock=lambda: 1_700_000_000.0)
    finally:
        db.dispose()


@pytest.fixture
def groups() -> StaticUsergroups:
    return StaticUsergroups({"S0TIER2": {"UALICE", "UBOB"}, "S0ONCALL": {"UONCALL"}})


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def authz(audit: AuditLog, groups: StaticUsergroups, clock: Clock) -> Authorizer:
    return Authorizer(_policy(), groups, audit, ttl=60, clock=clock)


PROD = {"environment": "production"}


async def test_member_of_the_usergroup_in_the_right_channel_is_allowed(authz: Authorizer) -> None:
    d = await authz.check("deploys.rollback", user="UALICE", channel="C0DEPLOYS", attributes=PROD)
    assert (d.allowed, d.rule, d.needs_approval) == (True, "policy.rules[0]", False)
    assert d.reason == "allowed by policy.rules[0] (usergroup S0TIER2)"


async def test_unknown_action_is_denied_by_default(authz: Authorizer) -> None:
    d = await authz.check("billing.refund", user="UADMIN1")
    assert (d.allowed, d.rule) == (False, None)
    assert d.reason == "no policy rule covers billing.refund (deny by default)"


async def test_user_outside_the_groups_is_denied(authz: Authorizer) -> None:
    d = await authz.check("deploys.rollback", user="UEVE", channel="C0DEPLOYS", attributes=PROD)
    assert d.allowed is False
    assert "policy.rules[0]: UEVE is not in its users or user groups" in d.reason


async def test_channel_restriction_denies_a_click_from_another_channel(authz: Authorizer) -> None:
    d = await authz.check("deploys.rollback", user="UALICE", channel="C0RANDOM", attributes=PROD)
    assert d.allowed is False
    assert "channel 'C0RANDOM' is not one of ['C0DEPLOYS']" in d.reason


async def test_environment_attribute_selects_the_rule(authz: Authorizer) -> None:
    staging = await authz.check(
        "deploys.rollback", user="UEVE", attributes={"environment": "staging"}
    )
    assert (staging.allowed, staging.rule) == (True, "policy.rules[1]")
    missing = await authz.check("deploys.rollback", user="UALICE", channel="C0DEPLOYS")
    assert missing.allowed is False


async def test_glob_actions_match(authz: Authorizer) -> None:
    assert (await authz.check("admin.reload", user="UADMIN1")).allowed
    assert (await authz.check("admin.installs.revoke", user="UADMIN1")).allowed
    assert not (await authz.check("administer", user="UADMIN1")).allowed


async def test_second_person_approval_rule_needs_a_different_allowed_approver(
    authz: Authorizer,
) -> None:
    d = await authz.check("escalations.open", user="U123")
    assert (d.allowed, d.needs_approval, d.outcome) == (True, True, "needs_approval")
    self_ok = await authz.approve("escalations.open", requester="U123", approver="U123")
    assert self_ok.allowed is False
    stranger = await authz.approve("escalations.open", requester="U123", approver="UEVE")
    assert stranger.allowed is False
    oncall = await authz.approve("escalations.open", requester="U123", approver="UONCALL")
    assert oncall.allowed is True
    # A member of the on-call group needs no approval at all.
    direct = await authz.check("escalations.open", user="UONCALL")
    assert (direct.allowed, direct.needs_approval) == (True, False)


async def test_membership_is_cached_for_ttl_then_refreshed(
    authz: Authorizer, groups: StaticUsergroups, clock: Clock
) -> None:
    args: dict[str, Any] = {"user": "UBOB", "channel": "C0DEPLOYS", "attributes": PROD}
    assert (await authz.check("deploys.rollback", **args)).allowed
    groups.groups["S0TIER2"].discard("UBOB")
    clock.now += 59.0
    assert (await authz.check("deploys.rollback", **args)).allowed  # still cached
    assert groups.calls == 1
    clock.now += 1.0
    assert not (await authz.check("deploys.rollback", **args)).allowed
    assert groups.calls == 2


async def test_failed_group_lookup_denies(audit: AuditLog, clock: Clock) -> None:
    class Broken:
        async def members(self, group_id: str) -> set[str]:
            raise LookupError("usergroups.users.list failed: missing_scope")

    authz = Authorizer(_policy(), Broken(), audit, clock=clock)
    d = await authz.check("deploys.rollback", user="UALICE", channel="C0DEPLOYS", attributes=PROD)
    assert d.allowed is False
    assert "usergroup S0TIER2 lookup failed (usergroups.users.list failed: missing_scope)" in (
        d.reason
    )


async def test_every_decision_is_audited_with_its_outcome(
    authz: Authorizer, audit: AuditLog
) -> None:
    await authz.check(
        "deploys.rollback",
        user="UALICE",
        channel="C0DEPLOYS",
        attributes=PROD,
        envelope_id="env-1",
        target="svc-api",
    )
    await authz.check(
        "deploys.rollback",
        user="UEVE",
        channel="C0DEPLOYS",
        attributes=PROD,
        envelope_id="env-2",
        target="svc-api",
    )
    with pytest.raises(AuthorizationDenied, match=r"UEVE may not admin\.reload"):
        await authz.require("admin.reload", user="UEVE")
    entries = await audit.tail(10)
    assert [(e.actor, e.action, e.outcome, e.envelope_id) for e in entries] == [
        ("UALICE", "deploys.rollback", "allowed", "env-1"),
        ("UEVE", "deploys.rollback", "denied", "env-2"),
        ("UEVE", "admin.reload", "denied", None),
    ]
    assert entries[0].details["rule"] == "policy.rules[0]"
    assert entries[0].details["attributes"] == PROD
    assert entries[0].target == "svc-api"
    assert (await audit.verify()).ok


async def test_denials_are_rate_limited_in_the_security_log(
    audit: AuditLog, groups: StaticUsergroups, clock: Clock
) -> None:
    lines: list[str] = []

    class Sink:
        def warning(self, event: str, **kw: Any) -> None:
            lines.append(event)

    sec = RateLimitedLogger(Sink(), per_minute=2, clock=clock)
    authz = Authorizer(_policy(), groups, audit, clock=clock, security_log=sec)
    for _ in range(5):
        await authz.check("admin.reload", user="UEVE")
    assert lines == ["authorization denied", "authorization denied"]
    assert sec.counts == {"denied_click": 5}


@pytest.mark.parametrize(
    ("raw", "key", "reason"),
    [
        ({"rules": [{"users": ["U1X"]}]}, "policy.rules[0].action", "required"),
        ({"rules": [{"action": "a.b"}]}, "policy.rules[0]", "names nobody"),
        (
            {"rules": [{"action": "a.b", "users": ["bob"]}]},
            "policy.rules[0].users",
            "'bob' is not a Slack user id",
        ),
        (
            {"rules": [{"action": "a.b", "usergroups": "S0X"}]},
            "policy.rules[0].usergroups",
            "must be a list of strings",
        ),
        (
            {"rules": [{"action": "a.b", "users": ["U1X"], "channels": ["#general"]}]},
            "policy.rules[0].channels",
            "not a Slack channel id",
        ),
        (
            {"rules": [{"action": "a.b", "users": ["U1X"], "approval": "manager"}]},
            "policy.rules[0].approval",
            "must be one of: second_person",
        ),
        (
            {"rules": [{"action": "a.b", "users": ["U1X"], "enviroments": ["prod"]}]},
            "policy.rules[0].enviroments",
            "unknown key",
        ),
        (
            {"rules": [{"action": "Deploys Rollback", "users": ["U1X"]}]},
            "policy.rules[0].action",
            "not an action name",
        ),
        ({"rules": {"action": "a"}}, "policy.rules", "array of tables"),
        ({"default": "allow"}, "policy.default", "unknown key"),
    ],
)
def test_invalid_policy_is_refused_with_key_and_reason(
    raw: dict[str, Any], key: str, reason: str
) -> None:
    with pytest.raises(ConfigError) as info:
        Policy.from_config(raw)
    assert any(k == key and reason in r for k, _, r in info.value.problems), info.value.problems


def test_empty_policy_denies_everything() -> None:
    assert Policy.from_config({}).rules == ()


# ---------------------------------------------------------------- Slack resolver over HTTP
@pytest.fixture
def fake_slack() -> Iterator[tuple[str, dict[str, list[str]]]]:
    groups: dict[str, list[str]] = {"S0TIER2": ["UALICE"]}

    async def users_list(request: Request) -> JSONResponse:
        if request.headers.get("authorization") != "Bearer xoxb-test-1-2":
            return JSONResponse({"ok": False, "error": "invalid_auth"})
        form = await request.form() if request.method == "POST" else request.query_params
        group = str(form.get("usergroup", ""))
        if group not in groups:
            return JSONResponse({"ok": False, "error": "no_such_subteam"})
        return JSONResponse({"ok": True, "users": groups[group]})

    app = Starlette(
        routes=[Route("/api/usergroups.users.list", users_list, methods=["GET", "POST"])]
    )
    with serve_asgi(app) as url:
        yield url, groups


async def test_slack_resolver_reads_members_through_the_web_api(
    fake_slack: tuple[str, dict[str, list[str]]], audit: AuditLog, clock: Clock
) -> None:
    url, groups = fake_slack
    client = AsyncWebClient(token="xoxb-test-1-2", base_url=f"{url}/api/")
    resolver = SlackUsergroupResolver(client)
    assert await resolver.members("S0TIER2") == {"UALICE"}
    authz = Authorizer(_policy(), resolver, audit, ttl=10, clock=clock)
    args: dict[str, Any] = {"channel": "C0DEPLOYS", "attributes": PROD}
    assert (await authz.check("deploys.rollback", user="UALICE", **args)).allowed
    groups["S0TIER2"] = ["UBOB"]
    clock.now += 10
    assert not (await authz.check("deploys.rollback", user="UALICE", **args)).allowed
    assert (await authz.check("deploys.rollback", user="UBOB", **args)).allowed


async def test_slack_resolver_error_denies(
    fake_slack: tuple[str, dict[str, list[str]]], audit: AuditLog, clock: Clock
) -> None:
    url, _ = fake_slack
    client = AsyncWebClient(token="xoxb-wrong", base_url=f"{url}/api/")
    authz = Authorizer(_policy(), SlackUsergroupResolver(client), audit, clock=clock)
    d = await authz.check("deploys.rollback", user="UALICE", channel="C0DEPLOYS", attributes=PROD)
    assert d.allowed is False
    assert "invalid_auth" in d.reason
