"""A Bolt for Python AsyncApp cannot tell the sandbox from Slack."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from slack_bolt.adapter.socket_mode.async_handler import AsyncSocketModeHandler
from slack_bolt.adapter.starlette.async_handler import AsyncSlackRequestHandler
from slack_bolt.async_app import AsyncApp
from slack_bolt.oauth.async_oauth_settings import AsyncOAuthSettings
from slack_sdk.oauth.installation_store import FileInstallationStore
from slack_sdk.oauth.state_store import FileOAuthStateStore
from slack_sdk.web.async_client import AsyncWebClient
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from controlroom.sandbox import RunningSandbox, Sandbox, serve_sandbox

from .conftest import SECRET, eventually, make_sandbox, serve_app

MODAL = {
    "type": "modal",
    "callback_id": "rollback_confirm",
    "title": {"type": "plain_text", "text": "Confirm rollback"},
    "submit": {"type": "plain_text", "text": "Roll back"},
    "blocks": [
        {
            "type": "input",
            "block_id": "reason",
            "label": {"type": "plain_text", "text": "Reason"},
            "element": {"type": "plain_text_input", "action_id": "text"},
        },
    ],
}


def build_bolt(sb: Sandbox, api_url: str) -> tuple[AsyncApp, list[Any]]:
    seen: list[Any] = []
    app = AsyncApp(
        client=AsyncWebClient(token=sb.bot_token, base_url=api_url),
        signing_secret=SECRET,
    )

    @app.event("app_mention")
    async def mention(event: dict[str, Any], say: Any) -> None:
        seen.append(("mention", event["text"]))
        await say(text="On it!", thread_ts=event["ts"])

    @app.event("message")
    async def message(event: dict[str, Any]) -> None:
        seen.append(("message", event.get("text")))

    @app.action("rollback")
    async def rollback(ack: Any, body: dict[str, Any], client: AsyncWebClient) -> None:
        await ack()
        seen.append(("action", body["actions"][0]["value"]))
        await client.views_open(trigger_id=body["trigger_id"], view=MODAL)

    @app.view("rollback_confirm")
    async def confirm(ack: Any, view: dict[str, Any]) -> None:
        reason = view["state"]["values"]["reason"]["text"]["value"]
        if len(reason) < 5:
            await ack(response_action="errors", errors={"reason": "Say more"})
        else:
            await ack()
            seen.append(("confirmed", reason))

    @app.command("/deploy")
    async def deploy(ack: Any, command: dict[str, Any]) -> None:
        await ack(text=f"Deploying {command['text']}", response_type="in_channel")

    return app, seen


async def post_button(sb: Sandbox, api_url: str) -> str:
    client = AsyncWebClient(token=sb.bot_token, base_url=api_url)
    blocks = [
        {
            "type": "actions",
            "elements": [
                {
                    "type": "button",
                    "action_id": "rollback",
                    "value": "api:v41",
                    "text": {"type": "plain_text", "text": "Roll back"},
                }
            ],
        }
    ]
    return str(
        (await client.chat_postMessage(channel="C0DEPLOYS1", text="deployed", blocks=blocks))["ts"]
    )


async def exercise(sb: Sandbox, run: RunningSandbox, seen: list[Any]) -> None:
    ts = await sb.act.post_message("dan", "#deploys", "<@U0CRBOT001> status?")
    await eventually(lambda: ("mention", "<@U0CRBOT001> status?") in seen)
    await eventually(lambda: any(m["text"] == "On it!" for m in sb.state.replies("deploys", ts)))
    button_ts = await post_button(sb, run.api_url)
    result = await sb.act.click_button("grace", "#deploys", button_ts, "rollback")
    assert result.ok
    await eventually(lambda: bool(sb.act.open_views("grace")))
    view_id = sb.act.open_views("grace")[0]["id"]
    rejected = await sb.act.submit_view("grace", view_id, {"reason": {"text": "no"}})
    assert rejected.applied["errors"] == {"reason": "Say more"}
    accepted = await sb.act.submit_view("grace", view_id, {"reason": {"text": "error rate 12%"}})
    assert accepted.applied == {"response_action": None}
    assert ("confirmed", "error rate 12%") in seen
    answered = await sb.act.run_command("grace", "#deploys", "/deploy", "api v42")
    assert "posted" in answered.applied
    assert sb.state.messages("deploys")[-1]["text"] == "Deploying api v42"


async def test_bolt_over_http_events_actions_modals_and_commands() -> None:
    sb = make_sandbox(rate_limits=False)
    async with serve_sandbox(sb) as run:
        app, seen = build_bolt(sb, run.api_url)
        handler = AsyncSlackRequestHandler(app)

        async def endpoint(request: Request) -> Response:
            return await handler.handle(request)

        receiver = Starlette(routes=[Route("/slack/events", endpoint, methods=["POST"])])
        async with serve_app(receiver) as url:
            assert await sb.set_request_url(url + "/slack/events")
            await exercise(sb, run, seen)
            await sb.settle()
    assert all(d.ok for d in sb.deliveries if d.kind != "url_verification")


@pytest.fixture
async def socket_sandbox() -> AsyncIterator[tuple[Sandbox, RunningSandbox]]:
    sb = make_sandbox(rate_limits=False, socket_mode=True)
    async with serve_sandbox(sb) as run:
        yield sb, run


async def test_bolt_over_socket_mode(socket_sandbox: tuple[Sandbox, RunningSandbox]) -> None:
    sb, run = socket_sandbox
    app, seen = build_bolt(sb, run.api_url)
    handler = AsyncSocketModeHandler(app, app_token=sb.app_token)
    await handler.connect_async()
    try:
        await eventually(lambda: bool(sb.socket.connections))
        await exercise(sb, run, seen)
        await sb.settle()
    finally:
        await handler.close_async()
    assert all(d.ok and d.transport == "socket" for d in sb.deliveries)


@pytest.mark.filterwarnings("ignore:BasicAuth is deprecated:DeprecationWarning")
async def test_bolt_oauth_install_then_serves_the_new_workspace(tmp_path: Path) -> None:
    """Bolt's own OAuth flow installs into the second workspace, then answers its events."""
    sb = make_sandbox(rate_limits=False)
    async with serve_sandbox(sb) as run:
        seen: list[str] = []
        app = AsyncApp(
            client=AsyncWebClient(base_url=run.api_url),
            signing_secret=SECRET,
            oauth_settings=AsyncOAuthSettings(
                client_id=sb.client_id,
                client_secret=sb.client_secret,
                scopes=["chat:write", "channels:history", "app_mentions:read"],
                authorization_url=f"{run.url}/oauth/v2/authorize",
                install_page_rendering_enabled=False,
                installation_store=FileInstallationStore(base_dir=str(tmp_path / "inst")),
                state_store=FileOAuthStateStore(
                    expiration_seconds=600, base_dir=str(tmp_path / "st")
                ),
            ),
        )

        @app.event("app_mention")
        async def mention(event: dict[str, Any], say: Any) -> None:
            seen.append(event["team"])
            await say(text="Hello, Labs!")

        @app.event("message")
        async def any_message() -> None:
            return None

        handler = AsyncSlackRequestHandler(app)

        async def endpoint(request: Request) -> Response:
            return await handler.handle(request)

        routes = [
            Route(p, endpoint, methods=["GET", "POST"])
            for p in ("/slack/events", "/slack/install", "/slack/oauth_redirect")
        ]
        async with serve_app(Starlette(routes=routes)) as url:
            sb.oauth.redirect_urls = [f"{url}/slack/oauth_redirect"]
            async with httpx.AsyncClient() as browser:
                install = await browser.get(f"{url}/slack/install")
                assert install.status_code == 302
                authorize = install.headers["location"] + "&as_user=ines&team=T0NWLABS01"
                consent = await browser.get(authorize)
                assert consent.status_code == 302
                # Bolt's state cookie is "Secure": a browser on http:// loopback still
                # sends it back to localhost, httpx does not, so pass it on by hand
                cookie = install.headers["set-cookie"].split(";")[0]
                done = await browser.get(consent.headers["location"], headers={"cookie": cookie})
                assert done.status_code == 200, done.text
            assert sb.state.team("T0NWLABS01").installed
            assert await sb.set_request_url(f"{url}/slack/events")
            await sb.act.post_message("victor", "#experiments", "<@U0LABSBOT1> hi")
            await eventually(lambda: sb.state.messages("experiments")[-1]["text"] == "Hello, Labs!")
            await sb.settle()
    assert seen == ["T0NWLABS01"]
    assert sb.state.messages("C0LABSEXP1")[-1]["text"] == "Hello, Labs!"
