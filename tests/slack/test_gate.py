from __future__ import annotations

import logging
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import controlroom.slack
from controlroom.errors import RetryLater
from controlroom.slack.gate import (
    EMPTY,
    Bucket,
    BucketState,
    MemoryGateBackend,
    RateGate,
    earliest,
    format_limits,
    reserve_in,
)
from controlroom.slack.tiers import Limit, TierTable

FakeClock = Any


def make_gate(clock: FakeClock, **kwargs: object) -> RateGate:
    options: dict[str, object] = {"safety": 0.0, "cooldown_jitter": 0.0, "max_wait": 1000.0}
    options.update(kwargs)
    return RateGate(MemoryGateBackend(), clock=clock, sleep=clock.sleep, **options)  # type: ignore[arg-type]


async def test_a_full_tier_window_goes_at_once_and_the_next_call_waits_for_the_window(
    clock: FakeClock,
) -> None:
    gate = make_gate(clock)
    waits = [await gate.reserve("T1", "chat.update") for _ in range(50)]
    assert waits == [0.0] * 50
    assert await gate.reserve("T1", "chat.update") == pytest.approx(60.0)


async def test_the_safety_margin_widens_the_window(clock: FakeClock) -> None:
    gate = make_gate(clock, safety=0.5)
    for _ in range(20):
        await gate.reserve("T1", "conversations.list")
    assert await gate.reserve("T1", "conversations.list") == pytest.approx(60.5)


async def test_posts_to_one_channel_burst_two_then_go_one_per_second(clock: FakeClock) -> None:
    gate = make_gate(clock)
    waits = [await gate.reserve("T1", "chat.postMessage", "C1") for _ in range(5)]
    assert waits == pytest.approx([0.0, 0.0, 1.0, 2.0, 3.0])


async def test_channels_are_independent_but_share_the_workspace_posting_budget(
    clock: FakeClock,
) -> None:
    gate = make_gate(clock)
    waits = [await gate.reserve("T1", "chat.postMessage", f"C{i}") for i in range(301)]
    assert waits[:300] == [0.0] * 300
    assert waits[300] == pytest.approx(60.0)
    # Another workspace is not affected.
    assert await gate.reserve("T2", "chat.postMessage", "C0") == 0.0


async def test_methods_and_workspaces_have_separate_budgets(clock: FakeClock) -> None:
    gate = make_gate(clock)
    for _ in range(20):
        await gate.reserve("T1", "conversations.list")
    assert await gate.reserve("T1", "conversations.info") == 0.0
    assert await gate.reserve("T2", "conversations.list") == 0.0
    assert await gate.reserve("T1", "conversations.list") > 0


async def test_a_call_that_would_wait_longer_than_max_wait_gets_retry_later_and_books_nothing(
    clock: FakeClock,
) -> None:
    gate = make_gate(clock, max_wait=5.0)
    for _ in range(20):
        await gate.reserve("T1", "conversations.create")
    with pytest.raises(RetryLater) as caught:
        await gate.reserve("T1", "conversations.create")
    assert caught.value.delay == pytest.approx(60.0)
    rows = await gate.backend.rows("m|T1|conversations.create")
    assert len(rows[0][1].log) == 20


async def test_wait_sleeps_until_the_booked_slot(clock: FakeClock) -> None:
    gate = make_gate(clock)
    for _ in range(3):
        await gate.wait("T1", "chat.postMessage", "C1")
    assert clock.slept == pytest.approx([1.0])
    assert clock.now == pytest.approx(1001.0)


async def test_a_cooldown_blocks_the_method_until_retry_after_plus_jitter(clock: FakeClock) -> None:
    gate = RateGate(
        MemoryGateBackend(),
        clock=clock,
        sleep=clock.sleep,
        cooldown_jitter=0.3,
        rng=lambda lo, hi: hi,
    )
    until = await gate.cooldown("T1", "users.info", None, 7.0)
    assert until == pytest.approx(clock.now + 7.3)
    assert await gate.reserve("T1", "users.info") == pytest.approx(7.3)
    assert await gate.reserve("T1", "users.list") == 0.0


async def test_a_post_cooldown_applies_to_its_channel_only(clock: FakeClock) -> None:
    gate = make_gate(clock)
    await gate.cooldown("T1", "chat.postMessage", "C1", 4.0)
    assert await gate.reserve("T1", "chat.postMessage", "C1") == pytest.approx(4.0)
    assert await gate.reserve("T1", "chat.postMessage", "C2") == 0.0


async def test_unknown_methods_fall_back_to_tier_2_and_are_logged_once(
    clock: FakeClock, caplog: pytest.LogCaptureFixture
) -> None:
    gate = make_gate(clock)
    with caplog.at_level(logging.WARNING, logger="controlroom.slack.tiers"):
        waits = [await gate.reserve("T1", "dnd.info") for _ in range(21)]
    assert waits[:20] == [0.0] * 20
    assert waits[20] == pytest.approx(60.0)
    assert [r.getMessage() for r in caplog.records].count(
        "slack method dnd.info is not in the tier table; using Tier 2"
    ) == 1


def test_the_2025_non_marketplace_cohort_reads_history_once_a_minute() -> None:
    assert TierTable().limit("conversations.history").count == 50
    cohort = TierTable(non_marketplace_2025=True)
    assert cohort.limit("conversations.history") == Limit(1, tier="tier1")
    assert cohort.limit("conversations.replies").count == 1
    assert cohort.limit("conversations.info").count == 50


def test_every_method_the_project_uses_has_a_tier() -> None:
    listed = """
        auth.test chat.postMessage chat.update chat.delete chat.postEphemeral
        chat.getPermalink conversations.create conversations.invite conversations.kick
        conversations.archive conversations.rename conversations.info conversations.list
        conversations.members conversations.history conversations.replies conversations.join
        conversations.setTopic users.info users.list users.lookupByEmail usergroups.list
        usergroups.users.list reactions.add reactions.remove reactions.get pins.add views.open
        views.update views.push views.publish oauth.v2.access oauth.v2.exchange auth.revoke
        apps.connections.open openid.connect.token openid.connect.userInfo team.info bots.info
    """
    methods = listed.split()
    table = TierTable()
    assert [m for m in methods if not table.known(m)] == []
    assert table.limit("chat.postEphemeral").count == 100
    assert table.limit("apps.connections.open").count == 1
    assert table.limit("auth.test").count == 600


def test_time_scale_makes_every_budget_faster() -> None:
    table = TierTable(time_scale=60)
    assert table.limit("chat.update").period == pytest.approx(1.0)
    assert table.channel_limit().interval == pytest.approx(1 / 60)


async def test_limits_snapshot_shows_budgets_and_cooldowns(clock: FakeClock) -> None:
    gate = make_gate(clock)
    for _ in range(10):
        await gate.reserve("T1", "chat.update")
    await gate.reserve("T1", "chat.postMessage", "C1")
    await gate.cooldown("T1", "users.info", None, 5.0)
    rows = {(s.kind, s.method, s.channel): s for s in await gate.limits_snapshot("T1")}
    update = rows[("method", "chat.update", "")]
    assert (update.per_minute, update.burst, update.available) == (50.0, 50, 40)
    channel = rows[("channel", "", "C1")]
    assert (channel.burst, channel.available) == (2, 1)
    assert rows[("cooldown", "users.info", "")].cooldown_remaining == pytest.approx(5.0)
    assert await gate.limits_snapshot("T9") == []


def test_a_window_slot_booked_out_of_order_still_respects_every_window() -> None:
    bucket = Bucket("w", "window", 10.0, 2.0)
    # Two calls per 10 s; a slot between bookings is used when every window stays at 2.
    assert earliest(bucket, BucketState(log=(0.0, 20.0)), 5.0) == 5.0
    # 0 and 1 fill (0, 10]; 20 and 21 fill [20, 30): the first free slot is 10 (> 21 - 10 + 0).
    assert earliest(bucket, BucketState(log=(0.0, 1.0, 20.0, 21.0)), 2.0) == 10.0
    # 0, 1, 12, 13: any slot before 12 puts three calls within 10 s of 12 and 13; the
    # first fit is 22, when the call at 12 leaves the window.
    assert earliest(bucket, BucketState(log=(0.0, 1.0, 12.0, 13.0)), 2.0) == 22.0
    assert earliest(bucket, EMPTY, 3.0) == 3.0


def _conforms(times: list[float], bucket: Bucket) -> bool:
    times = sorted(times)
    if bucket.kind == "window":
        n = int(bucket.size)
        return all(times[i + n] - times[i] >= bucket.period - 1e-9 for i in range(len(times) - n))
    tat = float("-inf")
    for t in times:
        if t < tat - bucket.size - 1e-9:
            return False
        tat = max(tat, t) + bucket.period
    return True


@settings(max_examples=60, deadline=None)
@given(
    st.lists(
        st.tuples(st.sampled_from(["a", "b", "c"]), st.floats(0, 3), st.booleans()), max_size=60
    )
)
def test_reservations_on_several_buckets_never_break_any_bucket(
    calls: list[tuple[str, float, bool]],
) -> None:
    window = Bucket("ws", "window", 5.0, 3.0)
    channels = {c: Bucket(f"c{c}", "gcra", 1.0, 1.0) for c in "abc"}
    states: dict[str, BucketState] = {}
    booked: dict[str, list[float]] = {}
    now = 0.0
    for channel, step, with_window in calls:
        now += step
        buckets = [channels[channel]] + ([window] if with_window else [])
        current = [states.get(b.key, EMPTY) for b in buckets]
        res, new = reserve_in(buckets, current, now, None)
        assert res.booked and res.at >= now
        for b, s in zip(buckets, new, strict=True):
            states[b.key] = s
            booked.setdefault(b.key, []).append(res.at)
    for key, times in booked.items():
        bucket = window if key == "ws" else channels[key[1]]
        assert _conforms(times, bucket), (key, times)


async def test_a_woken_call_waits_longer_when_earlier_calls_were_answered_late(
    clock: FakeClock,
) -> None:
    gate = make_gate(clock)
    start = clock.now
    slots = [await gate.acquire("T1", "conversations.list") for _ in range(20)]

    async def answers_arrive_while_sleeping(seconds: float) -> None:
        if not clock.slept:
            for slot in slots:
                await gate.settle(slot, done=start + 0.3)
        await clock.sleep(seconds)

    gate.sleep = answers_arrive_while_sleeping
    late = await gate.acquire("T1", "conversations.list")
    assert late.waited == pytest.approx(60.3)
    assert clock.slept == pytest.approx([60.0, 0.3])


async def test_a_woken_call_honours_a_cooldown_that_began_while_it_slept(clock: FakeClock) -> None:
    gate = make_gate(clock)
    for _ in range(20):
        await gate.acquire("T1", "conversations.list")

    async def sleep_then_429(seconds: float) -> None:
        await clock.sleep(seconds)
        if len(clock.slept) == 1:
            await gate.cooldown("T1", "conversations.list", None, 5.0)

    gate.sleep = sleep_then_429
    slot = await gate.acquire("T1", "conversations.list")
    assert slot.waited == pytest.approx(65.0)


async def test_format_limits_prints_budgets_and_cooldowns(clock: FakeClock) -> None:
    gate = make_gate(clock)
    assert format_limits(await gate.limits_snapshot()) == "no Slack calls planned or cooling down"
    await gate.reserve("T1", "chat.postMessage", "C1")
    await gate.cooldown("T1", "users.info", None, 2.5)
    lines = format_limits(await gate.limits_snapshot()).splitlines()
    assert lines[0].split() == [
        "workspace",
        "kind",
        "method/channel",
        "per",
        "min",
        "burst",
        "free",
        "now",
        "next",
        "in",
        "cooldown",
    ]
    assert lines[1].split() == ["T1", "channel", "C1", "60", "2", "1", "0.0s"]
    assert lines[2].split() == ["T1", "cooldown", "users.info", "2.5s"]
    assert lines[3].split() == ["T1", "method", "chat.postMessage", "300", "300", "299", "0.0s"]


def test_the_public_surface_of_controlroom_slack_is_deliberate() -> None:
    assert sorted(controlroom.slack.__all__) == [
        "AuthErrorHook",
        "GateBackend",
        "Limit",
        "LimitState",
        "MemoryGateBackend",
        "PostOutcomeUnknown",
        "RateGate",
        "RetryPolicy",
        "SlackClient",
        "SlackMetrics",
        "SlackOutbound",
        "SlackScopeError",
        "TierTable",
        "format_limits",
        "post_long",
        "split_blocks",
    ]


async def test_a_cooldown_longer_than_max_wait_that_began_during_the_sleep_reschedules(
    clock: FakeClock,
) -> None:
    gate = make_gate(clock, max_wait=100.0)
    for _ in range(20):
        await gate.acquire("T1", "conversations.list")

    async def storm_while_sleeping(seconds: float) -> None:
        await clock.sleep(seconds)
        await gate.cooldown("T1", "conversations.list", None, 300.0)

    gate.sleep = storm_while_sleeping
    with pytest.raises(RetryLater) as caught:
        await gate.acquire("T1", "conversations.list")
    assert caught.value.delay == pytest.approx(300.0)
