"""Injected faults: errors, 5xx, timeouts after applying, latency, 429 storms."""

from __future__ import annotations

import asyncio

import httpx
import pytest
from slack_sdk.errors import SlackApiError
from slack_sdk.web.async_client import AsyncWebClient

from controlroom.sandbox import Faults, serve_sandbox

from .conftest import make_sandbox


def test_faults_are_drawn_from_a_seeded_rng() -> None:
    def pattern(seed: int) -> list[bool]:
        faults = Faults(clock=lambda: 0.0, seed=seed)
        faults.set("chat.postMessage", error_rate=0.5)
        return [faults.draw("chat.postMessage").error for _ in range(40)]

    assert pattern(7) == pattern(7)
    assert 5 < sum(pattern(7)) < 35
    with pytest.raises(ValueError):
        Faults(clock=lambda: 0.0).set("x", error_rate=1.5)


async def test_error_and_5xx_faults_do_not_apply_the_call() -> None:
    sb = make_sandbox(rate_limits=False)
    async with serve_sandbox(sb) as run:
        client = AsyncWebClient(token=sb.bot_token, base_url=run.api_url)
        sb.faults.set("chat.postMessage", error_rate=1.0)
        with pytest.raises(SlackApiError) as info:
            await client.chat_postMessage(channel="C0SUPPORT1", text="x")
        assert info.value.response["error"] == "internal_error"
        sb.faults.set("chat.postMessage", http_5xx_rate=1.0)
        with pytest.raises(SlackApiError) as info:
            await client.chat_postMessage(channel="C0SUPPORT1", text="x")
        assert info.value.response.status_code == 503
        sb.faults.clear()
        await client.chat_postMessage(channel="C0SUPPORT1", text="works")
    assert [m["text"] for m in sb.state.messages("support")] == ["works"]


async def test_timeout_fault_applies_the_call_then_hangs() -> None:
    sb = make_sandbox(rate_limits=False, fault_timeout_hold=5.0)
    async with serve_sandbox(sb) as run:
        sb.faults.set("chat.postMessage", timeout_rate=1.0)
        async with httpx.AsyncClient(base_url=run.api_url) as http:
            with pytest.raises(httpx.ReadTimeout):
                await http.post(
                    "chat.postMessage",
                    data={"channel": "C0SUPPORT1", "text": "ambiguous"},
                    headers={"Authorization": f"Bearer {sb.bot_token}"},
                    timeout=0.3,
                )
        # the post happened even though the client never heard back
        assert [m["text"] for m in sb.state.messages("support")] == ["ambiguous"]


async def test_latency_fault_delays_the_answer() -> None:
    slept: list[float] = []

    async def sleep(seconds: float) -> None:
        slept.append(seconds)
        await asyncio.sleep(0)

    sb = make_sandbox(rate_limits=False, sleep=sleep)
    async with serve_sandbox(sb) as run:
        sb.faults.set("users.info", latency=0.25)
        client = AsyncWebClient(token=sb.bot_token, base_url=run.api_url)
        await client.users_info(user="U0SUPPORT1")
    assert slept == [0.25]


async def test_storm_answers_429_until_it_passes() -> None:
    now = [1000.0]
    sb = make_sandbox(rate_limits=False, clock=lambda: now[0])
    async with serve_sandbox(sb) as run:
        client = AsyncWebClient(token=sb.bot_token, base_url=run.api_url)
        sb.faults.set("conversations.history", storm_seconds=30)
        with pytest.raises(SlackApiError) as info:
            await client.conversations_history(channel="C0SUPPORT1")
        assert info.value.response.status_code == 429
        assert info.value.response.headers["Retry-After"] == "30"
        now[0] += 31
        assert (await client.conversations_history(channel="C0SUPPORT1"))["ok"]
