"""The rate-gated Slack client workflow authors use as ``ctx.slack``.

:class:`SlackClient` *is* a ``slack_sdk`` ``AsyncWebClient`` (``await
client.chat_postMessage(channel=..., text=...)`` and every other method, cursor
pagination with ``async for page in await client.users_list()``, ``AsyncSlackResponse``
results), bound to one workspace's token. Two seams of ``AsyncBaseClient`` are
overridden:

* ``api_call`` (each method call): per-channel FIFO lanes for posts/updates/deletes and
  coalescing of queued ``chat.update`` calls (:mod:`controlroom.slack.ordering`);
* ``_request`` (each HTTP exchange, pagination included): the rate gate before every
  send, retries, 429 cooldowns, error classification, idempotent posts
  (:mod:`controlroom.slack.idempotent`).

Failure handling per send:

* HTTP 429 (or ``ratelimited``): the gate cools the method (the channel for posts)
  down for ``Retry-After`` plus jitter, then the call goes again through the gate (which
  raises :class:`~controlroom.errors.RetryLater` if that wait is too long).
* Transient (HTTP 5xx, connection errors, timeouts, ``internal_error``, ``fatal_error``,
  ``service_unavailable``, ``request_timeout``): retried up to ``RetryPolicy.max_attempts``
  sends with capped exponential backoff and full jitter, then
  :class:`~controlroom.errors.SlackTransientError`.
* ``token_expired`` / ``invalid_auth``: the ``on_auth_error(workspace, error)`` hook may
  return a fresh token; the call is retried once with it.
* Anything else with ``ok: false`` raises :class:`~controlroom.errors.SlackApiError` at
  once (:class:`SlackScopeError` with ``needed``/``provided`` for ``missing_scope``).

:class:`SlackOutbound` owns what a process shares: one aiohttp session (pooled
keep-alive connections), the gate, the lanes, the metrics.
"""

from __future__ import annotations

import asyncio
import json as jsonlib
import logging
import random
import time
from collections.abc import Awaitable, Callable, Mapping
from contextvars import ContextVar
from dataclasses import dataclass
from types import TracebackType
from typing import Any, Literal

import aiohttp
from slack_sdk.web.async_client import AsyncWebClient
from slack_sdk.web.async_slack_response import AsyncSlackResponse

from controlroom.errors import SlackApiError, SlackRateLimited, SlackTransientError
from controlroom.slack.gate import LimitState, RateGate, Slot
from controlroom.slack.idempotent import PostOutcomeUnknown, attach_key, key_of, new_key
from controlroom.slack.metrics import SlackMetrics
from controlroom.slack.ordering import ChannelLanes

__all__ = [
    "AUTH_ERRORS",
    "ORDERED_METHODS",
    "TRANSIENT_ERRORS",
    "AuthErrorHook",
    "RetryPolicy",
    "SlackClient",
    "SlackOutbound",
    "SlackScopeError",
]

logger = logging.getLogger("controlroom.slack.client")

TRANSIENT_ERRORS = frozenset(
    {"internal_error", "fatal_error", "service_unavailable", "request_timeout"}
)
AUTH_ERRORS = frozenset({"token_expired", "invalid_auth"})
RATE_ERRORS = frozenset({"ratelimited", "rate_limited"})
ORDERED_METHODS = frozenset(
    {"chat.postMessage", "chat.update", "chat.delete", "chat.postEphemeral", "chat.meMessage"}
)
_REQUEST_KEYS = ("headers", "data", "params", "json", "ssl", "proxy")

#: Set by ``api_call`` when it already passed the gate for the first send.
_PREPAID: ContextVar[Slot | None] = ContextVar("controlroom_slack_prepaid", default=None)

AuthErrorHook = Callable[[str, str], Awaitable[str | None]]
Rng = Callable[[float, float], float]


class SlackScopeError(SlackApiError):
    """``missing_scope``: the token lacks ``needed``; it has ``provided``."""

    def __init__(
        self, method: str, workspace: str, needed: list[str], provided: list[str], response: object
    ) -> None:
        self.needed = needed
        self.provided = provided
        super().__init__(method, workspace, "missing_scope", response)

    def __str__(self) -> str:
        return f"{super().__str__()} (needed: {','.join(self.needed) or '?'})"


@dataclass(frozen=True)
class RetryPolicy:
    """``max_attempts`` sends per call on transient failures; backoff with full jitter:
    ``uniform(0, min(cap, base * 2 ** (n - 1)))`` before the n-th retry."""

    max_attempts: int = 5
    base: float = 0.5
    cap: float = 30.0
    max_rate_limited: int = 10

    def backoff(self, retry: int, rng: Rng) -> float:
        return rng(0.0, min(self.cap, self.base * 2 ** max(0, retry - 1)))


class SlackClient(AsyncWebClient):
    """``slack_sdk``'s async client for one workspace, with every call through the gate."""

    def __init__(
        self,
        token: str,
        *,
        workspace: str,
        gate: RateGate,
        session: aiohttp.ClientSession | None = None,
        base_url: str = AsyncWebClient.BASE_URL,
        timeout: float = 30.0,
        retry: RetryPolicy | None = None,
        on_auth_error: AuthErrorHook | None = None,
        metrics: SlackMetrics | None = None,
        lanes: ChannelLanes | None = None,
        doubts: dict[str, float] | None = None,
        wall_clock: Callable[[], float] = time.time,
        rng: Rng = random.uniform,
        lookup_margin: float = 60.0,
        on_unreadable: Literal["raise", "resend"] = "raise",
    ) -> None:
        if not token:
            raise ValueError(f"no Slack token for workspace {workspace!r}")
        super().__init__(
            token=token,
            base_url=base_url,
            session=session,
            retry_handlers=[],
            logger=logger,
        )
        self.workspace = workspace
        self.gate = gate
        self.request_timeout = timeout
        self.retry = retry if retry is not None else RetryPolicy()
        self.on_auth_error = on_auth_error
        self.metrics = metrics
        self.lanes = lanes if lanes is not None else ChannelLanes()
        self._doubts = doubts if doubts is not None else {}
        self._wall_clock = wall_clock
        self._rng = rng
        self.lookup_margin = lookup_margin
        self.on_unreadable = on_unreadable
        self._own_session: aiohttp.ClientSession | None = None

    def __repr__(self) -> str:  # never show the token
        return f"SlackClient(workspace={self.workspace!r}, base_url={self.base_url!r})"

    async def aclose(self) -> None:
        """Close the session this client opened itself (never a shared one)."""
        if self._own_session is not None:
            await self._own_session.close()
            self._own_session = None

    # -- seam 1: one method call ------------------------------------------------------

    async def api_call(
        self,
        api_method: str,
        *,
        http_verb: str = "POST",
        files: dict[str, Any] | None = None,
        data: dict[str, Any] | aiohttp.FormData | None = None,
        params: dict[str, Any] | None = None,
        json: dict[str, Any] | None = None,
        headers: dict[str, Any] | None = None,
        auth: dict[str, Any] | None = None,
    ) -> AsyncSlackResponse:
        call: dict[str, Any] = {
            "http_verb": http_verb,
            "files": files,
            "data": data,
            "params": params,
            "json": json,
            "headers": headers,
            "auth": auth,
        }
        body = json if json is not None else data if isinstance(data, dict) else params
        channel = _str((body or {}).get("channel"))
        if api_method not in ORDERED_METHODS or channel is None:
            return await self._plain_call(api_method, call)
        ws = self.workspace
        ts = _str((body or {}).get("ts")) if api_method == "chat.update" else None
        if ts is None:
            async with self.lanes.lane(ws, channel):
                slot = await self._acquire(api_method, channel)
                return await self._prepaid_call(api_method, call, slot)
        pending = self.lanes.pending_update(ws, channel, ts)
        if pending is not None:
            pending.kwargs = call
            pending.superseded += 1
            if self.metrics is not None:
                self.metrics.coalesced.inc()
            result: AsyncSlackResponse = await asyncio.shield(pending.future)
            return result
        pending = self.lanes.register_update(ws, channel, ts, call)
        try:
            async with self.lanes.lane(ws, channel):
                slot = await self._acquire(api_method, channel)
                self.lanes.start_update(ws, channel, ts, pending)
                response = await self._prepaid_call(api_method, pending.kwargs, slot)
        except BaseException as exc:
            self.lanes.start_update(ws, channel, ts, pending)
            if not pending.future.done():
                if isinstance(exc, asyncio.CancelledError):
                    pending.future.cancel()
                else:
                    pending.future.set_exception(exc)
            raise
        pending.future.set_result(response)
        return response

    async def _plain_call(self, api_method: str, call: dict[str, Any]) -> AsyncSlackResponse:
        response: AsyncSlackResponse = await super().api_call(api_method, **call)
        return response

    async def _prepaid_call(
        self, api_method: str, call: dict[str, Any], slot: Slot
    ) -> AsyncSlackResponse:
        token = _PREPAID.set(slot)
        try:
            return await self._plain_call(api_method, call)
        finally:
            _PREPAID.reset(token)

    async def _acquire(self, method: str, channel: str | None) -> Slot:
        slot = await self.gate.acquire(self.workspace, method, channel)
        if self.metrics is not None:
            self.metrics.observe_wait(method, slot.waited)
        return slot

    # -- seam 2: one HTTP exchange, retries included -----------------------------------

    async def _request(
        self, *, http_verb: str, api_url: str, req_args: dict[str, Any]
    ) -> dict[str, Any]:
        slot = _PREPAID.get()
        if slot is not None:
            _PREPAID.set(None)  # nested calls (history lookups) pass the gate themselves
        method = self._method_of(api_url)
        body = _body(req_args)
        channel = _str(body.get("channel")) if body is not None else None
        key: str | None = None
        doubt = False
        first_sent = self._wall_clock()
        if method == "chat.postMessage" and body is not None:
            key, verify = _prepare_post(req_args, body)
            doubt = verify or key in self._doubts
            first_sent = min(first_sent, self._doubts.get(key, first_sent))
        thread_ts = _str(body.get("thread_ts")) if body is not None else None
        transient = limited = 0
        auth_retried = False
        while True:
            if doubt and key is not None:
                found = await self._lookup(method, channel, key, first_sent, thread_ts)
                if found is not None:
                    return self._recovered(method, key, found)
                slot = None  # re-plan after the lookup
            if slot is None:
                slot = await self._acquire(method, channel)
            try:
                status, headers, data = await self._send_once(http_verb, api_url, req_args)
            except (aiohttp.ClientError, TimeoutError) as exc:
                await self.gate.settle(slot)
                slot = None
                reason = "timeout" if isinstance(exc, TimeoutError) else "connection_error"
                sent = not isinstance(exc, aiohttp.ClientConnectorError)
                if key is not None and sent:
                    doubt = True
                    self._remember_doubt(key, first_sent)
                transient += 1
                if doubt and key is not None and transient >= self.retry.max_attempts:
                    found = await self._lookup(method, channel, key, first_sent, thread_ts)
                    if found is not None:
                        return self._recovered(method, key, found)
                await self._transient(method, reason, transient, None, exc)
                continue
            await self.gate.settle(slot)
            slot = None
            error = _str(data.get("error")) if isinstance(data, dict) else None
            if status == 429 or error in RATE_ERRORS:
                limited += 1
                await self._rate_limited(method, channel, headers, limited)
                continue
            if status >= 500 or error in TRANSIENT_ERRORS:
                if key is not None:
                    doubt = True
                    self._remember_doubt(key, first_sent)
                transient += 1
                if key is not None and transient >= self.retry.max_attempts:
                    found = await self._lookup(method, channel, key, first_sent, thread_ts)
                    if found is not None:
                        return self._recovered(method, key, found)
                await self._transient(method, error or f"http_{status}", transient, data, None)
                continue
            if status == 200 and isinstance(data, dict) and data.get("ok"):
                if key is not None:
                    self._doubts.pop(key, None)
                self._count(method, "ok")
                return {"data": data, "headers": headers, "status_code": status}
            error = error or f"http_{status}"
            if error in AUTH_ERRORS and self.on_auth_error is not None and not auth_retried:
                auth_retried = True
                fresh = await self.on_auth_error(self.workspace, error)
                if fresh:
                    self.token = fresh
                    req_args.setdefault("headers", {})["Authorization"] = f"Bearer {fresh}"
                    self._retried(method, "auth")
                    continue
            self._count(method, error)
            raise self._permanent(method, error, data)

    async def _send_once(
        self, http_verb: str, api_url: str, req_args: Mapping[str, Any]
    ) -> tuple[int, Any, Any]:
        session = self._session()
        kwargs = {k: req_args[k] for k in _REQUEST_KEYS if req_args.get(k) is not None}
        timeout = aiohttp.ClientTimeout(total=self.request_timeout)
        async with session.request(http_verb, api_url, timeout=timeout, **kwargs) as res:
            raw = await res.read()
            status, headers = res.status, res.headers
        try:
            data: Any = jsonlib.loads(raw) if raw else {}
        except ValueError:
            data = {"ok": False, "error": f"http_{status}" if status != 200 else "invalid_response"}
        return status, headers, data

    async def _transient(
        self, method: str, reason: str, count: int, data: Any, exc: BaseException | None
    ) -> None:
        if count >= self.retry.max_attempts:
            self._count(method, reason)
            raise SlackTransientError(method, self.workspace, reason, data) from exc
        self._retried(method, reason)
        await self.gate.sleep(self.retry.backoff(count, self._rng))

    async def _rate_limited(
        self, method: str, channel: str | None, headers: Any, count: int
    ) -> None:
        retry_after = _retry_after(headers)
        if self.metrics is not None:
            self.metrics.rate_limited.labels(method).inc()
        await self.gate.cooldown(self.workspace, method, channel, retry_after)
        if count > self.retry.max_rate_limited:
            self._count(method, "ratelimited")
            raise SlackRateLimited(method, self.workspace, retry_after)
        self._retried(method, "ratelimited")

    async def _lookup(
        self, method: str, channel: str | None, key: str, first_sent: float, thread_ts: str | None
    ) -> dict[str, Any] | None:
        """Find the post carrying ``key`` (see :mod:`controlroom.slack.idempotent`)."""
        if channel is None:
            return None
        oldest = f"{first_sent - self.lookup_margin:.6f}"
        limit = 15 if self.gate.tiers.non_marketplace_2025 else 200
        try:
            if thread_ts is not None:
                first = await self.conversations_replies(
                    channel=channel,
                    ts=thread_ts,
                    oldest=oldest,
                    limit=limit,
                    include_all_metadata=True,
                )
            else:
                first = await self.conversations_history(
                    channel=channel,
                    oldest=oldest,
                    inclusive=True,
                    limit=limit,
                    include_all_metadata=True,
                )
            async for page in first:
                for message in page.get("messages") or []:
                    if isinstance(message, dict) and key_of(message) == key:
                        data = {
                            "ok": True,
                            "channel": channel,
                            "ts": message.get("ts"),
                            "message": message,
                        }
                        return {"data": data, "headers": {}, "status_code": 200}
        except SlackApiError as exc:
            if self.on_unreadable == "resend":
                logger.warning("history unreadable (%s); re-sending post %s", exc.error, key)
                return None
            self._count(method, "post_outcome_unknown")
            raise PostOutcomeUnknown(method, self.workspace, key, exc.error) from exc
        return None

    def _recovered(self, method: str, key: str, found: dict[str, Any]) -> dict[str, Any]:
        self._doubts.pop(key, None)
        self._count(method, "recovered")
        return found

    def _remember_doubt(self, key: str, first_sent: float) -> None:
        self._doubts.setdefault(key, first_sent)
        if len(self._doubts) > 10_000:
            self._doubts.pop(next(iter(self._doubts)))

    def _permanent(self, method: str, error: str, data: Any) -> SlackApiError:
        if error == "missing_scope" and isinstance(data, dict):
            return SlackScopeError(
                method,
                self.workspace,
                _split(data.get("needed")),
                _split(data.get("provided")),
                data,
            )
        return SlackApiError(method, self.workspace, error, data)

    def _count(self, method: str, outcome: str) -> None:
        if self.metrics is not None:
            self.metrics.calls.labels(method, outcome).inc()

    def _retried(self, method: str, reason: str) -> None:
        if self.metrics is not None:
            self.metrics.retries.labels(method, reason).inc()

    def _method_of(self, api_url: str) -> str:
        path = api_url.split("?", 1)[0]
        if path.startswith(self.base_url):
            return path[len(self.base_url) :].strip("/")
        return path.rsplit("/", 1)[-1]

    def _session(self) -> aiohttp.ClientSession:
        if self.session is not None:
            if self.session.closed:
                # The process's pool was closed: it is stopping. Opening a private session
                # here would leak it; the job is handed back and runs again elsewhere.
                raise SlackTransientError(
                    "(any)", self.workspace, "the Slack connection pool is closed"
                )
            return self.session
        if self._own_session is None or self._own_session.closed:
            self._own_session = aiohttp.ClientSession()
        return self._own_session


class SlackOutbound:
    """What one process shares for outbound Slack: a pooled aiohttp session, the gate,
    the per-channel lanes, the in-doubt post keys and the metrics.

    ``async with SlackOutbound(gate, base_url=...) as out: client = out.client(ws, token)``.
    """

    def __init__(
        self,
        gate: RateGate,
        *,
        base_url: str = AsyncWebClient.BASE_URL,
        timeout: float = 30.0,
        retry: RetryPolicy | None = None,
        metrics: SlackMetrics | None = None,
        on_auth_error: AuthErrorHook | None = None,
        connections: int = 100,
        rng: Rng = random.uniform,
        wall_clock: Callable[[], float] = time.time,
        on_unreadable: Literal["raise", "resend"] = "raise",
    ) -> None:
        self.gate = gate
        self.base_url = base_url
        self.timeout = timeout
        self.retry = retry if retry is not None else RetryPolicy()
        self.metrics = metrics
        self.on_auth_error = on_auth_error
        self.connections = connections
        self.lanes = ChannelLanes()
        self.doubts: dict[str, float] = {}
        self._rng = rng
        self._wall_clock = wall_clock
        self._on_unreadable: Literal["raise", "resend"] = on_unreadable
        self.session: aiohttp.ClientSession | None = None

    async def start(self) -> SlackOutbound:
        if self.session is None:
            connector = aiohttp.TCPConnector(limit=self.connections, keepalive_timeout=30)
            self.session = aiohttp.ClientSession(connector=connector)
        return self

    async def aclose(self) -> None:
        if self.session is not None:
            await self.session.close()
            self.session = None

    async def __aenter__(self) -> SlackOutbound:
        return await self.start()

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    def client(self, workspace: str, token: str) -> SlackClient:
        """A client bound to ``workspace`` and its bot token, sharing this process's pool."""
        if self.session is None:
            raise RuntimeError("SlackOutbound.start() was not awaited")
        return SlackClient(
            token,
            workspace=workspace,
            gate=self.gate,
            session=self.session,
            base_url=self.base_url,
            timeout=self.timeout,
            retry=self.retry,
            on_auth_error=self.on_auth_error,
            metrics=self.metrics,
            lanes=self.lanes,
            doubts=self.doubts,
            wall_clock=self._wall_clock,
            rng=self._rng,
            on_unreadable=self._on_unreadable,
        )

    async def limits_snapshot(self, workspace: str | None = None) -> list[LimitState]:
        return await self.gate.limits_snapshot(workspace)


def _str(value: Any) -> str | None:
    return value if isinstance(value, str) and value else None


def _split(value: Any) -> list[str]:
    return [s for s in value.split(",") if s] if isinstance(value, str) else []


def _body(req_args: Mapping[str, Any]) -> dict[str, Any] | None:
    for name in ("json", "data", "params"):
        value = req_args.get(name)
        if isinstance(value, dict):
            return value
    return None


def _prepare_post(req_args: Mapping[str, Any], body: dict[str, Any]) -> tuple[str, bool]:
    """Pop the client-only arguments and attach the idempotency key to the metadata."""
    key = _str(body.pop("idempotency_key", None)) or new_key()
    verify = bool(body.pop("verify_first", False))
    attach_key(body, key, form=body is not req_args.get("json"))
    return key, verify


def _retry_after(headers: Any) -> float:
    try:
        return max(0.0, float(headers.get("Retry-After", 1)))
    except (TypeError, ValueError, AttributeError):
        return 1.0
