"""The sandbox's ASGI app: routes only; behaviour lives in the modules they call."""

from __future__ import annotations

from typing import TYPE_CHECKING

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route, WebSocketRoute

from .web import web_routes

if TYPE_CHECKING:
    from .core import Sandbox


def build_app(sb: Sandbox, extra_routes: list[BaseRoute] | None = None) -> Starlette:
    async def health(request: Request) -> Response:
        return JSONResponse({"ok": True, "team_id": sb.team_id, "app_id": sb.app_id})

    routes: list[BaseRoute] = [
        Route("/api/{method}", sb.webapi.handle, methods=["GET", "POST"]),
        Route("/oauth/v2/authorize", sb.oauth.authorize, methods=["GET", "POST"]),
        Route("/openid/connect/authorize", sb.oauth.authorize, methods=["GET", "POST"]),
        Route("/openid/connect/keys", sb.oauth.keys_endpoint, methods=["GET"]),
        Route("/.well-known/openid-configuration", sb.oauth.discovery_endpoint, methods=["GET"]),
        Route(
            "/hooks/{kind}/{team}/{num}/{secret}",
            sb.interactions.handle_response_url,
            methods=["POST"],
        ),
        WebSocketRoute("/link/", sb.socket.endpoint),
        Route("/healthz", health, methods=["GET"]),
        *web_routes(sb),  # the web client: / and /web/...
        *(extra_routes or []),
    ]
    return Starlette(routes=routes)
