"""Block Kit for escalations, checked against the official SDK's Block Kit validators."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from slack_sdk.models.blocks import Block

from controlroom.workflows.escalations.crm import Account
from controlroom.workflows.escalations.messages import (
    ACTION_NO_CUSTOMER,
    ACTION_PICK_CUSTOMER,
    ACTION_RESOLVE,
    ACTION_SET_CUSTOMER,
    BadActionValue,
    Briefing,
    Message,
    SourceMessage,
    already_escalated_message,
    briefing_message,
    customer_picker,
    escape_text,
    format_duration,
    format_money,
    parse_escalation_value,
    parse_picker_value,
    pointer_message,
    quote_source,
    resolution_summary,
    safe_source_text,
)

ACME = Account(
    id="ACC-1001",
    name="Acme Corporation",
    domains=("acme.example",),
    tier="Enterprise",
    arr=1_250_000,
    open_cases=3,
    owner_email="dana.whitfield@controlroom.example",
    owner_name="Dana Whitfield",
    crm_url="https://crm.controlroom.example/accounts/ACC-1001",
)
SOURCE = SourceMessage(
    channel="C0SUPPORT",
    ts="1764474000.000100",
    author="U0CUSTOMER",
    text="Our dashboards return 500 since 03:00 <!here>",
    permalink="https://sandbox.slack.localhost/archives/C0SUPPORT/p1764474000000100",
    files=("error.png", "har-capture.har"),
)
WHEN = datetime(2026, 11, 30, 3, 47, tzinfo=UTC)


def valid(message: Message) -> list[dict[str, Any]]:
    """Round-trip every block through slack_sdk's models, which enforce Slack's limits."""
    assert message.text.strip()
    assert len(message.blocks) <= 50
    return [Block.parse(b).to_dict() for b in message.blocks]  # type: ignore[union-attr]


def everything(message: Message) -> str:
    """Every string in the blocks, one per line group, to search in."""
    found: list[str] = []

    def walk(node: object) -> None:
        if isinstance(node, dict):
            for v in node.values():
                walk(v)
        elif isinstance(node, list):
            for v in node:
                walk(v)
        elif isinstance(node, str):
            found.append(node)

    walk(message.blocks)
    return "\n\n".join(found)


def find(blocks: list[dict[str, Any]], action_id: str) -> dict[str, Any]:
    for b in blocks:
        for el in [b.get("accessory") or {}, *b.get("elements", [])]:
            if el.get("action_id") == action_id:
                return dict(el)
    raise AssertionError(f"no element with action_id {action_id}")


def test_the_briefing_shows_the_customer_card() -> None:
    msg = briefing_message(
        Briefing(
            escalation_id=42,
            source=SOURCE,
            escalated_by="U0AGENT",
            escalated_at=WHEN,
            account=ACME,
            account_manager_user="U0DANA",
            matched_by="Slack Connect team",
        )
    )
    valid(msg)
    card = msg.blocks[1]
    fields = [f["text"] for f in card["fields"]]
    assert fields[:5] == [
        "*Customer*\n<https://crm.controlroom.example/accounts/ACC-1001|Acme Corporation>",
        "*Tier*\nEnterprise",
        "*ARR*\n$1.25M",
        "*Open cases*\n3",
        "*Account manager*\n<@U0DANA>",
    ]
    assert msg.blocks[0]["text"]["text"] == ":rotating_light: Incident: Acme Corporation"
    assert msg.text == ("Incident for Acme Corporation, escalated by <@U0AGENT> from <#C0SUPPORT>")


def test_the_briefing_quotes_the_source_with_permalink_author_files_and_time() -> None:
    msg = briefing_message(
        Briefing(
            escalation_id=42, source=SOURCE, escalated_by="U0AGENT", escalated_at=WHEN, account=ACME
        )
    )
    source = msg.blocks[3]["text"]["text"]
    assert source.startswith(
        "*Original message* from <@U0CUSTOMER> in <#C0SUPPORT> · "
        "<https://sandbox.slack.localhost/archives/C0SUPPORT/p1764474000000100|view original>\n"
        "> Our dashboards return 500 since 03:00 @\u200bhere"
    )
    text = everything(msg)
    assert "<!here>" not in text
    assert ":paperclip: Files: error.png, har-capture.har" in text
    assert (
        "Escalated by <@U0AGENT> <!date^1796010420^{date_short_pretty} at {time}"
        "|2026-11-30 03:47 UTC>"
    ) in text


def test_an_account_manager_without_a_slack_user_is_named_not_mentioned() -> None:
    msg = briefing_message(
        Briefing(
            escalation_id=1, source=SOURCE, escalated_by="U0AGENT", escalated_at=WHEN, account=ACME
        )
    )
    assert "*Account manager*\nDana Whitfield (dana.whitfield@controlroom.example)" in everything(
        msg
    )


def test_the_resolve_button_asks_for_confirmation() -> None:
    msg = briefing_message(
        Briefing(
            escalation_id=42,
            source=SOURCE,
            escalated_by="U0AGENT",
            escalated_at=WHEN,
            archive_after=timedelta(hours=24),
        )
    )
    button = find(valid(msg), ACTION_RESOLVE)
    assert button["value"] == "42"
    assert button["confirm"]["text"]["text"] == (
        "This posts a summary to the original thread and archive this channel after 1d."
    )
    assert button["confirm"]["confirm"]["text"] == "Resolve"


def test_an_unknown_customer_gets_a_set_customer_button() -> None:
    msg = briefing_message(
        Briefing(
            escalation_id=7,
            source=SOURCE,
            escalated_by="U0AGENT",
            escalated_at=WHEN,
            unknown_reason="no account matched (name)",
        )
    )
    blocks = valid(msg)
    assert (
        blocks[1]["text"]["text"] == ":grey_question: *Customer unknown*\nno account matched (name)"
    )
    assert find(blocks, ACTION_SET_CUSTOMER)["value"] == "7"
    assert "customer unknown" in msg.text


def test_the_crm_unavailable_variant_says_it_will_update() -> None:
    msg = briefing_message(
        Briefing(
            escalation_id=7,
            source=SOURCE,
            escalated_by="U0AGENT",
            escalated_at=WHEN,
            crm_unavailable=True,
        )
    )
    blocks = valid(msg)
    assert blocks[1]["text"]["text"].startswith(":warning: *CRM unavailable*")
    assert "will be added here when it answers" in blocks[1]["text"]["text"]
    assert msg.text.endswith("(CRM unavailable; details to follow)")


def test_invite_failures_are_listed_not_fatal() -> None:
    msg = briefing_message(
        Briefing(
            escalation_id=7,
            source=SOURCE,
            escalated_by="U0AGENT",
            escalated_at=WHEN,
            invite_failures={
                "dana@controlroom.example": "users_not_found",
                "U0GUEST": "user_is_restricted",
            },
        )
    )
    valid(msg)
    assert (
        "Could not invite: dana@controlroom.example (users_not_found), "
        "<@U0GUEST> (user_is_restricted)"
    ) in everything(msg)


@pytest.mark.parametrize(
    ("raw", "safe"),
    [
        ("a & b < c > d", "a &amp; b &lt; c &gt; d"),
        ("already &amp; &lt;escaped&gt;", "already &amp; &lt;escaped&gt;"),
        ("<!channel> <!everyone|everyone> @here", "@\u200bchannel @\u200beveryone @\u200bhere"),
        ("<!subteam^S0ONCALL|@oncall> help", "@\u200boncall help"),
        ("ping <@U123> in <#C0ABC|support>", "ping <@U123> in <#C0ABC>"),
        (
            "see <https://acme.example/x?a=1&amp;b=2|the page>",
            "see <https://acme.example/x?a=1&amp;b=2|the page>",
        ),
        ("<javascript:alert(1)|click>", "click"),
        ("<!date^1764474000^{date}|Nov 30>", "Nov 30"),
        ("email@here.example", "email@here.example"),
    ],
)
def test_source_text_is_escaped_and_cannot_ping(raw: str, safe: str) -> None:
    assert safe_source_text(raw) == (safe, False)


def test_escape_text_does_not_double_escape() -> None:
    assert escape_text("&amp; & <b>") == "&amp; &amp; &lt;b&gt;"


def test_long_source_text_is_truncated_on_a_token_boundary() -> None:
    text = "x" * 2490 + " <https://acme.example/a-very-long-link|link> & more" * 5
    safe, truncated = safe_source_text(text, limit=2500)
    assert truncated and len(safe) <= 2501
    assert safe.endswith("…") and safe.count("<") == safe.count(">")
    cut, _ = safe_source_text("y" * 9 + "&", limit=12)
    assert cut == "y" * 9 + "…"
    quoted = quote_source("line one\nline two" + "z" * 4000, limit=100)
    assert quoted.startswith("> line one\n> line two")
    assert quoted.endswith("\n_(truncated)_")


def test_a_huge_source_message_still_fits_the_section_limit() -> None:
    big = SourceMessage(channel="C1", ts="1.0", author="U1", text="&" * 5000, permalink="")
    msg = briefing_message(
        Briefing(escalation_id=1, source=big, escalated_by="U2", escalated_at=WHEN)
    )
    blocks = valid(msg)
    assert len(blocks[3]["text"]["text"]) <= 3000


def test_the_thread_pointer_links_the_room() -> None:
    msg = pointer_message("C0ROOM", escalated_by="U0AGENT")
    valid(msg)
    assert msg.text == "Escalated to <#C0ROOM> by <@U0AGENT>"
    assert already_escalated_message("C0ROOM").text == "Already escalated to <#C0ROOM>"
    assert "shortly" in already_escalated_message(None).text


def test_the_picker_offers_at_most_100_customers() -> None:
    candidates = [
        Account(id=f"ACC-{i:04d}", name=f"Acme {i}", domains=(f"acme{i}.example",))
        for i in range(130)
    ]
    candidates.append(Account(id="X" * 200, name="Too long an id"))
    msg = customer_picker(9, candidates, evidence="Acme")
    blocks = valid(msg)
    select = find(blocks, ACTION_PICK_CUSTOMER)
    assert len(select["options"]) == 100
    assert select["options"][0] == {
        "text": {"type": "plain_text", "text": "Acme 0 (acme0.example)", "emoji": True},
        "value": "9|ACC-0000",
    }
    assert find(blocks, ACTION_NO_CUSTOMER)["value"] == "9"
    assert "Showing 100 of 131 matches." in everything(msg)
    assert msg.text == "Which customer is this? Acme 0, Acme 1, Acme 2, Acme 3, Acme 4…"


def test_the_resolution_summary_states_who_and_how_long() -> None:
    msg = resolution_summary(
        resolved_by="U0LEAD",
        resolved_at=WHEN + timedelta(hours=2, minutes=14),
        opened_at=WHEN,
        room_channel_id="C0ROOM",
        customer_name="Acme Corporation",
        archive_after=timedelta(hours=24),
    )
    valid(msg)
    assert (
        msg.text == "Incident for Acme Corporation resolved by <@U0LEAD> after 2h 14m (<#C0ROOM>)"
    )
    assert "The room will be archived in 1d." in everything(msg)


@pytest.mark.parametrize(
    ("amount", "text"),
    [
        (None, "—"),
        (0, "$0"),
        (950, "$950"),
        (96_000, "$96K"),
        (480_000.5, "$480K"),
        (999_999, "$1M"),
        (1_250_000, "$1.25M"),
        (2_100_000, "$2.1M"),
        (3.2e9, "$3.2B"),
        (1.5e12, "$1,500B"),
        (-1500, "-$1.5K"),
    ],
)
def test_money_is_formatted_compactly(amount: float | None, text: str) -> None:
    assert format_money(amount) == text


@pytest.mark.parametrize(
    ("delta", "text"),
    [
        (timedelta(seconds=30), "under a minute"),
        (timedelta(minutes=45), "45m"),
        (timedelta(hours=2), "2h"),
        (timedelta(days=3, hours=2, minutes=5), "3d 2h"),
    ],
)
def test_durations_are_formatted_for_people(delta: timedelta, text: str) -> None:
    assert format_duration(delta) == text


ALLOWED_TOKEN = re.compile(
    r"<(?:@[UW][A-Z0-9]+|#C[A-Z0-9]+|(?:https?://|mailto:)[^<>|\s]+(?:\|[^<>]*)?)>"
)
SLACK_ISH = st.text(alphabet=st.sampled_from(list("<>!&@|#:/ abcUC1^hernlt;.-\n")), max_size=200)


@given(st.one_of(st.text(max_size=200), SLACK_ISH))
def test_no_text_escapes_the_quote_or_pings_everyone(raw: str) -> None:
    safe, _ = safe_source_text(raw, limit=150)
    assert len(safe) <= 151
    rest = ALLOWED_TOKEN.sub("", safe)
    assert "<" not in rest and ">" not in rest
    assert not re.search(r"(?<![\w@])@(channel|here|everyone)\b", safe, re.IGNORECASE)


def test_action_values_are_parsed_strictly() -> None:
    assert parse_escalation_value(ACTION_RESOLVE, "42") == 42
    assert parse_picker_value("42|ACC-1001") == (42, "ACC-1001")
    for bad in (None, "", "0", "-1", "42; DROP", "1" * 30):
        with pytest.raises(BadActionValue, match="not an escalation id"):
            parse_escalation_value(ACTION_RESOLVE, bad)
    for bad_pick in (None, "42", "x|ACC", "42|", "42|" + "x" * 200):
        with pytest.raises(BadActionValue, match="not a picker option"):
            parse_picker_value(bad_pick)
