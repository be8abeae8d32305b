"""Authorisation: a policy from configuration, deny by default, audited either way.

```toml
[[policy.rules]]
action = "deploys.rollback"        # glob allowed: "admin.*"
environments = ["production"]      # optional: attributes["environment"] must be listed
users = ["U123"]                   # "*" means any user (use with channels)
usergroups = ["S0TIER2"]           # members resolved through usergroups.users.list
channels = ["C0DEPLOYS"]           # optional: the click must come from one of these
approval = "second_person"         # optional: a second, different person must approve
```

A rule applies when its action glob matches, its environments and channels (if given)
match, and the user is listed or a member of a listed user group. The first applicable
rule without ``approval`` allows; otherwise the first applicable rule with approval
allows with ``needs_approval``; otherwise the request is denied. Group membership is
cached for at most ``ttl`` seconds, so a removal takes effect within the TTL; a failed
lookup denies (fail closed). Every decision is written to the audit log.
"""

from __future__ import annotations

import asyncio
import fnmatch
import re
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Literal, Protocol

from controlroom.errors import AuthorizationDenied, ConfigError
from controlroom.security.audit import AuditLog
from controlroom.security.redaction import RateLimitedLogger

__all__ = [
    "Authorizer",
    "Decision",
    "Policy",
    "Rule",
    "SlackUsergroupResolver",
    "StaticUsergroups",
    "UsergroupResolver",
]

_ACTION = re.compile(r"^[a-z0-9_*?\-]+(\.[a-z0-9_*?\-]+)*$")
_USER = re.compile(r"^[UW][A-Z0-9]{2,}$")
_GROUP = re.compile(r"^S[A-Z0-9]{2,}$")
_CHANNEL = re.compile(r"^[CGD][A-Z0-9]{2,}$")
_ENV = re.compile(r"^[A-Za-z0-9_.\-]+$")
_RULE_KEYS = {
    "action",
    "users",
    "usergroups",
    "channels",
    "environments",
    "approval",
    "description",
}
_APPROVALS = ("second_person",)


class UsergroupResolver(Protocol):
    async def members(self, group_id: str) -> set[str]: ...


class SlackUsergroupResolver:
    """Resolves members with ``usergroups.users.list`` on any client exposing the
    slack_sdk ``AsyncWebClient`` method ``usergroups_users_list(usergroup=...)``."""

    def __init__(self, client: Any) -> None:
        self._client = client

    async def members(self, group_id: str) -> set[str]:
        resp = await self._client.usergroups_users_list(usergroup=group_id)
        data = getattr(resp, "data", resp)
        if not isinstance(data, Mapping) or not data.get("ok"):
            error = data.get("error", "unknown_error") if isinstance(data, Mapping) else "?"
            raise LookupError(f"usergroups.users.list failed for {group_id}: {error}")
        users = data.get("users") or []
        return {u for u in users if isinstance(u, str)}


class StaticUsergroups:
    """A resolver over a fixed mapping (tests, development)."""

    def __init__(self, groups: Mapping[str, set[str]]) -> None:
        self.groups = {k: set(v) for k, v in groups.items()}
        self.calls = 0

    async def members(self, group_id: str) -> set[str]:
        self.calls += 1
        return set(self.groups.get(group_id, set()))


@dataclass(frozen=True)
class Rule:
    index: int
    action: str
    users: frozenset[str] = frozenset()
    usergroups: frozenset[str] = frozenset()
    channels: frozenset[str] = frozenset()
    environments: frozenset[str] = frozenset()
    approval: Literal["second_person"] | None = None
    description: str = ""

    @property
    def name(self) -> str:
        return f"policy.rules[{self.index}]"

    def matches_action(self, action: str) -> bool:
        return fnmatch.fnmatchcase(action, self.action)


@dataclass(frozen=True)
class Policy:
    rules: tuple[Rule, ...] = ()

    @classmethod
    def from_config(cls, raw: Mapping[str, Any], source: str = "configuration") -> Policy:
        """Validate the ``[policy]`` table; every problem is reported with its key."""
        problems: list[tuple[str, str, str]] = []

        def bad(key: str, reason: str) -> None:
            problems.append((key, source, reason))

        for key in raw:
            if key != "rules":
                bad(f"policy.{key}", "unknown key (expected: rules)")
        rules_raw = raw.get("rules", [])
        if not isinstance(rules_raw, list):
            bad("policy.rules", "must be an array of tables ([[policy.rules]])")
            rules_raw = []
        rules: list[Rule] = []
        for i, item in enumerate(rules_raw):
            base = f"policy.rules[{i}]"
            if not isinstance(item, Mapping):
                bad(base, "must be a table")
                continue
            for key in item:
                if key not in _RULE_KEYS:
                    bad(f"{base}.{key}", f"unknown key (expected: {', '.join(sorted(_RULE_KEYS))})")
            action = item.get("action")
            if not isinstance(action, str) or not action:
                bad(f"{base}.action", "required: an action name or glob, e.g. deploys.rollback")
                action = ""
            elif not _ACTION.match(action):
                bad(f"{base}.action", f"{action!r} is not an action name or glob")

            users = _ids(item, base, "users", _USER, "Slack user id (U… or W…)", bad, star=True)
            groups = _ids(item, base, "usergroups", _GROUP, "Slack user group id (S…)", bad)
            channels = _ids(item, base, "channels", _CHANNEL, "Slack channel id (C…/G…/D…)", bad)
            envs = _ids(item, base, "environments", _ENV, "environment name", bad)
            if not users and not groups:
                bad(base, 'names nobody: give users and/or usergroups (users = ["*"] for anyone)')
            approval = item.get("approval")
            if approval is not None and approval not in _APPROVALS:
                bad(f"{base}.approval", f"must be one of: {', '.join(_APPROVALS)}")
                approval = None
            description = item.get("description", "")
            if not isinstance(description, str):
                bad(f"{base}.description", "must be a string")
                description = ""
            rules.append(Rule(i, action, users, groups, channels, envs, approval, description))
        if problems:
            raise ConfigError(problems)
        return cls(tuple(rules))


def _ids(
    item: Mapping[str, Any],
    base: str,
    key: str,
    pattern: re.Pattern[str],
    what: str,
    bad: Callable[[str, str], None],
    *,
    star: bool = False,
) -> frozenset[str]:
    value = item.get(key, [])
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        bad(f"{base}.{key}", "must be a list of strings")
        return frozenset()
    for v in value:
        if not (pattern.match(v) or (star and v == "*")):
            bad(f"{base}.{key}", f"{v!r} is not a {what}")
    return frozenset(value)


@dataclass(frozen=True)
class Decision:
    allowed: bool
    reason: str
    rule: str | None = None
    needs_approval: bool = False

    @property
    def outcome(self) -> str:
        if not self.allowed:
            return "denied"
        return "needs_approval" if self.needs_approval else "allowed"


class Authorizer:
    """Evaluates the policy on every call; audits every decision."""

    def __init__(
        self,
        policy: Policy,
        membership: UsergroupResolver,
        audit: AuditLog,
        *,
        ttl: float = 60.0,
        clock: Callable[[], float] = time.monotonic,
        security_log: RateLimitedLogger | None = None,
    ) -> None:
        self.policy = policy
        self.membership = membership
        self.audit = audit
        self.ttl = ttl
        self.clock = clock
        self.security_log = security_log
        self._cache: dict[str, tuple[frozenset[str], float]] = {}
        self._locks: dict[str, asyncio.Lock] = {}

    async def _members(self, group: str) -> frozenset[str]:
        hit = self._cache.get(group)
        if hit is not None and self.clock() - hit[1] < self.ttl:
            return hit[0]
        lock = self._locks.setdefault(group, asyncio.Lock())
        async with lock:
            hit = self._cache.get(group)
            if hit is not None and self.clock() - hit[1] < self.ttl:
                return hit[0]
            members = frozenset(await self.membership.members(group))
            self._cache[group] = (members, self.clock())
            return members

    def forget(self, group: str | None = None) -> None:
        """Drop cached membership (all groups, or one), e.g. on a subteam_members_changed
        event."""
        if group is None:
            self._cache.clear()
        else:
            self._cache.pop(group, None)

    async def _via(self, rule: Rule, user: str, problems: list[str]) -> str | None:
        """How ``user`` is named by ``rule`` (``user``/``usergroup S…``), or None."""
        if user in rule.users:
            return "user"
        if "*" in rule.users:
            return "any user"
        for group in sorted(rule.usergroups):
            try:
                members = await self._members(group)
            except Exception as exc:  # fail closed, whatever the client raised
                problems.append(f"{rule.name}: usergroup {group} lookup failed ({exc})")
                continue
            if user in members:
                return f"usergroup {group}"
        return None

    async def evaluate(
        self,
        action: str,
        *,
        user: str,
        channel: str | None = None,
        attributes: Mapping[str, Any] | None = None,
    ) -> Decision:
        """Decide without auditing (used by ``check`` and ``approve``)."""
        attrs = attributes or {}
        candidates = [r for r in self.policy.rules if r.matches_action(action)]
        if not candidates:
            return Decision(False, f"no policy rule covers {action} (deny by default)")
        problems: list[str] = []
        pending: Decision | None = None
        for rule in candidates:
            env = attrs.get("environment")
            if rule.environments and env not in rule.environments:
                problems.append(
                    f"{rule.name}: environment {env!r} is not one of {sorted(rule.environments)}"
                )
                continue
            if rule.channels and channel not in rule.channels:
                problems.append(
                    f"{rule.name}: channel {channel!r} is not one of {sorted(rule.channels)}"
                )
                continue
            via = await self._via(rule, user, problems)
            if via is None:
                problems.append(f"{rule.name}: {user} is not in its users or user groups")
                continue
            if rule.approval is None:
                return Decision(True, f"allowed by {rule.name} ({via})", rule.name)
            if pending is None:
                pending = Decision(
                    True,
                    f"allowed by {rule.name} ({via}) after approval by a second person",
                    rule.name,
                    needs_approval=True,
                )
        if pending is not None:
            return pending
        return Decision(False, "; ".join(problems))

    async def check(
        self,
        action: str,
        *,
        user: str,
        channel: str | None = None,
        attributes: Mapping[str, Any] | None = None,
        envelope_id: str | None = None,
        target: str = "",
    ) -> Decision:
        """Decide whether ``user`` may do ``action`` now, and audit the decision."""
        decision = await self.evaluate(action, user=user, channel=channel, attributes=attributes)
        await self.audit.record(
            actor=user,
            action=action,
            target=target,
            outcome=decision.outcome,
            envelope_id=envelope_id,
            details={
                "kind": "authorization",
                "reason": decision.reason,
                "rule": decision.rule,
                "channel": channel,
                "attributes": dict(attributes or {}),
            },
        )
        if not decision.allowed and self.security_log is not None:
            self.security_log.warning(
                "denied_click", "authorization denied", user=user, action=action, channel=channel
            )
        return decision

    async def require(self, action: str, *, user: str, **kw: Any) -> Decision:
        """Like ``check`` but raises ``AuthorizationDenied`` when denied."""
        decision = await self.check(action, user=user, **kw)
        if not decision.allowed:
            raise AuthorizationDenied(action, user, decision.reason)
        return decision

    async def approve(
        self,
        action: str,
        *,
        requester: str,
        approver: str,
        channel: str | None = None,
        attributes: Mapping[str, Any] | None = None,
        envelope_id: str | None = None,
        target: str = "",
    ) -> Decision:
        """Second-person approval: ``approver`` must differ from ``requester`` and be
        allowed the action by the policy themselves. Audited."""
        if approver == requester:
            decision = Decision(False, "the requester cannot approve their own request")
        else:
            own = await self.evaluate(action, user=approver, channel=channel, attributes=attributes)
            decision = (
                Decision(True, f"approved by {approver} ({own.reason})", own.rule)
                if own.allowed
                else Decision(False, f"{approver} may not approve: {own.reason}")
            )
        await self.audit.record(
            actor=approver,
            action=action,
            target=target,
            outcome="approved" if decision.allowed else "approval_denied",
            envelope_id=envelope_id,
            details={
                "kind": "approval",
                "requester": requester,
                "reason": decision.reason,
                "rule": decision.rule,
                "channel": channel,
                "attributes": dict(attributes or {}),
            },
        )
        if not decision.allowed and self.security_log is not None:
            self.security_log.warning(
                "denied_click", "approval denied", user=approver, action=action, channel=channel
            )
        return decision
