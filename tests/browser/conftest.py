"""Browser fixtures: the sandbox on loopback, a tiny signed-request receiver app, Chromium."""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs

import pytest
import uvicorn
from playwright.async_api import Browser, Page, async_playwright
from slack_sdk.signature import SignatureVerifier
from slack_sdk.web.async_client import AsyncWebClient
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Route

from controlroom.sandbox import RunningSandbox, Sandbox, SandboxConfig, serve_sandbox

SECRET = "browser-test-signing-secret"
SCREENSHOTS = Path(__file__).resolve().parents[2] / "test-artifacts" / "screenshots"
CHROMIUM_ARGS = [
    "--headless=new",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--no-first-run",
    "--disable-sync",
]

ESCALATE_MODAL: dict[str, Any] = {
    "type": "modal",
    "callback_id": "escalate_form",
    "title": {"type": "plain_text", "text": "Escalate to Tier-2"},
    "submit": {"type": "plain_text", "text": "Escalate"},
    "close": {"type": "plain_text", "text": "Cancel"},
    "blocks": [
        {
            "type": "section",
            "text": {"type": "mrkdwn", "text": "Tell *Tier-2* what is going on."},
        },
        {
            "type": "input",
            "block_id": "summary",
            "label": {"type": "plain_text", "text": "Summary"},
            "element": {"type": "plain_text_input", "action_id": "text"},
        },
        {
            "type": "input",
            "block_id": "severity",
            "label": {"type": "plain_text", "text": "Severity"},
            "element": {
                "type": "static_select",
                "action_id": "pick",
                "placeholder": {"type": "plain_text", "text": "Choose a severity"},
                "options": [
                    {"text": {"type": "plain_text", "text": "SEV1 - outage"}, "value": "sev1"},
                    {"text": {"type": "plain_text", "text": "SEV2 - degraded"}, "value": "sev2"},
                    {"text": {"type": "plain_text", "text": "SEV3 - minor"}, "value": "sev3"},
                ],
            },
        },
    ],
}

HOME_VIEW: dict[str, Any] = {
    "type": "home",
    "blocks": [
        {"type": "header", "text": {"type": "plain_text", "text": "Your Control Room"}},
        {
            "type": "section",
            "text": {"type": "mrkdwn", "text": "*2* open escalations, *1* deploy waiting"},
            "accessory": {
                "type": "button",
                "action_id": "refresh_home",
                "text": {"type": "plain_text", "text": "Refresh"},
            },
        },
        {"type": "divider"},
        {
            "type": "context",
            "elements": [{"type": "mrkdwn", "text": "Updated just now :white_check_mark:"}],
        },
    ],
}


@dataclass
class Seen:
    kind: str
    verified: bool
    data: dict[str, Any]


@dataclass
class FakeApp:
    """The Slack app under the sandbox: verifies signatures, records, answers like Bolt."""

    api_url: str = ""
    bot_token: str = ""
    seen: list[Seen] = field(default_factory=list)
    submissions: int = 0

    def of(self, kind: str) -> list[Seen]:
        return [s for s in self.seen if s.kind == kind]

    async def open_modal(self, trigger_id: str) -> None:
        client = AsyncWebClient(token=self.bot_token, base_url=self.api_url)
        await client.views_open(trigger_id=trigger_id, view=ESCALATE_MODAL)

    async def publish_home(self, user_id: str) -> None:
        client = AsyncWebClient(token=self.bot_token, base_url=self.api_url)
        await client.views_publish(user_id=user_id, view=HOME_VIEW)

    async def handle(self, request: Request, verifier: SignatureVerifier) -> Response:
        body = await request.body()
        headers = {k.lower(): v for k, v in request.headers.items()}
        verified = verifier.is_valid_request(body, headers)
        if not verified:
            return PlainTextResponse("bad signature", status_code=401)
        if body.startswith(b"{"):
            event = json.loads(body)
            self.seen.append(Seen(event.get("type", ""), verified, event))
            if event.get("type") == "url_verification":
                return JSONResponse({"challenge": event["challenge"]})
            if event.get("event", {}).get("type") == "app_home_opened":
                await self.publish_home(event["event"]["user"])
            return PlainTextResponse("")
        form = {k: v[0] for k, v in parse_qs(body.decode(), keep_blank_values=True).items()}
        if "command" in form:
            self.seen.append(Seen("command", verified, form))
            if form["command"] == "/escalate":
                await self.open_modal(form["trigger_id"])
                return PlainTextResponse("")
            return JSONResponse(
                {
                    "response_type": "ephemeral",
                    "text": f":rocket: Deploy status for *{form['text'].split()[-1]}*: healthy",
                }
            )
        payload = json.loads(form["payload"])
        self.seen.append(Seen(payload["type"], verified, payload))
        if payload["type"] in ("message_action", "shortcut"):
            await self.open_modal(payload["trigger_id"])
        elif payload["type"] == "view_submission":
            self.submissions += 1
            values = payload["view"]["state"]["values"]
            if len(values["summary"]["text"]["value"] or "") < 10:
                return JSONResponse(
                    {
                        "response_action": "errors",
                        "errors": {"summary": "Please write at least 10 characters"},
                    }
                )
        return PlainTextResponse("")


@contextlib.asynccontextmanager
async def serve(app: Starlette) -> AsyncIterator[str]:
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="off"))
    task = asyncio.get_running_loop().create_task(server.serve(sockets=[sock]))
    try:
        for _ in range(500):
            if server.started:
                break
            await asyncio.sleep(0.01)
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        await task
        sock.close()


@dataclass
class World:
    running: RunningSandbox
    app: FakeApp
    page: Page

    @property
    def sb(self) -> Sandbox:
        return self.running.sandbox

    @property
    def url(self) -> str:
        return self.running.url

    def bot(self) -> AsyncWebClient:
        return AsyncWebClient(token=self.sb.bot_token, base_url=self.running.api_url)

    async def screenshot(self, name: str) -> None:
        SCREENSHOTS.mkdir(parents=True, exist_ok=True)
        await self.page.screenshot(path=str(SCREENSHOTS / f"{name}.png"))


@pytest.fixture
async def browser() -> AsyncIterator[Browser]:
    async with async_playwright() as pw:
        launched = await pw.chromium.launch(executable_path="/usr/bin/chromium", args=CHROMIUM_ARGS)
        try:
            yield launched
        finally:
            await launched.close()


@pytest.fixture
async def world(browser: Browser) -> AsyncIterator[World]:
    fake = FakeApp()
    verifier = SignatureVerifier(SECRET)

    async def handle(request: Request) -> Response:
        return await fake.handle(request, verifier)

    receiver = Starlette(routes=[Route("/slack/events", handle, methods=["POST"])])
    async with serve(receiver) as receiver_url:
        sb = Sandbox(
            SandboxConfig(
                signing_secret=SECRET,
                rate_limits=False,
                request_url=f"{receiver_url}/slack/events",
            )
        )
        async with serve_sandbox(sb) as running:
            fake.api_url = running.api_url
            fake.bot_token = sb.bot_token
            context = await browser.new_context(viewport={"width": 1280, "height": 800})
            page = await context.new_page()
            page.set_default_timeout(5000)
            try:
                yield World(running, fake, page)
            finally:
                await context.close()
            await sb.settle()
