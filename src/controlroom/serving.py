"""Running ASGI apps on uvicorn inside an event loop the caller owns, so that the hub,
its workers and the sandbox can share one process."""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import AsyncIterator, Iterator
from typing import Any

import uvicorn

from controlroom.errors import ControlRoomError

__all__ = ["bound_port", "free_port", "serve_asgi"]


class _Server(uvicorn.Server):
    """Signals are the caller's business (``controlroom up`` handles them once)."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


@contextlib.asynccontextmanager
async def serve_asgi(app: Any, host: str, port: int) -> AsyncIterator[uvicorn.Server]:
    """Serve ``app`` until the block exits; ``port=0`` picks a free port."""
    config = uvicorn.Config(
        app, host=host, port=port, log_level="warning", lifespan="on", access_log=False
    )
    server = _Server(config)
    task = asyncio.create_task(server.serve())
    while not server.started:
        if task.done():
            with contextlib.suppress(SystemExit):
                await task
            raise ControlRoomError(f"could not listen on {host}:{port}")
        await asyncio.sleep(0.01)
    try:
        yield server
    finally:
        server.should_exit = True
        with contextlib.suppress(asyncio.CancelledError):
            await task


def free_port(host: str = "127.0.0.1") -> int:
    """A port free on ``host`` now, for a server whose URL must be known before it
    starts (OAuth redirect URIs, the sandbox's Request URL)."""
    with socket.socket() as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def bound_port(server: uvicorn.Server) -> int:
    for s in server.servers:
        for sock in s.sockets:
            return int(sock.getsockname()[1])
    raise ControlRoomError("server has no socket")
