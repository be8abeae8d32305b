"""Slack's Web API rate limits.

Model (documented choice):

* **Tiered methods** are limited per ``(team, app, method)`` with a *sliding-window log*
  of one platform minute: a call is allowed when fewer than ``limit`` calls were allowed
  in the last 60 s; otherwise it is refused with ``Retry-After`` = seconds until the
  oldest call in the window leaves it (rounded up, at least 1). Slack describes its
  limits as per-minute windows that tolerate bursts; a sliding log allows a full
  minute's budget as a burst and never more than ``limit`` calls in any 60 s span.
* **chat.postMessage per channel**: a token bucket of one message per second refilling,
  with a burst capacity of ``POST_BURST`` (Slack: "1 per second, short bursts allowed").
* **chat.postMessage per workspace**: a sliding window of ``WORKSPACE_POSTS_PER_MINUTE``
  ("several hundred messages per minute") per team.

All durations are platform seconds divided by ``time_scale``. Refused calls are not
counted. The limiter takes the clock as an argument, so tests are exact.
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass

from .config import Clock

TIER_LIMITS = {1: 1, 2: 20, 3: 50, 4: 100}
POST_BURST = 3
WORKSPACE_POSTS_PER_MINUTE = 300

#: per-minute budget of each method (Tier n, or a "special" figure)
METHOD_LIMITS: dict[str, int] = {
    "auth.test": 600,
    "auth.revoke": TIER_LIMITS[3],
    "chat.postMessage": 600,  # the real limits are per channel / workspace, below
    "chat.update": TIER_LIMITS[3],
    "chat.delete": TIER_LIMITS[3],
    "chat.postEphemeral": TIER_LIMITS[4],
    "chat.getPermalink": 600,
    "conversations.create": TIER_LIMITS[2],
    "conversations.invite": TIER_LIMITS[3],
    "conversations.kick": TIER_LIMITS[3],
    "conversations.archive": TIER_LIMITS[2],
    "conversations.rename": TIER_LIMITS[2],
    "conversations.info": TIER_LIMITS[3],
    "conversations.list": TIER_LIMITS[2],
    "conversations.members": TIER_LIMITS[4],
    "conversations.history": TIER_LIMITS[3],
    "conversations.replies": TIER_LIMITS[3],
    "conversations.join": TIER_LIMITS[3],
    "conversations.setTopic": TIER_LIMITS[2],
    "conversations.open": TIER_LIMITS[3],
    "users.info": TIER_LIMITS[4],
    "users.list": TIER_LIMITS[2],
    "users.lookupByEmail": TIER_LIMITS[3],
    "usergroups.list": TIER_LIMITS[2],
    "usergroups.users.list": TIER_LIMITS[2],
    "reactions.add": TIER_LIMITS[3],
    "reactions.remove": TIER_LIMITS[2],
    "reactions.get": TIER_LIMITS[3],
    "pins.add": TIER_LIMITS[2],
    "views.open": TIER_LIMITS[4],
    "views.update": TIER_LIMITS[4],
    "views.push": TIER_LIMITS[4],
    "views.publish": TIER_LIMITS[4],
    "oauth.v2.access": 600,
    "oauth.v2.exchange": TIER_LIMITS[3],
    # docs.slack.dev says Tier 3, api.slack.com Tier 1; Tier 3 lets 10 sockets open.
    "apps.connections.open": TIER_LIMITS[3],
    "openid.connect.token": TIER_LIMITS[4],
    "openid.connect.userInfo": TIER_LIMITS[3],
    "team.info": TIER_LIMITS[3],
    "bots.info": TIER_LIMITS[3],
}
NON_MARKETPLACE_LIMITS = {"conversations.history": 1, "conversations.replies": 1}
DEFAULT_LIMIT = TIER_LIMITS[3]


@dataclass(frozen=True)
class Decision:
    allowed: bool
    retry_after: int = 0
    scope: str = ""  # which limit refused: "method", "channel", "workspace"


class _SlidingLog:
    def __init__(self) -> None:
        self.times: deque[float] = deque()

    def check(self, now: float, limit: int, window: float) -> float:
        """Seconds to wait (0 when allowed); records the call when allowed."""
        while self.times and self.times[0] <= now - window:
            self.times.popleft()
        if len(self.times) < limit:
            self.times.append(now)
            return 0.0
        return self.times[0] + window - now


class _Bucket:
    def __init__(self, capacity: float, now: float) -> None:
        self.tokens = capacity
        self.updated = now

    def take(self, now: float, capacity: float, per_second: float) -> float:
        self.tokens = min(capacity, self.tokens + (now - self.updated) * per_second)
        self.updated = now
        if self.tokens >= 1:
            self.tokens -= 1
            return 0.0
        return (1 - self.tokens) / per_second


class RateLimiter:
    """Decides whether a Web API call is allowed now. Not thread-safe (one event loop)."""

    def __init__(
        self,
        clock: Clock,
        time_scale: float = 1.0,
        enabled: bool = True,
        non_marketplace_app: bool = False,
    ) -> None:
        self.clock = clock
        self.time_scale = time_scale
        self.enabled = enabled
        self.non_marketplace_app = non_marketplace_app
        self._logs: dict[tuple[str, ...], _SlidingLog] = {}
        self._buckets: dict[tuple[str, ...], _Bucket] = {}

    def limit_for(self, method: str) -> int:
        if self.non_marketplace_app and method in NON_MARKETPLACE_LIMITS:
            return NON_MARKETPLACE_LIMITS[method]
        return METHOD_LIMITS.get(method, DEFAULT_LIMIT)

    @property
    def minute(self) -> float:
        return 60.0 / self.time_scale

    def _retry(self, wait: float) -> int:
        # Retry-After is whole seconds of real (scaled) time, at least 1
        return max(1, math.ceil(wait - 1e-9))

    def check(self, team_id: str, app_id: str, method: str, channel: str | None = None) -> Decision:
        if not self.enabled:
            return Decision(True)
        now = self.clock()
        if method == "chat.postMessage":
            if channel:
                key = (team_id, app_id, method, channel)
                bucket = self._buckets.get(key)
                if bucket is None:
                    bucket = self._buckets[key] = _Bucket(POST_BURST, now)
                wait = bucket.take(now, POST_BURST, self.time_scale)
                if wait:
                    return Decision(False, self._retry(wait), "channel")
            log = self._logs.setdefault((team_id, app_id, "posts"), _SlidingLog())
            wait = log.check(now, WORKSPACE_POSTS_PER_MINUTE, self.minute)
            if wait:
                return Decision(False, self._retry(wait), "workspace")
            return Decision(True)
        log = self._logs.setdefault((team_id, app_id, method), _SlidingLog())
        wait = log.check(now, self.limit_for(method), self.minute)
        if wait:
            return Decision(False, self._retry(wait), "method")
        return Decision(True)
