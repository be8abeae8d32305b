"""Crash recovery and multi-process workers, with real processes: a worker killed with
SIGKILL mid-run loses no job (at-least-once), and two workers sharing a store run each
job exactly once when nothing crashes."""

from __future__ import annotations

import asyncio
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest

from controlroom.queue import open_queue

SCRIPT = Path(__file__).with_name("worker_script.py")
pytestmark = pytest.mark.slow


@pytest.fixture(
    params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)],
)
def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path}/crash.db"
    else:
        from tests.queue.conftest import _pg_reset

        url = request.getfixturevalue("pg_database")
        _pg_reset(url)
        yield url


class Worker:
    def __init__(self, url: str, out: Path, *, lease: float, concurrency: int, pause: float):
        self.proc = subprocess.Popen(
            [sys.executable, str(SCRIPT), url, str(out), str(lease), str(concurrency), str(pause)],
            stdout=subprocess.PIPE,
            text=True,
        )
        assert self.proc.stdout is not None
        assert self.proc.stdout.readline().strip() == "ready"

    def kill(self) -> None:
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(10)
        self._close()

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        assert self.proc.wait(20) == 0
        self._close()

    def _close(self) -> None:
        if self.proc.stdout is not None:
            self.proc.stdout.close()


def lines(out: Path) -> list[list[str]]:
    if not out.exists():
        return []
    return [line.split() for line in out.read_text().splitlines() if line]


async def wait_until(predicate: object, seconds: float) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if await predicate():  # type: ignore[operator]
            return
        await asyncio.sleep(0.1)
    raise AssertionError(f"condition not reached within {seconds}s")


async def test_killed_worker_loses_no_job(store_url: str, tmp_path: Path) -> None:
    out = tmp_path / "ran.txt"
    q = open_queue(store_url)
    await q.open()
    try:
        for n in range(200):
            await q.enqueue("work", {"n": n})
        first = Worker(store_url, out, lease=2.0, concurrency=8, pause=0.02)
        try:

            async def some_ran() -> bool:
                return len(lines(out)) >= 50

            await wait_until(some_ran, 60)
        finally:
            first.kill()
        assert len({n for n, *_ in lines(out)}) < 200  # it really died mid-way
        second = Worker(store_url, out, lease=2.0, concurrency=8, pause=0.02)
        try:

            async def all_done() -> bool:
                return (await q.counts())["succeeded"] == 200

            await wait_until(all_done, 90)
        finally:
            second.stop()
        assert {int(n) for n, *_ in lines(out)} == set(range(200))
        counts = await q.counts()
        assert counts["succeeded"] == 200
        assert sum(counts.values()) == 200
        recovered = [j for j in await q.list_jobs(limit=200) if j.attempts == 1]
        assert recovered, "no job was taken over from the killed worker"
    finally:
        await q.close()


async def test_two_workers_run_each_job_exactly_once(store_url: str, tmp_path: Path) -> None:
    out = tmp_path / "ran.txt"
    q = open_queue(store_url)
    await q.open()
    workers = [Worker(store_url, out, lease=10.0, concurrency=4, pause=0.01) for _ in range(2)]
    try:
        for n in range(300):
            await q.enqueue("work", {"n": n})

        async def all_done() -> bool:
            return (await q.counts())["succeeded"] == 300

        await wait_until(all_done, 90)
    finally:
        for w in workers:
            w.stop()
        await q.close()
    ran = lines(out)
    assert Counter(int(n) for n, *_ in ran) == Counter(range(300))
    assert len({pid for *_, pid in ran}) == 2
