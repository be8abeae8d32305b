"""Rate limits: Slack's tiers per (team, app, method), 1 post/s per channel, 429s."""

from __future__ import annotations

import pytest
from slack_sdk.errors import SlackApiError
from slack_sdk.web.async_client import AsyncWebClient

from controlroom.sandbox import RateLimiter, serve_sandbox
from controlroom.sandbox.ratelimit import POST_BURST, WORKSPACE_POSTS_PER_MINUTE

from .conftest import make_sandbox


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def allowed(limiter: RateLimiter, method: str, n: int, channel: str | None = None) -> int:
    return sum(limiter.check("T1", "A1", method, channel).allowed for _ in range(n))


def test_tiers_differ_per_method() -> None:
    limiter = RateLimiter(FakeClock())
    assert allowed(limiter, "conversations.create", 30) == 20  # Tier 2
    assert allowed(limiter, "conversations.history", 80) == 50  # Tier 3
    assert allowed(limiter, "users.info", 150) == 100  # Tier 4
    assert allowed(limiter, "auth.test", 700) == 600  # special


def test_sliding_window_frees_budget_as_calls_age() -> None:
    clock = FakeClock()
    limiter = RateLimiter(clock)
    assert allowed(limiter, "conversations.create", 20) == 20
    refused = limiter.check("T1", "A1", "conversations.create")
    assert (refused.allowed, refused.retry_after, refused.scope) == (False, 60, "method")
    clock.now += 59.5
    assert limiter.check("T1", "A1", "conversations.create").retry_after == 1
    clock.now += 0.5
    assert allowed(limiter, "conversations.create", 25) == 20


def test_limits_are_per_team_and_per_method() -> None:
    limiter = RateLimiter(FakeClock())
    assert allowed(limiter, "conversations.create", 21) == 20
    assert limiter.check("T2", "A1", "conversations.create").allowed
    assert limiter.check("T1", "A2", "conversations.create").allowed
    assert limiter.check("T1", "A1", "conversations.list").allowed


def test_post_message_is_one_per_second_per_channel_with_a_small_burst() -> None:
    clock = FakeClock()
    limiter = RateLimiter(clock)
    assert allowed(limiter, "chat.postMessage", 10, "C1") == POST_BURST
    assert allowed(limiter, "chat.postMessage", 1, "C2") == 1
    clock.now += 1.0
    assert allowed(limiter, "chat.postMessage", 5, "C1") == 1


def test_workspace_wide_posting_limit() -> None:
    clock = FakeClock()
    limiter = RateLimiter(clock)
    total = sum(
        limiter.check("T1", "A1", "chat.postMessage", f"C{i}").allowed
        for i in range(WORKSPACE_POSTS_PER_MINUTE + 20)
    )
    assert total == WORKSPACE_POSTS_PER_MINUTE
    assert limiter.check("T1", "A1", "chat.postMessage", "Cnew").scope == "workspace"


def test_time_scale_shrinks_the_window() -> None:
    clock = FakeClock()
    limiter = RateLimiter(clock, time_scale=60.0)
    assert allowed(limiter, "conversations.create", 25) == 20
    clock.now += 1.0  # a platform minute
    assert allowed(limiter, "conversations.create", 1) == 1


def test_non_marketplace_cohort_makes_history_tier_1() -> None:
    limiter = RateLimiter(FakeClock(), non_marketplace_app=True)
    assert allowed(limiter, "conversations.history", 5) == 1


def test_disabled_limiter_allows_everything() -> None:
    limiter = RateLimiter(FakeClock(), enabled=False)
    assert allowed(limiter, "conversations.create", 500) == 500


async def test_burst_of_posts_gets_429_with_retry_after_over_http() -> None:
    sb = make_sandbox()
    async with serve_sandbox(sb) as run:
        client = AsyncWebClient(token=sb.bot_token, base_url=run.api_url)
        statuses = []
        retry_after = None
        for i in range(6):
            try:
                await client.chat_postMessage(channel="C0SUPPORT1", text=f"burst {i}")
                statuses.append(200)
            except SlackApiError as exc:
                statuses.append(exc.response.status_code)
                assert exc.response["error"] == "ratelimited"
                retry_after = exc.response.headers["Retry-After"]
        other = await client.chat_postMessage(channel="C0DEPLOYS1", text="other channel is fine")
    assert statuses[:POST_BURST] == [200] * POST_BURST
    assert 429 in statuses
    assert retry_after is not None and int(retry_after) >= 1
    assert other["ok"]
    assert sb.state.calls[-2].http_status == 429


async def test_tier_2_method_refuses_the_21st_call_in_a_minute() -> None:
    sb = make_sandbox(time_scale=1.0)
    async with serve_sandbox(sb) as run:
        client = AsyncWebClient(token=sb.bot_token, base_url=run.api_url)
        for _ in range(20):
            await client.conversations_list()
        with pytest.raises(SlackApiError) as info:
            await client.conversations_list()
        assert info.value.response.status_code == 429
        assert int(info.value.response.headers["Retry-After"]) > 50
        assert (await client.users_info(user="U0T2LEAD01"))["ok"]


async def test_time_scale_applies_over_http_with_an_injected_clock() -> None:
    clock = FakeClock()
    sb = make_sandbox(time_scale=60.0, clock=clock)
    async with serve_sandbox(sb) as run:
        client = AsyncWebClient(token=sb.bot_token, base_url=run.api_url)
        for i in range(20):
            await client.conversations_create(name=f"scaled-{i}")
        with pytest.raises(SlackApiError) as info:
            await client.conversations_create(name="scaled-x")
        assert info.value.response.headers["Retry-After"] == "1"
        clock.now += 1.0  # one platform minute at 60x
        assert (await client.conversations_create(name="scaled-y"))["ok"]
