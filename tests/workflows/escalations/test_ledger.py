"""The escalations ledger: one room per source message, resumable step by step."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import insert
from sqlalchemy.exc import IntegrityError

from controlroom.store.db import Database
from controlroom.workflows.escalations.ledger import (
    Escalation,
    InvalidTransition,
    Ledger,
    LedgerError,
    Source,
    State,
    escalations,
)

SOURCE = Source("T1", "C0SUPPORT", "1764474000.000100")


class Clock:
    def __init__(self) -> None:
        self.now = datetime(2026, 11, 30, 3, 47, tzinfo=UTC)

    def __call__(self) -> datetime:
        return self.now

    def advance(self, **kw: float) -> None:
        self.now += timedelta(**kw)


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def ledger(db: Database, clock: Clock) -> Ledger:
    return Ledger(db, clock=clock)


async def walk_to_briefed(ledger: Ledger, e: Escalation) -> Escalation:
    await ledger.reserve_name(e.id, name="incident-acme-2026-001", seq=1)
    await ledger.record_channel_created(e.id, channel_id="C0ROOM", name="incident-acme-2026-001")
    await ledger.record_invited(e.id, invited=["U1", "U2"])
    return await ledger.record_briefed(e.id, message_ts="1764474001.000200")


async def test_the_first_claim_wins_and_others_see_the_same_row(ledger: Ledger) -> None:
    first, won = await ledger.claim(SOURCE, claimant="evt-1", escalated_by="U1")
    second, won2 = await ledger.claim(SOURCE, claimant="evt-2", escalated_by="U2")
    assert (won, won2) == (True, False)
    assert second == first
    assert (first.state, first.escalated_by, first.next_step) == (
        State.CLAIMED,
        "U1",
        State.CHANNEL_CREATED,
    )


async def test_the_winning_claimant_wins_again_when_it_retries(ledger: Ledger) -> None:
    first, _ = await ledger.claim(SOURCE, claimant="job-1", escalated_by="U1")
    again, won = await ledger.claim(SOURCE, claimant="job-1", escalated_by="U1")
    assert won is True
    assert again.id == first.id


async def test_racing_claims_have_exactly_one_winner(ledger: Ledger) -> None:
    results = await asyncio.gather(
        *(ledger.claim(SOURCE, claimant=f"evt-{i}", escalated_by=f"U{i}") for i in range(12))
    )
    assert sum(won for _, won in results) == 1
    assert len({e.id for e, _ in results}) == 1


async def test_the_database_itself_refuses_a_second_row_per_source(db: Database) -> None:
    now = datetime(2026, 11, 30, tzinfo=UTC)
    row = {
        "workspace": "T1",
        "source_channel": "C1",
        "source_ts": "1.2",
        "claimant": "a",
        "escalated_by": "U1",
        "state": "claimed",
        "created_at": now,
        "updated_at": now,
    }
    await db.run(lambda c: c.execute(insert(escalations).values(**row)))
    with pytest.raises(IntegrityError):
        await db.run(lambda c: c.execute(insert(escalations).values(**row)))


async def test_the_steps_walk_the_state_machine_to_done(ledger: Ledger) -> None:
    e, _ = await ledger.claim(SOURCE, claimant="evt-1", escalated_by="U1")
    e = await ledger.record_channel_created(
        e.id, channel_id="C0ROOM", name="incident-acme-2026-001"
    )
    assert (e.state, e.next_step, e.room_channel_id) == (
        State.CHANNEL_CREATED,
        State.INVITED,
        "C0ROOM",
    )
    e = await ledger.record_invited(
        e.id, invited=["U1", "U2"], failed={"dana@x.example": "users_not_found"}
    )
    assert (e.invited, dict(e.invite_failures)) == (
        ("U1", "U2"),
        {"dana@x.example": "users_not_found"},
    )
    e = await ledger.record_briefed(e.id, message_ts="1.1")
    e = await ledger.record_pointer_posted(e.id, message_ts="2.2")
    e = await ledger.record_done(e.id)
    assert (e.state, e.briefing_ts, e.pointer_ts, e.next_step, e.finished) == (
        State.DONE,
        "1.1",
        "2.2",
        None,
        True,
    )
    assert await ledger.by_room("T1", "C0ROOM") == e
    assert await ledger.by_source(SOURCE) == e


async def test_repeating_a_recorded_step_is_a_no_op(ledger: Ledger) -> None:
    e, _ = await ledger.claim(SOURCE, claimant="evt-1", escalated_by="U1")
    e = await walk_to_briefed(ledger, e)
    again = await ledger.record_channel_created(e.id, channel_id="C0ROOM", name="x")
    assert (again.state, again.room_name) == (State.BRIEFED, "incident-acme-2026-001")
    assert (
        await ledger.record_briefed(e.id, message_ts="1764474001.000200")
    ).state == State.BRIEFED


async def test_a_second_channel_for_the_same_escalation_is_refused(ledger: Ledger) -> None:
    e, _ = await ledger.claim(SOURCE, claimant="evt-1", escalated_by="U1")
    await ledger.record_channel_created(e.id, channel_id="C0ROOM", name="incident-acme-2026-001")
    with pytest.raises(InvalidTransition) as info:
        await ledger.record_channel_created(e.id, channel_id="C0OTHER", name="incident-acme-2")
    assert (info.value.current, info.value.wanted) == ("channel_created", "channel_created")


async def test_steps_cannot_be_skipped(ledger: Ledger) -> None:
    e, _ = await ledger.claim(SOURCE, claimant="evt-1", escalated_by="U1")
    with pytest.raises(InvalidTransition, match="from claimed to briefed"):
        await ledger.record_briefed(e.id, message_ts="1.1")
    with pytest.raises(LedgerError, match="no such escalation"):
        await ledger.record_done(999)


async def test_a_worker_that_died_mid_way_resumes_from_the_last_step(
    db: Database, clock: Clock
) -> None:
    """The name is reserved before the channel is created, so a resumed worker creates
    (or adopts) the same room instead of a second one."""
    first = Ledger(db, clock=clock)
    e, _ = await first.claim(SOURCE, claimant="job-1", escalated_by="U1")
    await first.reserve_name(e.id, name="incident-acme-2026-004", seq=4)
    # ...the worker dies here, maybe after conversations.create succeeded.
    other = Database(db.url)
    try:
        resumed = Ledger(other, clock=clock)
        e2, won = await resumed.claim(SOURCE, claimant="job-1", escalated_by="U1")
        assert won and e2.next_step == State.CHANNEL_CREATED
        kept = await resumed.reserve_name(e2.id, name="incident-acme-2026-005", seq=5)
        assert (kept.room_name, kept.seq) == ("incident-acme-2026-004", 4)
        e3 = await resumed.record_channel_created(e2.id, channel_id="C0ROOM", name=kept.room_name)
        assert e3.next_step == State.INVITED
    finally:
        other.dispose()


async def test_a_clash_renames_only_before_the_channel_exists(ledger: Ledger) -> None:
    e, _ = await ledger.claim(SOURCE, claimant="evt-1", escalated_by="U1")
    await ledger.reserve_name(e.id, name="incident-acme-2026-004", seq=4)
    renamed = await ledger.rename(e.id, name="incident-acme-2026-004-2")
    assert renamed.room_name == "incident-acme-2026-004-2"
    await ledger.record_channel_created(e.id, channel_id="C0ROOM", name=renamed.room_name or "")
    with pytest.raises(InvalidTransition):
        await ledger.rename(e.id, name="incident-acme-2026-004-3")


async def test_resolving_happens_once_and_only_after_the_briefing(
    ledger: Ledger, clock: Clock
) -> None:
    e, _ = await ledger.claim(SOURCE, claimant="evt-1", escalated_by="U1")
    with pytest.raises(InvalidTransition):
        await ledger.record_resolved(e.id, by="U9")
    await walk_to_briefed(ledger, e)
    clock.advance(hours=2)
    resolved = await ledger.record_resolved(e.id, by="U9")
    assert (resolved.state, resolved.resolved_by, resolved.resolved_at) == (
        State.RESOLVED,
        "U9",
        clock.now,
    )
    with pytest.raises(InvalidTransition) as info:
        await ledger.record_resolved(e.id, by="U8")
    assert info.value.current == "resolved"
    summary = await ledger.record_summary(e.id, summary_ts="9.9")
    assert (summary.summary_ts, summary.resolved_by) == ("9.9", "U9")


async def test_resolved_rooms_are_due_for_archive_after_the_delay(
    ledger: Ledger, clock: Clock
) -> None:
    e, _ = await ledger.claim(SOURCE, claimant="evt-1", escalated_by="U1")
    await walk_to_briefed(ledger, e)
    await ledger.record_resolved(e.id, by="U9")
    clock.advance(minutes=59)
    assert await ledger.due_for_archive(delay=timedelta(hours=1)) == []
    clock.advance(minutes=1)
    assert [x.id for x in await ledger.due_for_archive(delay=timedelta(hours=1))] == [e.id]
    archived = await ledger.record_archived(e.id)
    assert (archived.state, archived.archived_at) == (State.ARCHIVED, clock.now)
    assert await ledger.due_for_archive(delay=timedelta(hours=1)) == []


async def test_a_stalled_claim_can_be_taken_over_after_the_stale_delay(
    ledger: Ledger, clock: Clock
) -> None:
    e, _ = await ledger.claim(SOURCE, claimant="job-dead", escalated_by="U1")
    clock.advance(minutes=4)
    _, won = await ledger.claim(
        SOURCE, claimant="job-new", escalated_by="U2", stale_after=timedelta(minutes=5)
    )
    assert won is False
    clock.advance(minutes=1)
    taken, won = await ledger.claim(
        SOURCE, claimant="job-new", escalated_by="U2", stale_after=timedelta(minutes=5)
    )
    assert won is True
    assert (taken.id, taken.claimant, taken.escalated_by) == (e.id, "job-new", "U1")
    _, old_wins = await ledger.claim(SOURCE, claimant="job-dead", escalated_by="U1")
    assert old_wins is False


async def test_a_finished_escalation_is_never_taken_over(ledger: Ledger, clock: Clock) -> None:
    e, _ = await ledger.claim(SOURCE, claimant="job-1", escalated_by="U1")
    await walk_to_briefed(ledger, e)
    await ledger.record_pointer_posted(e.id, message_ts="2.2")
    await ledger.record_done(e.id)
    clock.advance(days=1)
    _, won = await ledger.claim(
        SOURCE, claimant="job-2", escalated_by="U2", stale_after=timedelta(minutes=5)
    )
    assert won is False


async def test_unfinished_and_crm_pending_lists_for_sweepers(ledger: Ledger, clock: Clock) -> None:
    a, _ = await ledger.claim(SOURCE, claimant="job-a", escalated_by="U1")
    b, _ = await ledger.claim(Source("T1", "C0SUPPORT", "2.0"), claimant="job-b", escalated_by="U1")
    await walk_to_briefed(ledger, b)
    await ledger.record_pointer_posted(b.id, message_ts="3.3")
    await ledger.record_done(b.id)
    clock.advance(minutes=10)
    assert [e.id for e in await ledger.unfinished(idle_for=timedelta(minutes=5))] == [a.id]
    assert await ledger.crm_pending() == []
    pending = await ledger.set_customer(
        b.id, account_id="ACC-1001", customer_name="Acme", crm_pending=True
    )
    assert (pending.account_id, pending.crm_pending) == ("ACC-1001", True)
    assert [e.id for e in await ledger.crm_pending()] == [b.id]
    await ledger.record_error(a.id, "conversations.create: ratelimited")
    got = await ledger.get(a.id)
    assert got is not None and got.last_error == "conversations.create: ratelimited"
