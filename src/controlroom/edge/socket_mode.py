"""Socket Mode intake: Slack envelopes over WebSocket, committed before they are acked.

Built on ``slack_sdk.socket_mode.aiohttp.SocketModeClient``. What the SDK (3.48) already
does, checked in its source:

- receives frames on one task and runs the listeners of each frame on a task of its own
  (so a slow commit does not hold up the next envelope);
- answers WebSocket pings, sends its own every ``ping_interval`` seconds and marks the
  session stale when no pong came back for four intervals, then reconnects;
- on a ``{"type": "disconnect"}`` frame (``warning``, ``refresh_requested``,
  ``link_disabled``, ``too_many_websockets``), calls ``apps.connections.open`` again and
  opens the new URL, closing the old session first (so ``too_many_websockets`` resolves);
- on a CLOSE frame, reconnects.

What it lacks, added here by overriding ``connect_to_new_endpoint`` and ``connect``:

- backoff: the SDK retries a failed connection every ``ping_interval`` seconds forever;
  here retries use capped exponential backoff with full jitter (``Backoff``), with an
  injected sleep;
- a fresh URL on every attempt: the SDK asks for a new URL once and then retries the
  WebSocket connect against the same, possibly expired, URL; and a failing
  ``apps.connections.open`` during a refresh is only logged. Here the URL is forgotten
  after any failure, so the next attempt calls ``apps.connections.open`` again.

What this module adds on top:

- each envelope is parsed with the HTTP parser (``transport="socket"``; an
  ``events_api`` envelope's ``retry_attempt`` becomes ``retry_num``) and acked ONLY after
  ``queue.accept`` returned; if the commit fails the envelope is not acked and Slack
  delivers it again. A redelivered envelope is a duplicate in the inbox: acked, not run.
- the ack carries the inline handler's answer when the envelope accepts a response
  payload (slash commands, view submissions, options);
- an envelope we cannot parse is acked without a payload (it would never parse) and
  counted as a rejection;
- several connections (1 to 10, Slack's limit); Slack sends each envelope to one of them.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Awaitable, Callable
from typing import Any

import aiohttp
import structlog
from slack_sdk.socket_mode.aiohttp import SocketModeClient
from slack_sdk.socket_mode.async_client import AsyncBaseSocketModeClient
from slack_sdk.socket_mode.request import SocketModeRequest
from slack_sdk.socket_mode.response import SocketModeResponse
from slack_sdk.web.async_client import AsyncWebClient

from controlroom.edge.shared import DEFAULT_INLINE_BUDGET, EdgeMetrics, InlineRegistry, run_inline
from controlroom.edge.signing import EdgeRejection
from controlroom.edge.slack_parse import SlackControl, parse_socket_payload
from controlroom.queue.base import Backoff, JobQueue

__all__ = ["SocketModeIntake"]

_log = structlog.get_logger("controlroom.edge.socket_mode")
Sleep = Callable[[float], Awaitable[None]]


class _Connection(SocketModeClient):
    """The SDK's aiohttp client with backoff and a fresh URL on every (re)connect."""

    def __init__(
        self,
        app_token: str,
        *,
        web_client: AsyncWebClient,
        logger: logging.Logger,
        ping_interval: float,
        backoff: Backoff,
        sleep: Sleep,
        rng: random.Random,
        name: str,
    ) -> None:
        super().__init__(
            app_token, logger=logger, web_client=web_client, ping_interval=ping_interval
        )
        self._backoff = backoff
        self._sleep = sleep
        self._rng = rng
        self.name = name
        self.connects = 0  # sessions established, first one included
        self.failures = 0  # failed attempts to get a URL or open it

    async def connect_to_new_endpoint(self, force: bool = False) -> None:
        acquired = False
        try:
            try:
                acquired = await asyncio.wait_for(self.connect_operation_lock.acquire(), 5)
            except TimeoutError:
                acquired = False
            if force or (acquired and not await self.is_connected()):
                self.wss_uri = None  # connect() asks for a fresh URL inside its retry loop
                await self.connect()
        finally:
            if acquired:
                self.connect_operation_lock.release()

    async def connect(self) -> None:
        attempt = 0
        while not self.closed:
            try:
                if self.wss_uri is None:
                    self.wss_uri = await self.issue_new_wss_url()
                await self._open_session(self.wss_uri)
                self.connects += 1
                _log.info("socket_mode_connected", connection=self.name, connects=self.connects)
                return
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                if self.closed:
                    return
                self.wss_uri = None
                self.failures += 1
                attempt += 1
                delay = self._backoff.delay(attempt, self._rng)
                _log.warning(
                    "socket_mode_connect_failed",
                    connection=self.name,
                    attempt=attempt,
                    retry_in=round(delay, 3),
                    error=type(exc).__name__,
                )
                await self._sleep(delay)

    async def _open_session(self, url: str) -> None:
        """One attempt: close the old session (Slack counts connections), open the new
        one, ping it, and restart the SDK's receiver and monitor on it."""
        old = self.current_session
        self.auto_reconnect_enabled = False  # keep the old monitor from racing us
        if old is not None:
            try:
                await old.close()
            except Exception as exc:
                _log.warning("socket_mode_close_failed", error=type(exc).__name__)
        if self.aiohttp_client_session.closed:
            self.aiohttp_client_session = aiohttp.ClientSession()
        self.current_session = await self.aiohttp_client_session.ws_connect(
            url,
            autoping=False,
            heartbeat=self.ping_interval,
            proxy=self.proxy,
            ssl=self.web_client.ssl if self.web_client.ssl is not None else True,
        )
        self.auto_reconnect_enabled = self.default_auto_reconnect_enabled
        self.stale = False
        self.last_ping_pong_time = None
        await self.current_session.ping(f"sdk-ping-pong:{time.time()}".encode())
        if self.current_session_monitor is not None:
            self.current_session_monitor.cancel()
        self.current_session_monitor = asyncio.ensure_future(self.monitor_current_session())
        if self.message_receiver is not None:
            self.message_receiver.cancel()
        self.message_receiver = asyncio.ensure_future(self.receive_messages())

    async def shutdown(self) -> None:
        """Close like the SDK does, then wait for its background tasks to finish."""
        tasks = [
            t
            for t in (self.message_processor, self.current_session_monitor, self.message_receiver)
            if t is not None
        ]
        await self.close()  # type: ignore[no-untyped-call]
        await asyncio.gather(*tasks, return_exceptions=True)


class SocketModeIntake:
    """Receives Slack envelopes over ``connections`` Socket Mode connections and commits
    each to ``queue`` before acknowledging it."""

    def __init__(
        self,
        app_token: str,
        queue: JobQueue,
        *,
        connections: int = 1,
        api_url: str = "https://slack.com/api/",
        inline: InlineRegistry | None = None,
        logger: logging.Logger | None = None,
        metrics: EdgeMetrics | None = None,
        clock: Callable[[], float] = time.time,
        sleep: Sleep = asyncio.sleep,
        backoff: Backoff = Backoff(base=1.0, cap=60.0),  # noqa: B008 - frozen dataclass
        rng: random.Random | None = None,
        ping_interval: float = 5.0,
        inline_budget: float = DEFAULT_INLINE_BUDGET,
    ) -> None:
        if not 1 <= connections <= 10:
            raise ValueError("Socket Mode allows 1 to 10 connections per app")
        if not app_token.startswith("xapp-"):
            raise ValueError("Socket Mode needs an app-level token (xapp-...)")
        self._app_token = app_token
        self.queue = queue
        self.connections = connections
        self.api_url = api_url if api_url.endswith("/") else api_url + "/"
        self.inline = inline
        self.logger = logger or logging.getLogger("controlroom.edge.socket_mode")
        self.metrics = metrics
        self._clock = clock
        self._sleep = sleep
        self._backoff = backoff
        self._rng = rng or random.Random()
        self.ping_interval = ping_interval
        self.inline_budget = inline_budget
        self.clients: list[_Connection] = []
        self._connecting: list[asyncio.Task[None]] = []

    async def start(self) -> None:
        """Open the connections in the background (each retries with backoff until it
        succeeds or ``close`` is called); ``wait_connected`` waits for them."""
        if self.clients:
            return
        for n in range(self.connections):
            client = _Connection(
                self._app_token,
                web_client=AsyncWebClient(base_url=self.api_url, logger=self.logger),
                logger=self.logger,
                ping_interval=self.ping_interval,
                backoff=self._backoff,
                sleep=self._sleep,
                rng=self._rng,
                name=f"socket-{n}",
            )
            client.socket_mode_request_listeners.append(self._on_request)
            self.clients.append(client)
            self._connecting.append(asyncio.create_task(client.connect()))

    async def wait_connected(self) -> None:
        """Return once every connection has been established at least once."""
        await asyncio.gather(*self._connecting)

    async def close(self) -> None:
        """Close every connection; envelopes not yet acked will be redelivered by Slack."""
        for task in self._connecting:
            task.cancel()
        await asyncio.gather(*self._connecting, return_exceptions=True)
        await asyncio.gather(*(c.shutdown() for c in self.clients), return_exceptions=True)
        self.clients.clear()
        self._connecting.clear()

    async def _on_request(self, client: AsyncBaseSocketModeClient, req: SocketModeRequest) -> None:
        started = time.perf_counter()
        try:
            await self._handle(client, req)
        finally:
            if self.metrics is not None:
                self.metrics.ack_seconds.labels("socket").observe(time.perf_counter() - started)

    async def _handle(self, client: AsyncBaseSocketModeClient, req: SocketModeRequest) -> None:
        retry_num = req.retry_attempt if isinstance(req.retry_attempt, int) else 0
        try:
            parsed = parse_socket_payload(
                req.type, req.payload, retry_num=max(0, retry_num), clock=self._clock
            )
        except EdgeRejection as exc:
            _log.warning(
                "socket_mode_rejected",
                envelope_type=req.type[:40],
                code=exc.code,
                reason=exc.reason,
            )
            if self.metrics is not None:
                self.metrics.rejected("socket", exc.code)
            await self._ack(client, req, None)
            return
        if isinstance(parsed, SlackControl):
            if self.metrics is not None:
                self.metrics.requests.labels("socket", "control").inc()
            await self._ack(client, req, None)
            return
        try:
            dispatch = self.inline.needs_dispatch(parsed) if self.inline is not None else True
            result = await self.queue.accept(parsed, dispatch=dispatch)
        except Exception:
            # Not acked: Slack delivers it again, here or on another connection.
            _log.exception("socket_mode_accept_failed", envelope_id=parsed.id)
            if self.metrics is not None:
                self.metrics.requests.labels("socket", "unavailable").inc()
            return
        if self.metrics is not None:
            outcome = "duplicate" if result.duplicate else "accepted"
            self.metrics.requests.labels("socket", outcome).inc()
        _log.info(
            "edge_accepted",
            source="socket",
            envelope_id=result.envelope_id,
            kind=parsed.kind,
            duplicate=result.duplicate,
            retry_num=parsed.retry_num,
        )
        answer: dict[str, Any] | None = None
        if not result.duplicate:
            answer = await run_inline(
                self.inline, parsed, budget=self.inline_budget, metrics=self.metrics
            )
        await self._ack(client, req, answer if req.accepts_response_payload else None)

    async def _ack(
        self,
        client: AsyncBaseSocketModeClient,
        req: SocketModeRequest,
        payload: dict[str, Any] | None,
    ) -> None:
        response = SocketModeResponse(envelope_id=req.envelope_id, payload=payload)
        try:
            await client.send_socket_mode_response(response)
        except Exception as exc:
            # The envelope is committed; Slack's redelivery will be a duplicate.
            _log.warning(
                "socket_mode_ack_failed", envelope_id=req.envelope_id, error=type(exc).__name__
            )
