"""The retention part of the JobQueue contract (``purge_inbox`` and ``purge_jobs``), run
against SQLite and PostgreSQL alike."""

from __future__ import annotations

import asyncio

import pytest

from controlroom.envelope import Envelope
from controlroom.errors import PermanentError, QueueError
from controlroom.queue.base import AcceptResult, Backoff, JobInfo
from tests.queue.conftest import FakeClock, QueueFactory
from tests.queue.test_contract import NO_WAIT, opened, run_until_idle

DAY = 86400.0
WEEK = 7 * DAY


def envelope(dedupe_key: str, received_at: float, **kw: object) -> Envelope:
    return Envelope(
        kind="event",
        source="slack",
        body={"event": {"type": "app_mention", "text": "hi"}},
        dedupe_key=dedupe_key,
        team_id="T1",
        received_at=received_at,
        **kw,  # type: ignore[arg-type]
    )


async def ok(job: JobInfo) -> None:
    return None


async def test_purge_inbox_deletes_old_envelopes_whose_jobs_all_finished_and_keeps_recent_ones(
    queue_factory: QueueFactory, clock: FakeClock
) -> None:
    q = await opened(queue_factory(clock=clock))
    q.register("dispatch", ok)
    succeeded = envelope("Ev-succeeded", clock.now)
    await q.accept(succeeded)
    assert [j.status for j in await run_until_idle(q)] == ["succeeded"]
    no_job = envelope("Ev-no-handler", clock.now)
    await q.accept(no_job, dispatch=False)
    cancelled = envelope("Ev-cancelled", clock.now)
    await q.accept(cancelled)
    assert await q.cancel_jobs(where_args={"envelope_id": cancelled.id}, reason="revoked") == 1
    clock.advance(8 * DAY)
    six_days_old = envelope("Ev-six-days", clock.now - 6 * DAY)
    await q.accept(six_days_old, dispatch=False)
    today = envelope("Ev-today", clock.now)
    await q.accept(today, dispatch=False)

    assert await q.purge_inbox(WEEK) == 3

    for gone in (succeeded, no_job, cancelled):
        assert await q.get_envelope(gone.id) is None
    assert await q.get_envelope(six_days_old.id) == six_days_old
    assert await q.get_envelope(today.id) == today
    assert await q.purge_inbox(WEEK) == 0


async def test_purge_inbox_keeps_envelopes_that_queued_retrying_or_running_jobs_name(
    queue_factory: QueueFactory, clock: FakeClock
) -> None:
    q = await opened(queue_factory(clock=clock, backoff=Backoff(base=DAY, cap=DAY)))
    pending = envelope("Ev-pending", clock.now)
    await q.accept(pending)  # its dispatch job stays queued: no worker runs "dispatch"
    retrying = envelope("Ev-retrying", clock.now)
    await q.accept(retrying, dispatch=False)
    running = envelope("Ev-running", clock.now)
    await q.accept(running, dispatch=False)

    async def flaky(job: JobInfo) -> None:
        raise ValueError("upstream 503")

    q.register("flaky", flaky)
    await q.enqueue("flaky", {}, envelope_id=retrying.id)
    failed_once = await q.run_one()
    assert failed_once is not None
    assert (failed_once.status, failed_once.attempts) == ("queued", 1)

    started, release = asyncio.Event(), asyncio.Event()

    async def hold(job: JobInfo) -> None:
        started.set()
        await release.wait()

    q.register("hold", hold)
    await q.enqueue("hold", {}, envelope_id=running.id)
    runner = asyncio.create_task(q.run_one())
    await asyncio.wait_for(started.wait(), 10)
    clock.advance(8 * DAY)

    assert await q.purge_inbox(WEEK) == 0
    for kept in (pending, retrying, running):
        assert await q.get_envelope(kept.id) == kept

    release.set()
    held = await asyncio.wait_for(runner, 10)
    assert held is not None and held.status == "succeeded"
    assert await q.purge_inbox(WEEK) == 1  # the running job finished: its envelope goes
    assert await q.get_envelope(running.id) is None
    assert await q.get_envelope(pending.id) == pending


async def test_a_dead_letters_envelope_survives_the_purge_and_the_dead_letter_can_be_retried(
    queue_factory: QueueFactory, clock: FakeClock
) -> None:
    q = await opened(queue_factory(clock=clock, backoff=NO_WAIT))
    healthy = False
    handled: list[Envelope | None] = []

    async def dispatch(job: JobInfo) -> None:
        if not healthy:
            raise PermanentError("channel_not_found")
        handled.append(await q.get_envelope(str(job.args["envelope_id"])))

    q.register("dispatch", dispatch)
    # Received a month ago (the clock stays put: PostgreSQL schedules the retry by it).
    env = envelope("Ev-dead", clock.now - 30 * DAY)
    await q.accept(env)
    await run_until_idle(q)
    [dead] = await q.list_jobs(status="dead")

    assert await q.purge_inbox(WEEK) == 0
    assert await q.get_envelope(env.id) == env

    healthy = True
    await q.retry_job(dead.id)
    await run_until_idle(q)
    assert handled == [env]
    assert (await q.get_job(dead.id)).status == "succeeded"
    assert await q.purge_inbox(WEEK) == 1  # finished now, and older than the retention


async def test_after_its_envelope_is_purged_a_dedupe_key_is_accepted_again(
    queue_factory: QueueFactory, clock: FakeClock
) -> None:
    """De-duplication lasts as long as the retention (the documented consequence)."""
    q = await opened(queue_factory(clock=clock))
    first = envelope("Ev-redelivered", clock.now)
    await q.accept(first, dispatch=False)
    clock.advance(8 * DAY)
    late = envelope("Ev-redelivered", clock.now, retry_num=1)
    assert await q.accept(late, dispatch=False) == AcceptResult(first.id, duplicate=True)

    assert await q.purge_inbox(WEEK) == 1

    assert await q.accept(late, dispatch=False) == AcceptResult(late.id, duplicate=False)
    assert await q.get_envelope(late.id) == late


async def test_purge_inbox_works_through_more_rows_than_a_batch_past_kept_ones(
    queue_factory: QueueFactory, clock: FakeClock
) -> None:
    q = await opened(queue_factory(clock=clock))
    # The oldest envelopes are kept (their jobs are queued): whole batches of
    # candidates may be kept without the purge stopping early.
    kept = [envelope(f"Ev-kept-{n}", clock.now + n) for n in range(7)]
    for env in kept:
        await q.accept(env)
    old = [envelope(f"Ev-old-{n}", clock.now + 10 + n) for n in range(23)]
    for env in old:
        await q.accept(env, dispatch=False)
    clock.advance(8 * DAY)

    assert await q.purge_inbox(WEEK, batch=5) == 23

    for env in old:
        assert await q.get_envelope(env.id) is None
    for env in kept:
        assert await q.get_envelope(env.id) == env


async def test_purge_jobs_deletes_old_succeeded_and_cancelled_jobs_in_batches_only(
    queue_factory: QueueFactory, clock: FakeClock
) -> None:
    q = await opened(queue_factory(clock=clock, backoff=NO_WAIT))

    async def refuse(job: JobInfo) -> None:
        raise PermanentError("no")

    q.register("ok", ok)
    q.register("refuse", refuse)
    for n in range(11):
        await q.enqueue("ok", {"n": n})
    await q.enqueue("refuse", {})
    await q.enqueue("later", {"team_id": "T9"})
    assert await q.cancel_jobs(where_args={"team_id": "T9"}, reason="uninstalled") == 1
    await run_until_idle(q)
    clock.advance(8 * DAY)
    await q.enqueue("ok", {"n": "recent"})
    await run_until_idle(q)
    await q.enqueue("waiting", {})

    assert await q.purge_jobs(WEEK, batch=4) == 12

    counts = await q.counts()
    assert (counts["succeeded"], counts["dead"], counts["queued"], counts["cancelled"]) == (
        1,
        1,
        1,
        0,
    )
    [recent] = await q.list_jobs(status="succeeded")
    assert recent.args == {"n": "recent"}


async def test_purges_refuse_a_negative_age_and_an_empty_batch(
    queue_factory: QueueFactory,
) -> None:
    q = await opened(queue_factory())
    with pytest.raises(QueueError, match="older_than"):
        await q.purge_inbox(-1.0)
    with pytest.raises(QueueError, match="batch"):
        await q.purge_inbox(WEEK, batch=0)
    with pytest.raises(QueueError, match="batch"):
        await q.purge_jobs(WEEK, batch=0)
