"""Slack's Web API rate-limit tiers for every method Control Room calls.

Slack limits each method per workspace, per app, in per-minute windows (Tier 1: 1+/min,
Tier 2: 20+/min, Tier 3: 50+/min, Tier 4: 100+/min, "Special" varies; PLATFORM.md §4).
A :class:`Limit` is either a sliding window (``count`` calls in any 60 s: the tiers and
the workspace posting budget; a whole window may go as a burst, never more) or a token
bucket (the per-channel "one post per second, short bursts allowed").

Sources for the table: docs.slack.dev's per-method labels and java-slack-sdk's
``MethodsRateLimits``. Where they conflict the slower value wins (``apps.connections.open``
is Tier 1 here). Methods not in the table fall back to Tier 2 and are logged once.

``chat.postMessage`` is special: one post per second per channel (with a small burst)
*and* a workspace-wide budget ("several hundred per minute"); the method's own entry is
that workspace-wide budget, :data:`CHANNEL_POST_LIMIT` the per-channel one.

Apps in Slack's 2025 non-Marketplace cohort (created after 2025-05-29, commercially
distributed, not Marketplace-approved) get ``conversations.history`` and
``conversations.replies`` at Tier 1 (1/min): pass ``non_marketplace_2025=True``.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass, field

__all__ = [
    "CHANNEL_POSTING_METHODS",
    "CHANNEL_POST_LIMIT",
    "METHOD_TIERS",
    "TIER_LIMITS",
    "Limit",
    "TierTable",
]

logger = logging.getLogger("controlroom.slack.tiers")


@dataclass(frozen=True, slots=True)
class Limit:
    """``count`` calls per ``period`` seconds.

    Without ``burst`` it is a sliding window: never more than ``count`` calls in any
    ``period``-long span (Slack's "per-minute windows"; a full window may go as a burst).
    With ``burst`` it is a token bucket (GCRA): ``burst`` calls back to back, then one
    every ``period / count`` seconds (the per-channel "one per second, short bursts").
    """

    count: int
    period: float = 60.0
    burst: int | None = None
    tier: str = ""

    def __post_init__(self) -> None:
        if self.count < 1:
            raise ValueError(f"count must be at least 1, got {self.count}")
        if self.period <= 0:
            raise ValueError(f"period must be positive, got {self.period}")
        if self.burst is not None and self.burst < 1:
            raise ValueError(f"burst must be at least 1, got {self.burst}")

    @property
    def per_minute(self) -> float:
        return self.count * 60.0 / self.period

    @property
    def is_window(self) -> bool:
        return self.burst is None

    @property
    def interval(self) -> float:
        """Seconds between two calls once a token bucket's burst is spent."""
        return self.period / self.count

    @property
    def tolerance(self) -> float:
        """How far ahead of the schedule a token-bucket call may go (GCRA tau)."""
        return self.interval * ((self.burst or 1) - 1)

    def scaled(self, time_scale: float) -> Limit:
        """The same limit with time running ``time_scale`` times faster."""
        return Limit(self.count, self.period / time_scale, self.burst, self.tier)


TIER_LIMITS: Mapping[str, Limit] = {
    "tier1": Limit(1, tier="tier1"),
    "tier2": Limit(20, tier="tier2"),
    "tier3": Limit(50, tier="tier3"),
    "tier4": Limit(100, tier="tier4"),
}

#: chat.postMessage: "no more than one message per second" per channel, short bursts.
#: Slack (and the sandbox) allow a burst of 3; the gate keeps one token spare so that
#: network jitter between two consecutive posts never turns into a 429.
CHANNEL_POST_LIMIT = Limit(1, 1.0, burst=2, tier="special:channel")

#: Methods that post into a channel and so also spend the per-channel budget.
CHANNEL_POSTING_METHODS = frozenset({"chat.postMessage", "chat.meMessage"})

_SPECIAL: Mapping[str, Limit] = {
    "auth.test": Limit(600, tier="special"),
    "chat.getPermalink": Limit(600, tier="special"),
    "oauth.v2.access": Limit(600, tier="special"),
    # Workspace-wide posting budget: "several hundred messages per minute".
    "chat.postMessage": Limit(300, tier="special:workspace"),
}

#: method -> tier name (or "special", see ``_SPECIAL``).
METHOD_TIERS: Mapping[str, str] = {
    "auth.test": "special",
    "auth.revoke": "tier3",
    "chat.postMessage": "special",
    "chat.meMessage": "tier3",
    "chat.update": "tier3",
    "chat.delete": "tier3",
    "chat.postEphemeral": "tier4",
    "chat.getPermalink": "special",
    "conversations.create": "tier2",
    "conversations.invite": "tier3",
    "conversations.kick": "tier3",
    "conversations.archive": "tier2",
    "conversations.rename": "tier2",
    "conversations.info": "tier3",
    "conversations.list": "tier2",
    "conversations.members": "tier4",
    "conversations.history": "tier3",
    "conversations.replies": "tier3",
    "conversations.join": "tier3",
    "conversations.setTopic": "tier2",
    "users.info": "tier4",
    "users.list": "tier2",
    "users.lookupByEmail": "tier3",
    "usergroups.list": "tier2",
    "usergroups.users.list": "tier2",
    "reactions.add": "tier3",
    "reactions.remove": "tier2",
    "reactions.get": "tier3",
    "pins.add": "tier2",
    "views.open": "tier4",
    "views.update": "tier4",
    "views.push": "tier4",
    "views.publish": "tier4",
    "oauth.v2.access": "special",
    "oauth.v2.exchange": "tier3",
    "apps.connections.open": "tier1",
    "openid.connect.token": "tier4",
    "openid.connect.userInfo": "tier3",
    "team.info": "tier3",
    "bots.info": "tier3",
}

_COHORT_2025 = frozenset({"conversations.history", "conversations.replies"})


@dataclass
class TierTable:
    """Looks up the :class:`Limit` of a method.

    ``overrides`` replaces single methods (e.g. from configuration or to match a
    sandbox); ``time_scale`` makes every budget that many times faster (tests and
    benchmarks against a time-scaled sandbox).
    """

    non_marketplace_2025: bool = False
    time_scale: float = 1.0
    overrides: Mapping[str, Limit] = field(default_factory=dict)
    tiers: Mapping[str, Limit] = field(default_factory=lambda: dict(TIER_LIMITS))
    channel_post: Limit = CHANNEL_POST_LIMIT
    _warned: set[str] = field(default_factory=set, init=False, repr=False)

    def __post_init__(self) -> None:
        if self.time_scale <= 0:
            raise ValueError(f"time_scale must be positive, got {self.time_scale}")

    def known(self, method: str) -> bool:
        return method in METHOD_TIERS or method in self.overrides

    def tier_of(self, method: str) -> str:
        if method in self.overrides:
            return self.overrides[method].tier or "override"
        if self.non_marketplace_2025 and method in _COHORT_2025:
            return "tier1"
        return METHOD_TIERS.get(method, "tier2")

    def limit(self, method: str) -> Limit:
        """The per-workspace budget of ``method`` (Tier 2 for methods not in the table)."""
        if method in self.overrides:
            base = self.overrides[method]
        elif self.non_marketplace_2025 and method in _COHORT_2025:
            base = self.tiers["tier1"]
        else:
            tier = METHOD_TIERS.get(method)
            if tier is None:
                if method not in self._warned:
                    self._warned.add(method)
                    logger.warning("slack method %s is not in the tier table; using Tier 2", method)
                tier = "tier2"
            base = _SPECIAL[method] if tier == "special" else self.tiers[tier]
        return base if self.time_scale == 1.0 else base.scaled(self.time_scale)

    def channel_limit(self) -> Limit:
        """The per-channel posting budget (one post per second with a small burst)."""
        base = self.channel_post
        return base if self.time_scale == 1.0 else base.scaled(self.time_scale)

    def posts_to_channel(self, method: str) -> bool:
        return method in CHANNEL_POSTING_METHODS
