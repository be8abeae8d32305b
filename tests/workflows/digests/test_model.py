from __future__ import annotations

from datetime import date

import pytest

from controlroom.workflows.digests.model import (
    DigestItem,
    Message,
    coverage_of,
    latest_versions,
    message_id,
    split_message_id,
)


def test_message_from_a_history_item_keeps_reactions_edit_and_thread() -> None:
    m = Message.from_slack(
        "C0ENG",
        {
            "type": "message",
            "user": "U0BOB",
            "text": "done",
            "ts": "1796115900.000200",
            "thread_ts": "1796115600.000100",
            "edited": {"user": "U0BOB", "ts": "1796116000.000000"},
            "reactions": [{"name": "white_check_mark", "users": ["U0ANN"], "count": 1}],
        },
    )
    assert m.id == "C0ENG:1796115900.000200"
    assert (m.is_reply, m.root_ts, m.edited, m.reactions) == (
        True,
        "1796115600.000100",
        True,
        ("white_check_mark",),
    )


def test_a_thread_parent_is_not_a_reply() -> None:
    m = Message.from_slack("C1", {"ts": "1.000001", "thread_ts": "1.000001", "text": "root"})
    assert not m.is_reply and m.user is None


def test_reactions_given_as_a_list_become_a_tuple() -> None:
    m = Message(channel="C1", ts="1.0", user="U1", text="x", reactions=["+1"])  # type: ignore[arg-type]
    assert m.reactions == ("+1",)


def test_message_ids_round_trip() -> None:
    assert split_message_id(message_id("C1", "1.000001")) == ("C1", "1.000001")
    with pytest.raises(ValueError):
        split_message_id("no-colon")


def test_digest_item_json_round_trip() -> None:
    item = DigestItem(
        kind="action_item",
        text="Write the doc",
        source_ids=("C1:1.0",),
        owner="U1",
        due=date(2026, 12, 4),
        status="open",
    )
    assert DigestItem.from_json(item.to_json()) == item
    with pytest.raises(ValueError):
        DigestItem.from_json({**item.to_json(), "kind": "gossip"})


def test_an_item_needs_a_source() -> None:
    with pytest.raises(ValueError):
        DigestItem(kind="decision", text="x", source_ids=())


def test_latest_versions_keeps_the_latest_edit_and_drops_deletions() -> None:
    a1 = Message(channel="C1", ts="1.0", user="U1", text="v1")
    a2 = Message(channel="C1", ts="1.0", user="U1", text="v2", edited_ts="5.0")
    b = Message(channel="C1", ts="2.0", user="U1", text="bye")
    b_del = Message(channel="C1", ts="2.0", user=None, text="", subtype="message_deleted")
    assert [m.text for m in latest_versions([a2, a1, b, b_del])] == ["v2"]


def test_coverage_of_an_empty_window() -> None:
    cov = coverage_of([], complete=False)
    assert (cov.messages_read, cov.start, cov.complete) == (0, None, False)


def test_message_changed_event_gives_the_edited_message() -> None:
    # The shape Slack sends for an edit (subtype message_changed; the new message inside).
    event = {
        "type": "message",
        "subtype": "message_changed",
        "channel": "C0ENG",
        "hidden": True,
        "ts": "1796116200.000900",
        "event_ts": "1796116200.000900",
        "message": {
            "type": "message",
            "user": "U0IRIS",
            "text": "PR up by Thursday",
            "ts": "1796115900.000200",
            "thread_ts": "1796115600.000100",
            "edited": {"user": "U0IRIS", "ts": "1796116200.000000"},
        },
        "previous_message": {
            "type": "message",
            "user": "U0IRIS",
            "text": "PR up tomorrow",
            "ts": "1796115900.000200",
        },
    }
    m = Message.from_slack(event["channel"], event["message"])
    before = Message.from_slack(event["channel"], event["previous_message"])
    assert m.id == before.id
    assert [x.text for x in latest_versions([m, before])] == ["PR up by Thursday"]
