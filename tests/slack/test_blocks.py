from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest

from controlroom.slack import RateGate, SlackOutbound, post_long, split_blocks
from controlroom.slack.blocks import split_text


def section(text: str, **extra: Any) -> dict[str, Any]:
    return {"type": "section", "text": {"type": "mrkdwn", "text": text}, **extra}


def test_a_short_digest_stays_one_message() -> None:
    blocks = [section("a"), {"type": "divider"}]
    assert split_blocks(blocks, "digest") == [{"blocks": blocks, "text": "digest"}]


def test_more_than_50_blocks_become_ordered_messages_of_at_most_50() -> None:
    blocks = [section(f"item {i}") for i in range(120)]
    messages = split_blocks(blocks, "Weekly digest")
    assert [len(m["blocks"]) for m in messages] == [50, 50, 20]
    assert [b["text"]["text"] for m in messages for b in m["blocks"]] == [
        f"item {i}" for i in range(120)
    ]
    assert [m["text"] for m in messages] == [
        "Weekly digest (1/3)",
        "Weekly digest (2/3)",
        "Weekly digest (3/3)",
    ]


def test_a_section_over_3000_characters_is_split_at_line_breaks_without_losing_text() -> None:
    lines = [f"- decision {i}: " + "x" * 90 for i in range(80)]
    body = "\n".join(lines)
    accessory = {"type": "button", "text": {"type": "plain_text", "text": "Open"}, "value": "1"}
    [message] = split_blocks([section(body, block_id="decisions", accessory=accessory)], "d")
    parts = message["blocks"]
    assert len(parts) == 3
    assert all(len(p["text"]["text"]) <= 3000 for p in parts)
    assert "".join(p["text"]["text"] for p in parts) == body
    assert all(p["text"]["text"].endswith("\n") for p in parts[:-1])
    assert [p.get("block_id") for p in parts] == ["decisions", "decisions-1", "decisions-2"]
    assert "accessory" in parts[0] and "accessory" not in parts[1]


def test_split_text_cuts_words_only_when_it_must() -> None:
    assert split_text("aaaa bbbb cccc", 10) == ["aaaa bbbb ", "cccc"]
    assert split_text("x" * 25, 10) == ["x" * 10, "x" * 10, "x" * 5]
    assert split_text("", 10) == [""]
    with pytest.raises(ValueError):
        split_text("a", 0)


def test_text_only_messages_over_4000_characters_are_split() -> None:
    messages = split_blocks(None, "word " * 1000)
    assert len(messages) == 2
    assert "".join(m["text"] for m in messages) == "word " * 1000


@pytest.fixture
async def outbound(fake_slack: Any, clock: Any) -> AsyncIterator[SlackOutbound]:
    async with SlackOutbound(
        RateGate(clock=clock, sleep=clock.sleep), base_url=fake_slack.url
    ) as out:
        yield out


async def test_post_long_posts_the_parts_in_order_with_derived_keys(
    outbound: SlackOutbound, fake_slack: Any
) -> None:
    client = outbound.client("T1", "xoxb-test")
    blocks = [section(f"item {i}") for i in range(75)]
    responses = await post_long(
        client, channel="C1", blocks=blocks, text="digest", idempotency_key="dg"
    )
    assert len(responses) == 2
    sent = fake_slack.called("chat.postMessage")
    assert [a["text"] for a in sent] == ["digest (1/2)", "digest (2/2)"]
    assert [a["metadata"]["event_payload"]["key"] for a in sent] == ["dg:0", "dg:1"]


async def test_post_long_can_put_the_rest_in_the_first_message_thread(
    outbound: SlackOutbound, fake_slack: Any
) -> None:
    client = outbound.client("T1", "xoxb-test")
    blocks = [section(f"item {i}") for i in range(120)]
    responses = await post_long(client, channel="C1", blocks=blocks, text="d", rest_in_thread=True)
    first_ts = responses[0]["ts"]
    sent = fake_slack.called("chat.postMessage")
    assert [a.get("thread_ts") for a in sent] == [None, first_ts, first_ts]
