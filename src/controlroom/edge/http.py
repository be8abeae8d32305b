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

import json
import time
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

import structlog
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Route
from starlette.types import Receive, Scope, Send

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
    "SlackIntake",
    "edge_routes",
    "read_asgi_body",
    "read_capped_body",
]

SLACK_PATHS = ("/slack/events", "/slack/interactivity", "/slack/commands", "/slack/options")
DEFAULT_SLACK_MAX_BODY = 64 * 1024

_log = structlog.get_logger("controlroom.edge.http")


async def read_capped_body(request: Request, cap: int) -> bytes:
    """The raw body of a Starlette request, capped (see ``read_asgi_body``)."""
    return await read_asgi_body(request.receive, request.headers.get("content-length"), cap)


async def read_asgi_body(receive: Receive, declared: str | None, cap: int) -> bytes:
    """The raw body from an ASGI ``receive``, or ``EdgeRejection`` 413 as soon as it would
    exceed ``cap`` bytes (a ``declared`` Content-Length over the cap is refused before
    reading anything; 400 if the client goes away before the end)."""
    if declared is not None:
        if not (declared.isascii() and declared.isdigit()) or len(declared) > 18:
            raise EdgeRejection("invalid Content-Length header", 400, "bad_header")
        if int(declared) > cap:
            raise EdgeRejection(f"body larger than {cap} bytes", 413, "too_large")
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] != "http.request":
            raise EdgeRejection("client disconnected", 400, "disconnected")
        chunk: bytes = message.get("body", b"")
        size += len(chunk)
        if size > cap:
            raise EdgeRejection(f"body larger than {cap} bytes", 413, "too_large")
        if not message.get("more_body", False):
            if not chunks:
                return chunk
            chunks.append(chunk)
            return b"".join(chunks)
        chunks.append(chunk)


_SLACK_HEADERS = {
    name.encode("latin-1"): name
    for name in (
        "content-length",
        "content-type",
        "x-slack-signature",
        "x-slack-request-timestamp",
        "x-slack-retry-num",
        "x-slack-retry-reason",
    )
}


def _slack_headers(scope: Scope) -> dict[str, str]:
    """The headers the Slack intake reads, by lower-case name (the first of repeated
    ones), decoded as Latin-1 like Starlette's ``Headers``."""
    found: dict[str, str] = {}
    for raw_name, value in scope["headers"]:
        name = _SLACK_HEADERS.get(raw_name)
        if name is not None and name not in found:
            found[name] = value.decode("latin-1")
    return found


def _retry_num(headers: Mapping[str, str]) -> int:
    value = headers.get("x-slack-retry-num", "")
    if value.isascii() and value.isdigit() and len(value) <= 3:
        return int(value)
    return 0


def _json_bytes(value: Any) -> bytes:
    """JSON the way Starlette's ``JSONResponse`` renders it."""
    return json.dumps(
        value, ensure_ascii=False, allow_nan=False, indent=None, separators=(",", ":")
    ).encode("utf-8")


_JSON = b"application/json"
_TEXT = b"text/plain; charset=utf-8"


async def _answer(
    send: Send, status: int, body: bytes = b"", content_type: bytes = b"", no_retry: bool = False
) -> None:
    """Send a complete response; ``no_retry`` adds ``X-Slack-No-Retry: 1``. The header
    list is new each time: middleware may add to it in place."""
    headers = [(b"content-length", str(len(body)).encode("ascii") if body else b"0")]
    if content_type:
        headers.append((b"content-type", content_type))
    if no_retry:
        headers.append((b"x-slack-no-retry", b"1"))
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


def _refusal(exc: EdgeRejection) -> Response:
    return PlainTextResponse(_reason(exc), status_code=exc.status)


def _no_retry(exc: EdgeRejection) -> bool:
    # A signed request that we cannot take will not get better when retried.
    return 400 <= exc.status < 500 and exc.status != 401


def _reason(exc: EdgeRejection) -> str:
    return " ".join(exc.reason.split())[:300]


class SlackIntake:
    """The ASGI app behind Slack's request URLs. It works on the raw ASGI messages (no
    request or response objects): this is the path every Slack event takes, and at
    thousands of requests a second the framework's conveniences cost more than the
    signature check and the parse together."""

    def __init__(self, edge: _Edge) -> None:
        self._edge = edge

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await self._edge.slack_asgi(scope, receive, send)


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
        # Bound once: looking a labelled child up costs about a microsecond a request.
        self._slack_ack = metrics.ack_seconds.labels("slack")
        self._slack_accepted = metrics.requests.labels("slack", "accepted")
        self._slack_duplicate = metrics.requests.labels("slack", "duplicate")

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
            self._count_refusal(label, exc)
            return _refusal(exc)
        finally:
            self.metrics.ack_seconds.labels(source).observe(time.perf_counter() - started)

    def _count_refusal(self, source: str, exc: EdgeRejection) -> None:
        if exc.status >= 500:
            self.metrics.requests.labels(source, "unavailable").inc()
        else:
            self.metrics.rejected(source, exc.code)
            _log.info("edge_rejected", source=source, status=exc.status, code=exc.code)

    # -- Slack ----------------------------------------------------------------------
    async def slack_asgi(self, scope: Scope, receive: Receive, send: Send) -> None:
        started = time.perf_counter()
        try:
            status, body, content_type = await self._slack(scope, receive)
        except EdgeRejection as exc:
            self._count_refusal("slack", exc)
            status, body, content_type = exc.status, _reason(exc).encode("utf-8"), _TEXT
            await _answer(send, status, body, content_type, no_retry=_no_retry(exc))
        else:
            await _answer(send, status, body, content_type)
        finally:
            self._slack_ack.observe(time.perf_counter() - started)

    async def _slack(self, scope: Scope, receive: Receive) -> tuple[int, bytes, bytes]:
        if self.slack is None:
            raise EdgeRejection("Slack HTTP intake is not configured", 404, "not_configured")
        headers = _slack_headers(scope)
        raw = await read_asgi_body(receive, headers.get("content-length"), self.slack_max_body)
        await self.slack.verify(headers, raw)
        retry_num = _retry_num(headers)
        parsed = parse_slack_body(
            raw,
            headers.get("content-type", ""),
            retry_num=retry_num,
            clock=self.clock,
        )
        if isinstance(parsed, SlackControl):
            return self._control(parsed)
        result = await self._accept(parsed, "slack")
        if result.duplicate or retry_num:
            _log.debug(
                "edge_accepted",
                source="slack",
                envelope_id=result.envelope_id,
                kind=parsed.kind,
                duplicate=result.duplicate,
                retry_num=retry_num,
                retry_reason=headers.get("x-slack-retry-reason", "")[:40],
            )
        if result.duplicate:
            self._slack_duplicate.inc()
            return 200, b"", b""
        self._slack_accepted.inc()
        answer = await run_inline(
            self.inline, parsed, budget=self.inline_budget, metrics=self.metrics
        )
        if answer is None:
            return 200, b"", b""
        return 200, _json_bytes(answer), _JSON

    def _control(self, control: SlackControl) -> tuple[int, bytes, bytes]:
        self.metrics.requests.labels("slack", "control").inc()
        if control.kind == "url_verification":
            return 200, _json_bytes({"challenge": control.challenge}), _JSON
        if control.kind == "app_rate_limited":
            _log.warning("slack_app_rate_limited", team_id=control.team_id)
        return 200, b"", b""

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
    intake = SlackIntake(edge)
    routes = [Route(path, intake, methods=["POST"]) for path in SLACK_PATHS]
    routes.append(Route("/hooks/{source}", edge.hook_endpoint, methods=["POST"]))
    return routes
