"""Shared fixtures: a sandbox served on loopback and a signed-request receiver."""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs

import pytest
import uvicorn
from slack_sdk.signature import SignatureVerifier
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Route

from controlroom.sandbox import RunningSandbox, Sandbox, SandboxConfig, serve_sandbox

FIXTURES = Path(__file__).parent.parent / "fixtures" / "slack"
SECRET = "sandbox-test-signing-secret"


def fixture_json(name: str) -> Any:
    return json.loads((FIXTURES / name).read_text())


async def eventually(predicate: Callable[[], object], within: float = 5.0) -> None:
    """Poll ``predicate`` until it is truthy; fail after ``within`` seconds."""
    for _ in range(int(within / 0.01)):
        if predicate():
            return
        await asyncio.sleep(0.01)
    raise AssertionError(f"condition not met within {within} s")


@dataclass
class Received:
    headers: dict[str, str]
    body: bytes
    verified: bool

    @property
    def json(self) -> Any:
        return json.loads(self.body)

    @property
    def form(self) -> dict[str, str]:
        return {k: v[0] for k, v in parse_qs(self.body.decode(), keep_blank_values=True).items()}

    @property
    def payload(self) -> Any:
        return json.loads(self.form["payload"])


Responder = Callable[[Received], Awaitable[Response] | Response]


@dataclass
class Receiver:
    """A small app on loopback that records and verifies what the sandbox sends."""

    url: str = ""
    received: list[Received] = field(default_factory=list)
    respond: Responder | None = None
    arrived: asyncio.Event = field(default_factory=asyncio.Event)

    async def wait_for(self, count: int, within: float = 5.0) -> list[Received]:
        async with asyncio.timeout(within):
            while len(self.received) < count:
                self.arrived.clear()
                await self.arrived.wait()
        return self.received


@contextlib.asynccontextmanager
async def serve_app(app: Starlette) -> AsyncIterator[str]:
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="off"))
    task = asyncio.get_running_loop().create_task(server.serve(sockets=[sock]))
    try:
        await eventually(lambda: server.started)
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        await task
        sock.close()


@pytest.fixture
async def receiver() -> AsyncIterator[Receiver]:
    rec = Receiver()
    verifier = SignatureVerifier(SECRET)

    async def handle(request: Request) -> Response:
        body = await request.body()
        headers = {k.lower(): v for k, v in request.headers.items()}
        item = Received(headers, body, verifier.is_valid_request(body, headers))
        rec.received.append(item)
        rec.arrived.set()
        if body.startswith(b"{") and json.loads(body).get("type") == "url_verification":
            return JSONResponse({"challenge": json.loads(body)["challenge"]})
        if rec.respond is not None:
            result = rec.respond(item)
            if not isinstance(result, Response):
                result = await result
            return result
        return PlainTextResponse("")

    app = Starlette(routes=[Route("/slack/events", handle, methods=["POST"])])
    async with serve_app(app) as url:
        rec.url = url + "/slack/events"
        yield rec


def make_sandbox(**overrides: Any) -> Sandbox:
    options: dict[str, Any] = {"signing_secret": SECRET}
    options.update(overrides)
    return Sandbox(SandboxConfig(**options))


@pytest.fixture
async def running() -> AsyncIterator[RunningSandbox]:
    sb = make_sandbox(rate_limits=False)
    async with serve_sandbox(sb) as run:
        yield run


@pytest.fixture
async def wired(receiver: Receiver) -> AsyncIterator[tuple[RunningSandbox, Receiver]]:
    """A sandbox delivering events to ``receiver``."""
    sb = make_sandbox(rate_limits=False, request_url=receiver.url, time_scale=600.0)
    async with serve_sandbox(sb) as run:
        yield run, receiver
