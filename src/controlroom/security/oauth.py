"""Slack OAuth v2 installs and token rotation.

``/slack/install`` sets a random browser cookie and issues a ``state`` bound to it
(stored hashed, single-use, expiring after ``ttl``), then redirects to Slack's authorize
page. ``/slack/oauth_redirect`` accepts the answer only from the same browser, with an
unused, unexpired state; it exchanges the code with ``oauth.v2.access`` (client
credentials by HTTP Basic, the same ``redirect_uri``), stores the installation
encrypted, and audits the outcome. Enterprise Grid org-wide installs are stored under
the enterprise id.

``TokenRotator.fresh`` refreshes a rotating bot token ahead of its expiry; one worker
at a time holds the row lease. A caller that loses the race keeps using the current
token (refreshing does not revoke it at once) or, if it has already expired, waits for
the winner. A refresh token Slack refuses marks the installation as needing
re-authorisation.
"""

from __future__ import annotations

import asyncio
import hashlib
import html
import math
import secrets
import time
from collections import OrderedDict, deque
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlencode, urlsplit

import httpx
from sqlalchemy import Column, Double, String, Table, delete, insert, select, update
from sqlalchemy.engine import Connection
from starlette.requests import Request
from starlette.responses import HTMLResponse, RedirectResponse, Response
from starlette.routing import Route

from controlroom.config import Secret
from controlroom.errors import ControlRoomError, SlackApiError, SlackTransientError
from controlroom.security.audit import AuditLog
from controlroom.security.installations import Installation, InstallationStore
from controlroom.security.redaction import RateLimitedLogger
from controlroom.store.db import Database, metadata

__all__ = [
    "ClientLimiter",
    "InstallationUnavailable",
    "OAuthSettings",
    "OAuthStateStore",
    "SlackOAuth",
    "TokenRotator",
    "installation_from_oauth",
    "oauth_states",
]

COOKIE = "cr_oauth_browser"
REAUTH_ERRORS = frozenset(
    {
        "invalid_refresh_token",
        "invalid_grant_type",
        "token_revoked",
        "invalid_client_id",
        "bad_client_secret",
        "app_uninstalled",
        "account_inactive",
    }
)

oauth_states = Table(
    "oauth_states",
    metadata,
    Column("state_hash", String(64), primary_key=True),
    Column("browser_hash", String(64), nullable=False),
    Column("created_at", Double, nullable=False),
    Column("expires_at", Double, nullable=False),
    Column("consumed_at", Double, nullable=True),
)


def _h(value: str) -> str:
    return hashlib.sha256(value.encode()).hexdigest()


class InstallationUnavailable(ControlRoomError):
    """No usable installation for a workspace (missing, needs re-authorisation, revoked):
    jobs for it should wait, not fail."""

    def __init__(self, team_id: str, enterprise_id: str, status: str, reason: str) -> None:
        self.team_id = team_id
        self.enterprise_id = enterprise_id
        self.status = status
        self.reason = reason
        where = team_id or enterprise_id or "?"
        super().__init__(f"installation {where} is {status}: {reason}")


class OAuthStateStore:
    """Single-use, expiring OAuth states bound to a browser cookie. Only hashes are
    stored, so a database reader cannot complete someone else's install."""

    def __init__(
        self, db: Database, clock: Callable[[], float] = time.time, ttl: float = 600.0
    ) -> None:
        self.db = db
        self.clock = clock
        self.ttl = ttl

    async def issue(self, browser_id: str) -> str:
        state = secrets.token_urlsafe(32)
        now = self.clock()

        def work(conn: Connection) -> None:
            # Housekeeping: forget states one TTL after they expired.
            conn.execute(delete(oauth_states).where(oauth_states.c.expires_at < now - self.ttl))
            conn.execute(
                insert(oauth_states).values(
                    state_hash=_h(state),
                    browser_hash=_h(browser_id),
                    created_at=now,
                    expires_at=now + self.ttl,
                )
            )

        await self.db.run(work)
        return state

    async def consume(self, state: str, browser_id: str) -> str | None:
        """Use ``state`` once. Returns None when valid, else the reason it is not."""
        now = self.clock()
        sh, bh = _h(state), _h(browser_id)

        def work(conn: Connection) -> str | None:
            done = conn.execute(
                update(oauth_states)
                .where(
                    oauth_states.c.state_hash == sh,
                    oauth_states.c.browser_hash == bh,
                    oauth_states.c.consumed_at.is_(None),
                    oauth_states.c.expires_at > now,
                )
                .values(consumed_at=now)
            ).rowcount
            if done == 1:
                return None
            row = conn.execute(select(oauth_states).where(oauth_states.c.state_hash == sh)).first()
            if row is None:
                return "unknown state"
            if row.consumed_at is not None:
                return "state already used"
            if row.expires_at <= now:
                return "state expired"
            return "state was issued to another browser"

        return await self.db.run(work)


@dataclass(frozen=True)
class OAuthSettings:
    client_id: str
    client_secret: Secret
    redirect_uri: str
    bot_scopes: tuple[str, ...]
    user_scopes: tuple[str, ...] = ()
    authorize_url: str = "https://slack.com/oauth/v2/authorize"
    api_url: str = "https://slack.com/api/"
    install_path: str = "/slack/install"

    @property
    def redirect_path(self) -> str:
        return urlsplit(self.redirect_uri).path or "/slack/oauth_redirect"


def _str(value: Any) -> str:
    return value if isinstance(value, str) else ""


def _block(resp: Mapping[str, Any], key: str) -> Mapping[str, Any]:
    value = resp.get(key)
    return value if isinstance(value, Mapping) else {}


def installation_from_oauth(resp: Mapping[str, Any], now: float) -> Installation:
    """Map an ``oauth.v2.access`` answer to an Installation (validating its shape)."""
    team, enterprise, user = (
        _block(resp, "team"),
        _block(resp, "enterprise"),
        _block(resp, "authed_user"),
    )
    token = _str(resp.get("access_token"))
    if not token:
        raise ValueError("oauth.v2.access answer has no access_token")
    team_id, ent_id = _str(team.get("id")), _str(enterprise.get("id"))
    is_org = bool(resp.get("is_enterprise_install"))
    if not team_id and not (is_org and ent_id):
        raise ValueError("oauth.v2.access answer has no team id")

    def expiry(block: Mapping[str, Any]) -> float | None:
        exp = block.get("expires_in")
        return now + float(exp) if isinstance(exp, int | float) and exp > 0 else None

    def secret(value: Any, name: str) -> Secret | None:
        return Secret(value, reference=name) if isinstance(value, str) and value else None

    return Installation(
        team_id="" if is_org else team_id,
        enterprise_id=ent_id,
        is_enterprise_install=is_org,
        app_id=_str(resp.get("app_id")),
        bot_user_id=_str(resp.get("bot_user_id")),
        installer_user_id=_str(user.get("id")),
        bot_scopes=tuple(s for s in _str(resp.get("scope")).split(",") if s),
        user_scopes=tuple(s for s in _str(user.get("scope")).split(",") if s),
        bot_token=secret(token, "bot_token"),
        bot_refresh_token=secret(resp.get("refresh_token"), "bot_refresh_token"),
        bot_token_expires_at=expiry(resp),
        user_token=secret(user.get("access_token"), "user_token"),
        user_refresh_token=secret(user.get("refresh_token"), "user_refresh_token"),
        user_token_expires_at=expiry(user),
    )


def _page(title: str, body: str, status: int) -> HTMLResponse:
    doc = (
        f"<!doctype html><html><head><meta charset=utf-8><title>{html.escape(title)}"
        f"</title></head><body><h1>{html.escape(title)}</h1><p>{html.escape(body)}</p>"
        "</body></html>"
    )
    resp = HTMLResponse(doc, status_code=status)
    resp.headers["cache-control"] = "no-store"
    resp.headers["referrer-policy"] = "no-referrer"
    return resp


class ClientLimiter:
    """At most ``limit`` requests per ``window`` seconds from one client address, in
    this process's memory (the install pages are opened by people, a few times; a
    script hammering them would fill the state table and the audit log). The oldest
    addresses are forgotten past ``max_clients``."""

    def __init__(
        self,
        limit: int = 20,
        window: float = 60.0,
        *,
        max_clients: int = 10_000,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.limit = limit
        self.window = window
        self.max_clients = max_clients
        self._clock = clock
        self._seen: OrderedDict[str, deque[float]] = OrderedDict()

    def retry_after(self, client: str) -> float:
        """0 if ``client`` may go on (the request is counted), else seconds to wait."""
        now = self._clock()
        times = self._seen.pop(client, None) or deque()
        while times and times[0] <= now - self.window:
            times.popleft()
        self._seen[client] = times
        while len(self._seen) > self.max_clients:
            self._seen.popitem(last=False)
        if len(times) >= self.limit:
            return max(0.0, times[0] + self.window - now)
        times.append(now)
        return 0.0


class SlackOAuth:
    """The install endpoints and the ``oauth.v2.*`` calls."""

    def __init__(
        self,
        settings: OAuthSettings,
        http: httpx.AsyncClient,
        store: InstallationStore,
        states: OAuthStateStore,
        *,
        audit: AuditLog | None = None,
        security_log: RateLimitedLogger | None = None,
        clock: Callable[[], float] = time.time,
        limiter: ClientLimiter | None = None,
    ) -> None:
        self.settings = settings
        self.http = http
        self.store = store
        self.states = states
        self.audit = audit
        self.security_log = security_log
        self.clock = clock
        self.limiter = limiter if limiter is not None else ClientLimiter()

    # ---------------------------------------------------------------- Slack calls
    def authorize_url(self, state: str, team: str | None = None) -> str:
        s = self.settings
        query = {
            "client_id": s.client_id,
            "scope": ",".join(s.bot_scopes),
            "user_scope": ",".join(s.user_scopes),
            "redirect_uri": s.redirect_uri,
            "state": state,
        }
        if team:
            query["team"] = team
        return f"{s.authorize_url}?{urlencode(query)}"

    async def call(self, method: str, data: Mapping[str, str], team: str = "") -> dict[str, Any]:
        """POST an ``oauth.v2.*`` method with HTTP Basic client credentials."""
        s = self.settings
        try:
            resp = await self.http.post(
                s.api_url.rstrip("/") + "/" + method,
                data=dict(data),
                auth=(s.client_id, s.client_secret.get()),
                timeout=10.0,
            )
        except httpx.HTTPError as exc:
            raise SlackTransientError(method, team, f"network: {type(exc).__name__}") from None
        if resp.status_code >= 500 or resp.status_code == 429:
            raise SlackTransientError(method, team, f"http_{resp.status_code}")
        try:
            body = resp.json()
        except ValueError:
            raise SlackTransientError(method, team, "invalid_json") from None
        if not isinstance(body, dict) or not body.get("ok"):
            error = body.get("error", "unknown_error") if isinstance(body, dict) else "?"
            raise SlackApiError(method, team, str(error))
        return body

    async def exchange_code(self, code: str) -> Installation:
        body = await self.call(
            "oauth.v2.access",
            {
                "code": code,
                "redirect_uri": self.settings.redirect_uri,
                "grant_type": "authorization_code",
            },
        )
        return installation_from_oauth(body, self.clock())

    async def exchange_long_lived(self, inst: Installation) -> Installation:
        """``oauth.v2.exchange``: migrate a long-lived bot token to a rotating one."""
        if inst.bot_token is None:
            raise ValueError("installation has no bot token")
        team = inst.team_id or inst.enterprise_id
        body = await self.call("oauth.v2.exchange", {"token": inst.bot_token.get()}, team)
        now = self.clock()
        exp = body.get("expires_in")
        await self.store.update_tokens(
            inst.team_id,
            inst.enterprise_id,
            bot_token=Secret(str(body["access_token"]), "bot_token"),
            bot_refresh_token=Secret(str(body["refresh_token"]), "bot_refresh_token"),
            bot_token_expires_at=now + float(exp) if isinstance(exp, int | float) else None,
        )
        found = await self.store.find(inst.team_id, inst.enterprise_id)
        assert found is not None
        return found

    async def revoke(
        self, team_id: str, enterprise_id: str = "", *, actor: str = "controlroom"
    ) -> bool:
        """``controlroom installs revoke``: revoke the tokens on Slack (``auth.revoke``),
        then delete the installation locally. Returns False when there was none."""
        inst = await self.store.find(team_id, enterprise_id)
        if inst is None:
            return False
        where = inst.team_id or inst.enterprise_id
        url = self.settings.api_url.rstrip("/") + "/auth.revoke"
        for token in (inst.user_token, inst.bot_token):
            if token is None:
                continue
            try:
                resp = await self.http.post(
                    url, headers={"authorization": f"Bearer {token.get()}"}, timeout=10.0
                )
                body = resp.json()
            except (httpx.HTTPError, ValueError) as exc:
                raise SlackTransientError("auth.revoke", where, type(exc).__name__) from None
            error = body.get("error") if isinstance(body, dict) else "invalid_json"
            if not (isinstance(body, dict) and body.get("ok")) and error not in (
                "token_revoked",
                "invalid_auth",
                "account_inactive",
                "token_expired",
            ):
                raise SlackApiError("auth.revoke", where, str(error))
        await self.store.delete(inst.team_id, inst.enterprise_id)
        if self.audit is not None:
            await self.audit.record(
                actor=actor,
                action="installs.revoke",
                target=where,
                outcome="allowed",
                details={"enterprise_id": inst.enterprise_id},
            )
        return True

    # ---------------------------------------------------------------- endpoints
    def routes(self) -> list[Route]:
        return [
            Route(self.settings.install_path, self._limited(self.install), methods=["GET"]),
            Route(self.settings.redirect_path, self._limited(self.redirect), methods=["GET"]),
        ]

    def _limited(
        self, endpoint: Callable[[Request], Awaitable[Response]]
    ) -> Callable[[Request], Awaitable[Response]]:
        """``endpoint`` behind the per-client limit: over it, a 429 with Retry-After."""

        async def limited(request: Request) -> Response:
            client = request.client.host if request.client else "unknown"
            wait = self.limiter.retry_after(client)
            if wait <= 0:
                return await endpoint(request)
            if self.security_log is not None:
                self.security_log.warning(
                    "oauth_rate", "oauth endpoint rate-limited", path=request.url.path
                )
            seconds = max(1, math.ceil(wait))
            resp = _page(
                "Too many attempts",
                f"Too many installation requests from this address; try again in {seconds} s.",
                429,
            )
            resp.headers["retry-after"] = str(seconds)
            return resp

        return limited

    def _secure(self) -> bool:
        return self.settings.redirect_uri.startswith("https://")

    async def install(self, request: Request) -> Response:
        browser = secrets.token_urlsafe(32)
        state = await self.states.issue(browser)
        team = request.query_params.get("team")
        team = team if team and team.isalnum() and team.startswith("T") else None
        resp = RedirectResponse(self.authorize_url(state, team), status_code=302)
        resp.headers["cache-control"] = "no-store"
        resp.set_cookie(
            COOKIE,
            browser,
            max_age=int(self.states.ttl),
            httponly=True,
            secure=self._secure(),
            samesite="lax",
            path="/slack",
        )
        return resp

    async def _refuse(self, reason: str, detail: str, status: int = 400) -> Response:
        if self.audit is not None:
            await self.audit.record(
                actor="(browser)",
                action="oauth.install",
                outcome="denied",
                details={"reason": reason},
            )
        if self.security_log is not None:
            self.security_log.warning("oauth_state", "oauth install refused", reason=reason)
        resp = _page("Installation failed", detail, status)
        resp.delete_cookie(COOKIE, path="/slack")
        return resp

    async def redirect(self, request: Request) -> Response:
        q = request.query_params
        if q.get("error"):
            return await self._refuse(
                f"slack: {q['error'][:64]}",
                f"The installation was not completed ({q['error'][:64]}).",
            )
        code, state = q.get("code", ""), q.get("state", "")
        if not code or not state or len(code) > 512 or len(state) > 512:
            return await self._refuse("missing code or state", "The request is incomplete.")
        browser = request.cookies.get(COOKIE, "")
        if not browser:
            return await self._refuse(
                "missing browser cookie",
                "This installation was not started from this browser. Start again from "
                f"{self.settings.install_path}.",
            )
        problem = await self.states.consume(state, browser)
        if problem is not None:
            return await self._refuse(
                problem,
                f"Invalid request: {problem}. Start again from {self.settings.install_path}.",
            )
        try:
            inst = await self.exchange_code(code)
        except SlackTransientError as exc:
            return await self._refuse(
                f"oauth.v2.access: {exc.error}", "Slack could not be reached; try again.", 502
            )
        except SlackApiError as exc:
            return await self._refuse(
                f"oauth.v2.access: {exc.error}", f"Slack refused the installation ({exc.error})."
            )
        except ValueError as exc:
            return await self._refuse(str(exc), "Slack answered unexpectedly.", 502)
        saved = await self.store.save(inst)
        missing = sorted(set(self.settings.bot_scopes) - set(saved.bot_scopes))
        if self.audit is not None:
            await self.audit.record(
                actor=saved.installer_user_id or "(unknown)",
                action="oauth.install",
                target=saved.team_id or saved.enterprise_id,
                outcome="allowed",
                details={
                    "enterprise_id": saved.enterprise_id,
                    "team_id": saved.team_id,
                    "org_install": saved.is_enterprise_install,
                    "scopes": list(saved.bot_scopes),
                    "missing_scopes": missing,
                },
            )
        where = saved.team_id or saved.enterprise_id
        resp = _page("Control Room installed", f"Control Room is installed in {where}.", 200)
        resp.delete_cookie(COOKIE, path="/slack")
        return resp


class TokenRotator:
    """Refresh rotating bot tokens ahead of expiry, one worker at a time."""

    def __init__(
        self,
        oauth: SlackOAuth,
        store: InstallationStore,
        *,
        owner: str,
        ahead: float = 7200.0,
        lease_seconds: float = 30.0,
        clock: Callable[[], float] = time.time,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        poll: float = 0.05,
        wait_timeout: float = 15.0,
    ) -> None:
        self.oauth = oauth
        self.store = store
        self.owner = owner
        self.ahead = ahead
        self.lease_seconds = lease_seconds
        self.clock = clock
        self.sleep = sleep
        self.poll = poll
        self.wait_timeout = wait_timeout
        self.refreshes = 0

    async def _usable(self, team_id: str, enterprise_id: str) -> Installation:
        inst = await self.store.find(team_id, enterprise_id)
        if inst is None:
            raise InstallationUnavailable(team_id, enterprise_id, "missing", "not installed")
        if not inst.active:
            raise InstallationUnavailable(
                team_id, enterprise_id, inst.status, inst.status_reason or "re-install needed"
            )
        return inst

    async def fresh(self, team_id: str, enterprise_id: str = "") -> Installation:
        """The installation with a bot token valid for a while. Refreshes it when it
        expires within ``ahead`` seconds, unless another worker holds the lease: then the
        current token is used while it is still valid, else this call waits (polling
        every ``poll`` seconds, up to ``wait_timeout``) and takes the lease over if the
        holder died. Raises ``InstallationUnavailable`` (missing, needs re-authorisation,
        revoked) or ``SlackTransientError`` (try again later)."""
        for _ in range(max(1, int(self.wait_timeout / self.poll))):
            inst = await self._usable(team_id, enterprise_id)
            if inst.bot_refresh_token is None or not inst.expires_within(self.ahead, self.clock()):
                return inst
            async with self.store.rotation_lease(
                inst.team_id, inst.enterprise_id, owner=self.owner, seconds=self.lease_seconds
            ) as mine:
                if mine:
                    current = await self._usable(team_id, enterprise_id)
                    if current.bot_refresh_token is not None and current.expires_within(
                        self.ahead, self.clock()
                    ):
                        await self._refresh(current)
                    return await self._usable(team_id, enterprise_id)
            exp = inst.bot_token_expires_at
            if exp is not None and exp > self.clock():
                return inst  # refreshing does not revoke the current token at once
            await self.sleep(self.poll)
        raise SlackTransientError(
            "oauth.v2.access",
            team_id or enterprise_id,
            "token refresh by another worker did not finish",
        )

    async def _refresh(self, inst: Installation) -> None:
        assert inst.bot_refresh_token is not None
        where = inst.team_id or inst.enterprise_id
        try:
            body = await self.oauth.call(
                "oauth.v2.access",
                {"grant_type": "refresh_token", "refresh_token": inst.bot_refresh_token.get()},
                where,
            )
        except SlackTransientError:
            raise
        except SlackApiError as exc:
            if exc.error in REAUTH_ERRORS:
                await self.store.mark_needs_reauth(
                    inst.team_id, inst.enterprise_id, f"token refresh failed: {exc.error}"
                )
                if self.oauth.audit is not None:
                    await self.oauth.audit.record(
                        actor="controlroom",
                        action="oauth.refresh",
                        target=where,
                        outcome="needs_reauth",
                        details={"error": exc.error},
                    )
                raise InstallationUnavailable(
                    inst.team_id, inst.enterprise_id, "needs_reauth", exc.error
                ) from None
            raise
        exp = body.get("expires_in")
        token, refresh = body.get("access_token"), body.get("refresh_token")
        if not isinstance(token, str) or not isinstance(refresh, str):
            raise SlackTransientError("oauth.v2.access", where, "answer without tokens")
        await self.store.update_tokens(
            inst.team_id,
            inst.enterprise_id,
            bot_token=Secret(token, "bot_token"),
            bot_refresh_token=Secret(refresh, "bot_refresh_token"),
            bot_token_expires_at=self.clock() + float(exp)
            if isinstance(exp, int | float)
            else None,
        )
        self.refreshes += 1
