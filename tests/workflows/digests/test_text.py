from __future__ import annotations

from datetime import UTC, date, datetime
from zoneinfo import ZoneInfo

import pytest

from controlroom.workflows.digests.text import content_kind, resolve_due

PARIS = ZoneInfo("Europe/Paris")
# Tuesday 1 December 2026, 10:00 in Paris.
TUESDAY = datetime(2026, 12, 1, 9, 0, tzinfo=UTC)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("I'll send it by Friday", date(2026, 12, 4)),
        ("done by EOD", date(2026, 12, 1)),
        ("I'll do it tomorrow", date(2026, 12, 2)),
        ("rolled out by next Friday", date(2026, 12, 11)),
        ("ready next week", date(2026, 12, 7)),
        ("by end of next week", date(2026, 12, 11)),
        ("I'll refresh it this week", date(2026, 12, 4)),
        ("headers by 2026-12-03 please", date(2026, 12, 3)),
        ("before Monday's planning review", date(2026, 12, 7)),
        ("by Dec 10", date(2026, 12, 10)),
        ("by 10 January", date(2027, 1, 10)),
        ("on the 8th", date(2026, 12, 8)),
        ("I'll share the draft in 30 min", date(2026, 12, 1)),
        ("tonight, then share with eng tomorrow", date(2026, 12, 2)),
    ],
)
def test_due_dates_resolve_against_the_message_time(text: str, expected: date) -> None:
    assert resolve_due(text, TUESDAY, PARIS) == expected


def test_due_date_without_a_date_is_none() -> None:
    assert resolve_due("I'll look into it", TUESDAY, PARIS) is None


def test_not_before_is_an_earliest_start_not_a_due_date() -> None:
    assert resolve_due("I can fix it but not before the 15th", TUESDAY, PARIS) is None


def test_tomorrow_is_read_in_the_workspace_time_zone() -> None:
    # 23:30 UTC on Tuesday is already Wednesday 00:30 in Paris.
    late = datetime(2026, 12, 1, 23, 30, tzinfo=UTC)
    assert resolve_due("I'll do it tomorrow", late, PARIS) == date(2026, 12, 3)
    assert resolve_due("I'll do it tomorrow", late, UTC) == date(2026, 12, 2)


def test_by_friday_said_on_friday_means_the_next_friday() -> None:
    friday = datetime(2026, 12, 4, 9, 0, tzinfo=UTC)
    assert resolve_due("by Friday", friday, UTC) == date(2026, 12, 11)


@pytest.mark.parametrize(
    ("text", "kwargs", "kind"),
    [
        ("Deploy finished", {"is_bot": True}, "bot"),
        ("<@U1> has joined the channel", {"subtype": "channel_join"}, "system"),
        (":+1: :tada:", {}, "emoji"),
        ("\U0001f64f\U0001f64f", {}, "emoji"),
        ("<https://example.com/doc|the doc>", {}, "link"),
        ("https://grafana.example.com/d/kafka", {}, "link"),
        ("morning all :wave:", {}, "greeting"),
        ("Thanks everyone!", {}, "greeting"),
        ("   ", {}, "empty"),
        ("We decided to ship", {}, "text"),
        ("see https://example.com for the plan", {}, "text"),
        ("reply in thread", {"subtype": "thread_broadcast"}, "text"),
    ],
)
def test_content_kind_tells_noise_from_text(
    text: str, kwargs: dict[str, object], kind: str
) -> None:
    assert content_kind(text, **kwargs) == kind  # type: ignore[arg-type]
