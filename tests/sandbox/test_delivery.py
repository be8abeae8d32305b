"""Events API delivery: signed, retried on Slack's schedule, matching real payloads."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from starlette.responses import PlainTextResponse, Response

from controlroom.sandbox import RunningSandbox, serve_sandbox
from controlroom.sandbox.signing import signature

from .conftest import Received, Receiver, fixture_json, make_sandbox


def assert_same_shape(real: Any, ours: Any, path: str = "") -> None:
    """Every key of the real payload exists in ours, with the same JSON type.

    Under ``state.values`` the keys are block_ids and action_ids: one entry is compared.
    """
    last = path.rsplit("/", 1)[-1]
    if isinstance(real, dict) and last in ("values", "<block>"):
        assert isinstance(ours, dict) and ours, f"{path}: expected a non-empty map"
        child = "<block>" if last == "values" else "<action>"
        assert_same_shape(next(iter(real.values())), next(iter(ours.values())), f"{path}/{child}")
        return
    if isinstance(real, dict):
        assert isinstance(ours, dict), f"{path}: expected object"
        for key, value in real.items():
            assert key in ours, f"{path}/{key} missing"
            assert_same_shape(value, ours[key], f"{path}/{key}")
    elif isinstance(real, list):
        assert isinstance(ours, list), f"{path}: expected array"
        if real and ours:
            assert_same_shape(real[0], ours[0], f"{path}/0")
    elif real is None:
        return
    else:
        assert type(ours) is type(real), f"{path}: {type(ours).__name__} != {type(real).__name__}"


def test_signature_matches_slacks_worked_example() -> None:
    vector = fixture_json("signing-test-vector.json")
    got = signature(
        vector["signing_secret"],
        vector["headers"]["X-Slack-Request-Timestamp"],
        vector["body"].encode(),
    )
    assert got == vector["headers"]["X-Slack-Signature"]


async def test_user_message_is_delivered_signed_and_shaped_like_slack(
    wired: tuple[RunningSandbox, Receiver],
) -> None:
    run, rec = wired
    sb = run.sandbox
    ts = await sb.act.post_message("priya", "#support", "Checkout is failing for ACME")
    (got,) = await rec.wait_for(1)
    assert got.verified
    body = got.json
    assert body["event"]["ts"] == ts
    assert body["event"]["user"] == sb.user("priya").id
    assert body["authorizations"][0]["user_id"] == sb.bot_user_id
    assert body["event_context"] == f"1-message-{sb.team_id}-C0SUPPORT1"
    assert_same_shape(fixture_json("events/test_message.message_body.json"), body)


async def test_each_action_produces_fixture_shaped_events(
    wired: tuple[RunningSandbox, Receiver],
) -> None:
    run, rec = wired
    sb = run.sandbox
    root = await sb.act.post_message("priya", "#support", "hello <@U0CRBOT001>")
    await sb.act.add_reaction("marcus", "#support", root, "rotating_light")
    await sb.act.post_message("marcus", "#support", "looking", thread_ts=root, reply_broadcast=True)
    await sb.settle()
    bodies = [r.json for r in await rec.wait_for(4)]
    by_type = {(b["event"]["type"], b["event"].get("subtype")): b for b in bodies}
    assert_same_shape(
        fixture_json("events/test_app.app_mention_event_body.json"), by_type[("app_mention", None)]
    )
    assert_same_shape(
        fixture_json("events/test_events.TestEvents.valid_reaction_added_body.json"),
        by_type[("reaction_added", None)],
    )
    broadcast = by_type[("message", "thread_broadcast")]
    assert_same_shape(
        fixture_json("events/test_message_thread_broadcast.event_payload.json"), broadcast
    )
    assert broadcast["event"]["root"]["reply_count"] == 1


async def test_bot_posts_reach_the_app_as_bot_messages(
    wired: tuple[RunningSandbox, Receiver],
) -> None:
    run, rec = wired
    sb = run.sandbox
    from slack_sdk.web.async_client import AsyncWebClient

    client = AsyncWebClient(token=sb.bot_token, base_url=run.api_url)
    await client.chat_postMessage(channel="C0DEPLOYS1", text="deploy 42 finished")
    (got,) = await rec.wait_for(1)
    assert_same_shape(
        fixture_json("events/test_message_bot.bot_message_event_payload.json"), got.json
    )


async def test_edits_deletes_joins_and_channel_creation_are_events(
    wired: tuple[RunningSandbox, Receiver],
) -> None:
    run, rec = wired
    sb = run.sandbox
    ts = await sb.act.post_message("dan", "#deploys", "typo")
    await sb.act.edit_message("dan", "#deploys", ts, "fixed")
    await sb.act.delete_message("dan", "#deploys", ts)
    await sb.act.create_channel("lena", "inc-db")
    await sb.act.join_channel("kenji", "#support")
    await sb.settle()
    events = sorted((r.json["event"] for r in rec.received), key=lambda e: float(e["event_ts"]))
    kinds = [(e["type"], e.get("subtype")) for e in events]
    assert kinds == [
        ("message", None),
        ("message", "message_changed"),
        ("message", "message_deleted"),
        ("channel_created", None),
        ("member_joined_channel", None),
    ]
    assert events[0]["text"] == "typo"  # edited before delivery: what was sent stays
    assert events[1]["message"]["text"] == "fixed"
    assert events[1]["previous_message"]["text"] == "typo"
    assert events[2]["deleted_ts"] == ts
    assert events[4]["user"] == sb.user("kenji").id


async def test_channels_without_the_bot_are_not_delivered(
    wired: tuple[RunningSandbox, Receiver],
) -> None:
    run, rec = wired
    await run.sandbox.act.post_message("priya", "#random", "lunch?")
    await run.sandbox.settle()
    assert rec.received == []


async def test_failed_delivery_is_retried_with_slack_headers(
    wired: tuple[RunningSandbox, Receiver],
) -> None:
    run, rec = wired
    rec.respond = lambda r: PlainTextResponse("boom", status_code=500)
    await run.sandbox.act.post_message("priya", "#support", "retry me")
    await run.sandbox.settle()  # time_scale 600: retries at 0 s, 0.1 s and 0.5 s
    assert len(rec.received) == 4
    assert all(r.verified for r in rec.received)
    assert [r.headers.get("x-slack-retry-num") for r in rec.received] == [None, "1", "2", "3"]
    assert {r.headers.get("x-slack-retry-reason") for r in rec.received[1:]} == {"http_error"}
    ids = {r.json["event_id"] for r in rec.received}
    assert len(ids) == 1
    attempts = [(d.attempt, d.status, d.ok) for d in run.sandbox.deliveries]
    assert attempts == [(0, 500, False), (1, 500, False), (2, 500, False), (3, 500, False)]


async def test_retry_schedule_waits_one_then_five_minutes() -> None:
    waits: list[float] = []

    async def sleep(seconds: float) -> None:
        waits.append(seconds)

    sb = make_sandbox(rate_limits=False, request_url="http://127.0.0.1:9/none", sleep=sleep)
    await sb.act.post_message("priya", "#support", "nobody listens")
    await sb.settle()
    await sb.aclose()
    assert waits == [0.0, 60.0, 300.0]
    assert [d.reason for d in sb.deliveries] == ["connection_failed"] * 4


async def test_no_retry_header_stops_redelivery(wired: tuple[RunningSandbox, Receiver]) -> None:
    run, rec = wired
    rec.respond = lambda r: PlainTextResponse(
        "", status_code=503, headers={"x-slack-no-retry": "1"}
    )
    await run.sandbox.act.post_message("priya", "#support", "once only")
    await run.sandbox.settle()
    assert len(rec.received) == 1
    assert run.sandbox.deliveries[0].no_retry is True


async def test_slow_receiver_gets_http_timeout_retry(receiver: Receiver) -> None:
    calls = 0

    async def slow(r: Received) -> Response:
        nonlocal calls
        calls += 1
        if calls == 1:
            await asyncio.sleep(1.0)
        return PlainTextResponse("")

    receiver.respond = slow
    sb = make_sandbox(rate_limits=False, request_url=receiver.url, delivery_timeout=0.5)
    async with serve_sandbox(sb):
        await sb.act.post_message("priya", "#support", "slow")
        await sb.settle()
    assert [(d.attempt, d.reason) for d in sb.deliveries] == [(0, "http_timeout"), (1, None)]
    assert receiver.received[-1].headers["x-slack-retry-reason"] == "http_timeout"


async def test_url_verification_challenge_sets_the_request_url(receiver: Receiver) -> None:
    sb = make_sandbox(rate_limits=False)
    async with serve_sandbox(sb):
        assert await sb.set_request_url(receiver.url) is True
        assert sb.request_url == receiver.url
        first = receiver.received[0]
        assert first.verified and first.json["type"] == "url_verification"
        assert set(first.json) == set(fixture_json("events/url_verification.json"))
        assert await sb.set_request_url("http://127.0.0.1:9/closed") is False
        assert sb.request_url == receiver.url


async def test_app_home_opened_and_lifecycle_events(wired: tuple[RunningSandbox, Receiver]) -> None:
    run, rec = wired
    sb = run.sandbox
    await sb.act.open_app_home("priya")
    sb.oauth.uninstall(sb.team_id)
    await sb.settle()
    events = sorted((r.json["event"] for r in rec.received), key=lambda e: float(e["event_ts"]))
    assert [e["type"] for e in events] == ["app_home_opened", "tokens_revoked", "app_uninstalled"]
    assert events[0]["tab"] == "home"
    assert events[1]["tokens"] == {"oauth": [], "bot": [sb.bot_user_id]}


async def test_event_budget_sends_app_rate_limited_once_a_minute(receiver: Receiver) -> None:
    sb = make_sandbox(rate_limits=False, request_url=receiver.url, event_rate_limit=2)
    async with serve_sandbox(sb):
        for i in range(4):
            await sb.act.post_message("priya", "#support", f"m{i}")
        await sb.settle()
    kinds = sorted(r.json["type"] for r in receiver.received)
    assert kinds == ["app_rate_limited", "event_callback", "event_callback"]
    notice = next(r.json for r in receiver.received if r.json["type"] == "app_rate_limited")
    assert notice["minute_rate_limited"] % 60 == 0 and notice["api_app_id"] == sb.app_id
    assert [d.reason for d in sb.deliveries if d.transport == "none"] == ["app_rate_limited"] * 2


async def test_failing_endpoint_gets_event_subscriptions_disabled(receiver: Receiver) -> None:
    receiver.respond = lambda r: PlainTextResponse(
        "", status_code=500, headers={"x-slack-no-retry": "1"}
    )
    sb = make_sandbox(rate_limits=False, request_url=receiver.url, disable_min_attempts=3)
    async with serve_sandbox(sb):
        for i in range(3):
            await sb.act.post_message("priya", "#support", f"m{i}")
            await sb.settle()
        assert sb.deliverer.disabled is True
        await sb.act.post_message("priya", "#support", "dropped")
        await sb.settle()
        assert len(receiver.received) == 3
        assert sb.deliveries[-1].reason == "subscriptions_disabled"
        sb.deliverer.enable()
        receiver.respond = None
        await sb.act.post_message("priya", "#support", "back")
        await sb.settle()
    assert receiver.received[-1].json["event"]["text"] == "back"


async def test_redirects_are_followed_twice_at_most(receiver: Receiver) -> None:
    hops: list[str] = []

    def respond(r: Received) -> Response:
        hops.append(r.headers.get("x-slack-retry-num", "0"))
        return PlainTextResponse("", status_code=307, headers={"location": receiver.url})

    receiver.respond = respond
    sb = make_sandbox(rate_limits=False, request_url=receiver.url, time_scale=600.0)
    async with serve_sandbox(sb):
        await sb.act.post_message("priya", "#support", "loop")
        await sb.settle()
    assert [d.reason for d in sb.deliveries] == ["too_many_redirects"] * 4
    assert len(receiver.received) == 4 * 3  # each attempt: the URL plus two redirects
    assert all(r.verified for r in receiver.received)


def test_actions_without_an_event_loop_are_recorded_not_lost_silently() -> None:
    sb = make_sandbox(rate_limits=False, request_url="http://127.0.0.1:9/x")
    sb.oauth.uninstall(sb.team_id)
    assert {d.reason for d in sb.deliveries} == {"no_event_loop"}
    assert sb.state.team(sb.team_id).installed is False


async def test_settle_can_be_bounded_while_retries_are_pending() -> None:
    sb = make_sandbox(rate_limits=False, request_url="http://127.0.0.1:9/none")
    await sb.act.post_message("priya", "#support", "retried for minutes")
    with pytest.raises(TimeoutError):
        await sb.settle(within=0.5)
    await sb.aclose()
    assert [d.attempt for d in sb.deliveries] == [0, 1]  # the 1-minute retry never came


async def test_inviting_the_bot_delivers_member_joined_channel(
    wired: tuple[RunningSandbox, Receiver],
) -> None:
    run, rec = wired
    sb = run.sandbox
    await sb.act.post_message("priya", "#random", "bot is not here yet")
    await sb.act.invite("priya", "#random", "controlroom")
    await sb.act.leave_channel("kenji", "#random")
    await sb.settle()
    (got,) = rec.received
    assert got.json["event"]["type"] == "member_joined_channel"
    assert got.json["event"]["user"] == sb.bot_user_id
    assert got.json["event"]["inviter"] == sb.user("priya").id
    assert sb.user("kenji").id not in sb.channel("random").members
