"""Distributed gate backends on PostgreSQL: Control Room's table vs pyrate-limiter 4.5.

Both get ``--workers`` concurrent workers (separate connection pools, as separate
processes would have) deciding calls against one shared limit set high enough never
to refuse on budget, so what is measured is the cost and correctness of deciding:

* Control Room ``PostgresGateBackend.reserve`` for a ``chat.postMessage`` (4 buckets: the
  workspace window, the channel token bucket, two cooldowns), then ``settle``;
* pyrate-limiter ``Limiter(PostgresBucket).try_acquire(blocking=False)`` (one bucket).

Reports decisions per second, p50/p99 latency, and how many calls were *refused
although budget was left* (pyrate's ``LOCK TABLE ... NOWAIT`` under contention).

    uv run python benchmarks/delivery/gate_backends.py [--workers 8] [--calls 200]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import threading
import time
import uuid

import psycopg

from controlroom.slack.gate import Bucket
from controlroom.slack.gate_pg import PostgresGateBackend

ADMIN = "postgresql://postgres@127.0.0.1:5432/postgres"


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


async def controlroom(
    url: str, workers: int, calls: int, window: float
) -> tuple[float, list[float], int]:
    backends = [await PostgresGateBackend(url, max_size=1).open() for _ in range(workers)]
    buckets = [
        Bucket(f"m|T1|chat.postMessage|{window}", "window", window, 1e9),
        Bucket("x|T1|chat.postMessage", "cooldown", 0.0, 0.0),
        Bucket("c|T1|C1", "gcra", 1e-9, 1e6),
        Bucket("x|T1|chat.postMessage|C1", "cooldown", 0.0, 0.0),
    ]
    latencies: list[float] = []
    refused = 0

    async def worker(backend: PostgresGateBackend) -> None:
        nonlocal refused
        for _ in range(calls):
            t = time.perf_counter()
            res = await backend.reserve(buckets, time.time(), 30.0)
            await backend.settle(buckets, res.at, time.time())
            latencies.append(time.perf_counter() - t)
            refused += 0 if res.booked else 1

    start = time.perf_counter()
    await asyncio.gather(*(worker(b) for b in backends))
    elapsed = time.perf_counter() - start
    for b in backends:
        await b.aclose()
    return elapsed, latencies, refused


def pyrate(url: str, workers: int, calls: int) -> tuple[float, list[float], int]:
    from psycopg_pool import ConnectionPool
    from pyrate_limiter import Duration, Limiter, Rate
    from pyrate_limiter.buckets.postgres import PostgresBucket

    pools = [ConnectionPool(url, min_size=1, max_size=1, open=True) for _ in range(workers)]
    limiters = [
        Limiter(PostgresBucket(pool, "slack_posts", [Rate(10**9, Duration.MINUTE)]))
        for pool in pools
    ]
    latencies: list[float] = []
    refused = 0
    lock = threading.Lock()

    def worker(limiter: Limiter) -> None:
        nonlocal refused
        for _ in range(calls):
            t = time.perf_counter()
            ok = limiter.try_acquire("T1:chat.postMessage", blocking=False)
            with lock:
                latencies.append(time.perf_counter() - t)
                refused += 0 if ok else 1

    threads = [threading.Thread(target=worker, args=(lim,)) for lim in limiters]
    start = time.perf_counter()
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    elapsed = time.perf_counter() - start
    for limiter in limiters:
        limiter.close()
    for pool in pools:
        if not pool.closed:
            pool.close()
    return elapsed, latencies, refused


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--workers", type=int, default=8)
    parser.add_argument("--calls", type=int, default=200)
    args = parser.parse_args()
    name = f"cr_slack_bench_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(ADMIN, autocommit=True) as admin:
        admin.execute(f'CREATE DATABASE "{name}"')
    url = ADMIN.rsplit("/", 1)[0] + "/" + name
    try:
        rows = [
            (
                "Control Room reserve+settle, 4 buckets, short window log",
                asyncio.run(controlroom(url, args.workers, args.calls, 0.001)),
            ),
            (
                f"Control Room reserve+settle, 4 buckets, log of {args.workers * args.calls}",
                asyncio.run(controlroom(url, args.workers, args.calls, 60.0)),
            ),
            (
                "pyrate-limiter 4.5 PostgresBucket (try_acquire, 1 bucket)",
                pyrate(url, args.workers, args.calls),
            ),
        ]
    finally:
        with psycopg.connect(ADMIN, autocommit=True) as admin:
            admin.execute(f'DROP DATABASE "{name}" WITH (FORCE)')
    total = args.workers * args.calls
    print(f"\n{args.workers} workers x {args.calls} decisions on one shared budget\n")
    print(f"{'backend':<62} {'dec/s':>7} {'p50 ms':>7} {'p99 ms':>7} {'refused w/ budget':>18}")
    for label, (elapsed, lat, refused) in rows:
        print(
            f"{label:<62} {total / elapsed:>7.0f} {1000 * statistics.median(lat):>7.2f} "
            f"{1000 * pct(lat, 0.99):>7.2f} {refused:>8} ({100 * refused / total:.0f}%)"
        )


if __name__ == "__main__":
    main()
