"""The labelled development set is well formed (benchmarks/digest_quality/devset)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from controlroom.workflows.digests.model import Message

DEVSET = Path(__file__).parents[3] / "benchmarks" / "digest_quality" / "devset"
FILES = sorted(DEVSET.glob("*.json"))


def test_the_set_has_enough_conversations_in_each_split() -> None:
    splits = [json.loads(f.read_text())["split"] for f in FILES]
    assert splits.count("dev") >= 12
    assert splits.count("heldout-1") >= 4 and splits.count("heldout-2") >= 4


@pytest.mark.parametrize("path", FILES, ids=[f.stem for f in FILES])
def test_every_gold_item_cites_messages_of_its_conversation(path: Path) -> None:
    doc = json.loads(path.read_text())
    messages = [Message.from_slack(doc["channel"], m) for m in doc["messages"]]
    ts = {m.ts for m in messages}
    assert {m.channel for m in messages} == {doc["channel"]}
    for m in messages:
        assert m.thread_ts is None or m.thread_ts in ts
    kinds = set()
    for item in doc["gold"]:
        assert item["kind"] in ("decision", "action_item", "open_question")
        assert item["sources"] and set(item["sources"]) <= ts
        kinds.add(item["kind"])
    assert kinds, "a conversation with nothing to find"
