from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import pytest
from prometheus_client import CollectorRegistry
from slack_sdk.web.async_slack_response import AsyncSlackResponse

from controlroom.errors import RetryLater, SlackApiError, SlackTransientError
from controlroom.slack import (
    MemoryGateBackend,
    PostOutcomeUnknown,
    RateGate,
    RetryPolicy,
    SlackClient,
    SlackMetrics,
    SlackOutbound,
    SlackScopeError,
)

Fake = Any


@pytest.fixture
async def outbound(fake_slack: Fake, clock: Any) -> AsyncIterator[SlackOutbound]:
    gate = RateGate(MemoryGateBackend(), clock=clock, sleep=clock.sleep, cooldown_jitter=0.0)
    metrics = SlackMetrics(CollectorRegistry())
    out = SlackOutbound(
        gate,
        base_url=fake_slack.url,
        timeout=0.3,
        retry=RetryPolicy(max_attempts=4, base=0.1, cap=1.0),
        metrics=metrics,
        rng=lambda lo, hi: hi,
    )
    async with out:
        yield out


def value(out: SlackOutbound, name: str, **labels: str) -> float:
    assert out.metrics is not None
    found = out.metrics.registry.get_sample_value(name, labels)
    return 0.0 if found is None else float(found)


async def test_chat_post_message_works_as_in_slack_sdk_and_carries_an_idempotency_key(
    outbound: SlackOutbound, fake_slack: Fake
) -> None:
    client = outbound.client("T1", "xoxb-test")
    response = await client.chat_postMessage(channel="C1", text="hello")
    assert isinstance(response, AsyncSlackResponse)
    assert response["ok"] is True and response["channel"] == "C1"
    [args] = fake_slack.called("chat.postMessage")
    assert args["metadata"]["event_type"] == "controlroom_post"
    assert len(args["metadata"]["event_payload"]["key"]) == 32
    assert "idempotency_key" not in args
    assert fake_slack.calls[0][2] == "Bearer xoxb-test"


async def test_a_caller_key_is_used_and_caller_metadata_is_kept(
    outbound: SlackOutbound, fake_slack: Fake
) -> None:
    client = outbound.client("T1", "xoxb-test")
    await client.chat_postMessage(channel="C1", text="a", idempotency_key="deploy-42:announce")
    meta = {"event_type": "deploy", "event_payload": {"id": 42}}
    await client.chat_postMessage(channel="C1", text="b", metadata=meta, idempotency_key="k2")
    first, second = fake_slack.called("chat.postMessage")
    assert first["metadata"]["event_payload"] == {"key": "deploy-42:announce"}
    assert second["metadata"] == {
        "event_type": "deploy",
        "event_payload": {"id": 42, "controlroom_key": "k2"},
    }


async def test_every_call_passes_the_gate_including_pagination(
    outbound: SlackOutbound, fake_slack: Fake
) -> None:
    client = outbound.client("T1", "xoxb-test")
    await client.users_info(user="U1")
    await client.auth_test()
    rows = {s.method: s for s in await outbound.limits_snapshot("T1")}
    assert rows["users.info"].available == 99
    assert rows["auth.test"].available == 599


async def test_permanent_errors_raise_at_once_with_method_workspace_and_code(
    outbound: SlackOutbound, fake_slack: Fake, scripted: Any
) -> None:
    fake_slack.script(
        "conversations.info", scripted(body={"ok": False, "error": "channel_not_found"})
    )
    client = outbound.client("T1", "xoxb-test")
    with pytest.raises(SlackApiError) as caught:
        await client.conversations_info(channel="C404")
    assert (caught.value.method, caught.value.workspace, caught.value.error) == (
        "conversations.info",
        "T1",
        "channel_not_found",
    )
    assert len(fake_slack.called("conversations.info")) == 1
    assert (
        value(
            outbound,
            "controlroom_slack_calls_total",
            method="conversations.info",
            outcome="channel_not_found",
        )
        == 1
    )


async def test_missing_scope_keeps_needed_and_provided(
    outbound: SlackOutbound, fake_slack: Fake, scripted: Any
) -> None:
    body = {
        "ok": False,
        "error": "missing_scope",
        "needed": "chat:write",
        "provided": "users:read,channels:read",
    }
    fake_slack.script("chat.postMessage", scripted(body=body))
    client = outbound.client("T1", "xoxb-test")
    with pytest.raises(SlackScopeError) as caught:
        await client.chat_postMessage(channel="C1", text="x")
    assert caught.value.needed == ["chat:write"]
    assert caught.value.provided == ["users:read", "channels:read"]


async def test_transient_failures_are_retried_with_capped_full_jitter_backoff(
    outbound: SlackOutbound, fake_slack: Fake, scripted: Any, clock: Any
) -> None:
    fake_slack.script(
        "users.info",
        scripted(status=503, body={"ok": False, "error": "service_unavailable"}),
        scripted(body={"ok": False, "error": "internal_error"}),
        scripted(status=500, body={}),
    )
    client = outbound.client("T1", "xoxb-test")
    response = await client.users_info(user="U1")
    assert response["ok"] is True
    assert len(fake_slack.called("users.info")) == 4
    # rng returns the upper bound: 0.1, 0.2, 0.4 (base 0.1 doubling, cap 1.0)
    assert clock.slept == pytest.approx([0.1, 0.2, 0.4])
    assert (
        value(
            outbound,
            "controlroom_slack_retries_total",
            method="users.info",
            reason="service_unavailable",
        )
        == 1
    )


async def test_transient_failures_give_up_after_max_attempts(
    outbound: SlackOutbound, fake_slack: Fake, scripted: Any
) -> None:
    fake_slack.script("users.info", *[scripted(status=502, body={})] * 4)
    client = outbound.client("T1", "xoxb-test")
    with pytest.raises(SlackTransientError) as caught:
        await client.users_info(user="U1")
    assert caught.value.error == "http_502"


async def test_a_429_cools_the_method_down_for_retry_after_then_retries(
    outbound: SlackOutbound, fake_slack: Fake, scripted: Any, clock: Any
) -> None:
    fake_slack.script(
        "reactions.add",
        scripted(
            status=429, body={"ok": False, "error": "ratelimited"}, headers={"Retry-After": "3"}
        ),
    )
    client = outbound.client("T1", "xoxb-test")
    start = clock.now
    await client.reactions_add(channel="C1", timestamp="1.2", name="eyes")
    assert len(fake_slack.called("reactions.add")) == 2
    assert clock.now - start == pytest.approx(3.0)
    assert value(outbound, "controlroom_slack_ratelimited_total", method="reactions.add") == 1


async def test_a_long_cooldown_reschedules_the_job_instead_of_holding_the_worker(
    outbound: SlackOutbound, fake_slack: Fake, scripted: Any
) -> None:
    fake_slack.script(
        "reactions.add",
        scripted(
            status=429, body={"ok": False, "error": "ratelimited"}, headers={"Retry-After": "120"}
        ),
    )
    client = outbound.client("T1", "xoxb-test")
    with pytest.raises(RetryLater) as caught:
        await client.reactions_add(channel="C1", timestamp="1.2", name="eyes")
    assert caught.value.delay == pytest.approx(120.0)


async def test_an_expired_token_is_refreshed_through_the_hook_and_the_call_retried_once(
    fake_slack: Fake, scripted: Any, clock: Any
) -> None:
    asked: list[tuple[str, str]] = []

    async def refresh(workspace: str, error: str) -> str | None:
        asked.append((workspace, error))
        return "xoxe.xoxb-fresh"

    fake_slack.script("auth.test", scripted(body={"ok": False, "error": "token_expired"}))
    gate = RateGate(clock=clock, sleep=clock.sleep)
    async with SlackOutbound(gate, base_url=fake_slack.url, on_auth_error=refresh) as out:
        client = out.client("T1", "xoxe.xoxb-old")
        assert (await client.auth_test())["ok"] is True
        assert [auth for m, _, auth in fake_slack.calls] == [
            "Bearer xoxe.xoxb-old",
            "Bearer xoxe.xoxb-fresh",
        ]
        assert asked == [("T1", "token_expired")]
        # A hook with no new token: the error is raised.
        fake_slack.script("auth.test", scripted(body={"ok": False, "error": "invalid_auth"}))
        out.on_auth_error = None
        with pytest.raises(SlackApiError, match="invalid_auth"):
            await out.client("T1", "xoxb-bad").auth_test()


async def test_a_post_that_timed_out_after_landing_is_found_in_history_not_resent(
    outbound: SlackOutbound, fake_slack: Fake, scripted: Any
) -> None:
    fake_slack.script("chat.postMessage", scripted(body={"ok": True}, hang=1.0, apply=True))
    client = outbound.client("T1", "xoxb-test")
    response = await client.chat_postMessage(channel="C1", text="once")
    assert len(fake_slack.messages["C1"]) == 1
    assert response["ts"] == fake_slack.messages["C1"][0]["ts"]
    [history] = fake_slack.called("conversations.history")
    assert history["include_all_metadata"] in ("1", "true")
    assert len(fake_slack.called("chat.postMessage")) == 1
    assert (
        value(
            outbound,
            "controlroom_slack_calls_total",
            method="chat.postMessage",
            outcome="recovered",
        )
        == 1
    )


async def test_a_post_that_failed_before_landing_is_looked_up_then_sent_again(
    outbound: SlackOutbound, fake_slack: Fake, scripted: Any
) -> None:
    fake_slack.script("chat.postMessage", scripted(body={"ok": False, "error": "internal_error"}))
    client = outbound.client("T1", "xoxb-test")
    await client.chat_postMessage(channel="C1", text="once")
    assert len(fake_slack.messages["C1"]) == 1
    assert len(fake_slack.called("conversations.history")) == 1
    assert len(fake_slack.called("chat.postMessage")) == 2


async def test_an_ambiguous_thread_reply_is_looked_up_in_the_thread(
    outbound: SlackOutbound, fake_slack: Fake, scripted: Any
) -> None:
    fake_slack.script("chat.postMessage", scripted(status=503, body={}, apply=True))
    client = outbound.client("T1", "xoxb-test")
    await client.chat_postMessage(channel="C1", text="reply", thread_ts="1700000000.000009")
    [replies] = fake_slack.called("conversations.replies")
    assert replies["ts"] == "1700000000.000009"
    assert len(fake_slack.messages["C1"]) == 1


async def test_when_history_is_unreadable_an_ambiguous_post_is_not_resent(
    outbound: SlackOutbound, fake_slack: Fake, scripted: Any
) -> None:
    fake_slack.script("chat.postMessage", scripted(status=503, body={}, apply=True))
    fake_slack.script(
        "conversations.history",
        scripted(body={"ok": False, "error": "missing_scope", "needed": "channels:history"}),
    )
    client = outbound.client("T1", "xoxb-test")
    with pytest.raises(PostOutcomeUnknown) as caught:
        await client.chat_postMessage(channel="C1", text="x", idempotency_key="k1")
    assert caught.value.key == "k1"
    assert len(fake_slack.called("chat.postMessage")) == 1
    # The re-run of the job with the same key looks the key up before sending.
    await client.chat_postMessage(channel="C1", text="x", idempotency_key="k1")
    assert len(fake_slack.called("chat.postMessage")) == 1
    assert len(fake_slack.messages["C1"]) == 1


async def test_posts_to_one_channel_go_out_in_the_order_they_were_made(
    outbound: SlackOutbound, fake_slack: Fake, scripted: Any
) -> None:
    client = outbound.client("T1", "xoxb-test")
    posts = [client.chat_postMessage(channel="C1", text=str(i)) for i in range(12)]
    await asyncio.gather(*posts)
    assert [m["text"] for m in fake_slack.messages["C1"]] == [str(i) for i in range(12)]


async def test_a_retried_post_keeps_its_place_in_the_channel_order(
    outbound: SlackOutbound, fake_slack: Fake, scripted: Any
) -> None:
    client = outbound.client("T1", "xoxb-test")
    first = asyncio.ensure_future(client.chat_postMessage(channel="C1", text="0"))
    await asyncio.sleep(0)
    fake_slack.script("chat.postMessage", scripted(status=503, body={}))
    rest = [client.chat_postMessage(channel="C1", text=str(i)) for i in range(1, 5)]
    await asyncio.gather(first, *rest)
    assert [m["text"] for m in fake_slack.messages["C1"]] == ["0", "1", "2", "3", "4"]


async def test_queued_updates_of_one_message_coalesce_to_the_latest_state(
    outbound: SlackOutbound, fake_slack: Fake, scripted: Any
) -> None:
    fake_slack.script("chat.postMessage", scripted(body={"ok": True, "ts": "1.1"}, hang=0.2))
    client = outbound.client("T1", "xoxb-test")
    busy = asyncio.ensure_future(client.chat_postMessage(channel="C1", text="deploying"))
    await asyncio.sleep(0.05)
    states = ["building", "testing", "rolling out", "done"]
    updates = [client.chat_update(channel="C1", ts="1.1", text=s) for s in states]
    results = await asyncio.gather(*updates)
    await busy
    assert [a["text"] for a in fake_slack.called("chat.update")] == ["done"]
    assert {r["text"] for r in results} == {"done"}
    assert value(outbound, "controlroom_slack_coalesced_updates_total") == 3


async def test_a_client_needs_a_token(clock: Any) -> None:
    with pytest.raises(ValueError, match="no Slack token"):
        SlackClient("", workspace="T1", gate=RateGate(clock=clock))
    assert "xoxb" not in repr(SlackClient("xoxb-secret", workspace="T1", gate=RateGate()))


async def test_verify_first_finds_a_post_from_an_earlier_process_and_does_not_resend(
    outbound: SlackOutbound, fake_slack: Fake
) -> None:
    client = outbound.client("T1", "xoxb-test")
    first = await client.chat_postMessage(channel="C1", text="x", idempotency_key="job-7:step-2")
    again = await client.chat_postMessage(
        channel="C1", text="x", idempotency_key="job-7:step-2", verify_first=True
    )
    assert again["ts"] == first["ts"]
    assert len(fake_slack.called("chat.postMessage")) == 1
    assert "verify_first" not in fake_slack.called("chat.postMessage")[0]


async def test_a_post_whose_last_attempt_landed_is_found_before_giving_up(
    outbound: SlackOutbound, fake_slack: Fake, scripted: Any
) -> None:
    answers = [scripted(status=503, body={}) for _ in range(3)]
    fake_slack.script("chat.postMessage", *answers, scripted(status=503, body={}, apply=True))
    client = outbound.client("T1", "xoxb-test")
    response = await client.chat_postMessage(channel="C1", text="last try")
    assert response["ts"] == fake_slack.messages["C1"][0]["ts"]
    assert len(fake_slack.called("chat.postMessage")) == 4
