"""Delivery benchmark: slack_sdk's reactive retries vs Control Room's planned calls.

One invocation runs the same workload twice, each time against a fresh sandbox with
Slack's rate limits time-scaled (``--scale``, default 30: one platform minute = 2 s):

* 1,000 ``chat.postMessage`` over 20 channels (50 each, numbered), and
* 200 mixed-tier calls: 60 ``users.info`` (Tier 4), 60 ``conversations.info`` (Tier 3),
  40 ``reactions.add`` (Tier 3), 40 ``conversations.list`` (Tier 2).

(a) ``slack_sdk`` ``AsyncWebClient`` with ``AsyncRateLimitErrorRetryHandler(max_retry_count=5)``
    and 20 concurrent senders pulling the 1,200 calls from one queue (channel-interleaved);
(b) Control Room's ``SlackClient``: every call issued at once (one task per channel
    posting its 50 messages in order, the mixed calls beside them); the gate plans.

The theoretical minimum makespan replays the workload against the sandbox's own
``RateLimiter`` on a virtual clock, sending every call the moment it would be accepted
(in per-channel order), with zero network latency.

    uv run python benchmarks/delivery/run.py [--scale 30]
"""

from __future__ import annotations

import argparse
import asyncio
import socket
import threading
import time
from collections import Counter
from collections.abc import Awaitable
from dataclasses import dataclass
from typing import Any

import uvicorn
from prometheus_client import CollectorRegistry
from slack_sdk.errors import SlackApiError as SdkApiError
from slack_sdk.http_retry.builtin_async_handlers import AsyncRateLimitErrorRetryHandler
from slack_sdk.web.async_client import AsyncWebClient

from controlroom.sandbox import RateLimiter, Sandbox, SandboxConfig
from controlroom.slack import (
    MemoryGateBackend,
    RateGate,
    RetryPolicy,
    SlackMetrics,
    SlackOutbound,
    TierTable,
)

CHANNELS = 20
PER_CHANNEL = 50
MIXED = (
    ("users.info", 60),
    ("conversations.info", 60),
    ("reactions.add", 40),
    ("conversations.list", 40),
)


@dataclass
class Call:
    method: str
    channel: str | None = None
    text: str | None = None


@dataclass
class Result:
    name: str
    makespan: float
    calls: int
    http_429: int
    lost: int
    doubled: int
    out_of_order: int
    errors: int


# -- the sandbox on its own thread and event loop ------------------------------------------


class SandboxThread:
    """A sandbox served by uvicorn on a loopback port from a separate thread/loop."""

    def __init__(self, scale: float) -> None:
        self.sb = Sandbox(SandboxConfig(time_scale=scale, rate_limits=True))
        self.url = ""
        self._ready = threading.Event()
        self._server: uvicorn.Server | None = None
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        asyncio.run(self._serve())

    async def _serve(self) -> None:
        # IPPROTO_TCP so asyncio disables Nagle on accepted sockets (no 40 ms ACK stalls).
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
        sock.bind(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{sock.getsockname()[1]}"
        self.sb.public_url = self.url
        config = uvicorn.Config(self.sb.app, log_level="warning", lifespan="off", backlog=2048)
        self._server = uvicorn.Server(config)
        task = asyncio.create_task(self._server.serve(sockets=[sock]))
        while not self._server.started:  # noqa: ASYNC110
            await asyncio.sleep(0.01)
        self._ready.set()
        await task
        await self.sb.aclose()
        sock.close()

    def __enter__(self) -> SandboxThread:
        self._thread.start()
        self._ready.wait(10)
        return self

    def __exit__(self, *exc: object) -> None:
        if self._server is not None:
            self._server.should_exit = True
        self._thread.join(10)


# -- workload -------------------------------------------------------------------------------


async def setup(api_url: str, sb: Sandbox) -> tuple[list[str], list[Call], list[Call], str]:
    """Create the channels and a message to react to (limits switched off meanwhile)."""
    sb.ratelimiter.enabled = False
    try:
        client = AsyncWebClient(token=sb.bot_token, base_url=api_url)
        channels = []
        for i in range(CHANNELS):
            made = await client.conversations_create(name=f"bench-{i:02d}")
            channels.append(str(made["channel"]["id"]))
        anchor = await client.chat_postMessage(channel=channels[0], text="react here")
        anchor_ts = str(anchor["ts"])
    finally:
        sb.ratelimiter.enabled = True
        sb.ratelimiter._logs.clear()
        sb.ratelimiter._buckets.clear()
        sb.state.calls.clear()
    posts = [
        Call("chat.postMessage", channels[c], f"{channels[c]}:{i:03d}")
        for i in range(PER_CHANNEL)
        for c in range(CHANNELS)
    ]
    mixed = [
        Call(method, channels[0] if method == "reactions.add" else channels[i % CHANNELS])
        for method, n in MIXED
        for i in range(n)
    ]
    return channels, posts, mixed, anchor_ts


def mixed_call(
    client: AsyncWebClient, call: Call, sb: Sandbox, anchor: str, i: int
) -> Awaitable[Any]:
    if call.method == "users.info":
        return client.users_info(user=sb.user("dan").id)
    if call.method == "conversations.info":
        return client.conversations_info(channel=str(call.channel))
    if call.method == "reactions.add":
        return client.reactions_add(
            channel=str(call.channel).split(":")[0], timestamp=anchor, name=f"r{i}"
        )
    return client.conversations_list(limit=10)


def interleave(posts: list[Call], mixed: list[Call]) -> list[Call]:
    out: list[Call] = []
    step = max(1, len(posts) // max(1, len(mixed)))
    m = iter(mixed)
    for i, post in enumerate(posts):
        out.append(post)
        if i % step == step - 1:
            nxt = next(m, None)
            if nxt is not None:
                out.append(nxt)
    out.extend(m)
    return out


def score(name: str, sb: Sandbox, channels: list[str], makespan: float, errors: int) -> Result:
    lost = doubled = out_of_order = 0
    for ch in channels:
        texts = [
            str(m.get("text"))
            for m in sb.state.messages(ch)
            if str(m.get("text", "")).startswith(ch)
        ]
        counts = Counter(texts)
        expected = [f"{ch}:{i:03d}" for i in range(PER_CHANNEL)]
        lost += sum(1 for t in expected if counts[t] == 0)
        doubled += sum(c - 1 for c in counts.values() if c > 1)
        highest = -1
        for t in texts:
            n = int(t.rsplit(":", 1)[1])
            if n < highest:
                out_of_order += 1
            highest = max(highest, n)
    calls = len(sb.state.calls)
    limited = sum(1 for c in sb.state.calls if c.http_status == 429)
    return Result(name, makespan, calls, limited, lost, doubled, out_of_order, errors)


# -- (a) slack_sdk with its retry handler, 20 senders ---------------------------------------


async def run_sdk(scale: float) -> Result:
    with SandboxThread(scale) as server:
        sb = server.sb
        api_url = f"{server.url}/api/"
        channels, posts, mixed, anchor = await setup(api_url, sb)
        client = AsyncWebClient(
            token=sb.bot_token,
            base_url=api_url,
            retry_handlers=[AsyncRateLimitErrorRetryHandler(max_retry_count=5)],
        )
        queue: asyncio.Queue[tuple[int, Call]] = asyncio.Queue()
        for i, call in enumerate(interleave(posts, mixed)):
            queue.put_nowait((i, call))
        errors = 0

        async def sender() -> None:
            nonlocal errors
            while True:
                try:
                    i, call = queue.get_nowait()
                except asyncio.QueueEmpty:
                    return
                try:
                    if call.method == "chat.postMessage":
                        await client.chat_postMessage(
                            channel=str(call.channel), text=str(call.text)
                        )
                    else:
                        await mixed_call(client, call, sb, anchor, i)
                except SdkApiError as exc:
                    errors += 1
                    print("sdk error:", call.method, exc.response.get("error"))

        start = time.perf_counter()
        await asyncio.gather(*(sender() for _ in range(20)))
        makespan = time.perf_counter() - start
        return score(
            "slack_sdk AsyncWebClient + RateLimitErrorRetryHandler(5), 20 senders",
            sb,
            channels,
            makespan,
            errors,
        )


# -- (b) Control Room ------------------------------------------------------------------------


async def run_controlroom(scale: float) -> Result:
    with SandboxThread(scale) as server:
        sb = server.sb
        api_url = f"{server.url}/api/"
        channels, posts, mixed, anchor = await setup(api_url, sb)
        gate = RateGate(
            MemoryGateBackend(), tiers=TierTable(time_scale=scale), safety=0.01, max_wait=600.0
        )
        metrics = SlackMetrics(CollectorRegistry())
        errors = 0
        async with SlackOutbound(
            gate, base_url=api_url, metrics=metrics, retry=RetryPolicy(base=0.05, cap=1.0)
        ) as out:
            client = out.client(sb.team_id, sb.bot_token)

            async def channel_task(ch: str) -> None:
                mine = [p for p in posts if p.channel == ch]
                await asyncio.gather(
                    *(client.chat_postMessage(channel=ch, text=str(p.text)) for p in mine)
                )

            async def one_mixed(i: int, call: Call) -> None:
                nonlocal errors
                try:
                    await mixed_call(client, call, sb, anchor, i)
                except Exception as exc:
                    errors += 1
                    print("controlroom error:", call.method, exc)

            start = time.perf_counter()
            await asyncio.gather(
                *(channel_task(ch) for ch in channels),
                *(one_mixed(i, c) for i, c in enumerate(mixed)),
            )
            makespan = time.perf_counter() - start
        return score("Control Room SlackClient (rate gate)", sb, channels, makespan, errors)


# -- theoretical minimum -----------------------------------------------------------------------


def theoretical_minimum(scale: float, dt: float = 0.005) -> float:
    """Platform seconds until the last call is accepted by an omniscient zero-latency client,
    divided by ``scale`` (real seconds)."""
    now = [0.0]
    limiter = RateLimiter(lambda: now[0], time_scale=1.0)
    queues = {f"C{c}": PER_CHANNEL for c in range(CHANNELS)}
    pending = {m: n for m, n in MIXED}
    last = 0.0
    while any(queues.values()) or any(pending.values()):
        for ch, left in queues.items():
            if left and limiter.check("T", "A", "chat.postMessage", ch).allowed:
                queues[ch] -= 1
                last = now[0]
        for method in pending:
            while pending[method] and limiter.check("T", "A", method).allowed:
                pending[method] -= 1
                last = now[0]
        now[0] += dt
    return last / scale


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--scale", type=float, default=30.0, help="sandbox time scale (default 30)")
    args = parser.parse_args()
    minimum = theoretical_minimum(args.scale)
    results = [asyncio.run(run_sdk(args.scale)), asyncio.run(run_controlroom(args.scale))]
    print(
        f"\nworkload: {CHANNELS * PER_CHANNEL} posts over {CHANNELS} channels + "
        f"{sum(n for _, n in MIXED)} mixed-tier calls; time scale {args.scale:g}; "
        f"theoretical minimum {minimum:.2f} s real ({minimum * args.scale:.0f} platform s)\n"
    )
    header = (
        f"{'client':<72} {'makespan':>9} {'x min':>6} {'calls':>6} {'429s':>5} {'429 %':>6} "
        f"{'lost':>5} {'dup':>4} {'order':>6} {'errors':>6}"
    )
    print(header)
    print("-" * len(header))
    for r in results:
        print(
            f"{r.name:<72} {r.makespan:>8.2f}s {r.makespan / minimum:>6.3f} {r.calls:>6} "
            f"{r.http_429:>5} {100 * r.http_429 / max(1, r.calls):>5.1f}% {r.lost:>5} "
            f"{r.doubled:>4} {r.out_of_order:>6} {r.errors:>6}"
        )


if __name__ == "__main__":
    main()
