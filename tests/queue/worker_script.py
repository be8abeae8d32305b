"""A worker process for the crash and multi-process tests (not a test module).

Usage: python worker_script.py DATABASE_URL OUT_FILE LEASE_SECONDS CONCURRENCY SLEEP

Runs jobs of task ``work``: each sleeps ``SLEEP`` seconds, then appends
``<n> <job id> <pid>`` to OUT_FILE. Prints ``ready`` once it is running; stops
gracefully on SIGTERM.
"""

from __future__ import annotations

import asyncio
import os
import signal
import sys

from controlroom.queue import open_queue
from controlroom.queue.base import JobInfo


async def main(url: str, out: str, lease: float, concurrency: int, pause: float) -> None:
    q = open_queue(url, lease_seconds=lease, poll_interval=0.2)
    await q.open()
    stopping = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stopping.set)

    async def work(job: JobInfo) -> None:
        await asyncio.sleep(pause)
        line = f"{job.args['n']} {job.id} {os.getpid()}\n".encode()
        fd = os.open(out, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            os.write(fd, line)
        finally:
            os.close(fd)

    q.register("work", work)
    print("ready", flush=True)
    try:
        await q.run_worker(concurrency=concurrency, stop=stopping.is_set)
    finally:
        await q.close()


if __name__ == "__main__":
    url, out, lease, concurrency, pause = sys.argv[1:6]
    asyncio.run(main(url, out, float(lease), int(concurrency), float(pause)))
