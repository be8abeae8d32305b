"""A lean HTTP/1.1 load generator: asyncio streams, pre-built signed requests, httptools
to parse responses. aiohttp and httpx clients saturate their own core long before the
server does, so they would measure the client.

Two modes:
- ``saturate``: C keep-alive connections, each sending its next request as soon as the
  previous answer arrives, for D seconds: throughput at saturation;
- ``rate``: an open loop at R requests/s over C connections; latency is measured from the
  *scheduled* send time, so a stalled server cannot hide its queueing (no coordinated
  omission).
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import time
import uuid
from dataclasses import dataclass

import httptools


def signed_event_requests(n: int, secret: str, port: int, ts: int | None = None) -> list[bytes]:
    """``n`` distinct ~1.2 KB signed Events API ``message`` requests."""
    ts = ts or int(time.time())
    filler = "Deploy of api to production finished; checking dashboards before the next step. "
    out = []
    for i in range(n):
        event_id = f"Ev{uuid.uuid4().hex[:16].upper()}"
        body = json.dumps(
            {
                "token": "verification-token-deprecated",
                "team_id": "T0BENCH01",
                "api_app_id": "A0BENCH01",
                "event": {
                    "type": "message",
                    "channel": "C0BENCH01",
                    "user": "U0BENCH01",
                    "text": (filler * 12)[: 900 - len(str(i))] + str(i),
                    "ts": f"{ts}.{i:06d}",
                    "event_ts": f"{ts}.{i:06d}",
                    "channel_type": "channel",
                },
                "type": "event_callback",
                "event_id": event_id,
                "event_time": ts,
                "authorizations": [
                    {
                        "enterprise_id": None,
                        "team_id": "T0BENCH01",
                        "user_id": "U0BENCHBOT",
                        "is_bot": True,
                        "is_enterprise_install": False,
                    }
                ],
                "is_ext_shared_channel": False,
                "event_context": "4-" + uuid.uuid4().hex,
            },
            separators=(",", ":"),
        ).encode()
        sig = hmac.new(secret.encode(), f"v0:{ts}:".encode() + body, hashlib.sha256).hexdigest()
        head = (
            f"POST /slack/events HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
            f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n"
            f"X-Slack-Request-Timestamp: {ts}\r\nX-Slack-Signature: v0={sig}\r\n"
            "User-Agent: Slackbot 1.0 (+https://api.slack.com/robots)\r\n\r\n"
        ).encode()
        out.append(head + body)
    return out


class _Conn:
    def __init__(self) -> None:
        self.done: asyncio.Queue[int] = asyncio.Queue()
        self.parser = httptools.HttpResponseParser(self)
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None

    def on_message_complete(self) -> None:
        self.done.put_nowait(self.parser.get_status_code())

    async def open(self, port: int) -> None:
        self.reader, self.writer = await asyncio.open_connection("127.0.0.1", port)

    async def request(self, data: bytes) -> int:
        assert self.reader is not None and self.writer is not None
        self.writer.write(data)
        while self.done.empty():
            chunk = await self.reader.read(65536)
            if not chunk:
                raise ConnectionError("server closed the connection")
            self.parser.feed_data(chunk)
        return self.done.get_nowait()

    async def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
            await self.writer.wait_closed()


@dataclass
class Result:
    sent: int
    ok: int
    errors: int
    seconds: float
    latencies_ms: list[float]

    @property
    def rps(self) -> float:
        return self.ok / self.seconds if self.seconds else 0.0

    def pct(self, p: float) -> float:
        if not self.latencies_ms:
            return float("nan")
        xs = sorted(self.latencies_ms)
        return xs[min(len(xs) - 1, int(p / 100 * len(xs)))]


async def saturate(port: int, requests: list[bytes], conns: int, seconds: float) -> Result:
    it = iter(requests)
    stats = {"ok": 0, "err": 0, "sent": 0}
    lat: list[float] = []
    deadline = time.perf_counter() + seconds

    async def one() -> None:
        c = _Conn()
        await c.open(port)
        try:
            while time.perf_counter() < deadline:
                data = next(it, None)
                if data is None:
                    return
                t0 = time.perf_counter()
                stats["sent"] += 1
                status = await c.request(data)
                lat.append((time.perf_counter() - t0) * 1000)
                stats["ok" if status == 200 else "err"] += 1
        finally:
            await c.close()

    start = time.perf_counter()
    await asyncio.gather(*(one() for _ in range(conns)))
    return Result(stats["sent"], stats["ok"], stats["err"], time.perf_counter() - start, lat)


async def fixed_rate(port: int, requests: list[bytes], rate: float, conns: int) -> Result:
    n = len(requests)
    interval = 1.0 / rate
    pool: asyncio.Queue[_Conn] = asyncio.Queue()
    for _ in range(conns):
        c = _Conn()
        await c.open(port)
        pool.put_nowait(c)
    lat: list[float] = []
    stats = {"ok": 0, "err": 0}
    start = time.perf_counter() + 0.05

    async def fire(i: int, data: bytes) -> None:
        scheduled = start + i * interval
        c = await pool.get()
        try:
            status = await c.request(data)
        finally:
            pool.put_nowait(c)
        lat.append((time.perf_counter() - scheduled) * 1000)
        stats["ok" if status == 200 else "err"] += 1

    tasks = []
    for i, data in enumerate(requests):
        delay = start + i * interval - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        tasks.append(asyncio.create_task(fire(i, data)))
    await asyncio.gather(*tasks)
    seconds = time.perf_counter() - start
    while not pool.empty():
        await pool.get_nowait().close()
    return Result(n, stats["ok"], stats["err"], seconds, lat)
