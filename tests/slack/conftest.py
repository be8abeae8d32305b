from __future__ import annotations

import asyncio
import contextlib
import json
import socket
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import pytest
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route


class FakeClock:
    """A clock that only moves when something sleeps on it."""

    def __init__(self, start: float = 1000.0) -> None:
        self.now = start
        self.slept: list[float] = []

    def __call__(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.now += max(0.0, seconds)


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


# --- a scripted Slack Web API on loopback, for exact client behaviour tests -----------------
# (the load and fault tests run against the real sandbox; this one returns scripted
# answers in Slack's shapes so that each failure path can be driven deterministically)


@dataclass
class Scripted:
    """One scripted answer. ``apply`` stores a post before answering (the ambiguous case)."""

    status: int = 200
    body: dict[str, Any] | None = None
    headers: dict[str, str] = field(default_factory=dict)
    hang: float = 0.0
    apply: bool = False


@dataclass
class FakeSlack:
    url: str = ""
    scripts: dict[str, list[Scripted]] = field(default_factory=dict)
    calls: list[tuple[str, dict[str, Any], str]] = field(default_factory=list)
    messages: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    seq: int = 0

    def script(self, method: str, *answers: Scripted) -> None:
        self.scripts.setdefault(method, []).extend(answers)

    def called(self, method: str) -> list[dict[str, Any]]:
        return [args for m, args, _ in self.calls if m == method]

    def _post(self, args: dict[str, Any]) -> dict[str, Any]:
        self.seq += 1
        meta = args.get("metadata")
        if isinstance(meta, str):
            meta = json.loads(meta)
        msg = {"type": "message", "text": args.get("text", ""), "ts": f"1700000000.{self.seq:06d}"}
        if meta:
            msg["metadata"] = meta
        if args.get("thread_ts"):
            msg["thread_ts"] = args["thread_ts"]
        self.messages.setdefault(str(args["channel"]), []).append(msg)
        return {"ok": True, "channel": args["channel"], "ts": msg["ts"], "message": msg}

    async def handle(self, request: Request) -> Response:
        method = request.path_params["method"]
        raw = await request.body()
        if request.headers.get("content-type", "").startswith("application/json"):
            args: dict[str, Any] = json.loads(raw or b"{}")
        else:
            form = await request.form()
            args = {k: v for k, v in form.items() if isinstance(v, str)}
        args.update(dict(request.query_params))
        self.calls.append((method, args, request.headers.get("authorization", "")))
        queue = self.scripts.get(method)
        if queue:
            answer = queue.pop(0)
            if answer.apply and method == "chat.postMessage":
                self._post(args)
            if answer.hang:
                await asyncio.sleep(answer.hang)
            return JSONResponse(
                answer.body or {}, status_code=answer.status, headers=answer.headers
            )
        if method == "chat.postMessage":
            return JSONResponse(self._post(args))
        if method in ("conversations.history", "conversations.replies"):
            msgs = list(reversed(self.messages.get(str(args.get("channel")), [])))
            if method == "conversations.replies":
                msgs = [m for m in msgs if m.get("thread_ts") == args.get("ts")]
            if args.get("include_all_metadata") not in ("1", "true", True):
                msgs = [{k: v for k, v in m.items() if k != "metadata"} for m in msgs]
            return JSONResponse({"ok": True, "messages": msgs, "has_more": False})
        if method == "chat.update":
            return JSONResponse(
                {
                    "ok": True,
                    "channel": args.get("channel"),
                    "ts": args.get("ts"),
                    "text": args.get("text", ""),
                }
            )
        return JSONResponse({"ok": True})


@contextlib.asynccontextmanager
async def serve_tcp(app: Any) -> AsyncIterator[str]:
    """Serve an ASGI app on a loopback port; yields ``http://127.0.0.1:PORT``.

    The listening socket is created with ``IPPROTO_TCP`` so that asyncio turns Nagle's
    algorithm off on accepted connections (with proto 0 it does not, and every response
    on a kept-alive connection waits ~40 ms for a delayed ACK).
    """
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    config = uvicorn.Config(app, log_level="warning", lifespan="off", timeout_graceful_shutdown=2)
    server = uvicorn.Server(config)
    task = asyncio.create_task(server.serve(sockets=[sock]))
    while not server.started:  # noqa: ASYNC110
        await asyncio.sleep(0.01)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        await task
        sock.close()


@pytest.fixture
async def fake_slack() -> AsyncIterator[FakeSlack]:
    fake = FakeSlack()
    app = Starlette(routes=[Route("/api/{method}", fake.handle, methods=["GET", "POST"])])
    async with serve_tcp(app) as url:
        fake.url = f"{url}/api/"
        yield fake


@pytest.fixture
def scripted() -> type[Scripted]:
    return Scripted


@pytest.fixture
def tcp_serve() -> Any:
    """``async with tcp_serve(app) as base_url`` (see :func:`serve_tcp`)."""
    return serve_tcp
