from __future__ import annotations

import json
from datetime import date
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from controlroom.workflows.digests.heuristic import HeuristicSummariser, summarise_heuristic
from controlroom.workflows.digests.model import DigestItem, Message

from .conftest import CHANNEL, MessageFactory

FIXTURES = Path(__file__).parent / "fixtures"


def kinds(items: tuple[DigestItem, ...], kind: str) -> list[DigestItem]:
    return [i for i in items if i.kind == kind]


# --- decisions -------------------------------------------------------------------------


@pytest.mark.parametrize(
    "text",
    [
        "We decided to keep Postgres for the queue.",
        "Let's go with the short template for the bulk reply.",
        "Agreed: the freeze starts on the 18th.",
        "Approved, full refund plus a $200 credit.",
        "Decision: v1 /search is deprecated.",
        ":white_check_mark: approved",
        "We're going with tab bar B.",
        "fair, 100k it is",
    ],
)
def test_decision_phrases_make_a_decision(make: MessageFactory, text: str) -> None:
    m = make(0, "U1", text)
    result = summarise_heuristic([m])
    decisions = kinds(result.items, "decision")
    assert [d.source_ids for d in decisions] == [(m.id,)]


@pytest.mark.parametrize(
    "text",
    [
        "Have we decided on the icon set?",
        "It's not agreed yet, let's discuss tomorrow",
        "Nothing has been approved so far",
    ],
)
def test_questions_and_negations_are_not_decisions(make: MessageFactory, text: str) -> None:
    assert kinds(summarise_heuristic([make(0, "U1", text)]).items, "decision") == []


def test_thread_consensus_on_a_proposal_is_a_decision(make: MessageFactory) -> None:
    root = make(0, "U1", "Proposal: move the failover script from cron into the orchestrator")
    a = make(5, "U2", "+1", thread=root)
    b = make(6, "U3", "\u2705", thread=root)
    decisions = kinds(summarise_heuristic([root, a, b]).items, "decision")
    assert len(decisions) == 1
    assert set(decisions[0].source_ids) == {root.id, a.id, b.id}


def test_a_single_plus_one_is_not_consensus(make: MessageFactory) -> None:
    root = make(0, "U1", "Proposal: move the failover script into the orchestrator")
    a = make(5, "U2", "+1", thread=root)
    assert kinds(summarise_heuristic([root, a]).items, "decision") == []


def test_an_objection_blocks_consensus(make: MessageFactory) -> None:
    root = make(0, "U1", "Plan: cut over on the 8th. objections?")
    msgs = [
        root,
        make(1, "U2", "+1", thread=root),
        make(2, "U3", "-1, the 8th is a release day", thread=root),
        make(3, "U4", "\U0001f44d", thread=root),
    ]
    assert kinds(summarise_heuristic(msgs).items, "decision") == []


def test_reactions_on_a_proposal_count_towards_consensus(make: MessageFactory) -> None:
    root = make(0, "U1", "Should we drop the 5 min grace period?", reactions=("+1", "+1"))
    # Slack lists one entry per reaction name; two names from the set give two votes here.
    root2 = make(1, "U1", "Proposal: drop IE11 support", reactions=("+1", "white_check_mark"))
    decisions = kinds(summarise_heuristic([root, root2]).items, "decision")
    assert [d.source_ids[0] for d in decisions] == [root.id, root2.id]


def test_restated_decision_in_a_thread_is_one_item(make: MessageFactory) -> None:
    root = make(0, "U1", "CSV export limit: remove it or raise it?")
    a = make(5, "U2", "fair, 100k it is", thread=root)
    b = make(7, "U1", "ok agreed: raise the CSV export limit to 100k rows", thread=root)
    decisions = kinds(summarise_heuristic([root, a, b]).items, "decision")
    assert len(decisions) == 1
    assert set(decisions[0].source_ids) == {a.id, b.id}


# --- action items ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "owner"),
    [
        ("<@U0BOB> will update the runbook", "U0BOB"),
        ("I'll rotate the password today", "U0AUTHOR"),
        ("I will write the design doc", "U0AUTHOR"),
        ("TODO: rotate the replication password", None),
        ("<@U0BOB> can you lower the alert threshold?", "U0BOB"),
        ("action item: <@U0BOB> to add the dashboard to the runbook", "U0BOB"),
        ("AI: add the kafka dashboard to the on-call runbook", "U0AUTHOR"),
        ("<@U0BOB> please tag the tickets with incident-1203", "U0BOB"),
    ],
)
def test_action_item_phrases_make_an_action_with_owner(
    make: MessageFactory, text: str, owner: str | None
) -> None:
    m = make(0, "U0AUTHOR", text)
    actions = kinds(summarise_heuristic([m]).items, "action_item")
    assert [(a.source_ids, a.owner) for a in actions] == [((m.id,), owner)]


def test_request_accepted_in_thread_takes_the_acceptors_owner_and_due(
    make: MessageFactory,
) -> None:
    root = make(0, "U1", "For the bulk reply let's use the short template. Nora, can you draft it?")
    reply = make(2, "U0NORA", "on it, I'll share the draft by Friday", thread=root)
    actions = kinds(summarise_heuristic([root, reply]).items, "action_item")
    assert len(actions) == 1
    assert actions[0].owner == "U0NORA"
    assert actions[0].source_ids == (root.id, reply.id)
    assert actions[0].due == date(2026, 12, 4)


def test_the_asker_cannot_accept_their_own_request(make: MessageFactory) -> None:
    root = make(0, "U1", "can you check the analytics events?")
    reply = make(1, "U1", "yes, today if possible", thread=root)
    actions = kinds(summarise_heuristic([root, reply]).items, "action_item")
    assert [a.source_ids for a in actions] == [(root.id,)]


def test_todo_taken_by_its_author_in_thread(make: MessageFactory) -> None:
    root = make(0, "U1", "TODO: rotate the replication user's password")
    reply = make(1, "U1", "I'll take this one, by EOD", thread=root)
    actions = kinds(summarise_heuristic([root, reply]).items, "action_item")
    assert len(actions) == 1
    assert (actions[0].owner, actions[0].due) == ("U1", date(2026, 12, 1))


def test_due_date_resolved_in_the_workspace_time_zone(make: MessageFactory) -> None:
    # 23:30 UTC on Tuesday 1 Dec is Wednesday 2 Dec 08:30 in Tokyo.
    m = make(14 * 60 + 30, "U1", "I'll send the report tomorrow")
    tokyo = summarise_heuristic([m], tz=ZoneInfo("Asia/Tokyo")).items
    utc = summarise_heuristic([m]).items
    assert tokyo[0].due == date(2026, 12, 3)
    assert utc[0].due == date(2026, 12, 2)


def test_done_reply_by_the_owner_resolves_the_action_in_window(make: MessageFactory) -> None:
    root = make(0, "U1", "<@U2> can you review my reply before I send it?")
    reply = make(5, "U2", "done, added two suggestions", thread=root)
    actions = kinds(summarise_heuristic([root, reply]).items, "action_item")
    assert [(a.owner, a.status) for a in actions] == [("U2", "resolved")]


def test_an_offer_accepted_by_someone_else_is_an_action(make: MessageFactory) -> None:
    root = make(0, "U1", "NDCG is flat since October")
    offer = make(5, "U2", "I can run the offline eval with and without typo tolerance", thread=root)
    yes = make(7, "U1", "yes please, by Friday if possible", thread=root)
    actions = kinds(summarise_heuristic([root, offer, yes]).items, "action_item")
    assert [(a.owner, a.source_ids, a.due) for a in actions] == [
        ("U2", (offer.id, yes.id), date(2026, 12, 4))
    ]


def test_an_offer_nobody_takes_up_is_not_an_action(make: MessageFactory) -> None:
    offer = make(0, "U2", "I can look at the flaky test if that helps")
    assert kinds(summarise_heuristic([offer]).items, "action_item") == []


@pytest.mark.parametrize(
    "text",
    [
        "will update here once the contract test is green",
        "I need to fix the flaky contract test before the cut",
    ],
)
def test_other_commitment_phrasings(make: MessageFactory, text: str) -> None:
    actions = kinds(summarise_heuristic([make(0, "U1", text)]).items, "action_item")
    assert [a.owner for a in actions] == ["U1"]


def test_would_you_mind_is_a_request(make: MessageFactory) -> None:
    m = make(0, "U1", "<@U2> mind posting the freeze announcement before Thursday?")
    actions = kinds(summarise_heuristic([m]).items, "action_item")
    assert [(a.owner, a.due) for a in actions] == [("U2", date(2026, 12, 3))]


def test_consensus_on_a_proposal_made_in_a_reply(make: MessageFactory) -> None:
    root = make(0, "U1", "Datadog renewal quote is 38% higher. Time to look at alternatives?")
    prop = make(5, "U1", "ok. proposal: metrics move to Grafana Cloud in Q1", thread=root)
    a = make(6, "U2", "sgtm", thread=root)
    b = make(7, "U3", "\U0001f44d makes sense", thread=root)
    decisions = kinds(summarise_heuristic([root, prop, a, b]).items, "decision")
    assert [d.source_ids for d in decisions] == [(prop.id, a.id, b.id)]


def test_asker_closing_their_question_with_ok_then_is_a_decision(make: MessageFactory) -> None:
    root = make(0, "U1", "Should we keep the 5 min grace period or drop it to 1 min?")
    answer = make(2, "U2", "I'd keep 5 for now, 1 min flapped in staging", thread=root)
    close = make(3, "U1", "ok, keeping 5 then", thread=root)
    items = summarise_heuristic([root, answer, close]).items
    assert [(i.kind, i.source_ids) for i in items] == [("decision", (close.id,))]
    assert items[0].text == (
        "Should we keep the 5 min grace period or drop it to 1 min? \u2192 ok, keeping 5 then"
    )


# --- open questions --------------------------------------------------------------------


def test_unanswered_question_is_open(make: MessageFactory) -> None:
    q = make(0, "U1", "Is dark mode on the roadmap at all?")
    items = kinds(summarise_heuristic([q]).items, "open_question")
    assert [(i.source_ids, i.owner) for i in items] == [((q.id,), "U1")]


@pytest.mark.parametrize(
    "text",
    [
        "does anyone know if the pool size change is still on prod-eu",
        "Should we page on it or just email",
        "Anyone know why staging certs expire every 30 days",
    ],
)
def test_question_phrases_without_a_question_mark(make: MessageFactory, text: str) -> None:
    assert len(kinds(summarise_heuristic([make(0, "U1", text)]).items, "open_question")) == 1


def test_answer_in_thread_from_another_person_closes_a_question(make: MessageFactory) -> None:
    q = make(0, "U1", "Who approves credits over $500?")
    a = make(5, "U2", "Finance does, usually Priya", thread=q)
    assert kinds(summarise_heuristic([q, a]).items, "open_question") == []


def test_a_link_reply_answers_a_question(make: MessageFactory) -> None:
    q = make(0, "U1", "is there a dashboard for v1 traffic per customer?")
    a = make(5, "U2", "https://grafana.example.com/d/v1-usage", thread=q)
    assert kinds(summarise_heuristic([q, a]).items, "open_question") == []


def test_the_askers_own_reply_does_not_answer(make: MessageFactory) -> None:
    q = make(0, "U1", "Who owns the flaky test_rate_limiter?")
    a = make(1, "U1", "it failed 3 times today", thread=q)
    assert len(kinds(summarise_heuristic([q, a]).items, "open_question")) == 1


def test_i_dont_know_is_not_an_answer(make: MessageFactory) -> None:
    q = make(0, "U1", "Do their contracts allow a 6 month notice?")
    a = make(5, "U2", "good question, I don't know", thread=q)
    assert len(kinds(summarise_heuristic([q, a]).items, "open_question")) == 1


def test_never_mind_from_the_asker_resolves_a_question(make: MessageFactory) -> None:
    q = make(0, "U1", "Where is the runbook for kafka?")
    a = make(5, "U1", "never mind, found it", thread=q)
    assert kinds(summarise_heuristic([q, a]).items, "open_question") == []


def test_check_reaction_on_a_question_resolves_it(make: MessageFactory) -> None:
    q = make(0, "U1", "Where is the runbook for kafka?", reactions=("white_check_mark",))
    assert kinds(summarise_heuristic([q]).items, "open_question") == []


def test_a_link_posted_right_after_a_question_answers_it(make: MessageFactory) -> None:
    q = make(0, "U1", "Is there a macro for the export stuck at 99% issue?")
    a = make(20, "U2", "https://support.example.com/macros/277")
    assert kinds(summarise_heuristic([q, a]).items, "open_question") == []


def test_a_question_mark_inside_a_url_is_not_a_question(make: MessageFactory) -> None:
    m = make(0, "U1", "results are at <https://grafana.example.com/d/x?orgId=1&from=now-7d> fyi")
    assert summarise_heuristic([m]).items == ()


def test_a_request_to_someone_is_an_action_not_a_question(make: MessageFactory) -> None:
    m = make(0, "U1", "<@U2> could you size the audit log export work?")
    items = summarise_heuristic([m]).items
    assert [i.kind for i in items] == ["action_item"]


# --- edits, noise, threads -------------------------------------------------------------


def test_an_edit_replaces_the_text(make: MessageFactory) -> None:
    original = make(0, "U1", "I'll have a PR up tomorrow")
    edited = Message(
        channel=original.channel,
        ts=original.ts,
        user="U1",
        text="PR up by Thursday, tomorrow is full of interviews. I'll ping you.",
        edited_ts=f"{float(original.ts) + 600:.6f}",
    )
    for order in ([original, edited], [edited, original]):
        actions = kinds(summarise_heuristic(order).items, "action_item")
        assert len(actions) == 1
        assert actions[0].text.startswith("PR up by Thursday")
        assert actions[0].due == date(2026, 12, 3)


def test_an_edit_can_remove_an_item(make: MessageFactory) -> None:
    original = make(0, "U1", "We decided to drop IE11")
    edited = Message(
        channel=original.channel,
        ts=original.ts,
        user="U1",
        text="Still discussing IE11, more tomorrow",
        edited_ts=f"{float(original.ts) + 60:.6f}",
    )
    assert summarise_heuristic([original, edited]).items == ()


def test_deleted_message_is_not_read(make: MessageFactory) -> None:
    m = make(0, "U1", "We decided to drop IE11")
    tomb = Message(channel=m.channel, ts=m.ts, user=None, text="", subtype="message_deleted")
    result = summarise_heuristic([m, tomb])
    assert result.items == ()
    assert result.coverage.messages_read == 0


@pytest.mark.parametrize(
    ("text", "kwargs"),
    [
        ("I'll deploy api@4f2c1e by Friday. Decision: ship it", {"bot": True}),
        (":+1: :tada:", {}),
        ("https://docs.example.com/pm/2026-11-29", {}),
        ("morning all :wave:", {}),
        ("<@U2> has joined the channel. Can you believe it?", {"subtype": "channel_join"}),
    ],
)
def test_bot_and_noise_messages_make_no_items(
    make: MessageFactory, text: str, kwargs: dict[str, object]
) -> None:
    assert summarise_heuristic([make(0, "U1", text, **kwargs)]).items == ()  # type: ignore[arg-type]


def test_a_message_with_the_no_digest_marker_is_not_read(make: MessageFactory) -> None:
    secret = make(0, "U1", "[no-digest] We decided to lay off the team, I'll tell them Friday")
    other = make(1, "U2", "We decided to freeze on the 18th")
    result = summarise_heuristic([secret, other])
    assert [i.source_ids for i in result.items] == [(other.id,)]
    assert result.coverage.messages_read == 1
    kept = summarise_heuristic([secret, other], no_digest_marker=None)
    assert len(kept.items) == 3


def test_real_bot_message_payload_is_ignored() -> None:
    payload = json.loads((FIXTURES / "test_message_bot.bot_message_event_payload.json").read_text())
    event = payload["event"]
    m = Message.from_slack(event["channel"], {**event, "text": "I'll take care of it by Friday?"})
    assert m.is_bot
    assert summarise_heuristic([m]).items == ()


def test_thread_broadcast_payload_is_read_as_a_reply() -> None:
    payload = json.loads(
        (FIXTURES / "test_message_thread_broadcast.event_payload.json").read_text()
    )
    event = payload["event"]
    root = Message.from_slack(event["channel"], event["root"])
    reply = Message.from_slack(event["channel"], {**event, "text": "I'll write it up by Friday"})
    assert reply.is_reply and reply.thread_ts == root.ts
    result = summarise_heuristic([root, reply])
    assert result.coverage.threads_read == 1
    assert [i.owner for i in result.items] == ["U111"]


def test_replies_whose_parent_is_outside_the_window_are_still_read(make: MessageFactory) -> None:
    outside = make(-600, "U1", "old thread")
    reply = make(0, "U2", "I'll fix the flaky test by Friday", thread=outside)
    items = summarise_heuristic([reply]).items
    assert [i.source_ids for i in items] == [(reply.id,)]


def test_channels_are_summarised_separately(make: MessageFactory) -> None:
    a = make(0, "U1", "We decided to freeze on the 18th", channel="C0A")
    b = make(1, "U2", "Is the freeze on the 18th or the 19th?", channel="C0B")
    result = summarise_heuristic([a, b])
    assert [(i.kind, i.channel) for i in result.items] == [
        ("decision", "C0A"),
        ("open_question", "C0B"),
    ]
    assert result.coverage.channels == ("C0A", "C0B")


def test_coverage_counts_messages_and_threads(make: MessageFactory) -> None:
    root = make(0, "U1", "Proposal: drop IE11")
    msgs = [root, make(1, "U2", "+1", thread=root), make(30, "U3", "unrelated")]
    cov = summarise_heuristic(msgs).coverage
    assert (cov.messages_read, cov.threads_read) == (3, 1)
    assert cov.start is not None and cov.end is not None
    assert round((cov.end - cov.start).total_seconds()) == 30 * 60


async def test_the_heuristic_summariser_has_the_common_interface(make: MessageFactory) -> None:
    s = HeuristicSummariser(tz=ZoneInfo("Europe/Paris"))
    result = await s.summarise([make(0, "U1", "We decided to freeze on the 18th")])
    assert (s.name, result.summariser, len(result.items)) == ("heuristic", "heuristic", 1)


_PHRASES = [
    "We decided to ship on Friday",
    "I'll do it tomorrow",
    "<@U2> can you take a look?",
    "Is this still broken?",
    "+1",
    "done",
    "thanks!",
    ":tada:",
    "TODO: clean up",
    "let's go with option B",
    "never mind",
    "https://example.com",
    "no idea",
]


@settings(max_examples=60, deadline=None)
@given(
    st.lists(
        st.tuples(
            st.sampled_from(_PHRASES),
            st.sampled_from(["U1", "U2", "U3"]),
            st.integers(min_value=-1, max_value=10),
        ),
        max_size=25,
    )
)
def test_every_item_cites_messages_of_the_window_and_output_is_deterministic(
    spec: list[tuple[str, str, int]],
) -> None:
    msgs: list[Message] = []
    for n, (text, user, parent) in enumerate(spec):
        thread = msgs[parent].ts if 0 <= parent < len(msgs) else None
        msgs.append(
            Message(
                channel=CHANNEL,
                ts=f"{1796115600 + n * 60}.000{n:03d}",
                user=user,
                text=text,
                thread_ts=thread,
            )
        )
    first = summarise_heuristic(msgs)
    ids = {m.id for m in msgs}
    for item in first.items:
        assert item.source_ids and set(item.source_ids) <= ids
    assert summarise_heuristic(list(reversed(msgs))) == first


async def test_a_long_window_gives_the_same_result_off_the_event_loop(
    make: MessageFactory,
) -> None:
    msgs = [make(n, f"U{n % 7}", f"I'll fix item {n} by Friday") for n in range(1500)]
    s = HeuristicSummariser()
    assert await s.summarise(msgs) == s.summarise_sync(msgs)
