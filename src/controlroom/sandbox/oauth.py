"""OAuth v2 install flow, token rotation, revocation/uninstall, Sign in with Slack (OIDC).

Redirect URLs: a configured URL without a port matches that scheme and host on any
port (loopback receivers bind port 0); otherwise Slack's rule applies: the
``redirect_uri`` must equal or be a subdirectory of a configured URL.
"""

from __future__ import annotations

import html
import json
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any
from urllib.parse import urlencode, urlsplit

import jwt
from cryptography.hazmat.primitives.asymmetric import rsa
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, RedirectResponse, Response

from .state import JSON, Token, TokenKind, User
from .webapi import ApiError, Call, method

if TYPE_CHECKING:
    from .core import Sandbox

CODE_TTL = 600.0
ROTATION_EXPIRES_IN = 43200
OIDC_SCOPES = {"openid", "profile", "email"}


@dataclass
class Grant:
    team_id: str
    user_id: str
    bot_scopes: tuple[str, ...]
    user_scopes: tuple[str, ...]
    redirect_uri: str | None
    created: float
    oidc: bool = False
    nonce: str | None = None
    used: bool = False


def _split_scopes(raw: str | None) -> tuple[str, ...]:
    return tuple(s for s in (raw or "").replace(" ", ",").split(",") if s)


class OAuth:
    def __init__(self, sb: Sandbox) -> None:
        self.sb = sb
        self.grants: dict[str, Grant] = {}
        self.refresh_tokens: dict[str, Token] = {}
        self.redirect_urls: list[str] = list(sb.seed.app.redirect_urls)
        self.rotation = sb.seed.app.token_rotation
        self._key: rsa.RSAPrivateKey | None = None
        self.kid = "sandbox-" + sb.state.ids.hex(8)

    # -- keys ------------------------------------------------------------------------
    @property
    def key(self) -> rsa.RSAPrivateKey:
        if self._key is None:
            self._key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        return self._key

    def jwks(self) -> JSON:
        jwk = json.loads(jwt.algorithms.RSAAlgorithm.to_jwk(self.key.public_key()))
        jwk.update({"kid": self.kid, "alg": "RS256", "use": "sig"})
        return {"keys": [jwk]}

    # -- redirect checks ---------------------------------------------------------------
    def redirect_allowed(self, uri: str) -> bool:
        got = urlsplit(uri)
        if got.scheme not in ("http", "https") or not got.hostname:
            return False
        for allowed in self.redirect_urls:
            want = urlsplit(allowed)
            if want.scheme != got.scheme or want.hostname != got.hostname:
                continue
            if want.port is not None and want.port != got.port:
                continue
            base = want.path.rstrip("/")
            if got.path == want.path or got.path.startswith(base + "/") or not base:
                return True
        return False

    # -- authorize page ----------------------------------------------------------------
    async def authorize(self, request: Request) -> Response:
        params = dict(request.query_params)
        if request.method == "POST":
            params.update({k: v for k, v in (await request.form()).items() if isinstance(v, str)})
        oidc = request.url.path.startswith("/openid/")
        if params.get("client_id") != self.sb.client_id:
            return HTMLResponse("<h1>Invalid client_id</h1>", status_code=400)
        redirect_uri = params.get("redirect_uri") or (
            self.redirect_urls[0] if self.redirect_urls else ""
        )
        if not redirect_uri or not self.redirect_allowed(redirect_uri):
            return HTMLResponse(
                "<h1>redirect_uri did not match any configured URIs</h1>", status_code=400
            )
        state = params.get("state", "")
        if oidc:
            bot_scopes: tuple[str, ...] = ()
            user_scopes = _split_scopes(params.get("scope"))
            if params.get("response_type", "code") != "code" or "openid" not in user_scopes:
                return self._back(redirect_uri, {"error": "invalid_scope", "state": state})
        else:
            bot_scopes = _split_scopes(params.get("scope"))
            user_scopes = _split_scopes(params.get("user_scope"))
            app = self.sb.seed.app
            mixed = OIDC_SCOPES & set(user_scopes) and (
                bot_scopes or set(user_scopes) - OIDC_SCOPES
            )
            unknown = set(bot_scopes) - set(app.bot_scopes) or set(user_scopes) - set(
                app.user_scopes
            )
            if unknown or mixed:
                return self._back(redirect_uri, {"error": "invalid_scope", "state": state})
        if params.get("decision") == "deny":
            return self._back(redirect_uri, {"error": "access_denied", "state": state})
        who = params.get("as_user")
        if not who:
            return self._page(params, redirect_uri, bot_scopes, user_scopes, oidc)
        try:
            user = self.sb.state.user(who, params.get("team") or None)
        except LookupError:
            return HTMLResponse("<h1>Unknown user</h1>", status_code=400)
        if user.is_bot or (params.get("team") and params["team"] != user.team_id):
            return HTMLResponse("<h1>That user cannot install apps here</h1>", status_code=400)
        code = f"{self.sb.state.ids.new('', 12)}.{self.sb.state.ids.hex(40)}"
        self.grants[code] = Grant(
            user.team_id,
            user.id,
            bot_scopes,
            user_scopes,
            params.get("redirect_uri") or None,
            self.sb.clock(),
            oidc,
            params.get("nonce"),
        )
        return self._back(redirect_uri, {"code": code, "state": state})

    @staticmethod
    def _back(redirect_uri: str, query: dict[str, str]) -> Response:
        sep = "&" if "?" in redirect_uri else "?"
        return RedirectResponse(redirect_uri + sep + urlencode(query), status_code=302)

    def _page(
        self,
        params: dict[str, str],
        redirect_uri: str,
        bot: tuple[str, ...],
        user_scopes: tuple[str, ...],
        oidc: bool,
    ) -> Response:
        team_filter = params.get("team")
        users = [
            u
            for u in self.sb.state.users.values()
            if not u.is_bot and (not team_filter or u.team_id == team_filter)
        ]
        hidden = "".join(
            f'<input type="hidden" name="{html.escape(k)}" value="{html.escape(v)}">'
            for k, v in params.items()
            if k not in ("as_user", "decision")
        )
        options = "".join(
            f'<option value="{u.id}">{html.escape(u.real_name)} ({html.escape(u.title)}, '
            f"{html.escape(self.sb.state.team(u.team_id).name)})</option>"
            for u in users
        )
        scopes = ", ".join(html.escape(s) for s in (*bot, *user_scopes))
        action = "/openid/connect/authorize" if oidc else "/oauth/v2/authorize"
        body = (
            "<!doctype html><html><head><meta charset='utf-8'><title>Install "
            f"{html.escape(self.sb.seed.app.name)}</title></head><body>"
            f"<h1>{html.escape(self.sb.seed.app.name)} is requesting permission</h1>"
            f"<p>Scopes: {scopes}</p><form method='post' action='{action}'>{hidden}"
            f"<label>Continue as <select name='as_user'>{options}</select></label>"
            "<button name='decision' value='allow' type='submit'>Allow</button>"
            "<button name='decision' value='deny' type='submit'>Cancel</button></form>"
            "</body></html>"
        )
        return HTMLResponse(body)

    # -- tokens --------------------------------------------------------------------------
    def _issue(self, kind: TokenKind, team_id: str, user_id: str, scopes: tuple[str, ...]) -> Token:
        sb = self.sb
        if not self.rotation:
            # a reinstall without rotation hands back the same long-lived token
            for existing in sb.state.active_tokens(team_id, user_id, kind):
                if existing.expires_at is None:
                    existing.scopes = tuple(dict.fromkeys((*existing.scopes, *scopes)))
                    return existing
        expires = sb.config.scaled(ROTATION_EXPIRES_IN) if self.rotation else None
        token = sb.state.issue_token(kind, team_id, user_id, scopes, expires_in=expires)
        if self.rotation:
            token.refresh_token = f"xoxe-1-{sb.state.ids.hex(80)}"
            self.refresh_tokens[token.refresh_token] = token
            active = sorted(
                sb.state.active_tokens(team_id, user_id, token.kind), key=lambda t: t.created
            )
            while len(active) > 2:
                active.pop(0).revoked = True
        return token

    def _token_json(self, token: Token) -> JSON:
        out: JSON = {
            "access_token": token.value,
            "token_type": token.kind,
            "scope": ",".join(token.scopes),
        }
        if token.refresh_token:
            out["refresh_token"] = token.refresh_token
            out["expires_in"] = self.expires_in
        return out

    @property
    def expires_in(self) -> int:
        """43200 s (12 h), divided by ``time_scale`` so clients refresh in scaled time."""
        return max(1, int(self.sb.config.scaled(ROTATION_EXPIRES_IN)))

    def check_client(self, call: Call) -> None:
        client_id, secret = call.basic_auth or (call.opt("client_id"), call.opt("client_secret"))
        if not client_id:
            raise ApiError("invalid_client_id")
        if client_id != self.sb.client_id:
            raise ApiError("invalid_client_id")
        if secret != self.sb.client_secret:
            raise ApiError("bad_client_secret")

    def take_grant(self, call: Call, oidc: bool) -> Grant:
        code = call.req("code", "invalid_code")
        grant = self.grants.get(code)
        if grant is None or grant.used or grant.oidc != oidc:
            raise ApiError("invalid_code")
        if self.sb.clock() - grant.created > self.sb.config.scaled(CODE_TTL):
            raise ApiError("invalid_code")
        redirect_uri = call.opt("redirect_uri")
        if grant.redirect_uri is not None and redirect_uri != grant.redirect_uri:
            raise ApiError("bad_redirect_uri")
        if (
            redirect_uri is not None
            and grant.redirect_uri is None
            and not self.redirect_allowed(redirect_uri)
        ):
            raise ApiError("bad_redirect_uri")
        grant.used = True
        return grant

    def install(self, grant: Grant) -> JSON:
        sb = self.sb
        team = sb.state.team(grant.team_id)
        team.scopes = tuple(dict.fromkeys((*team.scopes, *grant.bot_scopes)))
        out: JSON = {"app_id": sb.app_id}
        if grant.bot_scopes:
            if not team.installed:
                team.installed = True
                seed_team = next(t for t in sb.seed.teams if t.id == team.id)
                for c in seed_team.channels:
                    chan = sb.state.channels[c.id]
                    if c.bot_member and team.bot_user_id not in chan.members:
                        chan.members.append(team.bot_user_id)
            bot = self._issue("bot", team.id, team.bot_user_id, team.scopes)
            sb.bot_tokens[team.id] = bot.value
            out.update(self._token_json(bot))
            out["bot_user_id"] = team.bot_user_id
        out["team"] = {"name": team.name, "id": team.id}
        out["enterprise"] = (
            {"name": team.enterprise_name, "id": team.enterprise_id} if team.enterprise_id else None
        )
        out["is_enterprise_install"] = False
        authed: JSON = {"id": grant.user_id}
        if grant.user_scopes:
            user_token = self._issue("user", team.id, grant.user_id, grant.user_scopes)
            authed.update(self._token_json(user_token))
        out["authed_user"] = authed
        return out

    def refresh(self, refresh_token: str) -> JSON:
        old = self.refresh_tokens.pop(refresh_token, None)
        if old is None:
            raise ApiError("invalid_refresh_token")
        new = self._issue(old.kind, old.team_id, old.user_id, old.scopes)
        if old.kind == "bot":
            self.sb.bot_tokens[old.team_id] = new.value
        team = self.sb.state.team(old.team_id)
        out = self._token_json(new)
        out.update(
            {
                "app_id": self.sb.app_id,
                "team": {"name": team.name, "id": team.id},
                "enterprise": None,
                "is_enterprise_install": False,
            }
        )
        if old.kind == "bot":
            out["bot_user_id"] = team.bot_user_id
        else:
            out["authed_user"] = {"id": old.user_id}
        return out

    def revoke(self, token: Token) -> None:
        """Revoke one token; uninstall when it was the team's last one."""
        sb = self.sb
        token.revoked = True
        key = "bot" if token.kind == "bot" else "oauth"
        sb.deliverer.emit(
            token.team_id,
            {
                "type": "tokens_revoked",
                "tokens": {key: [token.user_id]},
                "event_ts": sb.state.next_ts(),
            },
            force=True,
        )
        left = [
            t
            for t in sb.state.tokens.values()
            if t.team_id == token.team_id and t.kind in ("bot", "user") and not t.revoked
        ]
        if not left:
            self._uninstalled(token.team_id)

    def uninstall(self, team_id: str) -> None:
        """The workspace removes the app: every token revoked, then app_uninstalled."""
        sb = self.sb
        tokens = [
            t
            for t in sb.state.tokens.values()
            if t.team_id == team_id and t.kind in ("bot", "user") and not t.revoked
        ]
        for t in tokens:
            t.revoked = True
        oauth_users = sorted({t.user_id for t in tokens if t.kind == "user"})
        bots = sorted({t.user_id for t in tokens if t.kind == "bot"})
        sb.deliverer.emit(
            team_id,
            {
                "type": "tokens_revoked",
                "tokens": {"oauth": oauth_users, "bot": bots},
                "event_ts": sb.state.next_ts(),
            },
            force=True,
        )
        self._uninstalled(team_id)

    def _uninstalled(self, team_id: str) -> None:
        sb = self.sb
        sb.deliverer.emit(
            team_id, {"type": "app_uninstalled", "event_ts": sb.state.next_ts()}, force=True
        )
        team = sb.state.team(team_id)
        team.installed = False
        sb.bot_tokens.pop(team_id, None)

    def id_token(self, user: User, nonce: str | None) -> str:
        sb = self.sb
        team = sb.state.team(user.team_id)
        now = int(sb.clock())
        claims: dict[str, Any] = {
            "iss": "https://slack.com",
            "sub": user.id,
            "aud": sb.client_id,
            "exp": now + 3600,
            "iat": now,
            "auth_time": now,
            "https://slack.com/user_id": user.id,
            "https://slack.com/team_id": team.id,
            "https://slack.com/team_name": team.name,
            "https://slack.com/team_domain": team.domain,
            "email": user.email,
            "email_verified": True,
            "name": user.real_name,
            "given_name": user.real_name.split(" ")[0],
            "family_name": " ".join(user.real_name.split(" ")[1:]),
            "picture": f"https://avatars.sandbox.invalid/{user.id}_512.png",
            "locale": "en-US",
        }
        if nonce:
            claims["nonce"] = nonce
        return jwt.encode(claims, self.key, algorithm="RS256", headers={"kid": self.kid})

    def discovery(self) -> JSON:
        base = self.sb.public_url
        return {
            "issuer": "https://slack.com",
            "authorization_endpoint": f"{base}/openid/connect/authorize",
            "token_endpoint": f"{base}/api/openid.connect.token",
            "userinfo_endpoint": f"{base}/api/openid.connect.userInfo",
            "jwks_uri": f"{base}/openid/connect/keys",
            "scopes_supported": ["openid", "profile", "email"],
            "response_types_supported": ["code"],
            "response_modes_supported": ["form_post"],
            "grant_types_supported": ["authorization_code"],
            "subject_types_supported": ["public"],
            "id_token_signing_alg_values_supported": ["RS256"],
            "claims_supported": ["sub", "auth_time", "iss"],
            "claims_parameter_supported": False,
            "request_parameter_supported": False,
            "request_uri_parameter_supported": True,
            "token_endpoint_auth_methods_supported": ["client_secret_post", "client_secret_basic"],
        }

    async def keys_endpoint(self, request: Request) -> Response:
        return JSONResponse(self.jwks())

    async def discovery_endpoint(self, request: Request) -> Response:
        return JSONResponse(self.discovery())


@method("oauth.v2.access", auth="client")
async def oauth_v2_access(call: Call) -> JSON:
    oauth = call.sb.oauth
    oauth.check_client(call)
    grant_type = call.opt("grant_type") or "authorization_code"
    if grant_type == "refresh_token":
        if not oauth.rotation:
            raise ApiError("invalid_grant_type")
        return oauth.refresh(call.req("refresh_token", "invalid_refresh_token"))
    if grant_type != "authorization_code":
        raise ApiError("invalid_grant_type")
    return oauth.install(oauth.take_grant(call, oidc=False))


@method("oauth.v2.exchange", auth="client")
async def oauth_v2_exchange(call: Call) -> JSON:
    oauth = call.sb.oauth
    oauth.check_client(call)
    value = call.opt("token")  # slack_sdk moves it to the Authorization header
    token = call.sb.state.tokens.get(value) if value else call.token
    if token is None or token.revoked:
        raise ApiError("invalid_auth")
    if not oauth.rotation:
        raise ApiError("token_rotation_not_enabled")
    if token.exchanged or token.expires_at is not None:
        raise ApiError("token_already_exchanged")
    token.exchanged = True
    new = oauth._issue(token.kind, token.team_id, token.user_id, token.scopes)
    if token.kind == "bot":
        call.sb.bot_tokens[token.team_id] = new.value
    out = oauth._token_json(new)
    team = call.sb.state.team(token.team_id)
    out.update(
        {
            "app_id": call.sb.app_id,
            "team": {"name": team.name, "id": team.id},
            "enterprise": None,
            "is_enterprise_install": False,
        }
    )
    return out


@method("auth.revoke")
async def auth_revoke(call: Call) -> JSON:
    assert call.token is not None
    if call.flag("test"):
        return {"revoked": False}
    call.sb.oauth.revoke(call.token)
    return {"revoked": True}


@method("openid.connect.token", auth="client")
async def openid_connect_token(call: Call) -> JSON:
    oauth = call.sb.oauth
    oauth.check_client(call)
    grant_type = call.opt("grant_type") or "authorization_code"
    if grant_type == "refresh_token":
        if not oauth.rotation:
            raise ApiError("invalid_grant_type")
        data = oauth.refresh(call.req("refresh_token", "invalid_refresh_token"))
        return {
            "access_token": data["access_token"],
            "token_type": "Bearer",
            "refresh_token": data["refresh_token"],
            "expires_in": data["expires_in"],
        }
    if grant_type != "authorization_code":
        raise ApiError("invalid_grant_type")
    grant = oauth.take_grant(call, oidc=True)
    user = call.sb.state.users[grant.user_id]
    token = oauth._issue("user", grant.team_id, user.id, grant.user_scopes)
    out: JSON = {
        "access_token": token.value,
        "token_type": "Bearer",
        "id_token": oauth.id_token(user, grant.nonce),
    }
    if token.refresh_token:
        out["refresh_token"] = token.refresh_token
        out["expires_in"] = oauth.expires_in
    return out


@method("openid.connect.userInfo", scopes=("openid",), token_types=("user",))
async def openid_connect_user_info(call: Call) -> JSON:
    user = call.sb.state.users[call.actor_id]
    team = call.team
    out: JSON = {
        "sub": user.id,
        "https://slack.com/user_id": user.id,
        "https://slack.com/team_id": team.id,
        "name": user.real_name,
        "given_name": user.real_name.split(" ")[0],
        "family_name": " ".join(user.real_name.split(" ")[1:]),
        "picture": f"https://avatars.sandbox.invalid/{user.id}_512.png",
        "locale": "en-US",
        "https://slack.com/team_name": team.name,
        "https://slack.com/team_domain": team.domain,
    }
    if call.has_scope("email"):
        out["email"] = user.email
        out["email_verified"] = True
    return out
