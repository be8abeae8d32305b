"""Signed HTTP intake: Slack's request URLs and ``/hooks/{source}``.

Every request goes through the same steps, in this order, and nothing else happens before
the answer:

1. read the raw body with a hard cap (413 without reading past it);
2. verify the signature on the raw bytes (401/400);
3. parse and validate the shape (400/415);
4. ``await queue.accept(envelope)``: the envelope and its dispatch job are committed;
5. for a new envelope with an inline handler, run it within its time budget;
6. answer: 200 for Slack (the inline handler's JSON, or empty), 202 for webhooks.

A duplicate (a Slack retry of an ``event_id``, a redelivered webhook) is answered like the
original and not run again. Every refusal is a 4xx with a one-line plain-text reason,
counted in ``EdgeMetrics``; the queue being unreachable is a 503 so that senders retry.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from typing import Any

import structlog
from starlette.requests import ClientDisconnect, Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Route

from controlroom.config import Settings
from controlroom.edge.hooks import webhook_envelope
from controlroom.edge.replay import ReplayCache
from controlroom.edge.shared import DEFAULT_INLINE_BUDGET, EdgeMetrics, InlineRegistry, run_inline
from controlroom.edge.signing import (
    EdgeRejection,
    SlackVerifier,
    WebhookVerifier,
    hook_verifier,
)
from controlroom.edge.slack_parse import SlackControl, parse_slack_body
from controlroom.envelope import Envelope
from controlroom.queue.base import AcceptResult, JobQueue

__all__ = [
    "DEFAULT_SLACK_MAX_BODY",
    "SLACK_PATHS",
    "EdgeMetrics",
    "InlineRegistry",
    "edge_routes",
    "read_capped_body",
]

SLACK_PATHS = ("/slack/events", "/slack/interactivity", "/slack/commands", "/slack/options")
DEFAULT_SLACK_MAX_BODY = 64 * 1024

_log = structlog.get_logger("controlroom.edge.http")


async def read_capped_body(request: Request, cap: int) -> bytes:
    """The raw body, or ``EdgeRejection`` 413 as soon as it would exceed ``cap`` bytes
    (a declared ``Content-Length`` over the cap is refused before reading anything)."""
    declared = request.headers.get("content-length")
    if declared is not None:
        if not (declared.isascii() and declared.isdigit()) or len(declared) > 18:
            raise EdgeRejection("invalid Content-Length header", 400, "bad_header")
        if int(declared) > cap:
            raise EdgeRejection(f"body larger than {cap} bytes", 413, "too_large")
    chunks: list[bytes] = []
    size = 0
    try:
        async for chunk in request.stream():
            size += len(chunk)
            if size > cap:
                raise EdgeRejection(f"body larger than {cap} bytes", 413, "too_large")
            chunks.append(chunk)
    except ClientDisconnect:
        raise EdgeRejection("client disconnected", 400, "disconnected") from None
    return b"".join(chunks)


def _retry_num(request: Request) -> int:
    value = request.headers.get("x-slack-retry-num", "")
    if value.isascii() and value.isdigit() and len(value) <= 3:
        return int(value)
    return 0


def _refusal(exc: EdgeRejection, *, slack: bool) -> Response:
    headers = {}
    if slack and 400 <= exc.status < 500 and exc.status != 401:
        # A signed request that we cannot take will not get better when retried.
        headers["X-Slack-No-Retry"] = "1"
    reason = " ".join(exc.reason.split())[:300]
    return PlainTextResponse(reason, status_code=exc.status, headers=headers)


class _Edge:
    """The request handlers, bound to their collaborators."""

    def __init__(
        self,
        settings: Settings,
        queue: JobQueue,
        *,
        replay: ReplayCache,
        inline: InlineRegistry | None,
        metrics: EdgeMetrics,
        clock: Callable[[], float],
        inline_budget: float,
        slack_max_body: int,
    ) -> None:
        self.settings = settings
        self.queue = queue
        self.inline = inline
        self.metrics = metrics
        self.clock = clock
        self.inline_budget = inline_budget
        self.slack_max_body = min(slack_max_body, settings.server.max_body_bytes)
        secret = settings.slack.signing_secret
        self.slack: SlackVerifier | None = (
            SlackVerifier([secret.get()], clock=clock, replay=replay) if secret else None
        )
        self.hooks: dict[str, WebhookVerifier] = {
            name: hook_verifier(name, hook, replay=replay, clock=clock)
            for name, hook in settings.hooks.items()
        }

    async def _accept(self, envelope: Envelope, source: str) -> AcceptResult:
        try:
            dispatch = self.inline.needs_dispatch(envelope) if self.inline is not None else True
            return await self.queue.accept(envelope, dispatch=dispatch)
        except Exception:
            _log.exception("edge_accept_failed", envelope_id=envelope.id, source=source)
            raise EdgeRejection("queue unavailable, retry later", 503, "unavailable") from None

    async def _timed(
        self, source: str, request: Request, work: Callable[[Request], Awaitable[Response]]
    ) -> Response:
        started = time.perf_counter()
        try:
            return await work(request)
        except EdgeRejection as exc:
            label = source if exc.code != "unknown_source" else "hook:unknown"
            if exc.status >= 500:
                self.metrics.requests.labels(label, "unavailable").inc()
            else:
                self.metrics.rejected(label, exc.code)
                _log.info("edge_rejected", source=label, status=exc.status, code=exc.code)
            return _refusal(exc, slack=source == "slack")
        finally:
            self.metrics.ack_seconds.labels(source).observe(time.perf_counter() - started)

    # -- Slack ----------------------------------------------------------------------
    async def slack_endpoint(self, request: Request) -> Response:
        return await self._timed("slack", request, self._slack)

    async def _slack(self, request: Request) -> Response:
        if self.slack is None:
            raise EdgeRejection("Slack HTTP intake is not configured", 404, "not_configured")
        raw = await read_capped_body(request, self.slack_max_body)
        await self.slack.verify(request.headers, raw)
        retry_num = _retry_num(request)
        parsed = parse_slack_body(
            raw,
            request.headers.get("content-type", ""),
            retry_num=retry_num,
            clock=self.clock,
        )
        if isinstance(parsed, SlackControl):
            return self._control(parsed)
        result = await self._accept(parsed, "slack")
        outcome = "duplicate" if result.duplicate else "accepted"
        self.metrics.requests.labels("slack", outcome).inc()
        _log.debug(
            "edge_accepted",
            source="slack",
            envelope_id=result.envelope_id,
            kind=parsed.kind,
            duplicate=result.duplicate,
            retry_num=retry_num,
            retry_reason=request.headers.get("x-slack-retry-reason", "")[:40],
        )
        if result.duplicate:
            return Response(status_code=200)
        answer = await run_inline(
            self.inline, parsed, budget=self.inline_budget, metrics=self.metrics
        )
        if answer is None:
            return Response(status_code=200)
        return JSONResponse(answer, status_code=200)

    def _control(self, control: SlackControl) -> Response:
        self.metrics.requests.labels("slack", "control").inc()
        if control.kind == "url_verification":
            return JSONResponse({"challenge": control.challenge})
        if control.kind == "app_rate_limited":
            _log.warning("slack_app_rate_limited", team_id=control.team_id)
        return Response(status_code=200)

    # -- webhooks -------------------------------------------------------------------
    async def hook_endpoint(self, request: Request) -> Response:
        name = str(request.path_params.get("source", ""))
        source = f"hook:{name}" if name in self.hooks else "hook:unknown"
        return await self._timed(source, request, self._hook)

    async def _hook(self, request: Request) -> Response:
        name = str(request.path_params.get("source", ""))
        hook = self.settings.hooks.get(name)
        verifier = self.hooks.get(name)
        if hook is None or verifier is None:
            raise EdgeRejection("unknown webhook source", 404, "unknown_source")
        source = f"hook:{name}"
        raw = await read_capped_body(request, self.settings.server.max_body_bytes)
        await verifier.verify(request.headers, raw)
        envelope = webhook_envelope(name, hook, request.headers, raw, clock=self.clock)
        result = await self._accept(envelope, source)
        outcome = "duplicate" if result.duplicate else "accepted"
        self.metrics.requests.labels(source, outcome).inc()
        _log.debug(
            "edge_accepted",
            source=source,
            envelope_id=result.envelope_id,
            provider_event=envelope.provider_event,
            duplicate=result.duplicate,
        )
        body: dict[str, Any] = {"envelope_id": result.envelope_id, "duplicate": result.duplicate}
        return JSONResponse(body, status_code=202)


def edge_routes(
    settings: Settings,
    queue: JobQueue,
    *,
    replay: ReplayCache,
    inline: InlineRegistry | None,
    metrics: EdgeMetrics,
    clock: Callable[[], float] = time.time,
    inline_budget: float = DEFAULT_INLINE_BUDGET,
    slack_max_body_bytes: int = DEFAULT_SLACK_MAX_BODY,
) -> list[Route]:
    """The intake routes: POST ``/slack/events`` (and its aliases) and
    POST ``/hooks/{source}``. Slack bodies are capped at ``slack_max_body_bytes``
    (never more than ``settings.server.max_body_bytes``)."""
    edge = _Edge(
        settings,
        queue,
        replay=replay,
        inline=inline,
        metrics=metrics,
        clock=clock,
        inline_budget=inline_budget,
        slack_max_body=slack_max_body_bytes,
    )
    routes = [Route(path, edge.slack_endpoint, methods=["POST"]) for path in SLACK_PATHS]
    routes.append(Route("/hooks/{source}", edge.hook_endpoint, methods=["POST"]))
    return routes
