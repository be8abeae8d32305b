"""The ASGI application factory: ``create_app(settings) -> Starlette``.

Routes: the Slack and webhook edge (``/slack/events``, ``/hooks/{source}``), health
(``/healthz`` liveness, ``/readyz`` readiness: the store answers), Prometheus
``/metrics``, and a small landing page.
"""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, PlainTextResponse, Response
from starlette.routing import BaseRoute, Route
from starlette.types import ASGIApp, Receive, Scope, Send

from controlroom.config import Settings
from controlroom.edge.http import SlackIntake
from controlroom.envelope import Envelope
from controlroom.hub import Hub

__all__ = ["create_app"]


class _Inline:
    """Adapts the hub's inline handlers to the edge's registry protocol."""

    def __init__(self, hub: Hub) -> None:
        self._hub = hub

    def find(self, envelope: Envelope) -> Callable[[Envelope], Awaitable[Any]] | None:
        return self._hub.inline_for(envelope)

    def needs_dispatch(self, envelope: Envelope) -> bool:
        return self._hub.needs_dispatch(envelope)


class _FastIntake(Starlette):
    """Starlette, with Slack's intake paths served before the middleware stack.

    ``/slack/events`` is the hot path (thousands of requests a second from a busy
    workspace); its handler already answers every refusal itself, so the generic
    error-handling middleware and the router would only add latency. Anything that escapes
    the handler still reaches uvicorn, which logs it and answers 500."""

    _fast: dict[str, ASGIApp]

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["method"] == "POST":
            intake = self._fast.get(scope["path"])
            if intake is not None:
                scope["app"] = self
                await intake(scope, receive, send)
                return
        await super().__call__(scope, receive, send)


def create_app(
    settings: Settings,
    *,
    hub: Hub | None = None,
    manage_hub: bool = True,
    extra_routes: list[BaseRoute] | None = None,
) -> Starlette:
    """Build the web edge. With ``manage_hub`` the app's lifespan starts and closes the
    hub; ``controlroom up`` passes a hub it runs itself alongside the workers."""
    from controlroom.edge.http import edge_routes
    from controlroom.edge.replay import MemoryReplayCache, ReplayCache, SqlReplayCache
    from controlroom.edge.shared import EdgeMetrics

    the_hub = hub or Hub(settings)
    # One process owns an embedded SQLite hub, so an in-memory replay cache sees every
    # request it accepted; replicas on PostgreSQL share theirs through the database.
    # Either way, a replayed Slack event is also caught by the inbox's event_id dedupe.
    replay: ReplayCache = (
        SqlReplayCache(the_hub.db)
        if settings.is_distributed
        else MemoryReplayCache(max_entries=500_000)
    )
    edge_metrics = EdgeMetrics(the_hub.metrics)

    async def healthz(_: Request) -> Response:
        return JSONResponse({"ok": True})

    async def readyz(_: Request) -> Response:
        try:
            await the_hub.queue.ping()
        except Exception as exc:
            return JSONResponse({"ok": False, "error": type(exc).__name__}, status_code=503)
        return JSONResponse({"ok": True, "jobs": await the_hub.queue.counts()})

    async def metrics(_: Request) -> Response:
        return Response(generate_latest(the_hub.metrics), media_type=CONTENT_TYPE_LATEST)

    async def index(_: Request) -> Response:
        wfs = ", ".join(sorted(the_hub.registry.workflows)) or "none"
        return HTMLResponse(
            "<!doctype html><title>Control Room</title><h1>Control Room</h1>"
            f"<p>Workflows enabled: {wfs}.</p>"
            '<p><a href="/readyz">/readyz</a> · <a href="/metrics">/metrics</a></p>'
        )

    async def slack_limits(request: Request) -> Response:
        """The rate gate's budgets and cooldowns, for ``controlroom slack limits``; only
        for callers on this machine (it names workspaces and channels)."""
        host = request.client.host if request.client else ""
        if host not in ("127.0.0.1", "::1"):
            return PlainTextResponse("only available from this machine\n", status_code=403)
        workspace = request.query_params.get("workspace") or None
        states = await the_hub.gate.limits_snapshot(workspace)
        return JSONResponse([dataclasses.asdict(s) for s in states])

    async def robots(_: Request) -> Response:
        return PlainTextResponse("User-agent: *\nDisallow: /\n")

    routes: list[BaseRoute] = [
        *edge_routes(
            settings,
            the_hub.queue,
            replay=replay,
            inline=_Inline(the_hub),
            metrics=edge_metrics,
            clock=the_hub.clock,
        ),
        Route("/healthz", healthz),
        Route("/readyz", readyz),
        Route("/metrics", metrics),
        Route("/robots.txt", robots),
        Route("/admin/slack-limits", slack_limits),
        Route("/", index),
        *(extra_routes or []),
    ]
    if the_hub.workspaces.oauth is not None:
        routes.extend(the_hub.workspaces.oauth.routes())

    @contextlib.asynccontextmanager
    async def lifespan(_: Starlette) -> AsyncIterator[None]:
        if manage_hub:
            await the_hub.start()
        try:
            yield
        finally:
            if manage_hub:
                await the_hub.close()

    app = _FastIntake(routes=routes, lifespan=lifespan)
    app._fast = {
        r.path: r.endpoint
        for r in routes
        if isinstance(r, Route) and isinstance(r.endpoint, SlackIntake) and r.methods == {"POST"}
    }
    app.state.hub = the_hub
    app.state.edge_metrics = edge_metrics
    app.state.inline = _Inline(the_hub)
    return app


@contextlib.asynccontextmanager
async def socket_mode_intake(settings: Settings, app: Starlette) -> AsyncIterator[Any]:
    """Socket Mode connections feeding the same inbox as the HTTP edge, when
    ``slack.socket_mode`` is on (an app-level token is required)."""
    if not settings.slack.socket_mode:
        yield None
        return
    if settings.slack.app_token is None:
        from controlroom.errors import ConfigError

        raise ConfigError(
            [("slack.app_token", "configuration", "socket_mode = true needs an app-level token")]
        )
    from controlroom.edge.socket_mode import SocketModeIntake

    hub: Hub = app.state.hub
    intake = SocketModeIntake(
        settings.slack.app_token.get(),
        hub.queue,
        connections=settings.slack.socket_connections,
        api_url=settings.slack.api_url,
        inline=app.state.inline,
        metrics=app.state.edge_metrics,
        clock=hub.clock,
    )
    await intake.start()
    try:
        yield intake
    finally:
        await intake.close()
