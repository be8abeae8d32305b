"""The edge on a real uvicorn server on loopback: a signed event is committed and
answered, and an oversized body is refused before the client has sent it."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import httpx
import pytest
import uvicorn

from controlroom.queue.sqlite import SqliteQueue

from .conftest import edge_app, fixture_bytes, slack_headers


@pytest.fixture
async def server_url(queue: SqliteQueue) -> AsyncIterator[str]:
    app = edge_app(queue)
    config = uvicorn.Config(app, host="127.0.0.1", port=0, log_level="warning", lifespan="off")
    server = uvicorn.Server(config)
    task = asyncio.create_task(server.serve())
    try:
        async with asyncio.timeout(5):
            while not server.started:  # noqa: ASYNC110 - uvicorn offers no event
                await asyncio.sleep(0.01)
        port = server.servers[0].sockets[0].getsockname()[1]
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        await task


async def test_signed_event_over_real_http_is_committed_then_answered(
    server_url: str, queue: SqliteQueue
) -> None:
    body = fixture_bytes("slack/events/test_app.app_mention_event_body.json")
    async with httpx.AsyncClient(base_url=server_url) as client:
        response = await client.post("/slack/events", content=body, headers=slack_headers(body))
    assert response.status_code == 200
    [job] = await queue.list_jobs(task="dispatch")
    assert job.envelope_id is not None
    env = await queue.get_envelope(job.envelope_id)
    assert env is not None and env.dedupe_key == "Ev111"


async def test_oversized_declared_body_is_refused_before_it_is_sent(server_url: str) -> None:
    port = int(server_url.rsplit(":", 1)[1])
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(
            b"POST /slack/events HTTP/1.1\r\nHost: edge\r\nContent-Type: application/json\r\n"
            b"Content-Length: 10000000\r\n\r\n{"
        )
        await writer.drain()
        async with asyncio.timeout(5):
            status_line = await reader.readline()
            head = await reader.readuntil(b"\r\n\r\n")
    finally:
        writer.close()
        await writer.wait_closed()
    assert status_line.startswith(b"HTTP/1.1 413")
    assert b"content-type: text/plain" in head.lower()
