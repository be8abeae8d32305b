"""messages.py: the living deploy message in Block Kit, within Slack's limits."""

from __future__ import annotations

import dataclasses
import json
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from controlroom.workflows.deploys.ledger import DeployLedger, DeployLock, Deployment
from controlroom.workflows.deploys.messages import (
    ROLLBACK_ACTION_ID,
    RollbackRef,
    decode_rollback_value,
    deployment_message,
    encode_rollback_value,
    event_thread_text,
    format_duration,
    lock_refusal_text,
    status_list_message,
)
from controlroom.workflows.deploys.sources import ResolvedRoute, normalise

from .conftest import load

NOW = datetime(2026, 11, 30, 9, 10, tzinfo=UTC)


def dep(**changes: Any) -> Deployment:
    base = Deployment(
        id=12,
        run_key="generic:checkout-42",
        provider="generic",
        service="checkout",
        environment="production",
        status="failed",
        created_at=NOW,
        updated_at=NOW,
        version="v1.4.2",
        commit_sha="9f1c2e7aa0",
        commit_url="https://github.com/acme/checkout/commit/9f1c2e7aa0",
        author_name="Jane Doe",
        author_email="jane@example.com",
        run_url="https://ci.example.com/run/42",
        started_at=NOW - timedelta(minutes=3, seconds=18),
        finished_at=NOW,
        last_event="failed",
    )
    return dataclasses.replace(base, **changes)


TARGET = dep(id=7, status="succeeded", version="v1.4.1", run_key="generic:checkout-41")
LOCK = DeployLock("checkout", "production", "U0LOCKER", "incident 42", NOW)


def blocks_of(kind: str, message_blocks: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [b for b in message_blocks if b["type"] == kind]


def all_text(message_blocks: list[dict[str, Any]]) -> str:
    return json.dumps(message_blocks)


def _text_ok(obj: Any, limit: int, kinds: tuple[str, ...] = ("plain_text", "mrkdwn")) -> None:
    assert isinstance(obj, dict) and obj["type"] in kinds, obj
    assert isinstance(obj["text"], str) and 0 < len(obj["text"]) <= limit, obj


def assert_valid_blocks(message_blocks: list[dict[str, Any]]) -> None:
    """Slack's Block Kit limits for what these messages use (block kit reference)."""
    assert 0 < len(message_blocks) <= 50
    ids = [b["block_id"] for b in message_blocks if "block_id" in b]
    assert len(ids) == len(set(ids)) and all(len(i) <= 255 for i in ids)
    for block in message_blocks:
        kind = block["type"]
        assert kind in {"header", "section", "actions", "context"}, kind
        if kind == "header":
            _text_ok(block["text"], 150, ("plain_text",))
        elif kind == "section":
            assert "text" in block or "fields" in block
            if "text" in block:
                _text_ok(block["text"], 3000)
            for f in block.get("fields", []):
                _text_ok(f, 2000)
            assert len(block.get("fields", [])) <= 10
        elif kind == "context":
            assert 1 <= len(block["elements"]) <= 10
            for element in block["elements"]:
                _text_ok(element, 3000)
        else:
            assert 1 <= len(block["elements"]) <= 25
            for button in block["elements"]:
                assert button["type"] == "button"
                assert len(button["action_id"]) <= 255
                _text_ok(button["text"], 75, ("plain_text",))
                assert len(button["value"]) <= 2000
                assert button.get("style") in (None, "primary", "danger")
                confirm = button["confirm"]
                _text_ok(confirm["title"], 100, ("plain_text",))
                _text_ok(confirm["text"], 300)
                _text_ok(confirm["confirm"], 30, ("plain_text",))
                _text_ok(confirm["deny"], 30, ("plain_text",))
                assert confirm.get("style") in (None, "primary", "danger")


def rollback_button(message_blocks: list[dict[str, Any]]) -> dict[str, Any] | None:
    for block in blocks_of("actions", message_blocks):
        for element in block["elements"]:
            if element.get("action_id") == ROLLBACK_ACTION_ID:
                return element  # type: ignore[no-any-return]
    return None


def test_failed_deploy_with_target_shows_a_danger_rollback_button_with_confirm() -> None:
    msg = deployment_message(dep(), target=TARGET, now=NOW)
    header = msg.blocks[0]
    assert header["type"] == "header"
    assert header["text"]["text"] == ":rotating_light: Deploy FAILED: checkout v1.4.2 in production"
    button = rollback_button(msg.blocks)
    assert button is not None
    assert button["style"] == "danger"
    assert button["text"]["text"] == "Rollback to v1.4.1"
    assert decode_rollback_value(button["value"]) == RollbackRef(12, 7)
    confirm = button["confirm"]
    assert confirm["style"] == "danger"
    for word in ("checkout", "production", "v1.4.1"):
        assert word in confirm["text"]["text"]
    assert confirm["title"]["text"] == "Roll back checkout in production?"
    assert "This deploy failed" in all_text(msg.blocks)


def test_summary_links_version_to_commit_and_run_and_shows_duration() -> None:
    msg = deployment_message(dep(), target=TARGET, now=NOW)
    fields = [f["text"] for f in msg.blocks[1]["fields"]]
    assert fields == [
        "*Service*\ncheckout",
        "*Environment*\nproduction",
        "*Version*\n<https://github.com/acme/checkout/commit/9f1c2e7aa0|v1.4.2>",
        "*Author*\nJane Doe",
        "*Duration*\n3m 18s",
        "*Run*\n<https://ci.example.com/run/42|View run>",
    ]


def test_author_is_mentioned_when_the_email_maps_to_a_slack_user() -> None:
    users = {"jane@example.com": "U0JANE"}
    msg = deployment_message(dep(), target=TARGET, user_lookup=users.get, now=NOW)
    assert "*Author*\n<@U0JANE>" in [f["text"] for f in msg.blocks[1]["fields"]]
    unknown = deployment_message(dep(), user_lookup={}.get, now=NOW)
    assert "*Author*\nJane Doe" in [f["text"] for f in unknown.blocks[1]["fields"]]


def test_running_deploy_shows_elapsed_time_and_no_button() -> None:
    running = dep(status="in_progress", finished_at=None, last_event="running")
    msg = deployment_message(running, target=TARGET, now=NOW)
    assert msg.blocks[0]["text"]["text"] == ":rocket: Deploying: checkout v1.4.2 in production"
    assert "*Duration*\nrunning for 3m 18s" in [f["text"] for f in msg.blocks[1]["fields"]]
    assert rollback_button(msg.blocks) is None


@pytest.mark.parametrize(
    ("status", "suspect", "has_target", "shown"),
    [
        ("failed", False, True, True),
        ("failed", False, False, False),
        ("succeeded", True, True, True),
        ("succeeded", False, True, False),
        ("cancelled", False, True, False),
        ("unstable", False, True, False),
        ("queued", False, True, False),
    ],
)
def test_rollback_button_only_when_failed_or_suspect_and_a_target_exists(
    status: str, suspect: bool, has_target: bool, shown: bool
) -> None:
    msg = deployment_message(
        dep(status=status, suspect=suspect), target=TARGET if has_target else None, now=NOW
    )
    assert (rollback_button(msg.blocks) is not None) is shown


def test_suspect_deploy_header_says_so() -> None:
    msg = deployment_message(dep(status="succeeded", suspect=True), target=TARGET, now=NOW)
    assert "SUSPECT" in msg.blocks[0]["text"]["text"]


def test_lock_banner_is_shown_when_the_environment_is_locked() -> None:
    msg = deployment_message(dep(), target=TARGET, lock=LOCK, now=NOW)
    banner = next(b for b in msg.blocks if b.get("block_id") == "deploys.lock")
    assert banner["text"]["text"].startswith(":lock: *production is locked* for checkout by")
    assert "<@U0LOCKER>: incident 42" in banner["text"]["text"]
    assert "production is locked" in msg.text


def test_rolling_back_replaces_the_button_with_who_started_it() -> None:
    rolling = dep(rollback_state="rolling_back", rollback_by="U0CLICK", rollback_target_id=7)
    msg = deployment_message(rolling, target=TARGET, now=NOW)
    assert rollback_button(msg.blocks) is None
    assert msg.blocks[0]["text"]["text"] == (
        ":rewind: Rolling back: checkout in production to v1.4.1"
    )
    line = next(b for b in msg.blocks if b.get("block_id") == "deploys.rollback_state")
    assert (
        line["text"]["text"] == ":hourglass_flowing_sand: Rolling back to *v1.4.1*… by <@U0CLICK>"
    )
    assert msg.text == "Rolling back: checkout in production to v1.4.1"


def test_rolled_back_and_rollback_failed_show_outcome_and_link() -> None:
    done = dep(
        rollback_state="rolled_back",
        rollback_by="U0CLICK",
        rollback_url="https://github.com/acme/checkout/actions/runs/99",
    )
    msg = deployment_message(done, target=TARGET, now=NOW)
    line = next(b for b in msg.blocks if b.get("block_id") == "deploys.rollback_state")
    assert line["text"]["text"] == (
        ":leftwards_arrow_with_hook: Rolled back to *v1.4.1* by <@U0CLICK> · "
        "<https://github.com/acme/checkout/actions/runs/99|View rollback>"
    )
    failed = dep(rollback_state="rollback_failed", rollback_by="U0CLICK", rollback_detail="401")
    failed_msg = deployment_message(failed, target=TARGET, now=NOW)
    assert failed_msg.blocks[0]["text"]["text"].startswith(":rotating_light: ROLLBACK FAILED")
    assert "*Rollback to *v1.4.1* failed*: 401" in all_text(failed_msg.blocks)
    assert failed_msg.text == "ROLLBACK FAILED: checkout in production to v1.4.1 (401)"


def test_text_fallback_reads_well_in_a_phone_notification() -> None:
    msg = deployment_message(dep(), target=TARGET, now=NOW)
    assert msg.text == (
        "Deploy FAILED: checkout v1.4.2 in production by Jane Doe. Rollback to v1.4.1 available"
    )
    ok = deployment_message(dep(status="succeeded"), now=NOW)
    assert ok.text == "Deployed: checkout v1.4.2 in production by Jane Doe"


def test_slack_limits_hold_for_huge_values() -> None:
    huge = dep(
        service="s" * 300,
        environment="e" * 300,
        version="v" * 500,
        author_name="a" * 3000,
    )
    target = dataclasses.replace(TARGET, version="t" * 500)
    msg = deployment_message(huge, target=target, now=NOW)
    assert_valid_blocks(msg.blocks)
    assert len(msg.blocks[0]["text"]["text"]) <= 150
    button = rollback_button(msg.blocks)
    assert button is not None
    assert len(button["text"]["text"]) <= 75
    assert len(button["value"]) <= 2000
    assert len(button["confirm"]["title"]["text"]) <= 100
    assert len(button["confirm"]["text"]["text"]) <= 300
    assert all(len(f["text"]) <= 2000 for f in msg.blocks[1]["fields"])


def test_untrusted_text_cannot_inject_mentions_or_links() -> None:
    evil = dep(
        author_name="<!channel> boss",
        version="v1|<http://evil>",
        commit_url="javascript:alert(1)",
        run_url="https://ci.example.com/run/1|x",
    )
    msg = deployment_message(evil, now=NOW)
    rendered = all_text(msg.blocks)
    assert "<!channel>" not in rendered
    assert "&lt;!channel&gt; boss" in rendered
    assert "javascript:" not in rendered
    assert "*Run*" not in rendered  # an unsafe run URL is dropped
    assert "<!channel>" not in msg.text


@pytest.mark.parametrize(
    "value", ["", "12", "12:", ":7", "a:b", "12:7:1", "1" * 50 + ":1", None, 12]
)
def test_rollback_value_decoding_rejects_anything_else(value: object) -> None:
    assert decode_rollback_value(value) is None


def test_rollback_value_round_trips() -> None:
    assert decode_rollback_value(encode_rollback_value(123456, 99)) == RollbackRef(123456, 99)


@pytest.mark.parametrize(
    ("seconds", "text"), [(0, "0s"), (45, "45s"), (198, "3m 18s"), (3725, "1h 02m")]
)
def test_format_duration(seconds: float, text: str) -> None:
    assert format_duration(seconds) == text


def test_thread_line_and_lock_refusal() -> None:
    result = normalise(
        "github",
        load("github/examples/workflow_job/completed.failure.with-organization.payload.json"),
        event_name="workflow_job",
    )
    assert result.event is not None
    line = event_thread_text(result.event)
    assert line.startswith("`workflow_job.completed` → *failed*")
    assert "failed_steps: Run yarn run format-check" in line
    assert line.endswith("<https://github.com/octo-org/octo-repo/runs/1291536064|run>")
    assert lock_refusal_text(LOCK) == (
        ":lock: Rollback refused: checkout in production is locked by <@U0LOCKER>: incident 42."
    )


def test_status_list() -> None:
    msg = status_list_message("checkout", [dep(), TARGET], locks=[LOCK])
    assert msg.text == "2 recent deploys of checkout; latest v1.4.2 in production: deploy failed"
    listing = next(b for b in msg.blocks if b.get("block_id") == "deploys.list")
    assert listing["text"]["text"].count("\n") == 1
    empty = status_list_message("billing", [])
    assert empty.text == "No deployments of billing recorded yet"


async def test_every_real_fixture_renders_a_valid_message(ledger: DeployLedger) -> None:
    """Each real payload, through sources and the ledger, gives a message whose header
    names its status and whose button appears exactly when a rollback makes sense."""
    route = ResolvedRoute("svc", "prod", "C1")
    good = normalise(
        "generic",
        {"service": "svc", "environment": "prod", "version": "v0-good", "status": "succeeded"},
    ).event
    assert good is not None
    await ledger.upsert_from_event(good, route)
    cases = [
        ("github", "workflow_run", "github/examples/workflow_run/completed.payload.json"),
        (
            "github",
            "workflow_job",
            "github/examples/workflow_job/completed.failure.with-organization.payload.json",
        ),
        ("github", "deployment_status", "github/examples/deployment_status/payload.json"),
        ("gitlab", "Pipeline Hook", "gitlab/pipeline_hook.json"),
        ("gitlab", "Job Hook", "gitlab/job_hook.json"),
        ("gitlab", "Deployment Hook", "gitlab/deployment_hook.json"),
        ("jenkins", "", "jenkins/notification-plugin.completed.json"),
    ]
    for provider, name, path in cases:
        event = normalise(provider, load(path), event_name=name, delivery_id=path).event
        assert event is not None
        stored = (await ledger.upsert_from_event(event, route)).deployment
        assert stored is not None
        target = await ledger.last_good("svc", "prod", before=stored)
        msg = deployment_message(stored, target=target, now=NOW)
        assert_valid_blocks(msg.blocks)
        header = msg.blocks[0]["text"]["text"]
        assert len(header) <= 150
        assert f"svc {stored.version} in prod" in header
        assert msg.text.startswith(header.split(" ", 1)[1].split(":")[0])
        button = rollback_button(msg.blocks)
        if stored.status == "failed":
            assert button is not None, path
            assert button["text"]["text"] == f"Rollback to {target.version if target else ''}"
        else:
            assert button is None, path


def test_failed_deploy_without_target_explains_why_there_is_no_button() -> None:
    msg = deployment_message(dep(), target=None, now=NOW)
    assert rollback_button(msg.blocks) is None
    assert "No earlier good deploy of checkout in production is recorded" in all_text(msg.blocks)
    ok = deployment_message(dep(status="succeeded"), target=None, now=NOW)
    assert "No earlier good deploy" not in all_text(ok.blocks)


def test_status_list_shows_times_in_each_readers_time_zone() -> None:
    msg = status_list_message("checkout", [dep()])
    listing = next(b for b in msg.blocks if b.get("block_id") == "deploys.list")
    stamp = int(NOW.timestamp())
    assert (
        f"<!date^{stamp}^{{date_short_pretty}} {{time}}|2026-11-30 09:10 UTC>"
        in (listing["text"]["text"])
    )


@pytest.mark.parametrize(
    "changes",
    [
        {},
        {"status": "queued", "finished_at": None, "started_at": None},
        {"status": "succeeded", "suspect": True},
        {"rollback_state": "rolling_back", "rollback_by": "U0CLICK"},
        {"rollback_state": "rolled_back", "rollback_by": "U0CLICK", "rollback_url": "https://x"},
        {"rollback_state": "rollback_failed", "rollback_by": "U0CLICK", "rollback_detail": "x"},
        {"commit_url": "", "run_url": "", "author_name": "", "author_email": "", "version": ""},
    ],
)
def test_every_state_renders_valid_block_kit(changes: dict[str, Any]) -> None:
    msg = deployment_message(dep(**changes), target=TARGET, lock=LOCK, now=NOW)
    assert_valid_blocks(msg.blocks)
    assert msg.text
    assert_valid_blocks(status_list_message("checkout", [dep(**changes)], locks=[LOCK]).blocks)
