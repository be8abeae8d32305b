"""OAuth v2 install, token rotation, revocation, uninstall and Sign in with Slack."""

from __future__ import annotations

import asyncio
from urllib.parse import parse_qs, urlsplit

import httpx
import jwt
import pytest
from slack_sdk import WebClient
from slack_sdk.errors import SlackApiError
from slack_sdk.web.async_client import AsyncWebClient

from controlroom.sandbox import RunningSandbox, Sandbox, serve_sandbox

from .conftest import Receiver, make_sandbox

REDIRECT = "http://127.0.0.1:8765/slack/oauth_redirect"
# slack_sdk's AsyncWebClient sends client credentials with aiohttp.BasicAuth (deprecated)
pytestmark = pytest.mark.filterwarnings("ignore:BasicAuth is deprecated:DeprecationWarning")


async def authorize(run: RunningSandbox, **params: str) -> dict[str, str]:
    query = {"client_id": run.sandbox.client_id, "redirect_uri": REDIRECT, "state": "s1", **params}
    async with httpx.AsyncClient(base_url=run.url) as http:
        resp = await http.get("/oauth/v2/authorize", params=query)
    assert resp.status_code == 302, resp.text
    location = resp.headers["location"]
    assert location.startswith(REDIRECT + "?")
    return {k: v[0] for k, v in parse_qs(urlsplit(location).query).items()}


async def test_install_into_a_second_workspace_end_to_end(running: RunningSandbox) -> None:
    sb = running.sandbox
    assert sb.state.team("T0NWLABS01").installed is False
    got = await authorize(running, scope="chat:write,channels:read", user_scope="", as_user="ines")
    assert got["state"] == "s1"
    web = AsyncWebClient(base_url=running.api_url)
    resp = await web.oauth_v2_access(
        client_id=sb.client_id,
        client_secret=sb.client_secret,
        code=got["code"],
        redirect_uri=REDIRECT,
    )
    assert resp["team"]["id"] == "T0NWLABS01"
    assert resp["token_type"] == "bot" and resp["access_token"].startswith("xoxb-")
    assert resp["authed_user"]["id"] == sb.user("ines").id
    labs = AsyncWebClient(token=resp["access_token"], base_url=running.api_url)
    assert (await labs.auth_test())["team_id"] == "T0NWLABS01"
    posted = await labs.chat_postMessage(channel="experiments", text="hello labs")
    assert posted["channel"] == "C0LABSEXP1"
    with pytest.raises(SlackApiError) as info:  # channels of another workspace are invisible
        await labs.chat_postMessage(channel="C0SUPPORT1", text="x")
    assert info.value.response["error"] == "channel_not_found"
    with pytest.raises(SlackApiError) as info:
        await web.oauth_v2_access(
            client_id=sb.client_id,
            client_secret=sb.client_secret,
            code=got["code"],
            redirect_uri=REDIRECT,
        )
    assert info.value.response["error"] == "invalid_code"


async def test_oauth_access_errors(running: RunningSandbox) -> None:
    sb = running.sandbox
    web = AsyncWebClient(base_url=running.api_url)
    got = await authorize(running, scope="chat:write", as_user="priya")

    async def error(**kw: str) -> str:
        with pytest.raises(SlackApiError) as info:
            await web.oauth_v2_access(
                **{"client_id": sb.client_id, "client_secret": sb.client_secret, **kw}
            )  # type: ignore[arg-type]
        return str(info.value.response["error"])

    assert await error(code=got["code"], client_secret="wrong") == "bad_client_secret"
    assert await error(code=got["code"], redirect_uri=REDIRECT + "/elsewhere") == "bad_redirect_uri"
    assert await error(code="nope") == "invalid_code"
    assert await error(code=got["code"], grant_type="password") == "invalid_grant_type"


async def test_authorize_page_lets_a_person_choose_and_deny(running: RunningSandbox) -> None:
    params = {
        "client_id": running.sandbox.client_id,
        "scope": "chat:write",
        "redirect_uri": REDIRECT,
        "state": "z",
    }
    async with httpx.AsyncClient(base_url=running.url) as http:
        page = await http.get("/oauth/v2/authorize", params=params)
        denied = await http.post(
            "/oauth/v2/authorize", data={**params, "decision": "deny", "as_user": "priya"}
        )
        allowed = await http.post(
            "/oauth/v2/authorize", data={**params, "decision": "allow", "as_user": "U0SUPPORT1"}
        )
        bad_scope = await http.get("/oauth/v2/authorize", params={**params, "scope": "admin"})
        bad_redirect = await http.get(
            "/oauth/v2/authorize", params={**params, "redirect_uri": "https://evil.example/"}
        )
    assert page.status_code == 200 and "Priya Raman" in page.text
    assert "error=access_denied" in denied.headers["location"]
    assert "code=" in allowed.headers["location"]
    assert "error=invalid_scope" in bad_scope.headers["location"]
    assert bad_redirect.status_code == 400


async def test_token_rotation_refresh_is_single_use_and_keeps_two_tokens(tmp_path: object) -> None:
    sb = make_sandbox(rate_limits=False)
    sb.oauth.rotation = True
    async with serve_sandbox(sb) as run:
        got = await authorize(run, scope="chat:write", as_user="ines")
        web = AsyncWebClient(base_url=run.api_url)
        first = await web.oauth_v2_access(
            client_id=sb.client_id,
            client_secret=sb.client_secret,
            code=got["code"],
            redirect_uri=REDIRECT,
        )
        assert first["access_token"].startswith("xoxe.xoxb-")
        assert first["expires_in"] == 43200 and first["refresh_token"].startswith("xoxe-1-")
        second = await web.oauth_v2_access(
            client_id=sb.client_id,
            client_secret=sb.client_secret,
            grant_type="refresh_token",
            refresh_token=first["refresh_token"],
        )
        with pytest.raises(SlackApiError) as info:
            await web.oauth_v2_access(
                client_id=sb.client_id,
                client_secret=sb.client_secret,
                grant_type="refresh_token",
                refresh_token=first["refresh_token"],
            )
        assert info.value.response["error"] == "invalid_refresh_token"
        # refreshing does not kill the current token...
        assert (
            await AsyncWebClient(token=first["access_token"], base_url=run.api_url).auth_test()
        )["ok"]
        third = await web.oauth_v2_access(
            client_id=sb.client_id,
            client_secret=sb.client_secret,
            grant_type="refresh_token",
            refresh_token=second["refresh_token"],
        )
        # ...but only two stay active
        with pytest.raises(SlackApiError) as info:
            await AsyncWebClient(token=first["access_token"], base_url=run.api_url).auth_test()
        assert info.value.response["error"] == "token_revoked"
        assert (
            await AsyncWebClient(token=third["access_token"], base_url=run.api_url).auth_test()
        )["ok"]
        sb.clock = lambda: 10**10  # far past expiry
        sb.state.clock = sb.clock
        with pytest.raises(SlackApiError) as info:
            await AsyncWebClient(token=third["access_token"], base_url=run.api_url).auth_test()
        assert info.value.response["error"] == "token_expired"


async def test_exchange_turns_a_long_lived_token_into_a_rotating_one_once() -> None:
    sb = make_sandbox(rate_limits=False)
    async with serve_sandbox(sb) as run:
        web = AsyncWebClient(base_url=run.api_url)
        with pytest.raises(SlackApiError) as info:
            await web.oauth_v2_exchange(
                client_id=sb.client_id, client_secret=sb.client_secret, token=sb.bot_token
            )
        assert info.value.response["error"] == "token_rotation_not_enabled"
        sb.oauth.rotation = True
        old = sb.bot_token
        exchanged = await web.oauth_v2_exchange(
            client_id=sb.client_id, client_secret=sb.client_secret, token=old
        )
        assert exchanged["access_token"].startswith("xoxe.xoxb-") and "refresh_token" in exchanged
        with pytest.raises(SlackApiError) as info:
            await web.oauth_v2_exchange(
                client_id=sb.client_id, client_secret=sb.client_secret, token=old
            )
        assert info.value.response["error"] == "token_already_exchanged"


async def test_auth_revoke_uninstalls_with_lifecycle_events(
    wired: tuple[RunningSandbox, Receiver],
) -> None:
    run, rec = wired
    sb = run.sandbox
    client = AsyncWebClient(token=sb.bot_token, base_url=run.api_url)
    assert (await client.auth_revoke(test=True))["revoked"] is False
    assert (await client.auth_revoke())["revoked"] is True
    await sb.settle()
    events = sorted((r.json["event"] for r in rec.received), key=lambda e: float(e["event_ts"]))
    assert [e["type"] for e in events] == ["tokens_revoked", "app_uninstalled"]
    assert events[0]["tokens"] == {"bot": [sb.bot_user_id]}
    with pytest.raises(SlackApiError) as info:
        await client.auth_test()
    assert info.value.response["error"] == "token_revoked"
    assert sb.state.team(sb.team_id).installed is False


async def test_sign_in_with_slack_issues_a_verifiable_id_token(running: RunningSandbox) -> None:
    sb = running.sandbox
    query = {
        "client_id": sb.client_id,
        "redirect_uri": REDIRECT,
        "response_type": "code",
        "scope": "openid profile email",
        "nonce": "n-1",
        "state": "s",
        "as_user": "marcus",
    }
    async with httpx.AsyncClient(base_url=running.url) as http:
        redirect = await http.get("/openid/connect/authorize", params=query)
        jwks = (await http.get("/openid/connect/keys")).json()
        discovery = (await http.get("/.well-known/openid-configuration")).json()
    code = parse_qs(urlsplit(redirect.headers["location"]).query)["code"][0]
    web = AsyncWebClient(base_url=running.api_url)
    tokens = await web.openid_connect_token(
        client_id=sb.client_id, client_secret=sb.client_secret, code=code, redirect_uri=REDIRECT
    )
    key = jwt.PyJWK(jwks["keys"][0])
    claims = jwt.decode(
        tokens["id_token"],
        key.key,
        algorithms=["RS256"],
        audience=sb.client_id,
        issuer=discovery["issuer"],
    )
    assert claims["sub"] == sb.user("marcus").id
    assert claims["email"] == "marcus@northwind.example"
    assert claims["nonce"] == "n-1"
    info = await AsyncWebClient(
        token=tokens["access_token"], base_url=running.api_url
    ).openid_connect_userInfo()
    assert info["https://slack.com/team_id"] == sb.team_id and info["email_verified"] is True


async def test_sync_client_code_exchange_with_basic_auth(running: RunningSandbox) -> None:
    sb = running.sandbox
    got = await authorize(running, scope="chat:write", as_user="ines")
    web = WebClient(base_url=running.api_url)
    resp = await asyncio.to_thread(
        web.oauth_v2_access,
        client_id=sb.client_id,
        client_secret=sb.client_secret,
        code=got["code"],
        redirect_uri=REDIRECT,
    )
    assert resp["team"]["id"] == "T0NWLABS01"
    again = await authorize(running, scope="users:read", as_user="ines")
    reinstall = await asyncio.to_thread(
        web.oauth_v2_access,
        client_id=sb.client_id,
        client_secret=sb.client_secret,
        code=again["code"],
        redirect_uri=REDIRECT,
    )
    # without rotation a reinstall returns the same token, with the scopes added up
    assert reinstall["access_token"] == resp["access_token"]
    assert reinstall["scope"].split(",") == ["chat:write", "users:read"]


def test_redirect_rule_allows_subdirectories_only() -> None:
    sb: Sandbox = make_sandbox()
    sb.oauth.redirect_urls = ["https://hub.example/slack/"]
    assert sb.oauth.redirect_allowed("https://hub.example/slack/oauth")
    assert not sb.oauth.redirect_allowed("https://hub.example/other")
    assert not sb.oauth.redirect_allowed("http://hub.example/slack/oauth")
