"""Serving a sandbox on a real loopback port with uvicorn."""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass

import uvicorn

from .core import Sandbox


@dataclass(frozen=True)
class RunningSandbox:
    sandbox: Sandbox
    host: str
    port: int

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    @property
    def api_url(self) -> str:
        """Pass as ``base_url`` to ``slack_sdk`` clients."""
        return f"{self.url}/api/"


class _Server(uvicorn.Server):
    """Signals are the caller's business. uvicorn's own handling would take Ctrl-C from
    the process that embeds the sandbox (``controlroom up``, a test run), stop the
    sandbox alone and raise the signal again when it is done, so the embedding process
    would be told twice, the second time while it is already shutting down."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


@contextlib.asynccontextmanager
async def serve_sandbox(
    sb: Sandbox, host: str = "127.0.0.1", port: int = 0
) -> AsyncIterator[RunningSandbox]:
    """Run ``sb.app`` under uvicorn until the block exits; then close everything."""
    # IPPROTO_TCP, not 0: asyncio only turns Nagle's algorithm off (TCP_NODELAY) for
    # sockets that say they are TCP; without it each kept-alive response waits ~40 ms.
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    bound_port = int(sock.getsockname()[1])
    running = RunningSandbox(sb, host, bound_port)
    sb.public_url = running.url
    config = uvicorn.Config(
        sb.app,
        log_level="warning",
        lifespan="off",
        ws_ping_interval=None,
        timeout_graceful_shutdown=2,
    )
    server = _Server(config)
    task = asyncio.get_running_loop().create_task(server.serve(sockets=[sock]))
    try:
        while not server.started:
            if task.done():
                task.result()
                raise RuntimeError("sandbox server stopped during start-up")
            await asyncio.sleep(0.01)
        yield running
    finally:
        await sb.aclose()
        server.should_exit = True
        with contextlib.suppress(asyncio.CancelledError):
            await task
        sock.close()
