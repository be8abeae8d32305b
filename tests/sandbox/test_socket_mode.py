"""Socket Mode with slack_sdk's SocketModeClient (aiohttp and websockets variants)."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator
from typing import Any

import pytest
from slack_sdk.errors import SlackApiError
from slack_sdk.socket_mode.aiohttp import SocketModeClient as AiohttpClient
from slack_sdk.socket_mode.async_client import AsyncBaseSocketModeClient
from slack_sdk.socket_mode.request import SocketModeRequest
from slack_sdk.socket_mode.response import SocketModeResponse
from slack_sdk.socket_mode.websockets import SocketModeClient as WebsocketsClient
from slack_sdk.web.async_client import AsyncWebClient

from controlroom.sandbox import RunningSandbox, serve_sandbox

from .conftest import eventually, fixture_json, make_sandbox


@pytest.fixture
async def socket_run() -> AsyncIterator[RunningSandbox]:
    sb = make_sandbox(rate_limits=False, socket_mode=True)
    async with serve_sandbox(sb) as run:
        yield run


class Collector:
    def __init__(self, ack: bool = True, response: dict[str, Any] | None = None) -> None:
        self.requests: list[SocketModeRequest] = []
        self.ack = ack
        self.response = response
        self.event = asyncio.Event()

    async def __call__(self, client: AsyncBaseSocketModeClient, req: SocketModeRequest) -> None:
        self.requests.append(req)
        self.event.set()
        if self.ack:
            await client.send_socket_mode_response(
                SocketModeResponse(envelope_id=req.envelope_id, payload=self.response)
            )

    async def wait_for(self, n: int) -> list[SocketModeRequest]:
        async with asyncio.timeout(5):
            while len(self.requests) < n:
                self.event.clear()
                await self.event.wait()
        return self.requests


async def connected(run: RunningSandbox, kind: type = AiohttpClient, **kw: Any) -> Any:
    web = AsyncWebClient(base_url=run.api_url)
    client = kind(app_token=run.sandbox.app_token, web_client=web, **kw)
    await client.connect()
    await eventually(lambda: run.sandbox.socket.connections)
    return client


async def test_apps_connections_open_needs_an_app_token(socket_run: RunningSandbox) -> None:
    sb = socket_run.sandbox
    with pytest.raises(SlackApiError) as info:
        await AsyncWebClient(token=sb.bot_token, base_url=socket_run.api_url).api_call(
            "apps.connections.open"
        )
    assert info.value.response.data == {"ok": False, "error": "not_allowed_token_type"}
    with_app = await AsyncWebClient(base_url=socket_run.api_url).apps_connections_open(
        app_token=sb.app_token
    )
    assert with_app["url"].startswith("ws://127.0.0.1:")


async def test_hello_matches_the_real_frame(socket_run: RunningSandbox) -> None:
    client = await connected(socket_run)
    try:
        hello = socket_run.sandbox.socket.frames_sent[0]
        real = fixture_json("socket-mode/python-slack-sdk__socket_mode_hello_message.json")
        assert set(hello) == set(real)
        assert set(hello["debug_info"]) >= set(real["debug_info"])
        assert hello["connection_info"] == {"app_id": socket_run.sandbox.app_id}
    finally:
        await client.close()


@pytest.mark.parametrize("kind", [AiohttpClient, WebsocketsClient])
async def test_events_arrive_as_events_api_envelopes(
    socket_run: RunningSandbox, kind: type
) -> None:
    sb = socket_run.sandbox
    collector = Collector()
    client = await connected(socket_run, kind)
    client.socket_mode_request_listeners.append(collector)
    try:
        await sb.act.post_message("priya", "#support", "hi <@U0CRBOT001>")
        requests = await collector.wait_for(2)
        await sb.settle()
    finally:
        await client.close()
    real = fixture_json("socket-mode/python-slack-sdk__socket_mode_envelopes.1.events_api.json")
    frame = next(f for f in sb.socket.frames_sent if f.get("type") == "events_api")
    assert set(frame) == set(real)
    assert {r.payload["event"]["type"] for r in requests} == {"message", "app_mention"}
    assert all(d.ok and d.transport == "socket" for d in sb.deliveries)


async def test_unacked_events_are_redelivered_with_retry_attempt() -> None:
    sb = make_sandbox(rate_limits=False, socket_mode=True, socket_ack_timeout=0.2)
    collector = Collector(ack=False)
    async with serve_sandbox(sb) as run:
        client = await connected(run)
        client.socket_mode_request_listeners.append(collector)
        try:
            await sb.act.post_message("priya", "#support", "nobody acks")
            await sb.settle()  # 0.2 s per attempt
        finally:
            await client.close()
    assert [(r.retry_attempt, r.retry_reason) for r in collector.requests] == [
        (0, ""),
        (1, "timeout"),
        (2, "timeout"),
        (3, "timeout"),
    ]
    assert len({r.envelope_id for r in collector.requests}) == 1
    assert [d.reason for d in sb.deliveries] == ["timeout"] * 4


async def test_payloads_spread_across_connections(socket_run: RunningSandbox) -> None:
    sb = socket_run.sandbox
    first, second = Collector(), Collector()
    a = await connected(socket_run)
    a.socket_mode_request_listeners.append(first)
    b = await connected(socket_run)
    await eventually(lambda: len(sb.socket.connections) == 2)
    b.socket_mode_request_listeners.append(second)
    try:
        for i in range(4):
            await sb.act.post_message("priya", "#support", f"m{i}")
        await sb.settle()
    finally:
        await a.close()
        await b.close()
    assert len(first.requests) == 2 and len(second.requests) == 2
    assert sb.socket.frames_sent[1]["num_connections"] == 2 or any(
        f.get("num_connections") == 2 for f in sb.socket.frames_sent
    )


async def test_slash_command_ack_payload_is_the_response(socket_run: RunningSandbox) -> None:
    sb = socket_run.sandbox
    collector = Collector(response={"text": "Deploying api…", "response_type": "in_channel"})
    client = await connected(socket_run)
    client.socket_mode_request_listeners.append(collector)
    try:
        result = await sb.act.run_command("grace", "#deploys", "/deploy", "api v42")
    finally:
        await client.close()
    (req,) = collector.requests
    assert req.type == "slash_commands" and req.accepts_response_payload is True
    real = fixture_json("socket-mode/python-slack-sdk__socket_mode_envelopes.0.slash_commands.json")
    assert set(real["payload"]) <= set(req.payload)
    assert result.ok and "posted" in result.applied
    assert sb.state.messages("deploys")[-1]["text"] == "Deploying api…"


async def test_refresh_schedule_warns_and_clients_reconnect() -> None:
    sb = make_sandbox(
        rate_limits=False, socket_mode=True, time_scale=100.0, socket_refresh_interval=20.0
    )

    def hellos() -> int:
        return sum(1 for f in sb.socket.frames_sent if f.get("type") == "hello")

    async with serve_sandbox(sb) as run:
        client = await connected(run)
        try:
            await eventually(lambda: hellos() >= 2)  # "warning" made slack_sdk open a new link
            await sb.socket.disconnect_all("refresh_requested")
            await eventually(lambda: hellos() >= 3)
        finally:
            await client.close()
    reasons = [f["reason"] for f in sb.socket.frames_sent if f.get("type") == "disconnect"]
    assert reasons[0] == "warning"
    assert "refresh_requested" in reasons


async def test_events_without_a_connection_are_dropped_like_slack(
    socket_run: RunningSandbox,
) -> None:
    sb = socket_run.sandbox
    await sb.act.post_message("priya", "#support", "into the void")
    await sb.settle()
    assert [(d.ok, d.reason) for d in sb.deliveries] == [(False, "no_connection")]


async def test_eleventh_connection_and_reused_tickets_are_refused(
    socket_run: RunningSandbox,
) -> None:
    from websockets.asyncio.client import connect
    from websockets.exceptions import ConnectionClosed, InvalidStatus

    web = AsyncWebClient(base_url=socket_run.api_url)
    async with contextlib.AsyncExitStack() as stack:
        for _ in range(10):
            url = (await web.apps_connections_open(app_token=socket_run.sandbox.app_token))["url"]
            ws = await stack.enter_async_context(connect(url))
            assert json.loads(await ws.recv())["type"] == "hello"
        url = (await web.apps_connections_open(app_token=socket_run.sandbox.app_token))["url"]
        async with connect(url) as extra:
            frame = json.loads(await extra.recv())
            assert frame == {
                "type": "disconnect",
                "reason": "too_many_websockets",
                "debug_info": {"host": "applink-sandbox"},
            }
            with pytest.raises(ConnectionClosed):
                await extra.recv()
        with pytest.raises((InvalidStatus, ConnectionClosed)):
            async with connect(url) as reused:  # a ticket works once
                await reused.recv()
    assert len(socket_run.sandbox.socket.connections) <= 10
