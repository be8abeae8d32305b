"""A small Socket Mode server on loopback: ``POST /api/apps.connections.open`` (Starlette on
uvicorn) hands out ``ws://`` URLs served by the websockets library, which speaks Slack's
frames (hello, envelopes, disconnect) and records the acks it receives."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route
from websockets.asyncio.server import Server, ServerConnection, serve

from .conftest import fixture_json

HELLO = fixture_json("slack/socket-mode/python-slack-sdk__socket_mode_hello_message.json")
APP_TOKEN = "xapp-1-A111-111-test"


@dataclass
class Ack:
    frame: dict[str, Any]
    connection: int
    snapshot: Any = None


@dataclass
class FakeSocketSlack:
    """Counts ``apps.connections.open`` calls, keeps the live connections, records acks.

    ``on_ack`` runs synchronously when an ack arrives (before any other task can run),
    so a test can take a snapshot of what was committed at that instant."""

    fail_opens: int = 0
    bad_url_opens: int = 0
    opens: int = 0
    authorizations: list[str] = field(default_factory=list)
    connections: list[ServerConnection] = field(default_factory=list)
    connected_total: int = 0
    acks: asyncio.Queue[Ack] = field(default_factory=asyncio.Queue)
    on_ack: Callable[[dict[str, Any]], Any] | None = None
    api_url: str = ""
    _ws: Server | None = None
    _http: uvicorn.Server | None = None
    _http_task: asyncio.Task[None] | None = None
    _changed: asyncio.Event = field(default_factory=asyncio.Event)

    async def _open(self, request: Request) -> JSONResponse:
        self.opens += 1
        self._changed.set()
        self.authorizations.append(request.headers.get("authorization", ""))
        if self.opens <= self.fail_opens:
            return JSONResponse({"ok": False, "error": "internal_error"})
        assert self._ws is not None
        port = self._ws.sockets[0].getsockname()[1] if self.opens > self.bad_url_opens else 1
        return JSONResponse({"ok": True, "url": f"ws://127.0.0.1:{port}/link/?ticket={self.opens}"})

    async def _socket(self, ws: ServerConnection) -> None:
        index = self.connected_total
        self.connected_total += 1
        self.connections.append(ws)
        self._changed.set()
        try:
            await ws.send(json.dumps(HELLO))
            async for message in ws:
                frame = json.loads(message)
                snapshot = self.on_ack(frame) if self.on_ack else None
                self.acks.put_nowait(Ack(frame, index, snapshot))
        except Exception:  # a dropped client is normal here
            pass
        finally:
            self.connections.remove(ws)
            self._changed.set()

    async def start(self) -> None:
        self._ws = await serve(self._socket, "127.0.0.1", 0)
        app = Starlette(routes=[Route("/api/apps.connections.open", self._open, methods=["POST"])])
        config = uvicorn.Config(app, host="127.0.0.1", port=0, log_level="warning", lifespan="off")
        self._http = uvicorn.Server(config)
        self._http_task = asyncio.create_task(self._http.serve())
        while not self._http.started:  # noqa: ASYNC110 - uvicorn offers no event
            await asyncio.sleep(0.01)
        port = self._http.servers[0].sockets[0].getsockname()[1]
        self.api_url = f"http://127.0.0.1:{port}/api/"

    async def close(self) -> None:
        if self._http is not None and self._http_task is not None:
            self._http.should_exit = True
            await self._http_task
        if self._ws is not None:
            self._ws.close()
            await self._ws.wait_closed()

    async def wait_for(self, predicate: Callable[[], bool], within: float = 5.0) -> None:
        async with asyncio.timeout(within):
            while not predicate():
                self._changed.clear()
                if predicate():
                    return
                await self._changed.wait()

    async def wait_for_opens(self, count: int) -> None:
        await self.wait_for(lambda: self.opens >= count)

    async def send(self, frame: dict[str, Any], connection: int = -1) -> None:
        await self.connections[connection].send(json.dumps(frame))

    async def next_ack(self, within: float = 5.0) -> Ack:
        async with asyncio.timeout(within):
            return await self.acks.get()
