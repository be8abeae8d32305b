from __future__ import annotations

from dataclasses import replace

from controlroom.workflows.digests.carry import carry_forward, is_resolved
from controlroom.workflows.digests.heuristic import summarise_heuristic
from controlroom.workflows.digests.model import DigestItem

from .conftest import MessageFactory


def action(src: str, owner: str = "U2") -> DigestItem:
    return DigestItem(
        kind="action_item",
        text="Rotate the password",
        source_ids=(src,),
        owner=owner,
        status="open",
    )


def test_an_item_with_no_news_stays_open(make: MessageFactory) -> None:
    src = make(-1440, "U1", "<@U2> can you rotate the password?")
    later = make(10, "U3", "unrelated chatter about lunch")
    result = carry_forward([action(src.id)], [], [later])
    assert [(i.key, i.status) for i in result.items] == [(f"action_item:{src.id}", "open")]
    assert result.still_open == list(result.items)


def test_done_reply_in_the_thread_resolves_an_action(make: MessageFactory) -> None:
    src = make(-1440, "U1", "<@U2> can you rotate the password?")
    reply = make(10, "U2", "done, rotated and stored in the vault", thread=src)
    result = carry_forward([action(src.id)], [], [reply])
    assert [i.status for i in result.items] == ["resolved"]


def test_fixed_reply_resolves_an_action(make: MessageFactory) -> None:
    src = make(-1440, "U1", "TODO fix the flaky test")
    reply = make(10, "U3", "fixed in #4412", thread=src)
    assert is_resolved(action(src.id), [reply])


def test_check_reaction_on_the_source_resolves_an_action(make: MessageFactory) -> None:
    src = make(-1440, "U1", "<@U2> can you rotate the password?", reactions=("heavy_check_mark",))
    result = carry_forward([action(src.id)], [], [src])
    assert result.resolved == [action(src.id).with_status("resolved")]


def test_a_reply_that_is_not_done_keeps_the_action_open(make: MessageFactory) -> None:
    src = make(-1440, "U1", "<@U2> can you rotate the password?")
    reply = make(10, "U2", "still waiting on the DBA", thread=src)
    assert [i.status for i in carry_forward([action(src.id)], [], [reply]).items] == ["open"]


def test_a_reply_before_the_item_does_not_resolve_it(make: MessageFactory) -> None:
    root = make(-2000, "U1", "thread about the password")
    old_done = make(-1900, "U2", "done", thread=root)
    src = make(-1440, "U1", "<@U2> can you rotate it again?", thread=root)
    assert not is_resolved(action(src.id), [root, old_done, src])


def test_answer_in_thread_resolves_an_open_question(make: MessageFactory) -> None:
    q = make(-1440, "U1", "Is dark mode on the roadmap?")
    item = DigestItem(kind="open_question", text=q.text, source_ids=(q.id,), owner="U1")
    own = make(5, "U1", "anyone?", thread=q)
    assert [i.status for i in carry_forward([item], [], [own]).items] == ["open"]
    answer = make(10, "U2", "yes, Q2", thread=q)
    assert [i.status for i in carry_forward([item], [], [own, answer]).items] == ["resolved"]


def test_new_items_are_labelled_new_and_not_doubled(make: MessageFactory) -> None:
    src = make(-1440, "U1", "<@U2> can you rotate the password?")
    fresh = make(10, "U3", "I'll write the postmortem by Friday")
    new = summarise_heuristic([src, fresh]).items  # an overlapping window finds src again
    result = carry_forward([action(src.id)], new, [src, fresh])
    assert [(i.source_ids[0], i.status) for i in result.items] == [
        (src.id, "open"),
        (fresh.id, "new"),
    ]
    assert result.new == [i for i in result.items if i.source_ids[0] == fresh.id]


def test_new_item_resolved_within_the_window_is_resolved(make: MessageFactory) -> None:
    src = make(0, "U1", "TODO: update the macro link")
    done = make(30, "U2", "done :white_check_mark:", thread=src)
    items = summarise_heuristic([src, done]).items
    result = carry_forward([], items, [src, done])
    assert [i.status for i in result.items] == ["resolved"]


def test_decisions_and_resolved_items_are_not_carried(make: MessageFactory) -> None:
    d = make(-1440, "U1", "We decided to freeze on the 18th")
    decision = DigestItem(kind="decision", text=d.text, source_ids=(d.id,), status="open")
    done = replace(action(d.id), status="resolved")
    assert carry_forward([decision, done], [], []).items == ()


def test_open_items_feeds_the_next_digest(make: MessageFactory) -> None:
    a = make(0, "U1", "<@U2> can you rotate the password?")
    b = make(1, "U1", "We decided to freeze on the 18th")
    c = make(2, "U3", "Where is the runbook?")
    done = make(3, "U4", "here: https://runbooks.example.com", thread=c)
    result = carry_forward([], summarise_heuristic([a, b, c, done]).items, [a, b, c, done])
    nxt = result.open_items()
    assert [(i.kind, i.status) for i in nxt] == [("action_item", "open")]
