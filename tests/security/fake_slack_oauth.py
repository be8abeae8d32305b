"""A small fake of Slack's OAuth v2 endpoints (authorize, oauth.v2.access with code and
refresh_token grants, oauth.v2.exchange), answering the documented payload shapes
(PLATFORM.md §6). The authorize page approves at once, as if the user clicked Allow."""

from __future__ import annotations

import base64
import itertools
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlencode

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, RedirectResponse, Response
from starlette.routing import Route


@dataclass
class Workspace:
    team_id: str
    team_name: str
    enterprise_id: str = ""
    org_install: bool = False


@dataclass
class FakeSlackOAuth:
    client_id: str = "111.222"
    client_secret: str = "fake-client-secret-value"
    redirect_uri: str = ""
    workspace: Workspace = field(default_factory=lambda: Workspace("T0AAA", "Alpha"))
    rotation: bool = True
    clock: Callable[[], float] = time.time
    codes: dict[str, tuple[Workspace, str, str]] = field(default_factory=dict)
    refresh_tokens: dict[str, bool] = field(default_factory=dict)  # token -> used
    refresh_calls: int = 0
    access_calls: int = 0
    exchanged: set[str] = field(default_factory=set)
    _seq: itertools.count[int] = field(default_factory=lambda: itertools.count(1))

    def _tokens(self, team: str) -> dict[str, Any]:
        n = next(self._seq)
        if not self.rotation:
            return {"access_token": f"xoxb-{team}-{n}-longlivedbottoken"}
        refresh = f"xoxe-1-{team}-{n}-refreshtoken"
        self.refresh_tokens[refresh] = False
        return {
            "access_token": f"xoxe.xoxb-1-{team}-{n}-rotatingbottoken",
            "expires_in": 43200,
            "refresh_token": refresh,
        }

    def _client_ok(self, request: Request, form: Any) -> bool:
        auth = request.headers.get("authorization", "")
        if auth.startswith("Basic "):
            cid, _, secret = base64.b64decode(auth[6:]).decode().partition(":")
        else:
            cid, secret = str(form.get("client_id", "")), str(form.get("client_secret", ""))
        return cid == self.client_id and secret == self.client_secret

    async def authorize(self, request: Request) -> Response:
        q = request.query_params
        if q.get("client_id") != self.client_id:
            return JSONResponse({"ok": False, "error": "invalid_client_id"}, status_code=400)
        code = f"code-{next(self._seq)}"
        self.codes[code] = (self.workspace, q.get("redirect_uri", ""), q.get("scope", ""))
        target = q.get("redirect_uri") or self.redirect_uri
        return RedirectResponse(
            f"{target}?{urlencode({'code': code, 'state': q['state']})}", status_code=302
        )

    async def access(self, request: Request) -> Response:
        form = await request.form()
        self.access_calls += 1
        if not self._client_ok(request, form):
            return JSONResponse({"ok": False, "error": "bad_client_secret"})
        grant = form.get("grant_type", "authorization_code")
        if grant == "refresh_token":
            self.refresh_calls += 1
            token = str(form.get("refresh_token", ""))
            if self.refresh_tokens.get(token, True):
                return JSONResponse({"ok": False, "error": "invalid_refresh_token"})
            self.refresh_tokens[token] = True
            team = token.split("-")[2]
            return JSONResponse(
                {
                    "ok": True,
                    "app_id": "A0FAKE",
                    "token_type": "bot",
                    "scope": "chat:write,commands",
                    "bot_user_id": "U0BOT",
                    "team": {"id": team, "name": "x"},
                    "enterprise": None,
                    "is_enterprise_install": False,
                    **self._tokens(team),
                }
            )
        code = str(form.get("code", ""))
        if code not in self.codes:
            return JSONResponse({"ok": False, "error": "invalid_code"})
        ws, redirect_uri, scope = self.codes.pop(code)
        if redirect_uri and form.get("redirect_uri") != redirect_uri:
            return JSONResponse({"ok": False, "error": "bad_redirect_uri"})
        if self.redirect_uri and form.get("redirect_uri") != self.redirect_uri:
            return JSONResponse({"ok": False, "error": "bad_redirect_uri"})
        key = ws.enterprise_id if ws.org_install else ws.team_id
        return JSONResponse(
            {
                "ok": True,
                "app_id": "A0FAKE",
                "token_type": "bot",
                "scope": scope,
                "bot_user_id": "U0BOT",
                "team": None if ws.org_install else {"id": ws.team_id, "name": ws.team_name},
                "enterprise": {"id": ws.enterprise_id, "name": "Grid"}
                if ws.enterprise_id
                else None,
                "is_enterprise_install": ws.org_install,
                "authed_user": {
                    "id": "U0INSTALLER",
                    "scope": "search:read",
                    "access_token": f"xoxp-{key}-user-token-value",
                    "token_type": "user",
                },
                **self._tokens(key),
            }
        )

    async def exchange(self, request: Request) -> Response:
        form = await request.form()
        if not self._client_ok(request, form):
            return JSONResponse({"ok": False, "error": "bad_client_secret"})
        token = str(form.get("token", ""))
        if token in self.exchanged:
            return JSONResponse({"ok": False, "error": "token_already_exchanged"})
        self.exchanged.add(token)
        team = token.split("-")[1]
        return JSONResponse(
            {
                "ok": True,
                "token_type": "bot",
                "team": {"id": team},
                **{**self._tokens(team), "expires_in": 43200},
            }
            if self.rotation
            else {"ok": False, "error": "token_rotation_not_enabled"}
        )

    def app(self) -> Starlette:
        return Starlette(
            routes=[
                Route("/oauth/v2/authorize", self.authorize),
                Route("/api/oauth.v2.access", self.access, methods=["POST"]),
                Route("/api/oauth.v2.exchange", self.exchange, methods=["POST"]),
            ]
        )
