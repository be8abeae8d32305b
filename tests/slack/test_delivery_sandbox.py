"""The client against the sandbox over real HTTP, with Slack's rate limits time-scaled.

Time scale: the sandbox and the gate both run ``SCALE`` times faster than Slack, so one
platform minute is 60 / SCALE real seconds. 100 keeps the one-post-per-second channel
interval (10 ms real) above loopback round trips on a shared 2-core machine while the
1,000-post workload (about 180 platform seconds under the 300/min workspace budget)
takes about 2 s.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import pytest
from prometheus_client import CollectorRegistry

from controlroom.errors import SlackApiError
from controlroom.sandbox import Sandbox, SandboxConfig, serve_sandbox
from controlroom.slack import (
    MemoryGateBackend,
    RateGate,
    RetryPolicy,
    SlackClient,
    SlackMetrics,
    SlackOutbound,
    TierTable,
)

SCALE = 100.0


@dataclass
class Rig:
    sb: Sandbox
    out: SlackOutbound
    client: SlackClient
    metrics: SlackMetrics

    def count(self, name: str, **labels: str) -> float:
        total = 0.0
        for metric in self.metrics.registry.collect():
            for sample in metric.samples:
                if sample.name == name and all(
                    sample.labels.get(k) == v for k, v in labels.items()
                ):
                    total += sample.value
        return total

    def texts(self, channel: str) -> list[str]:
        return [
            str(m.get("text")) for m in self.sb.state.messages(channel) if not m.get("thread_ts")
        ]

    def http_429s(self) -> int:
        return sum(1 for c in self.sb.state.calls if c.http_status == 429)


async def make_rig(
    serve: Any, scale: float = SCALE, call_timeout: float = 2.0, hold: float = 1.0
) -> AsyncIterator[Rig]:
    sb = Sandbox(SandboxConfig(time_scale=scale, rate_limits=True, fault_timeout_hold=hold))
    async with serve(sb.app) as url:
        sb.public_url = url
        api_url = f"{url}/api/"
        gate = RateGate(MemoryGateBackend(), tiers=TierTable(time_scale=scale), safety=0.02)
        metrics = SlackMetrics(CollectorRegistry())
        retry = RetryPolicy(max_attempts=8, base=0.02, cap=0.2)
        async with SlackOutbound(
            gate, base_url=api_url, timeout=call_timeout, retry=retry, metrics=metrics
        ) as out:
            yield Rig(sb, out, out.client(sb.team_id, sb.bot_token), metrics)
        await sb.aclose()


@pytest.fixture
async def rig(tcp_serve: Any) -> AsyncIterator[Rig]:
    async for r in make_rig(tcp_serve):
        yield r


async def make_channels(rig: Rig, n: int) -> list[str]:
    made = [await rig.client.conversations_create(name=f"load-{i:02d}") for i in range(n)]
    return [str(r["channel"]["id"]) for r in made]


async def post_in_order(client: SlackClient, channel: str, texts: list[str]) -> None:
    await asyncio.gather(*(client.chat_postMessage(channel=channel, text=t) for t in texts))


async def test_a_burst_of_200_posts_to_one_channel_is_delivered_once_in_order_without_429s(
    rig: Rig,
) -> None:
    channel = rig.sb.channel("releases").id
    texts = [f"release step {i}" for i in range(200)]
    await post_in_order(rig.client, channel, texts)
    assert rig.texts(channel)[-200:] == texts
    assert rig.http_429s() == 0


async def test_1000_posts_across_20_channels_are_delivered_once_in_order_without_429s(
    rig: Rig,
) -> None:
    channels = await make_channels(rig, 20)
    plan = {c: [f"{c} #{i}" for i in range(50)] for c in channels}
    await asyncio.gather(*(post_in_order(rig.client, c, texts) for c, texts in plan.items()))
    for channel, texts in plan.items():
        assert rig.texts(channel) == texts
    calls = len(rig.sb.state.calls)
    assert rig.http_429s() <= calls // 100
    assert rig.count("controlroom_slack_ratelimited_total") == rig.http_429s()


async def test_mixed_tiers_at_once_get_no_429s(rig: Rig) -> None:
    client = rig.client
    channel = rig.sb.channel("deploys").id
    posted = [await client.chat_postMessage(channel=channel, text=f"m{i}") for i in range(3)]
    ts = [str(p["ts"]) for p in posted]
    user = rig.sb.user("dan").id
    work: list[Any] = []
    for i in range(60):
        work.append(client.users_info(user=user))  # Tier 4
        work.append(client.conversations_info(channel=channel))  # Tier 3
        work.append(client.reactions_add(channel=channel, timestamp=ts[i % 3], name=f"e{i}"))
        work.append(client.conversations_list(limit=5))  # Tier 2
        work.append(client.chat_postMessage(channel=channel, text=f"p{i}"))
    await asyncio.gather(*work)
    limited = Counter(c.method for c in rig.sb.state.calls if c.http_status == 429)
    assert limited == Counter()
    assert rig.texts(channel) == [f"m{i}" for i in range(3)] + [f"p{i}" for i in range(60)]
    methods = Counter(c.method for c in rig.sb.state.calls)
    assert methods["conversations.list"] == 60 and methods["users.info"] == 60


async def test_5xx_and_internal_errors_deliver_every_message_exactly_once(rig: Rig) -> None:
    channel = rig.sb.channel("support").id
    rig.sb.faults.set("chat.postMessage", http_5xx_rate=0.2, error_rate=0.1)
    texts = [f"alert {i}" for i in range(60)]
    await post_in_order(rig.client, channel, texts)
    assert rig.texts(channel)[-60:] == texts
    assert Counter(rig.texts(channel))[texts[0]] == 1
    assert rig.count("controlroom_slack_retries_total") > 0


async def test_timeouts_after_applying_deliver_every_message_exactly_once(tcp_serve: Any) -> None:
    async for rig in make_rig(tcp_serve, call_timeout=0.3, hold=0.6):
        channel = rig.sb.channel("support").id
        rig.sb.faults.set("chat.postMessage", timeout_rate=0.15)
        texts = [f"page {i}" for i in range(30)]
        await post_in_order(rig.client, channel, texts)
        assert rig.texts(channel)[-30:] == texts
        assert rig.count("controlroom_slack_calls_total", outcome="recovered") > 0


async def test_a_429_storm_is_waited_out_and_every_message_delivered_once(rig: Rig) -> None:
    channel = rig.sb.channel("releases").id
    rig.sb.faults.set("chat.postMessage", storm_seconds=30.0)  # 0.3 s real at SCALE 100
    texts = [f"storm {i}" for i in range(20)]
    await post_in_order(rig.client, channel, texts)
    assert rig.texts(channel)[-20:] == texts
    assert rig.count("controlroom_slack_ratelimited_total", method="chat.postMessage") >= 1


async def test_the_client_works_against_serve_sandbox_as_shipped() -> None:
    sb = Sandbox(SandboxConfig(time_scale=SCALE))
    async with serve_sandbox(sb, host="127.0.0.1", port=0) as running:
        gate = RateGate(tiers=TierTable(time_scale=SCALE))
        async with SlackOutbound(gate, base_url=running.api_url) as out:
            client = out.client(sb.team_id, sb.bot_token)
            assert (await client.auth_test())["team_id"] == sb.team_id
            channel = sb.channel("releases").id
            posted = await client.chat_postMessage(
                channel=channel, text="shipped", idempotency_key="k"
            )
            [message] = [m for m in sb.state.messages(channel) if m.get("ts") == posted["ts"]]
            assert message["metadata"] == {
                "event_type": "controlroom_post",
                "event_payload": {"key": "k"},
            }
            with pytest.raises(SlackApiError) as caught:
                await client.conversations_info(channel="C0NOTHERE0")
            assert caught.value.error == "channel_not_found"


@pytest.mark.postgres
async def test_two_workers_sharing_the_postgres_gate_stay_inside_one_workspace_budget(
    tcp_serve: Any,
) -> None:
    """400 posts from two workers: more than one 300/min workspace window, so each must
    see the other's bookings for Slack never to answer 429."""
    import uuid

    import psycopg

    from controlroom.slack.gate_pg import PostgresGateBackend

    admin_url = "postgresql://postgres@127.0.0.1:5432/postgres"
    name = f"cr_slack_{uuid.uuid4().hex[:10]}"
    async with await psycopg.AsyncConnection.connect(admin_url, autocommit=True) as admin:
        await admin.execute(f'CREATE DATABASE "{name}"')
    db_url = admin_url.rsplit("/", 1)[0] + "/" + name
    sb = Sandbox(SandboxConfig(time_scale=SCALE))
    try:
        async with tcp_serve(sb.app) as url:
            api_url = f"{url}/api/"
            setup_gate = RateGate(tiers=TierTable(time_scale=SCALE))
            async with SlackOutbound(setup_gate, base_url=api_url) as out:
                setup = out.client(sb.team_id, sb.bot_token)
                made = [await setup.conversations_create(name=f"w-{i:02d}") for i in range(20)]
            channels = [str(m["channel"]["id"]) for m in made]
            gates = [
                RateGate(
                    PostgresGateBackend(db_url), tiers=TierTable(time_scale=SCALE), safety=0.02
                )
                for _ in range(2)
            ]
            outs = [SlackOutbound(g, base_url=api_url) for g in gates]
            for out in outs:
                await out.start()
            try:
                work = []
                for w, out in enumerate(outs):
                    client = out.client(sb.team_id, sb.bot_token)
                    for ch in channels[w * 10 : (w + 1) * 10]:
                        texts = [f"{ch}-{i}" for i in range(20)]
                        work.append(post_in_order(client, ch, texts))
                await asyncio.gather(*work)
            finally:
                for out, gate in zip(outs, gates, strict=True):
                    await out.aclose()
                    await gate.aclose()
        posts = [c for c in sb.state.calls if c.method == "chat.postMessage"]
        assert len(posts) == 400
        assert [c for c in posts if c.http_status == 429] == []
        for ch in channels:
            texts = [str(m["text"]) for m in sb.state.messages(ch) if str(m["text"]).startswith(ch)]
            assert texts == [f"{ch}-{i}" for i in range(20)]
    finally:
        await sb.aclose()
        async with await psycopg.AsyncConnection.connect(admin_url, autocommit=True) as admin:
            await admin.execute(f'DROP DATABASE "{name}" WITH (FORCE)')
