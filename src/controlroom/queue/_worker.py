"""The worker loop both queues share: claim up to ``concurrency`` jobs, run each in an
asyncio task, and sleep until woken (an in-process enqueue, a finished job, a database
notification) or until the next delayed job, lease expiry or periodic tick is due."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from typing import Protocol

import structlog

from controlroom.errors import QueueError
from controlroom.queue._common import describe_error
from controlroom.queue.base import JobInfo

__all__ = ["WorkerEngine", "run_worker_loop"]

_log = structlog.get_logger("controlroom.queue")


class WorkerEngine(Protocol):
    """What a queue implementation provides to the shared loop."""

    def _add_waker(self, event: asyncio.Event) -> None: ...

    def _remove_waker(self, event: asyncio.Event) -> None: ...

    async def _claim(self, limit: int) -> list[JobInfo]: ...

    async def _execute(self, job: JobInfo) -> JobInfo: ...

    async def _next_wakeup(self) -> float: ...

    async def _maintain(self) -> None: ...


async def run_worker_loop(
    engine: WorkerEngine, *, concurrency: int, stop: Callable[[], bool] | None
) -> None:
    """Run jobs until cancelled or until ``stop()`` is true; on ``stop`` the jobs in
    flight finish first, on cancellation they are cancelled (and handed back)."""
    if concurrency < 1:
        raise QueueError("concurrency must be at least 1")
    wake = asyncio.Event()
    engine._add_waker(wake)
    running: set[asyncio.Task[JobInfo]] = set()
    try:
        while not (stop is not None and stop()):
            wake.clear()
            await engine._maintain()
            for job in await engine._claim(concurrency - len(running)):
                running.add(asyncio.create_task(engine._execute(job)))
            if len(running) >= concurrency:
                await asyncio.wait(running, return_when=asyncio.FIRST_COMPLETED)
            else:
                timeout = await engine._next_wakeup()
                if timeout > 0 and not wake.is_set():
                    waiter = asyncio.create_task(wake.wait())
                    await asyncio.wait(
                        {waiter, *running}, timeout=timeout, return_when=asyncio.FIRST_COMPLETED
                    )
                    waiter.cancel()
                    with contextlib.suppress(asyncio.CancelledError):
                        await waiter
            _reap(running)
        if running:
            await asyncio.wait(running)
            _reap(running)
    finally:
        engine._remove_waker(wake)
        for task in running:
            task.cancel()
        if running:
            await asyncio.gather(*running, return_exceptions=True)


def _reap(running: set[asyncio.Task[JobInfo]]) -> None:
    for task in [t for t in running if t.done()]:
        running.discard(task)
        error = task.exception()
        if error is not None:
            _log.error("job settlement failed", error=describe_error(error))
