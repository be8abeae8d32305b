"""Events API delivery over HTTP: signed, 3-second timeout, Slack's retry schedule.

Every attempt is recorded in :attr:`Deliverer.records` (``sb.deliveries``). Deliveries
run as asyncio tasks owned by the sandbox; :meth:`Deliverer.settle` waits for them and
:meth:`Deliverer.aclose` cancels what is left.
"""

from __future__ import annotations

import asyncio
import copy
import json
import logging
from collections import deque
from collections.abc import Coroutine
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any
from urllib.parse import urlencode

import httpx

from .events import SUBSCRIPTION, envelope, message_subscription
from .signing import signed_headers
from .state import JSON, Channel

if TYPE_CHECKING:
    from .core import Sandbox

log = logging.getLogger("controlroom.sandbox.delivery")

#: platform seconds to wait before retry 1, 2, 3 (after the failed attempt)
RETRY_DELAYS = (0.0, 60.0, 300.0)
MAX_REDIRECTS = 2
REDIRECTS = {301, 302, 303, 307, 308}


@dataclass(frozen=True)
class DeliveryRecord:
    """One delivery attempt of an event (or interactive payload)."""

    event_id: str
    kind: str  # "event_callback", "url_verification", "block_actions", "slash_command", ...
    transport: str  # "http" | "socket"
    attempt: int  # 0 = first delivery, 1..3 = retries
    status: int | None  # HTTP status, or None when no response
    ok: bool
    reason: str | None  # failure reason (http_timeout, http_error, connection_failed, ...)
    retry_headers: dict[str, str] = field(default_factory=dict)
    no_retry: bool = False
    time: float = 0.0


@dataclass(frozen=True)
class HttpResult:
    status: int | None
    body: bytes
    headers: dict[str, str]
    reason: str | None

    @property
    def ok(self) -> bool:
        return self.status is not None and 200 <= self.status < 300


class Deliverer:
    def __init__(self, sb: Sandbox) -> None:
        self.sb = sb
        self.records: list[DeliveryRecord] = []
        #: every event_callback envelope built, delivered or not (oldest first)
        self.emitted: list[JSON] = []
        #: True once the failure rule disabled event subscriptions (see ``enable``)
        self.disabled = False
        self._sent: dict[str, deque[float]] = {}
        self._limited_minutes: set[tuple[str, int]] = set()
        self._outcomes: deque[tuple[float, bool]] = deque()
        self._tasks: set[asyncio.Task[Any]] = set()
        self._client: httpx.AsyncClient | None = None

    # -- task ownership ------------------------------------------------------------
    def spawn(self, coro: Coroutine[Any, Any, Any]) -> asyncio.Task[Any] | None:
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:  # no event loop (synchronous use): nothing can be delivered
            coro.close()
            self.records.append(
                DeliveryRecord(
                    "",
                    "event_callback",
                    "none",
                    0,
                    None,
                    False,
                    "no_event_loop",
                    time=self.sb.clock(),
                )
            )
            return None
        task = loop.create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    async def settle(self) -> None:
        """Wait until no delivery (including scheduled retries) is in flight."""
        while self._tasks:
            await asyncio.gather(*list(self._tasks), return_exceptions=True)

    async def aclose(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        if self._tasks:
            await asyncio.gather(*list(self._tasks), return_exceptions=True)
        if self._client is not None:
            await self._client.aclose()
            self._client = None

    @property
    def client(self) -> httpx.AsyncClient:
        if self._client is None:
            self._client = httpx.AsyncClient(follow_redirects=False)
        return self._client

    # -- events --------------------------------------------------------------------
    def emit(
        self, team_id: str, event: JSON, channel: Channel | None = None, *, force: bool = False
    ) -> str | None:
        """Wrap ``event`` in an ``event_callback`` and deliver it in the background.

        Returns the ``event_id``, or None when the app is not subscribed, not installed
        in the team, or cannot see the channel.
        """
        sb = self.sb
        team = sb.state.team(team_id)
        kind = str(event["type"])
        if not force:
            if not team.installed:
                return None
            if kind == "message":
                if channel is None or message_subscription(channel) not in sb.seed.app.events:
                    return None
                if team.bot_user_id not in channel.members:
                    return None
            elif channel is not None and team.bot_user_id not in channel.members:
                return None
            else:
                subscription = SUBSCRIPTION.get(kind, kind)
                if subscription is not None and subscription not in sb.seed.app.events:
                    return None
        event_id = "Ev" + sb.state.ids.new("", 10)
        if self.disabled:
            self._skip(event_id, "subscriptions_disabled")
            return event_id
        if not self._within_event_budget(team_id):
            self._skip(event_id, "app_rate_limited")
            return event_id
        body = envelope(
            team=team,
            app_id=sb.app_id,
            verification_token=sb.seed.app.verification_token,
            event=copy.deepcopy(event),  # later edits must not change what was sent
            event_id=event_id,
            event_time=int(sb.clock()),
            channel_id=channel.id if channel else None,
        )
        self.emitted.append(body)
        if sb.config.socket_mode:
            self.spawn(sb.socket.deliver_event(body))
        elif sb.request_url:
            self.spawn(self._deliver_http(sb.request_url, body))
        else:
            self.records.append(
                DeliveryRecord(
                    event_id,
                    "event_callback",
                    "none",
                    0,
                    None,
                    False,
                    "no_request_url",
                    time=sb.clock(),
                )
            )
        return event_id

    def _skip(self, event_id: str, reason: str) -> None:
        self.records.append(
            DeliveryRecord(
                event_id, "event_callback", "none", 0, None, False, reason, time=self.sb.clock()
            )
        )

    def enable(self) -> None:
        """Re-enable event subscriptions after the failure rule disabled them."""
        self.disabled = False
        self._outcomes.clear()

    def _within_event_budget(self, team_id: str) -> bool:
        """30,000 events per workspace per app per hour; past it, ``app_rate_limited``."""
        sb = self.sb
        now = sb.clock()
        window = sb.config.scaled(3600.0)
        sent = self._sent.setdefault(team_id, deque())
        while sent and sent[0] <= now - window:
            sent.popleft()
        if len(sent) < sb.config.event_rate_limit:
            sent.append(now)
            return True
        minute = int(now // 60 * 60)
        if (team_id, minute) not in self._limited_minutes and sb.request_url:
            self._limited_minutes.add((team_id, minute))
            notice = {
                "token": sb.seed.app.verification_token,
                "type": "app_rate_limited",
                "team_id": team_id,
                "minute_rate_limited": minute,
                "api_app_id": sb.app_id,
            }
            self.spawn(self._notify_rate_limited(sb.request_url, notice))
        return False

    async def _notify_rate_limited(self, url: str, notice: JSON) -> None:
        result = await self.post(url, json.dumps(notice).encode(), "application/json")
        self.records.append(
            DeliveryRecord(
                "",
                "app_rate_limited",
                "http",
                0,
                result.status,
                result.ok,
                result.reason,
                time=self.sb.clock(),
            )
        )

    def _track(self, ok: bool) -> None:
        """Slack's disable rule: >95% failed attempts within 60 min, at >= the minimum volume."""
        sb = self.sb
        now = sb.clock()
        self._outcomes.append((now, ok))
        while self._outcomes and self._outcomes[0][0] <= now - sb.config.scaled(3600.0):
            self._outcomes.popleft()
        total = len(self._outcomes)
        if total >= sb.config.disable_min_attempts:
            failed = sum(1 for _, good in self._outcomes if not good)
            if failed / total > 0.95:
                self.disabled = True

    async def post(
        self, url: str, body: bytes, content_type: str, extra: dict[str, str] | None = None
    ) -> HttpResult:
        """One signed POST within the delivery timeout; never raises for network trouble.

        Like Slack, follows at most ``MAX_REDIRECTS`` redirects, re-POSTing the same body.
        """
        ts = int(self.sb.clock())
        headers = signed_headers(self.sb.signing_secret, ts, body, content_type)
        headers.update(extra or {})
        try:
            async with asyncio.timeout(self.sb.config.delivery_timeout):
                for _ in range(MAX_REDIRECTS + 1):
                    response = await self.client.post(url, content=body, headers=headers)
                    location = response.headers.get("location")
                    if response.status_code not in REDIRECTS or not location:
                        break
                    url = str(response.url.join(location))
                else:
                    return HttpResult(response.status_code, b"", {}, "too_many_redirects")
        except (TimeoutError, httpx.TimeoutException):
            return HttpResult(None, b"", {}, "http_timeout")
        except httpx.ConnectError:
            return HttpResult(None, b"", {}, "connection_failed")
        except httpx.HTTPError:
            return HttpResult(None, b"", {}, "unknown_error")
        reason = None if 200 <= response.status_code < 300 else "http_error"
        return HttpResult(
            response.status_code,
            response.content,
            {k.lower(): v for k, v in response.headers.items()},
            reason,
        )

    async def _deliver_http(self, url: str, body: JSON) -> None:
        sb = self.sb
        raw = json.dumps(body).encode()
        event_id = str(body["event_id"])
        reason: str | None = None
        for attempt in range(len(RETRY_DELAYS) + 1):
            extra: dict[str, str] = {}
            if attempt:
                await sb.sleep(sb.config.scaled(RETRY_DELAYS[attempt - 1]))
                extra = {"X-Slack-Retry-Num": str(attempt), "X-Slack-Retry-Reason": reason or ""}
            if self.disabled:
                self._skip(event_id, "subscriptions_disabled")
                return
            result = await self.post(url, raw, "application/json", extra)
            self._track(result.ok)
            no_retry = result.headers.get("x-slack-no-retry") == "1" and result.status is not None
            self.records.append(
                DeliveryRecord(
                    event_id=event_id,
                    kind="event_callback",
                    transport="http",
                    attempt=attempt,
                    status=result.status,
                    ok=result.ok,
                    reason=result.reason,
                    retry_headers=extra,
                    no_retry=no_retry and not result.ok,
                    time=sb.clock(),
                )
            )
            if result.ok or (no_retry and result.reason == "http_error"):
                return
            reason = result.reason

    async def verify_url(self, url: str) -> bool:
        """Send ``url_verification`` and check the challenge comes back (any of 3 forms)."""
        challenge = self.sb.state.ids.hex(48)
        body = {
            "token": self.sb.seed.app.verification_token,
            "challenge": challenge,
            "type": "url_verification",
        }
        result = await self.post(url, json.dumps(body).encode(), "application/json")
        text = result.body.decode(errors="replace").strip()
        answered = text == challenge or text == urlencode({"challenge": challenge})
        if not answered:
            try:
                answered = json.loads(text).get("challenge") == challenge
            except (ValueError, AttributeError):
                answered = False
        self.records.append(
            DeliveryRecord(
                "",
                "url_verification",
                "http",
                0,
                result.status,
                result.ok and answered,
                result.reason,
                time=self.sb.clock(),
            )
        )
        return result.ok and answered
