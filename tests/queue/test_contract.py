"""The JobQueue contract, run against SQLite and PostgreSQL alike."""

from __future__ import annotations

import asyncio
import random
from datetime import UTC, datetime

import pytest

from controlroom.envelope import Envelope
from controlroom.errors import JobNotFound, PermanentError, RetryLater
from controlroom.queue.base import Backoff, JobInfo, JobQueue, PeriodicSpec
from tests.queue.conftest import FakeClock, QueueFactory

NO_WAIT = Backoff(base=0.0, cap=0.0)


def envelope(dedupe_key: str = "Ev01", **kw: object) -> Envelope:
    return Envelope(
        kind="event",
        source="slack",
        body={"event": {"type": "app_mention", "text": "hi"}},
        dedupe_key=dedupe_key,
        team_id="T1",
        **kw,  # type: ignore[arg-type]
    )


async def opened(q: JobQueue) -> JobQueue:
    await q.open()
    return q


async def run_until_idle(q: JobQueue, limit: int = 50) -> list[JobInfo]:
    ran: list[JobInfo] = []
    for _ in range(limit):
        job = await q.run_one()
        if job is None:
            break
        ran.append(job)
    return ran


async def test_accept_commits_the_envelope_and_a_dispatch_job(
    queue_factory: QueueFactory, clock: FakeClock
) -> None:
    q = await opened(queue_factory(clock=clock))
    env = envelope()
    result = await q.accept(env)
    assert (result.envelope_id, result.duplicate) == (env.id, False)
    assert await q.get_envelope(env.id) == env
    jobs = await q.list_jobs(task="dispatch")
    assert [(j.args, j.status, j.envelope_id) for j in jobs] == [
        ({"envelope_id": env.id}, "queued", env.id)
    ]


async def test_accept_of_a_repeated_dedupe_key_returns_the_original_envelope(
    queue_factory: QueueFactory, clock: FakeClock
) -> None:
    q = await opened(queue_factory(clock=clock))
    first = envelope("Ev42")
    retry = envelope("Ev42", retry_num=1)
    assert (await q.accept(first)).duplicate is False
    again = await q.accept(retry)
    assert (again.envelope_id, again.duplicate) == (first.id, True)
    assert await q.get_envelope(retry.id) is None
    assert len(await q.list_jobs(task="dispatch")) == 1


async def test_concurrent_accepts_of_one_dedupe_key_store_it_once(
    queue_factory: QueueFactory, clock: FakeClock
) -> None:
    q = await opened(queue_factory(clock=clock))
    results = await asyncio.gather(*(q.accept(envelope("EvSame")) for _ in range(20)))
    assert sum(not r.duplicate for r in results) == 1
    assert len({r.envelope_id for r in results}) == 1
    assert (await q.counts())["queued"] == 1


async def test_get_envelope_of_an_unknown_id_is_none(queue_factory: QueueFactory) -> None:
    q = await opened(queue_factory())
    assert await q.get_envelope("nope") is None


async def test_enqueue_with_an_idempotency_key_is_a_no_op_while_the_first_exists(
    queue_factory: QueueFactory, clock: FakeClock
) -> None:
    q = await opened(queue_factory(clock=clock))
    first = await q.enqueue("notify", {"n": 1}, idempotency_key="deploy-7")
    assert first is not None
    assert await q.enqueue("notify", {"n": 2}, idempotency_key="deploy-7") is None
    other = await q.enqueue("notify", {"n": 3}, idempotency_key="deploy-8")
    assert other is not None and other != first
    job = await q.get_job(first)
    assert (job.task, job.args, job.idempotency_key, job.status) == (
        "notify",
        {"n": 1},
        "deploy-7",
        "queued",
    )


async def test_job_runs_with_its_args_and_succeeds(
    queue_factory: QueueFactory, clock: FakeClock
) -> None:
    q = await opened(queue_factory(clock=clock))
    seen: list[JobInfo] = []

    async def notify(job: JobInfo) -> None:
        seen.append(job)

    q.register("notify", notify)
    job_id = await q.enqueue("notify", {"channel": "C1"}, lock_key="C1", envelope_id="E1")
    done = await q.run_one()
    assert done is not None and done.id == job_id
    assert done.status == "succeeded"
    assert [(j.id, j.args, j.lock_key, j.envelope_id) for j in seen] == [
        (job_id, {"channel": "C1"}, "C1", "E1")
    ]
    assert await q.run_one() is None


async def test_delayed_job_is_not_run_before_its_time(
    queue_factory: QueueFactory, clock: FakeClock
) -> None:
    q = await opened(queue_factory(clock=clock))

    async def noop(job: JobInfo) -> None:
        return None

    q.register("later", noop)
    job_id = await q.enqueue("later", {}, delay=3600)
    assert job_id is not None
    assert await q.run_one() is None
    assert (await q.get_job(job_id)).run_at == pytest.approx(clock.now + 3600, abs=1e-3)


async def test_a_failure_retries_after_backoff_with_full_jitter(
    queue_factory: QueueFactory, clock: FakeClock
) -> None:
    backoff = Backoff(base=100.0, cap=1000.0)
    q = await opened(queue_factory(clock=clock, backoff=backoff, rng=random.Random(7)))

    async def flaky(job: JobInfo) -> None:
        raise ValueError("upstream 503")

    q.register("flaky", flaky)
    job_id = await q.enqueue("flaky", {}, max_attempts=5)
    assert job_id is not None
    expected = random.Random(7)
    done = await q.run_one()
    assert done is not None
    assert (done.status, done.attempts) == ("queued", 1)
    assert done.last_error == "ValueError('upstream 503')"
    assert done.run_at == pytest.approx(clock.now + expected.uniform(0, 100.0), abs=1e-3)
    assert await q.run_one() is None  # not due yet


async def test_a_job_dead_letters_after_max_attempts(
    queue_factory: QueueFactory, clock: FakeClock
) -> None:
    q = await opened(queue_factory(clock=clock, backoff=NO_WAIT))
    runs: list[int] = []

    async def broken(job: JobInfo) -> None:
        runs.append(job.attempts)
        raise RuntimeError(f"boom {job.attempts}")

    q.register("broken", broken)
    job_id = await q.enqueue("broken", {}, max_attempts=3)
    assert job_id is not None
    await run_until_idle(q)
    job = await q.get_job(job_id)
    assert runs == [0, 1, 2]
    assert (job.status, job.attempts, job.last_error) == ("dead", 3, "RuntimeError('boom 2')")


async def test_permanent_error_dead_letters_at_once(
    queue_factory: QueueFactory, clock: FakeClock
) -> None:
    q = await opened(queue_factory(clock=clock, backoff=NO_WAIT))

    async def refuse(job: JobInfo) -> None:
        raise PermanentError("channel_not_found")

    q.register("refuse", refuse)
    job_id = await q.enqueue("refuse", {}, max_attempts=5)
    assert job_id is not None
    assert len(await run_until_idle(q)) == 1
    job = await q.get_job(job_id)
    assert job.status == "dead"
    assert job.last_error is not None and "channel_not_found" in job.last_error


async def test_retry_later_reschedules_without_spending_an_attempt(
    queue_factory: QueueFactory, clock: FakeClock
) -> None:
    q = await opened(queue_factory(clock=clock))

    async def gated(job: JobInfo) -> None:
        raise RetryLater(30.0, "rate gate")

    q.register("gated", gated)
    job_id = await q.enqueue("gated", {}, max_attempts=1)
    assert job_id is not None
    done = await q.run_one()
    assert done is not None
    assert (done.status, done.attempts) == ("queued", 0)
    assert done.run_at == pytest.approx(clock.now + 30.0, abs=1e-3)
    assert await q.run_one() is None


async def test_retry_job_puts_a_dead_letter_back_with_a_fresh_budget(
    queue_factory: QueueFactory, clock: FakeClock
) -> None:
    q = await opened(queue_factory(clock=clock, backoff=NO_WAIT))
    healthy = False

    async def sometimes(job: JobInfo) -> None:
        if not healthy:
            raise RuntimeError("down")

    q.register("sometimes", sometimes)
    job_id = await q.enqueue("sometimes", {}, max_attempts=2)
    assert job_id is not None
    await run_until_idle(q)
    assert (await q.get_job(job_id)).status == "dead"
    healthy = True
    await q.retry_job(job_id)
    requeued = await q.get_job(job_id)
    assert (requeued.status, requeued.attempts) == ("queued", 0)
    await run_until_idle(q)
    assert (await q.get_job(job_id)).status == "succeeded"


async def test_retry_job_of_an_unknown_id_raises_job_not_found(
    queue_factory: QueueFactory,
) -> None:
    q = await opened(queue_factory())
    with pytest.raises(JobNotFound):
        await q.retry_job("12345")
    with pytest.raises(JobNotFound):
        await q.get_job("12345")


async def test_retry_all_dead_requeues_every_dead_letter(
    queue_factory: QueueFactory, clock: FakeClock
) -> None:
    q = await opened(queue_factory(clock=clock, backoff=NO_WAIT))

    async def refuse(job: JobInfo) -> None:
        raise PermanentError("no")

    q.register("refuse", refuse)
    for n in range(3):
        await q.enqueue("refuse", {"n": n})
    await run_until_idle(q)
    assert (await q.counts())["dead"] == 3
    assert await q.retry_all_dead() == 3
    counts = await q.counts()
    assert (counts["dead"], counts["queued"]) == (0, 3)


async def test_same_lock_key_runs_one_at_a_time_in_order_while_keys_run_in_parallel(
    queue_factory: QueueFactory,
) -> None:
    q = await opened(queue_factory(backoff=NO_WAIT))
    active: dict[str, int] = {"A": 0, "B": 0}
    order: dict[str, list[int]] = {"A": [], "B": []}
    overlap_seen = False
    finished = 0

    async def post(job: JobInfo) -> None:
        nonlocal overlap_seen, finished
        key = job.args["key"]
        active[key] += 1
        assert active[key] == 1, f"two jobs of key {key} overlapped"
        if active["A"] and active["B"]:
            overlap_seen = True
        order[key].append(job.args["n"])
        await asyncio.sleep(0.02)
        active[key] -= 1
        finished += 1

    q.register("post", post)
    for n in range(5):
        for key in ("A", "B"):
            await q.enqueue("post", {"key": key, "n": n}, lock_key=key)
    await asyncio.wait_for(q.run_worker(concurrency=4, stop=lambda: finished >= 10), 30)
    assert order == {"A": [0, 1, 2, 3, 4], "B": [0, 1, 2, 3, 4]}
    assert overlap_seen
    assert (await q.counts())["succeeded"] == 10


async def test_a_retried_job_still_blocks_later_jobs_of_its_key(
    queue_factory: QueueFactory, clock: FakeClock
) -> None:
    q = await opened(queue_factory(clock=clock, backoff=Backoff(base=60.0, cap=60.0)))
    ran: list[int] = []

    async def step(job: JobInfo) -> None:
        ran.append(job.args["n"])
        if job.args["n"] == 1 and job.attempts == 0:
            raise RuntimeError("transient")

    q.register("step", step)
    await q.enqueue("step", {"n": 1}, lock_key="deploy:prod")
    await q.enqueue("step", {"n": 2}, lock_key="deploy:prod")
    await q.run_one()
    assert await q.run_one() is None  # n=2 waits for n=1's retry
    assert ran == [1]


async def test_worker_runs_a_job_enqueued_while_it_waits(
    queue_factory: QueueFactory,
) -> None:
    q = await opened(queue_factory())
    done = asyncio.Event()

    async def ping(job: JobInfo) -> None:
        done.set()

    q.register("ping", ping)
    worker = asyncio.create_task(q.run_worker(concurrency=2, stop=done.is_set))
    await asyncio.sleep(0.05)
    await q.enqueue("ping", {})
    await asyncio.wait_for(done.wait(), 10)
    await asyncio.wait_for(worker, 10)


async def test_periodic_fires_once_per_tick_across_queues_and_restarts(
    queue_factory: QueueFactory,
) -> None:
    tick = datetime(2030, 1, 7, 9, 0, tzinfo=UTC).timestamp()
    clock = FakeClock(tick + 5)
    spec = PeriodicSpec(name="digest", cron="0 * * * *", task="digest", args={"team": "T1"})
    a = await opened(queue_factory(clock=clock))
    b = await opened(queue_factory(clock=clock))
    for q in (a, b):
        q.add_periodic(spec)
    fired = [*(await a.fire_due_periodics()), *(await b.fire_due_periodics())]
    assert len(fired) == 1
    assert (await a.get_job(fired[0])).args == {"team": "T1", "tick": tick}
    await a.close()
    restarted = await opened(queue_factory(clock=clock))
    restarted.add_periodic(spec)
    assert await restarted.fire_due_periodics() == []
    clock.advance(3600)
    again = await restarted.fire_due_periodics()
    assert len(again) == 1
    assert (await b.get_job(again[0])).args == {"team": "T1", "tick": tick + 3600}
    assert len(await b.list_jobs(task="digest")) == 2


async def test_periodic_in_a_time_zone_fires_at_local_time(queue_factory: QueueFactory) -> None:
    # 09:00 in Paris on a January day is 08:00 UTC.
    tick = datetime(2030, 1, 7, 8, 0, tzinfo=UTC).timestamp()
    clock = FakeClock(tick + 1)
    q = await opened(queue_factory(clock=clock))
    q.add_periodic(
        PeriodicSpec(name="standup", cron="0 9 * * *", task="standup", timezone="Europe/Paris")
    )
    fired = await q.fire_due_periodics()
    assert len(fired) == 1
    assert (await q.get_job(fired[0])).args == {"tick": tick}


async def test_cancel_jobs_cancels_queued_jobs_whose_args_contain_the_subset(
    queue_factory: QueueFactory, clock: FakeClock
) -> None:
    q = await opened(queue_factory(clock=clock))
    keep = await q.enqueue("post", {"team": "T2", "ctx": {"env": "prod"}})
    gone = [
        await q.enqueue("post", {"team": "T1", "ctx": {"env": "prod"}}),
        await q.enqueue("notify", {"team": "T1", "ctx": {"env": "prod", "x": 1}}),
    ]
    other_env = await q.enqueue("post", {"team": "T1", "ctx": {"env": "dev"}})
    n = await q.cancel_jobs(where_args={"team": "T1", "ctx": {"env": "prod"}}, reason="revoked")
    assert n == 2
    for job_id in gone:
        assert job_id is not None
        assert (await q.get_job(job_id)).status == "cancelled"
    for job_id in (keep, other_env):
        assert job_id is not None
        assert (await q.get_job(job_id)).status == "queued"


async def test_counts_report_every_status(queue_factory: QueueFactory, clock: FakeClock) -> None:
    q = await opened(queue_factory(clock=clock, backoff=NO_WAIT))

    async def ok(job: JobInfo) -> None:
        return None

    async def refuse(job: JobInfo) -> None:
        raise PermanentError("no")

    q.register("ok", ok)
    q.register("refuse", refuse)
    await q.enqueue("ok", {})
    await q.enqueue("refuse", {})
    await run_until_idle(q)
    await q.enqueue("waiting", {})
    await q.ping()
    counts = await q.counts()
    assert counts == {
        "queued": 1,
        "running": 0,
        "succeeded": 1,
        "failed": 0,
        "dead": 1,
        "cancelled": 0,
    }
    assert [j.task for j in await q.list_jobs(status="dead")] == ["refuse"]


async def test_worker_sleeps_while_the_only_due_job_waits_for_its_lock(
    queue_factory: QueueFactory,
) -> None:
    q = await opened(queue_factory(poll_interval=1.0))
    release = asyncio.Event()
    started = asyncio.Event()

    async def hold(job: JobInfo) -> None:
        started.set()
        await release.wait()

    q.register("hold", hold)
    await q.enqueue("hold", {"n": 1}, lock_key="K")
    await q.enqueue("hold", {"n": 2}, lock_key="K")  # due, but blocked by n=1
    await q.enqueue("unregistered", {})  # due, but no task here runs it
    claims = 0
    real_claim = q._claim  # type: ignore[attr-defined]

    async def counting_claim(limit: int) -> list[JobInfo]:
        nonlocal claims
        claims += 1
        return await real_claim(limit)

    q._claim = counting_claim  # type: ignore[attr-defined]
    worker = asyncio.create_task(q.run_worker(concurrency=4))
    await started.wait()
    await asyncio.sleep(0.5)
    assert claims <= 3, f"the worker polled {claims} times in 0.5 s"
    release.set()
    for _ in range(100):
        if (await q.counts())["succeeded"] == 2:
            break
        await asyncio.sleep(0.02)
    worker.cancel()
    with pytest.raises(asyncio.CancelledError):
        await worker
    assert (await q.counts())["succeeded"] == 2


async def test_cancel_jobs_matches_keys_with_unusual_characters_and_booleans(
    queue_factory: QueueFactory,
) -> None:
    q = await opened(queue_factory())
    hit = await q.enqueue("t", {'we"ird.key': "x", "flag": True, "n": 1})
    miss = await q.enqueue("t", {'we"ird.key': "x", "flag": 1, "n": 1})
    assert await q.cancel_jobs(where_args={'we"ird.key': "x", "flag": True}, reason="r") == 1
    assert hit is not None and miss is not None
    assert (await q.get_job(hit)).status == "cancelled"
    assert (await q.get_job(miss)).status == "queued"


async def test_worker_fires_and_runs_a_due_periodic_once(queue_factory: QueueFactory) -> None:
    clock = FakeClock()
    q = await opened(queue_factory(clock=clock))
    ticks: list[float] = []

    async def digest(job: JobInfo) -> None:
        ticks.append(job.args["tick"])

    q.register("digest", digest)
    q.add_periodic(PeriodicSpec(name="every-minute", cron="* * * * *", task="digest"))
    await asyncio.wait_for(q.run_worker(concurrency=2, stop=lambda: bool(ticks)), 10)
    assert ticks == [float(int(clock.now) // 60 * 60)]
    await run_until_idle(q)
    assert len(ticks) == 1


async def test_an_envelope_no_handler_wants_is_kept_and_deduplicated_without_a_job(
    queue_factory: QueueFactory, clock: FakeClock
) -> None:
    queue = await opened(queue_factory(clock=clock))
    env = Envelope(kind="event", source="slack", body={"event": {}}, dedupe_key="Ev-quiet")
    first = await queue.accept(env, dispatch=False)
    again = await queue.accept(
        Envelope(kind="event", source="slack", body={}, dedupe_key="Ev-quiet"), dispatch=False
    )
    assert (first.duplicate, again.duplicate) == (False, True)
    assert again.envelope_id == env.id
    stored = await queue.get_envelope(env.id)
    assert stored is not None and stored.dedupe_key == "Ev-quiet"
    assert await queue.list_jobs(task="dispatch") == []
