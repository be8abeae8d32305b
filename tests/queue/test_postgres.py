"""Behaviour particular to the PostgreSQL queue: stalled-worker recovery, fencing,
schema installation, LISTEN/NOTIFY wake-ups across processes."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator

import psycopg
import pytest

from controlroom.queue import open_queue
from controlroom.queue.base import JobInfo, JobQueue
from controlroom.queue.postgres import PostgresQueue
from tests.queue.conftest import PG_ADMIN_URL, _pg_reset, _pg_url

pytestmark = pytest.mark.postgres


@pytest.fixture
async def pg_url(pg_database: str) -> AsyncIterator[str]:
    _pg_reset(pg_database)
    yield pg_database


def _age_worker_heartbeat(url: str, worker_id: int | None) -> None:
    """Make a worker look dead (no heartbeat for an hour)."""
    assert worker_id is not None
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(
            "UPDATE procrastinate_workers SET last_heartbeat = now() - interval '1 hour'"
            " WHERE id = %s",
            (worker_id,),
        )


async def _noop(job: JobInfo) -> None:
    return None


async def test_postgres_queue_satisfies_the_protocol_and_open_queue_picks_it(
    pg_url: str,
) -> None:
    q = open_queue(pg_url.replace("postgresql://", "postgres://"))
    assert isinstance(q, PostgresQueue) and isinstance(q, JobQueue)
    await q.open()
    await q.ping()
    await q.close()


async def test_job_of_a_worker_that_stopped_heart_beating_is_run_again(pg_url: str) -> None:
    async with PostgresQueue(pg_url, lease_seconds=5) as dead, PostgresQueue(pg_url) as alive:
        dead.register("work", _noop)
        alive.register("work", _noop)
        job_id = await alive.enqueue("work", {"n": 1})
        claimed = await dead._claim(1)  # taken, then its process "dies"
        assert [j.id for j in claimed] == [job_id]
        assert await alive.run_one() is None
        assert await alive.recover_stalled() == 0  # heartbeat still fresh
        _age_worker_heartbeat(pg_url, dead._worker_id)
        assert await alive.recover_stalled() == 1
        done = await alive.run_one()
        assert done is not None and done.id == job_id
        assert (done.status, done.attempts) == ("succeeded", 1)
        assert done.last_error is not None and "stopped heart-beating" in done.last_error
        # The presumed-dead worker finishing late must not overwrite the outcome.
        await dead._settle(claimed[0].id, finish="failed", attempts=9, error="late")
        assert (await alive.get_job(claimed[0].id)).status == "succeeded"


async def test_a_live_worker_pruned_as_stalled_registers_again(pg_url: str) -> None:
    async with PostgresQueue(pg_url) as q, PostgresQueue(pg_url) as other:
        q.register("work", _noop)
        await q.enqueue("work", {})
        assert (await q.run_one()) is not None
        old_id = q._worker_id
        _age_worker_heartbeat(pg_url, old_id)
        await other.recover_stalled()  # prunes q's worker row
        await q.enqueue("work", {})
        done = await q.run_one()
        assert done is not None and done.status == "succeeded"
        assert q._worker_id not in (None, old_id)


async def test_a_job_that_keeps_killing_its_worker_is_dead_lettered(pg_url: str) -> None:
    async with PostgresQueue(pg_url) as q:
        q.register("poison", _noop)
        job_id = await q.enqueue("poison", {}, max_attempts=2)
        assert job_id is not None
        for _ in range(2):
            victim = PostgresQueue(pg_url)
            await victim.open()
            victim.register("poison", _noop)
            assert len(await victim._claim(1)) == 1
            victim_id = victim._worker_id
            victim._beat.cancel()  # type: ignore[union-attr]
            victim._worker_id = None  # so close() leaves its row, like a killed process
            await victim.close()
            _age_worker_heartbeat(pg_url, victim_id)
            await q.recover_stalled()
        job = await q.get_job(job_id)
        assert (job.status, job.attempts) == ("dead", 2)


async def test_cancelling_a_job_frees_its_idempotency_key(pg_url: str) -> None:
    async with PostgresQueue(pg_url) as q:
        first = await q.enqueue("t", {"team": "T9"}, idempotency_key="k")
        assert await q.enqueue("t", {}, idempotency_key="k") is None
        assert await q.cancel_jobs(where_args={"team": "T9"}, reason="uninstalled") == 1
        second = await q.enqueue("t", {}, idempotency_key="k")
        assert second is not None and second != first
        cancelled = await q.get_job(str(first))
        assert cancelled.last_error == "cancelled: uninstalled"


async def test_worker_is_woken_by_a_job_another_process_enqueued(pg_url: str) -> None:
    done = asyncio.Event()

    async def ping(job: JobInfo) -> None:
        done.set()

    async with (
        PostgresQueue(pg_url, poll_interval=60.0) as worker_q,
        PostgresQueue(pg_url) as producer,
    ):
        worker_q.register("ping", ping)
        worker = asyncio.create_task(worker_q.run_worker(concurrency=1, stop=done.is_set))
        await asyncio.sleep(0.3)  # let it fall asleep on the 60 s poll
        await producer.enqueue("ping", {})
        await asyncio.wait_for(done.wait(), 20)
        await asyncio.wait_for(worker, 20)


async def test_schema_is_installed_once_by_queues_opening_together() -> None:
    name = f"cr_queue_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(PG_ADMIN_URL, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    try:
        queues = [PostgresQueue(_pg_url(name), pool_size=2) for _ in range(3)]
        await asyncio.gather(*(q.open() for q in queues))
        job_id = await queues[0].enqueue("t", {})
        assert (await queues[2].get_job(str(job_id))).status == "queued"
        for q in queues:
            await q.close()
        again = PostgresQueue(_pg_url(name))
        await again.open()  # an existing schema is left as it is
        assert (await again.counts())["queued"] == 1
        await again.close()
    finally:
        with psycopg.connect(PG_ADMIN_URL, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


async def test_accept_stores_nothing_when_the_dispatch_job_cannot_be_stored(
    pg_url: str,
) -> None:
    from controlroom.envelope import Envelope
    from controlroom.errors import QueueError

    async with PostgresQueue(pg_url) as q:
        with psycopg.connect(pg_url, autocommit=True) as conn:
            conn.execute(
                "ALTER TABLE procrastinate_jobs ADD CONSTRAINT refuse_dispatch"
                " CHECK (task_name <> 'dispatch')"
            )
        env = Envelope(kind="webhook", source="hook:ci", body={}, dedupe_key="d1")
        try:
            with pytest.raises(QueueError, match="refuse_dispatch"):
                await q.accept(env)
            assert await q.get_envelope(env.id) is None
        finally:
            with psycopg.connect(pg_url, autocommit=True) as conn:
                conn.execute("ALTER TABLE procrastinate_jobs DROP CONSTRAINT refuse_dispatch")
        assert (await q.accept(env)).duplicate is False


async def test_opening_a_missing_database_raises_queue_error_naming_it() -> None:
    from controlroom.errors import QueueError

    q = PostgresQueue(_pg_url("cr_queue_does_not_exist"))
    with pytest.raises(QueueError, match="cr_queue_does_not_exist"):
        await q.open()
    with pytest.raises(QueueError, match="not open"):
        await q.ping()


async def test_purge_deletes_finished_jobs_past_retention_only(pg_url: str) -> None:
    async with PostgresQueue(pg_url, retention_seconds=7 * 86400) as q:
        q.register("ok", _noop)
        old = await q.enqueue("ok", {})
        await q.run_one()
        with psycopg.connect(pg_url, autocommit=True) as conn:
            conn.execute("UPDATE procrastinate_events SET at = now() - interval '8 days'")
        recent = await q.enqueue("ok", {})
        await q.run_one()
        waiting = await q.enqueue("later", {})
        await q.purge()
        assert {j.id for j in await q.list_jobs()} == {recent, waiting}
        assert old is not None


async def test_unknown_job_ids_raise_job_not_found(pg_url: str) -> None:
    from controlroom.errors import JobNotFound

    async with PostgresQueue(pg_url) as q:
        with pytest.raises(JobNotFound):
            await q.get_job("not-a-number")
