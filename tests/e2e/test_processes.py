"""Reliability with real processes: ``controlroom serve``, ``worker`` and ``up`` on
loopback ports, fed signed Slack Events API requests over HTTP, killed with SIGKILL.

- two web replicas and two workers on one PostgreSQL database process a burst, with
  Slack-style retries sent to the other replica, exactly once per event;
- a worker killed in the middle of jobs (``up`` on SQLite, ``worker`` on PostgreSQL)
  loses nothing that was acknowledged: after a restart every event is processed, and
  only the few jobs in flight at the kill ran twice (at-least-once, idempotent effect);
- a web process killed in the middle of a burst: every request answered 200 is in the
  inbox and is then processed.

The counting workflow (``tests/e2e/counting_workflow.py``) records each run.
"""

from __future__ import annotations

import random
import signal
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.e2e.procs import (
    Delivery,
    Procs,
    acked,
    deliver_all,
    event_body,
    event_ids,
    pg_database,
    processed,
    queue_view,
    runs,
    settled,
    wait_until,
    write_config,
)

pytestmark = [pytest.mark.slow, pytest.mark.timeout(90)]

WORKERS = 8  # jobs at once per worker process


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path}/data/controlroom.db"
    else:
        with pg_database() as url:
            yield url


def _procs(tmp_path: Path, database_url: str, *, pause: float, lease: float) -> Procs:
    config = write_config(
        tmp_path,
        database_url=database_url,
        run_log=tmp_path / "runs.log",
        pause=pause,
        lease_seconds=lease,
        workers=WORKERS,
    )
    return Procs(config, tmp_path / "logs")


@pytest.mark.postgres
async def test_two_web_replicas_and_two_workers_process_a_burst_with_retries_exactly_once(
    tmp_path: Path,
) -> None:
    with pg_database() as url:
        procs = _procs(tmp_path, url, pause=0.005, lease=10.0)
        try:
            webs = [procs.start("serve"), procs.start("serve")]
            workers = [procs.start("worker", "--concurrency", "4") for _ in range(2)]
            urls = [await web.url() for web in webs]
            ids = event_ids(400)
            rng = random.Random(2)
            t0 = int(time.time())
            burst = [
                Delivery(urls[n % 2], eid, event_body(eid, n), timestamp=t0)
                for n, eid in enumerate(ids)
            ]
            # Slack retries: the same event (same body, a later timestamp, so a new
            # signature) at the other replica, racing the original
            retries = [
                Delivery(urls[(n + 1) % 2], ids[n], burst[n].body, retry_num=1, timestamp=t0 + 1)
                for n in sorted(rng.sample(range(len(ids)), 50))
            ]
            deliveries = burst + retries
            rng.shuffle(deliveries)
            answers = await deliver_all(deliveries, concurrency=24, slack_retries=3)
            assert Counter(status for _, status in answers) == {200: 450}

            await wait_until(
                lambda: settled(url, set(ids)), 45, "the burst was not processed", procs.tails
            )
            ran = runs(tmp_path / "runs.log")
            view = await queue_view(url)
        finally:
            procs.close()
    assert set(view.inbox) == set(ids)  # one envelope per event, retries not stored
    assert Counter(r.event_id for r in ran) == Counter(ids)  # every event ran exactly once
    assert all(r.first for r in ran)
    assert {r.envelope_id for r in ran} == set(view.inbox.values())
    assert {r.pid for r in ran} == {w.pid for w in workers}  # both workers took part
    assert view.counts["succeeded"] == 800  # 400 dispatch + 400 run_handler jobs
    assert view.counts["dead"] == 0


async def test_a_worker_killed_mid_jobs_loses_no_acknowledged_event(
    database_url: str, tmp_path: Path
) -> None:
    """SQLite: ``controlroom up`` (edge and workers in one process) is the worker that
    dies; PostgreSQL: a ``controlroom worker`` beside a ``serve`` replica."""
    embedded = database_url.startswith("sqlite")
    procs = _procs(tmp_path, database_url, pause=0.05, lease=3.0)
    run_log = tmp_path / "runs.log"
    try:
        if embedded:
            first = procs.start("up", "--no-sandbox")
            web = first
        else:
            web = procs.start("serve")
            first = procs.start("worker", "--concurrency", str(WORKERS))
        url = await web.url()
        ids = event_ids(200)
        answers = await deliver_all(
            [Delivery(url, eid, event_body(eid, n)) for n, eid in enumerate(ids)],
            concurrency=8,
            slack_retries=3,
        )
        assert acked(answers) == set(ids)

        async def some_ran() -> bool:
            return len(runs(run_log)) >= 40

        await wait_until(some_ran, 30, "the first worker ran too few jobs", procs.tails)
        first.kill()
        before = processed(database_url)
        assert len(before) < len(ids), "the worker finished before it was killed"
        if embedded:
            second = procs.start("up", "--no-sandbox")
        else:
            second = procs.start("worker", "--concurrency", str(WORKERS))

        await wait_until(
            lambda: settled(database_url, set(ids)),
            40,
            "acknowledged events were lost",
            procs.tails,
        )
        view = await queue_view(database_url)
        ran = runs(run_log)
    finally:
        procs.close()
    assert processed(database_url) == set(ids)
    assert set(view.inbox) == set(ids)
    counted = Counter(r.event_id for r in ran)
    assert set(counted) == set(ids)  # every acknowledged event ran to completion
    # at-least-once: only jobs in flight when the worker died can have run twice
    assert sum(counted.values()) - len(ids) <= WORKERS
    # the idempotent claim was granted once per event (a run killed between the claim
    # and its log line leaves the event with only a later, non-first run)
    firsts = Counter(r.event_id for r in ran if r.first)
    assert set(firsts.values()) == {1}
    assert len(firsts) >= len(ids) - WORKERS
    assert {r.pid for r in ran if r.event_id not in before} <= {second.pid}
    assert view.recovered >= 1, "no job was taken over from the killed worker"
    assert view.counts["dead"] == 0
    assert view.counts["succeeded"] == 2 * len(ids)


async def test_a_web_process_killed_mid_burst_keeps_every_acknowledged_event(
    database_url: str, tmp_path: Path
) -> None:
    """SQLite: the killed process is ``controlroom up``; PostgreSQL: a ``serve`` replica
    (no worker yet). Requests that got no answer may or may not be stored (Slack would
    retry them); every one answered 200 must be."""
    embedded = database_url.startswith("sqlite")
    # a lease only needs to run out where handlers were killed (the embedded case)
    procs = _procs(tmp_path, database_url, pause=0.01, lease=3.0 if embedded else 10.0)
    run_log = tmp_path / "runs.log"
    try:
        web = procs.start("up", "--no-sandbox") if embedded else procs.start("serve")
        url = await web.url()
        ids = event_ids(400)
        answers: list[tuple[Delivery, int | None]] = []

        def kill_after_80_acks() -> None:
            if web.proc.returncode is None and len(acked(answers)) >= 80:
                web.kill()  # while the other requests are in flight

        await deliver_all(
            [Delivery(url, eid, event_body(eid, n)) for n, eid in enumerate(ids)],
            concurrency=16,
            answers=answers,
            on_answer=kill_after_80_acks,
        )
        assert web.proc.returncode == -signal.SIGKILL
        ok = acked(answers)
        # 503 (store unavailable) and no answer are both "not accepted": Slack retries
        assert {status for _, status in answers} <= {200, 503, None}
        assert 80 <= len(ok) < len(ids), "the web process was not killed mid-burst"
        stored = await queue_view(database_url)
        assert ok <= set(stored.inbox), "an acknowledged event is missing from the inbox"
        worker = (
            procs.start("up", "--no-sandbox")
            if embedded
            else procs.start("worker", "--concurrency", str(WORKERS))
        )

        await wait_until(
            lambda: settled(database_url, set(stored.inbox)),
            40,
            "stored events were not processed",
            procs.tails,
        )
        ran = runs(run_log)
        after = await queue_view(database_url)
    finally:
        procs.close()
    assert after.inbox == stored.inbox  # nothing appeared or vanished after the kill
    assert processed(database_url) == set(stored.inbox)
    counted = Counter(r.event_id for r in ran)
    assert set(counted) == set(stored.inbox)
    if embedded:  # handlers were running in the killed process too
        assert sum(counted.values()) - len(counted) <= WORKERS
    else:  # no worker had run anything before the kill: exactly once
        assert set(counted.values()) == {1}
        assert {r.pid for r in ran} == {worker.pid}
    assert after.counts["dead"] == 0
