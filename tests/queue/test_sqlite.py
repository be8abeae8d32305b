"""Behaviour particular to the embedded SQLite queue: leases, heartbeats, group commit,
retention and URL selection."""

from __future__ import annotations

import asyncio
import sqlite3
from pathlib import Path

import pytest

from controlroom.envelope import Envelope
from controlroom.errors import QueueError
from controlroom.queue import SqliteQueue, open_queue, sqlite_path
from controlroom.queue._writer import SqliteWriter
from controlroom.queue.base import JobInfo, JobQueue, PeriodicSpec
from tests.queue.conftest import FakeClock


def envelope(n: int) -> Envelope:
    return Envelope(kind="webhook", source="hook:ci", body={"n": n}, dedupe_key=f"d{n}")


async def test_sqlite_queue_satisfies_the_job_queue_protocol(tmp_path: Path) -> None:
    async with SqliteQueue(tmp_path / "q.db") as q:
        assert isinstance(q, JobQueue)


async def test_file_is_in_wal_mode_and_accept_is_visible_to_another_connection(
    tmp_path: Path,
) -> None:
    path = tmp_path / "q.db"
    async with SqliteQueue(path) as q:
        env = envelope(1)
        await q.accept(env)
        with sqlite3.connect(path) as conn:
            assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
            row = conn.execute("SELECT id FROM queue_inbox").fetchone()
        conn.close()
        assert row[0] == env.id


async def test_concurrent_accepts_share_commits(tmp_path: Path) -> None:
    async with SqliteQueue(tmp_path / "q.db") as q:
        results = await asyncio.gather(*(q.accept(envelope(n)) for n in range(200)))
        assert len({r.envelope_id for r in results}) == 200
        assert q._writer.requests >= 200
        assert q._writer.batches < q._writer.requests
        assert (await q.counts())["queued"] == 200


async def test_a_running_job_whose_lease_expired_is_claimed_again(tmp_path: Path) -> None:
    clock = FakeClock()
    path = tmp_path / "q.db"
    crashed = SqliteQueue(path, clock=clock, lease_seconds=10)
    await crashed.open()
    job_id = await crashed.enqueue("work", {})
    assert job_id is not None
    crashed.register("work", _noop)
    claimed = await crashed._claim(1)  # a worker took it, then died without finishing
    assert [j.id for j in claimed] == [job_id]
    await crashed.close()
    async with SqliteQueue(path, clock=clock, lease_seconds=10) as survivor:
        survivor.register("work", _noop)
        assert await survivor.run_one() is None  # lease still held
        clock.advance(11)
        done = await survivor.run_one()
        assert done is not None and done.id == job_id
        assert (done.status, done.attempts) == ("succeeded", 1)
        assert done.last_error is not None and "lease expired" in done.last_error


async def test_a_job_that_keeps_killing_its_worker_is_dead_lettered(tmp_path: Path) -> None:
    clock = FakeClock()
    async with SqliteQueue(tmp_path / "q.db", clock=clock, lease_seconds=5) as q:
        q.register("poison", _noop)
        job_id = await q.enqueue("poison", {}, max_attempts=2)
        assert job_id is not None
        for _ in range(2):
            assert len(await q._claim(1)) == 1
            clock.advance(6)
        assert await q._claim(1) == []
        job = await q.get_job(job_id)
        assert (job.status, job.attempts) == ("dead", 2)


async def test_a_live_worker_extends_its_lease_while_the_job_runs(tmp_path: Path) -> None:
    clock = FakeClock()
    beats = asyncio.Event()
    release = asyncio.Event()

    async def fake_sleep(_: float) -> None:
        beats.set()
        await release.wait()

    async with SqliteQueue(tmp_path / "q.db", clock=clock, lease_seconds=10, sleep=fake_sleep) as q:
        started = asyncio.Event()
        finish = asyncio.Event()

        async def slow(job: JobInfo) -> None:
            started.set()
            await finish.wait()

        q.register("slow", slow)
        job_id = await q.enqueue("slow", {})
        runner = asyncio.create_task(q.run_one())
        await started.wait()
        await beats.wait()
        clock.advance(100)
        release.set()  # the heartbeat fires once, at clock + 100
        for _ in range(100):
            row = await q._read(
                lambda c: c.execute(
                    "SELECT lease_until FROM queue_jobs WHERE id = ?", (job_id,)
                ).fetchone()
            )
            if row["lease_until"] >= clock.now + 10 - 1e-6:
                break
            await asyncio.sleep(0.01)
        assert row["lease_until"] == pytest.approx(clock.now + 10)
        finish.set()
        done = await runner
        assert done is not None and done.status == "succeeded"


async def test_stopping_a_worker_hands_its_running_job_back(tmp_path: Path) -> None:
    async with SqliteQueue(tmp_path / "q.db") as q:
        started = asyncio.Event()

        async def forever(job: JobInfo) -> None:
            started.set()
            await asyncio.Event().wait()

        q.register("forever", forever)
        job_id = await q.enqueue("forever", {})
        assert job_id is not None
        worker = asyncio.create_task(q.run_worker(concurrency=1))
        await started.wait()
        worker.cancel()
        with pytest.raises(asyncio.CancelledError):
            await worker
        job = await q.get_job(job_id)
        assert (job.status, job.attempts) == ("queued", 0)


async def test_jobs_of_unregistered_tasks_are_left_for_other_workers(tmp_path: Path) -> None:
    async with SqliteQueue(tmp_path / "q.db") as q:
        q.register("mine", _noop)
        other = await q.enqueue("theirs", {})
        assert other is not None
        assert await q.run_one() is None
        assert (await q.get_job(other)).status == "queued"


async def test_purge_deletes_finished_jobs_past_retention_only(tmp_path: Path) -> None:
    clock = FakeClock()
    async with SqliteQueue(tmp_path / "q.db", clock=clock, retention_seconds=100) as q:
        q.register("ok", _noop)
        old = await q.enqueue("ok", {})
        await q.run_one()
        clock.advance(50)
        recent = await q.enqueue("ok", {})
        await q.run_one()
        clock.advance(60)
        assert await q.purge() == 1
        remaining = [j.id for j in await q.list_jobs()]
        assert remaining == [recent]
        assert old not in remaining


async def test_periodic_tick_missed_for_longer_than_the_lateness_is_skipped(
    tmp_path: Path,
) -> None:
    clock = FakeClock(1_893_456_000.0 + 3000)  # 50 minutes after an hourly tick
    async with SqliteQueue(tmp_path / "q.db", clock=clock, periodic_max_lateness=600) as q:
        q.add_periodic(PeriodicSpec(name="h", cron="0 * * * *", task="h"))
        assert await q.fire_due_periodics() == []
        clock.advance(700)  # the next tick, 100 s ago
        assert len(await q.fire_due_periodics()) == 1


def test_invalid_periodic_specs_are_rejected_with_their_name(tmp_path: Path) -> None:
    q = SqliteQueue(tmp_path / "q.db")
    with pytest.raises(QueueError, match=r"'bad'.*cron"):
        q.add_periodic(PeriodicSpec(name="bad", cron="every minute", task="t"))
    with pytest.raises(QueueError, match="time zone"):
        q.add_periodic(PeriodicSpec(name="tz", cron="* * * * *", task="t", timezone="Mars/X"))


async def test_enqueue_rejects_arguments_that_are_not_json(tmp_path: Path) -> None:
    async with SqliteQueue(tmp_path / "q.db") as q:
        with pytest.raises(QueueError, match="JSON"):
            await q.enqueue("t", {"when": object()})


async def test_using_a_closed_queue_raises_queue_error(tmp_path: Path) -> None:
    q = SqliteQueue(tmp_path / "q.db")
    with pytest.raises(QueueError, match="not open"):
        await q.enqueue("t", {})
    with pytest.raises(QueueError, match="not open"):
        await q.counts()
    with pytest.raises(QueueError, match="needs a file"):
        SqliteQueue(":memory:")


async def test_a_closed_queue_can_be_opened_again_and_keeps_its_jobs(tmp_path: Path) -> None:
    q = SqliteQueue(tmp_path / "nested" / "q.db")
    await q.open()
    job_id = await q.enqueue("t", {"a": 1})
    await q.close()
    await q.open()
    assert job_id is not None
    assert (await q.get_job(job_id)).args == {"a": 1}
    await q.close()


def test_open_queue_picks_the_implementation_from_the_url(tmp_path: Path) -> None:
    q = open_queue(f"sqlite:///{tmp_path}/x.db")
    assert isinstance(q, SqliteQueue) and q.path == f"{tmp_path}/x.db"
    assert sqlite_path("sqlite:///rel/q.db") == "rel/q.db"
    with pytest.raises(QueueError, match="unsupported"):
        open_queue("mysql://x")
    with pytest.raises(QueueError, match="names no file"):
        open_queue("sqlite:///")


async def _noop(job: JobInfo) -> None:
    return None


async def test_accept_stores_nothing_when_the_dispatch_job_cannot_be_stored(
    tmp_path: Path,
) -> None:
    path = tmp_path / "q.db"
    async with SqliteQueue(path) as q:
        with sqlite3.connect(path) as conn:
            conn.execute(
                "CREATE TRIGGER refuse BEFORE INSERT ON queue_jobs WHEN NEW.task = 'dispatch'"
                " BEGIN SELECT RAISE(ABORT, 'injected fault'); END"
            )
        conn.close()
        env = envelope(7)
        with pytest.raises(QueueError, match="injected fault"):
            await q.accept(env)
        assert await q.get_envelope(env.id) is None
        other = await q.enqueue("still-works", {})  # one failed request spoils no batch
        assert other is not None


async def test_writes_made_in_one_loop_pass_reach_the_writer_as_one_batch(tmp_path: Path) -> None:
    async with SqliteQueue(tmp_path / "q.db") as q:
        before = q._writer.batches
        await asyncio.gather(*(q.accept(envelope(n)) for n in range(50)))
        assert q._writer.batches == before + 1


async def test_a_write_staged_as_the_writer_stops_fails_instead_of_hanging(tmp_path: Path) -> None:
    writer = SqliteWriter(str(tmp_path / "w.db"))
    writer.start()
    pending = asyncio.create_task(writer.submit(lambda conn: 1))
    await asyncio.sleep(0)  # the write is staged; it is handed over on the next pass
    writer.stop()
    with pytest.raises(QueueError, match="not open"):
        await asyncio.wait_for(pending, 5)


async def test_the_inbox_purge_walks_from_the_oldest_and_stops_at_the_first_recent_one(
    tmp_path: Path,
) -> None:
    """Envelopes are stored in the order received, so the purge reads the old ones and
    one batch more, not the whole inbox: an old envelope stored after a recent one (it
    cannot happen in one process) waits for a later purge."""
    day = 86400.0

    def received(n: int, at: float) -> Envelope:
        return Envelope(
            kind="webhook", source="hook:ci", body={}, dedupe_key=f"r{n}", received_at=at
        )

    clock = FakeClock(100 * day)
    async with SqliteQueue(tmp_path / "q.db", clock=clock) as q:
        for n in range(3):
            await q.accept(received(n, 90 * day), dispatch=False)
        await q.accept(received(3, 99.9 * day), dispatch=False)
        await q.accept(received(4, 80 * day), dispatch=False)
        assert await q.purge_inbox(7 * day, batch=2) == 3
        kept = await q._read(
            lambda c: [r[0] for r in c.execute("SELECT dedupe_key FROM queue_inbox")]
        )
        assert sorted(kept) == ["r3", "r4"]


async def test_the_wal_is_checkpointed_every_4000_pages(tmp_path: Path) -> None:
    async with SqliteQueue(tmp_path / "q.db") as q:
        pages = await q._writer.submit(
            lambda conn: conn.execute("PRAGMA wal_autocheckpoint").fetchone()[0]
        )
        assert pages == 4000


async def test_an_envelope_just_accepted_is_read_back_from_memory_as_a_fresh_copy(
    tmp_path: Path,
) -> None:
    async with SqliteQueue(tmp_path / "q.db") as q:
        env = envelope(7)
        await q.accept(env)
        # The stored row is gone: only the in-memory copy can answer.
        await q._writer.submit(lambda conn: conn.execute("DELETE FROM queue_inbox"))
        first = await q.get_envelope(env.id)
        assert first == env
        assert first is not None
        first.body["n"] = "changed by a handler"
        assert await q.get_envelope(env.id) == env


async def test_purged_envelopes_are_not_served_from_memory(tmp_path: Path) -> None:
    clock = FakeClock(1_000_000.0)
    async with SqliteQueue(tmp_path / "q.db", clock=clock) as q:
        env = Envelope(kind="webhook", source="hook:ci", body={}, dedupe_key="p", received_at=1.0)
        await q.accept(env)
        job = (await q.list_jobs(limit=1))[0]
        await q._writer.submit(
            lambda conn: conn.execute(
                "UPDATE queue_jobs SET status = 'succeeded' WHERE id = ?", (job.id,)
            )
        )
        assert await q.purge_inbox(86400.0) == 1
        assert await q.get_envelope(env.id) is None


async def test_a_claim_walks_the_due_index_instead_of_sorting_the_backlog(
    tmp_path: Path,
) -> None:
    from controlroom.queue.sqlite import _CLAIMABLE, _CLAIMABLE_CASES

    async with SqliteQueue(tmp_path / "q.db") as q:
        for due in _CLAIMABLE_CASES:
            query = _CLAIMABLE.format(due=due, tasks=":t0")
            plan = await q._read(
                lambda c, query=query: [
                    row[3]
                    for row in c.execute(
                        "EXPLAIN QUERY PLAN " + query, {"now": 1.0, "limit": 8, "t0": "t"}
                    )
                ]
            )
            assert not any("TEMP B-TREE" in step for step in plan), plan


async def test_claims_take_expired_leases_and_due_jobs_in_run_at_order(tmp_path: Path) -> None:
    clock = FakeClock(1000.0)
    async with SqliteQueue(tmp_path / "q.db", clock=clock) as q:
        q.register("t", _noop_task)
        late = await q.enqueue("t", {"n": "queued, due at 1000"})
        stalled = await q.enqueue("t", {"n": "running, lease expired, due at 900"})
        await q._writer.submit(
            lambda conn: conn.execute(
                "UPDATE queue_jobs SET status = 'running', run_at = 900, lease_until = 950,"
                " worker_id = 'gone' WHERE id = ?",
                (stalled,),
            )
        )
        assert [job.id for job in await q._claim(1)] == [stalled]
        assert [job.id for job in await q._claim(5)] == [late]


async def _noop_task(job: JobInfo) -> None:
    return None
