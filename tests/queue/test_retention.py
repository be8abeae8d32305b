"""The inbox retention as an operator sets it (``queue.inbox_retention``) and as the hub
applies it: purging through the configured queue, logging and counting what went."""

from __future__ import annotations

from pathlib import Path

import pytest
from structlog.testing import capture_logs

from controlroom.config import load_settings, parse_duration
from controlroom.envelope import Envelope
from controlroom.errors import ConfigError
from controlroom.hub import Hub
from controlroom.queue.sqlite import SqliteQueue
from tests.queue.conftest import FakeClock

DAY = 86400.0


def test_inbox_retention_defaults_to_seven_days_and_a_batch_of_500() -> None:
    settings = load_settings(environ={})
    assert (settings.queue.inbox_retention, settings.queue.inbox_purge_batch) == (7 * DAY, 500)


@pytest.mark.parametrize(
    ("written", "seconds"),
    [("3d", 3 * DAY), ("36h", 1.5 * DAY), ("2w", 14 * DAY), (172800, 2 * DAY), ("90000", 90000.0)],
)
def test_inbox_retention_reads_durations_and_seconds_from_the_file(
    tmp_path: Path, written: str | int, seconds: float
) -> None:
    path = tmp_path / "controlroom.toml"
    value = f'"{written}"' if isinstance(written, str) else str(written)
    path.write_text(f"[queue]\ninbox_retention = {value}\n")
    assert load_settings(path, environ={}).queue.inbox_retention == seconds


def test_inbox_retention_and_batch_can_be_set_from_the_environment() -> None:
    settings = load_settings(
        environ={
            "CONTROLROOM_QUEUE__INBOX_RETENTION": "10d",
            "CONTROLROOM_QUEUE__INBOX_PURGE_BATCH": "50",
        }
    )
    assert (settings.queue.inbox_retention, settings.queue.inbox_purge_batch) == (10 * DAY, 50)


def test_an_inbox_retention_under_a_day_is_refused_with_slacks_retries_as_the_reason() -> None:
    with pytest.raises(ConfigError) as caught:
        load_settings(environ={"CONTROLROOM_QUEUE__INBOX_RETENTION": "12h"})
    [(key, source, reason)] = caught.value.problems
    assert (key, source) == ("queue.inbox_retention", "CONTROLROOM_QUEUE__INBOX_RETENTION")
    assert "at least 1d" in reason and "Slack retries" in reason


def test_an_inbox_retention_that_is_not_a_duration_names_the_accepted_forms() -> None:
    with pytest.raises(ConfigError) as caught:
        load_settings(environ={"CONTROLROOM_QUEUE__INBOX_RETENTION": "a week"})
    [(key, _, reason)] = caught.value.problems
    assert key == "queue.inbox_retention" and "30s, 5m, 2h, 7d, 1w" in reason


def test_the_retention_setting_explains_its_floor_in_its_description() -> None:
    from controlroom.config import QueueSettings

    description = QueueSettings.model_fields["inbox_retention"].description or ""
    assert "Slack retries an event for up to about an hour" in description
    assert "dedupe_key" in description


def test_parse_duration_refuses_negative_and_boolean_values() -> None:
    with pytest.raises(ValueError, match="negative"):
        parse_duration(-5)
    with pytest.raises(ValueError, match="duration"):
        parse_duration(True)


async def test_the_hub_purges_with_the_configured_retention_and_counts_what_went(
    tmp_path: Path,
) -> None:
    settings = load_settings(
        environ={},
        overrides={"data_dir": str(tmp_path), "queue.inbox_retention": "3d"},
    )
    clock = FakeClock()
    queue = SqliteQueue(tmp_path / "controlroom.db", clock=clock)
    hub = Hub(settings, queue=queue, workflows=[])
    await hub.start()
    try:
        four_days_old = Envelope(
            kind="webhook",
            source="hook:ci",
            body={},
            dedupe_key="d-4",
            received_at=clock.now - 4 * DAY,
        )
        two_days_old = Envelope(
            kind="webhook",
            source="hook:ci",
            body={},
            dedupe_key="d-2",
            received_at=clock.now - 2 * DAY,
        )
        for env in (four_days_old, two_days_old):
            await queue.accept(env, dispatch=False)

        with capture_logs() as logs:
            assert await hub.purge_queue() == (1, 0)

        assert [(e["event"], e["envelopes"], e["jobs"]) for e in logs] == [("queue_purged", 1, 0)]

        assert await queue.get_envelope(four_days_old.id) is None
        assert await queue.get_envelope(two_days_old.id) == two_days_old
        purged = hub.metrics.get_sample_value("controlroom_queue_purged_total", {"table": "inbox"})
        assert purged == 1.0
    finally:
        await hub.close()
