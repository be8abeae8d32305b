"""The Web API front door: ``/api/{method}`` over form, JSON or query bodies.

Authenticates the token, enforces scopes, rate limits and injected faults, then runs the
method handler registered with :func:`method`. Errors are Slack's: HTTP 200 with
``{"ok": false, "error": code}``, except 429 ``ratelimited`` (and injected 5xx faults).
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import json
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from .state import JSON, ApiCall, Channel, NotFound, Team, Token, User

if TYPE_CHECKING:
    from .core import Sandbox

log = logging.getLogger("controlroom.sandbox.webapi")

MAX_BODY = 5 * 1024 * 1024
_SECRET_PARAMS = {"token", "client_secret", "code", "refresh_token", "code_verifier"}


class ApiError(Exception):
    """A Slack error response (``ok: false``); ``extra`` joins the body."""

    def __init__(self, error: str, **extra: Any) -> None:
        super().__init__(error)
        self.error = error
        self.extra = extra


Handler = Callable[["Call"], Awaitable[JSON]]


@dataclass(frozen=True)
class MethodSpec:
    name: str
    handler: Handler
    scopes: tuple[str, ...]
    token_types: tuple[str, ...]
    auth: str  # "token" | "client" | "none"


REGISTRY: dict[str, MethodSpec] = {}


def method(
    name: str,
    scopes: tuple[str, ...] = (),
    token_types: tuple[str, ...] = ("bot", "user"),
    auth: str = "token",
) -> Callable[[Handler], Handler]:
    """Register a Web API method handler."""

    def register(fn: Handler) -> Handler:
        REGISTRY[name] = MethodSpec(name, fn, scopes, token_types, auth)
        return fn

    return register


@dataclass
class Call:
    """One authenticated Web API call, handed to a method handler."""

    sb: Sandbox
    method: str
    params: dict[str, Any]
    token: Token | None
    basic_auth: tuple[str, str] | None = None
    extra_headers: dict[str, str] = field(default_factory=dict)

    # -- identity ------------------------------------------------------------------
    @property
    def team(self) -> Team:
        if self.token is None:
            raise ApiError("not_authed")
        return self.sb.state.team(self.token.team_id)

    @property
    def actor_id(self) -> str:
        if self.token is None:
            raise ApiError("not_authed")
        return self.token.user_id

    @property
    def is_bot(self) -> bool:
        return self.token is not None and self.token.kind == "bot"

    def has_scope(self, *scopes: str) -> bool:
        return self.token is not None and any(s in self.token.scopes for s in scopes)

    def require_scope(self, *scopes: str) -> None:
        if not self.has_scope(*scopes):
            raise ApiError(
                "missing_scope",
                needed=scopes[0],
                provided=",".join(self.token.scopes if self.token else ()),
            )

    # -- parameters ----------------------------------------------------------------
    def opt(self, name: str) -> str | None:
        value = self.params.get(name)
        if value is None or value == "":
            return None
        if isinstance(value, (dict, list)):
            raise ApiError("invalid_arguments", response_metadata=_msg(f"{name} must be a string"))
        if isinstance(value, bool):
            return "true" if value else "false"
        return str(value)

    def req(self, name: str, error: str | None = None) -> str:
        value = self.opt(name)
        if value is None:
            if error:
                raise ApiError(error)
            raise ApiError(
                "invalid_arguments",
                response_metadata=_msg(f"missing required field: {name}"),
            )
        return value

    def flag(self, name: str, default: bool = False) -> bool:
        value = self.params.get(name)
        if value is None or value == "":
            return default
        if isinstance(value, bool):
            return value
        return str(value).lower() in ("1", "true", "yes")

    def integer(self, name: str, default: int, lo: int = 0, hi: int = 1_000_000) -> int:
        value = self.params.get(name)
        if value is None or value == "":
            return default
        try:
            number = int(value)
        except (TypeError, ValueError):
            raise ApiError(
                "invalid_arguments", response_metadata=_msg(f"{name} must be an integer")
            ) from None
        return max(lo, min(hi, number))

    def json_value(self, name: str, error: str = "invalid_arguments") -> Any:
        value = self.params.get(name)
        if value is None or value == "":
            return None
        if isinstance(value, str):
            try:
                return json.loads(value)
            except ValueError:
                raise ApiError(error, response_metadata=_msg(f"{name} is not valid JSON")) from None
        return value

    # -- lookups -------------------------------------------------------------------
    def channel(self, name: str = "channel") -> Channel:
        ref = self.req(name, "channel_not_found")
        try:
            chan = self.sb.state.channel(ref, self.team.id)
        except NotFound:
            # a user id as channel means "the DM with that user"
            try:
                user = self.sb.state.user(ref, self.team.id)
            except NotFound:
                raise ApiError("channel_not_found") from None
            if not ref.startswith(("U", "W")):
                raise ApiError("channel_not_found") from None
            return self.sb.state.dm(self.actor_id, user.id)
        if chan.team_id != self.team.id:
            raise ApiError("channel_not_found")
        if chan.is_private and self.actor_id not in chan.members:
            raise ApiError("channel_not_found")
        return chan

    def user(self, name: str = "user") -> User:
        ref = self.req(name, "user_not_found")
        user = self.sb.state.users.get(ref)
        if user is None or user.team_id != self.team.id:
            raise ApiError("user_not_found")
        return user


def _msg(text: str) -> JSON:
    return {"messages": [f"[ERROR] {text}"]}


async def _read_params(request: Request) -> tuple[dict[str, Any], bool]:
    """Query + body params; returns (params, body_was_json)."""
    params: dict[str, Any] = dict(request.query_params)
    if request.method != "POST":
        return params, False
    ctype = request.headers.get("content-type", "").split(";")[0].strip().lower()
    raw = await request.body()
    if len(raw) > MAX_BODY:
        raise ApiError("request_too_large")
    if ctype == "application/json":
        if not raw.strip():
            return params, True
        try:
            body = json.loads(raw)
        except ValueError:
            raise ApiError("invalid_json") from None
        if not isinstance(body, dict):
            raise ApiError("invalid_json")
        params.update(body)
        return params, True
    if ctype in ("application/x-www-form-urlencoded", "multipart/form-data"):
        try:
            form = await request.form()
        except Exception:
            raise ApiError("invalid_form_data") from None
        for key, value in form.multi_items():
            if isinstance(value, str):
                params[key] = value
        return params, False
    if raw.strip():
        raise ApiError("invalid_form_data")
    return params, False


def _bearer(request: Request) -> tuple[str | None, tuple[str, str] | None]:
    header = request.headers.get("authorization", "")
    scheme, _, value = header.partition(" ")
    if scheme.lower() == "bearer" and value.strip():
        return value.strip(), None
    if scheme.lower() == "basic" and value.strip():
        try:
            user, _, password = base64.b64decode(value.strip()).decode().partition(":")
        except (binascii.Error, UnicodeDecodeError):
            return None, None
        return None, (user, password)
    return None, None


def _redact(params: dict[str, Any]) -> JSON:
    return {k: ("[redacted]" if k in _SECRET_PARAMS else v) for k, v in params.items()}


class WebApi:
    """Turns HTTP requests into method calls; owns call recording."""

    def __init__(self, sb: Sandbox) -> None:
        self.sb = sb

    def _authenticate(self, spec: MethodSpec, token_value: str | None) -> Token:
        if not token_value:
            raise ApiError("not_authed")
        token = self.sb.state.tokens.get(token_value)
        if token is None:
            raise ApiError("invalid_auth")
        if token.revoked:
            raise ApiError("token_revoked")
        if token.expires_at is not None and self.sb.clock() >= token.expires_at:
            raise ApiError("token_expired")
        team = self.sb.state.teams.get(token.team_id)
        if token.kind != "app" and (team is None or not team.installed):
            raise ApiError("account_inactive" if token.kind == "bot" else "token_revoked")
        if token.kind not in spec.token_types:
            raise ApiError("not_allowed_token_type")
        if spec.scopes and not any(s in token.scopes for s in spec.scopes):
            raise ApiError("missing_scope", needed=spec.scopes[0], provided=",".join(token.scopes))
        return token

    async def handle(self, request: Request) -> Response:
        name = request.path_params["method"]
        sb = self.sb
        spec = REGISTRY.get(name)
        token: Token | None = None
        params: dict[str, Any] = {}
        status = 200
        headers: dict[str, str] = {"x-accepted-oauth-scopes": ",".join(spec.scopes) if spec else ""}
        presented: Token | None = None  # the token sent, even when it is refused
        try:
            params, was_json = await _read_params(request)
            if spec is None:
                raise ApiError("unknown_method", req_method=name)
            bearer, basic = _bearer(request)
            token_value = bearer
            if token_value is None and not was_json and spec.auth == "token":
                token_value = params.get("token") if isinstance(params.get("token"), str) else None
            presented = sb.state.tokens.get(token_value) if token_value else None
            is_token_auth = spec.auth == "token"
            token = self._authenticate(spec, token_value) if is_token_auth else presented
            body = await self._run(spec, params, token, basic, headers)
        except ApiError as exc:
            body = {"ok": False, "error": exc.error, **exc.extra}
        except _HttpFault as fault:
            body = fault.body
            status = fault.status
            headers.update(fault.headers)
        shown = token or presented
        headers["x-oauth-scopes"] = ",".join(shown.scopes) if shown else ""
        sb.state.calls.append(
            ApiCall(
                method=name,
                params=_redact(params),
                token_kind=token.kind if token else None,
                team_id=token.team_id if token else None,
                http_status=status,
                error=None if body.get("ok") else str(body.get("error")),
                time=sb.clock(),
            )
        )
        return JSONResponse(body, status_code=status, headers=headers)

    async def _run(
        self,
        spec: MethodSpec,
        params: dict[str, Any],
        token: Token | None,
        basic: tuple[str, str] | None,
        headers: dict[str, str],
    ) -> JSON:
        sb = self.sb
        team_id = token.team_id if token else "-"
        channel = params.get("channel") if spec.name == "chat.postMessage" else None
        plan = sb.faults.draw(spec.name)
        if plan.storm_retry_after > 0:
            retry = max(1, int(plan.storm_retry_after + 0.999))
            raise _HttpFault(
                429, {"ok": False, "error": "ratelimited"}, {"Retry-After": str(retry)}
            )
        decision = sb.ratelimiter.check(
            team_id, sb.app_id, spec.name, channel if isinstance(channel, str) else None
        )
        if not decision.allowed:
            raise _HttpFault(
                429,
                {"ok": False, "error": "ratelimited"},
                {"Retry-After": str(decision.retry_after)},
            )
        if plan.latency:
            await sb.sleep(plan.latency)
        if plan.http_5xx:
            raise _HttpFault(503, {"ok": False, "error": "service_unavailable"}, {})
        if plan.error:
            return {"ok": False, "error": "internal_error"}
        call = Call(sb, spec.name, params, token, basic)
        try:
            result = await spec.handler(call)
        except ApiError:
            raise
        except Exception:  # a sandbox bug must not become a 500 for the client
            log.exception("sandbox method %s failed", spec.name)
            raise ApiError("internal_error") from None
        headers.update(call.extra_headers)
        if plan.timeout:
            await sb.hold(sb.config.fault_timeout_hold)
        return {"ok": True, **result}


class _HttpFault(Exception):
    def __init__(self, status: int, body: JSON, headers: dict[str, str]) -> None:
        super().__init__(status)
        self.status = status
        self.body = body
        self.headers = headers


async def wait_or(event: asyncio.Event, seconds: float) -> None:
    """Sleep ``seconds`` or until ``event`` is set."""
    try:
        await asyncio.wait_for(event.wait(), timeout=seconds)
    except TimeoutError:
        return
