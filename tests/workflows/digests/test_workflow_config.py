"""``[workflows.digests]`` validation, when a digest is due (cron in its own time zone),
and what the workflow asks of Slack (the manifest)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from pydantic import ValidationError

from controlroom.config import load_settings
from controlroom.manifest import ManifestOptions, build_manifest, manifest_problems
from controlroom.workflows.digests.config import (
    DigestsConfig,
    channel_ref,
    due_periods,
    previous_tick,
)
from controlroom.workflows.digests.workflow import workflow


def config(**digest: Any) -> DigestsConfig:
    entry: dict[str, Any] = {"name": "aurora", "channels": ["#proj-aurora"]}
    entry.update(digest)
    return DigestsConfig.model_validate({"digests": [entry]})


def test_defaults_are_the_private_leadership_channel_weekday_mornings_and_14_days() -> None:
    [d] = config().digests
    assert (d.target, d.cron, d.timezone) == ("leadership-digest", "0 9 * * 1-5", "UTC")
    assert (d.retention_days, d.no_digest_marker, d.window_hours) == (14.0, "[no-digest]", None)
    assert d.summariser.kind == "heuristic"
    assert d.channels == ("proj-aurora",)


def test_channel_references_accept_names_ids_and_slack_links() -> None:
    assert channel_ref("#proj-aurora") == "proj-aurora"
    assert channel_ref("<#C0AURORA01|proj-aurora>") == "C0AURORA01"
    assert channel_ref(" G0LEADDIGE ") == "G0LEADDIGE"
    for bad in ("", "#", "<script>", "two words", "x" * 90):
        with pytest.raises(ValueError):
            channel_ref(bad)


@pytest.mark.parametrize(
    ("field", "value", "needle"),
    [
        ("cron", "every day at nine", "invalid cron"),
        ("cron", "0 9 * * 1-5 2026", "invalid cron"),
        ("timezone", "Mars/Olympus", "unknown time zone"),
        ("channels", [], "at least 1"),
        ("channels", ["not a channel!"], "not a channel"),
        ("retention_days", 0, "greater than 0"),
        ("name", "Has Spaces", "pattern"),
    ],
)
def test_bad_settings_are_refused_with_the_reason(field: str, value: Any, needle: str) -> None:
    with pytest.raises(ValidationError, match=needle):
        config(**{field: value})


def test_digest_names_must_be_unique() -> None:
    with pytest.raises(ValidationError, match="unique: aurora"):
        DigestsConfig.model_validate({"digests": [{"name": "aurora", "channels": ["a"]}] * 2})


def test_redaction_and_the_marker_reach_the_summariser() -> None:
    [d] = config(
        redact=True, no_digest_marker="[private]", summariser={"kind": "heuristic"}
    ).digests
    s = d.summariser_settings()
    assert (s.redact, s.no_digest_marker) == (True, "[private]")
    assert d.excludes("This is [PRIVATE] stuff")
    assert not d.excludes("public stuff")


def test_a_digest_is_due_at_its_tick_in_its_own_time_zone() -> None:
    c = config(cron="0 9 * * 1-5", timezone="Europe/Paris")
    # Tuesday 1 December 2026, 09:00 in Paris is 08:00 UTC
    at_tick = datetime(2026, 12, 1, 8, 0, 30, tzinfo=UTC)
    [(digest, tick)] = due_periods(c, at_tick)
    assert digest.name == "aurora"
    assert tick.isoformat() == "2026-12-01T09:00:00+01:00"
    assert due_periods(c, at_tick - timedelta(minutes=1)) == []  # 08:59:30 Paris
    assert due_periods(c, at_tick + timedelta(minutes=61)) == []  # too late to catch up
    assert due_periods(c, datetime(2026, 12, 5, 8, 0, 30, tzinfo=UTC)) == []  # Saturday


def test_the_tick_follows_daylight_saving_time() -> None:
    c = config(cron="0 9 * * *", timezone="Europe/Paris")
    [(_, summer)] = due_periods(c, datetime(2026, 7, 1, 7, 0, 10, tzinfo=UTC))
    assert summer.isoformat() == "2026-07-01T09:00:00+02:00"
    # the Monday after the switch to summer time: the previous tick is 23 hours before
    [(_, monday)] = due_periods(c, datetime(2026, 3, 30, 7, 0, 10, tzinfo=UTC))
    sunday = previous_tick("0 9 * * *", monday)
    assert monday.timestamp() - sunday.timestamp() == 24 * 3600
    [(_, switch_day)] = due_periods(c, datetime(2026, 3, 29, 7, 0, 10, tzinfo=UTC))
    saturday = previous_tick("0 9 * * *", switch_day)
    assert switch_day.timestamp() - saturday.timestamp() == 23 * 3600


def test_the_first_digest_after_a_weekend_covers_it() -> None:
    c = config(cron="0 9 * * 1-5", timezone="Europe/Paris")
    [(_, monday)] = due_periods(c, datetime(2026, 11, 30, 8, 0, 5, tzinfo=UTC))
    assert previous_tick(c.digests[0].cron, monday).isoformat() == "2026-11-27T09:00:00+01:00"


def test_the_manifest_asks_for_exactly_what_digests_need() -> None:
    assert manifest_problems([workflow]) == []
    manifest = build_manifest(
        load_settings(environ={}, overrides={}),
        [workflow],
        ManifestOptions(base_url="https://controlroom.example"),
    )
    assert sorted(manifest["oauth_config"]["scopes"]["bot"]) == [
        "channels:history",
        "channels:read",
        "chat:write",
        "commands",
        "groups:history",
        "groups:read",
        "reactions:read",
    ]
    assert manifest["settings"]["event_subscriptions"]["bot_events"] == [
        "message.channels",
        "message.groups",
        "reaction_added",
        "reaction_removed",
    ]
    assert [c["command"] for c in manifest["features"]["slash_commands"]] == ["/digest"]
