"""accept() throughput and latency at 32 concurrent producers.

Compares, in one run and on the same disk:

- ``SqliteQueue`` (one writer thread, group commit), with synchronous=FULL and NORMAL;
- a naive baseline: the same two inserts (inbox row + dispatch job) committed one
  accept at a time, from a pool of 8 threads each holding its own sqlite3 connection
  (WAL, busy_timeout), which is what "just use sqlite3 from a thread pool" gives.

Run: uv run python benchmarks/queue/bench_accept.py [--accepts 4000] [--producers 32]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from controlroom.envelope import Envelope, new_id
from controlroom.queue._writer import connect
from controlroom.queue.sqlite import SqliteQueue


def make_envelopes(n: int, tag: str) -> list[Envelope]:
    return [
        Envelope(
            kind="event",
            source="slack",
            body={"event": {"type": "message", "text": "x" * 200, "n": i}},
            dedupe_key=f"{tag}-{i}",
            team_id="T1",
        )
        for i in range(n)
    ]


async def drive(accept, envelopes: list[Envelope], producers: int) -> tuple[float, list[float]]:
    """Run ``accept`` over ``envelopes`` from ``producers`` concurrent tasks; return
    wall time and per-call latencies."""
    latencies: list[float] = []
    pending = iter(envelopes)

    async def producer() -> None:
        for env in pending:
            t0 = time.perf_counter()
            await accept(env)
            latencies.append(time.perf_counter() - t0)

    start = time.perf_counter()
    await asyncio.gather(*(producer() for _ in range(producers)))
    return time.perf_counter() - start, latencies


async def bench_queue(path: Path, envelopes: list[Envelope], producers: int, sync: str):
    q = SqliteQueue(path, synchronous=sync)  # type: ignore[arg-type]
    await q.open()
    try:
        wall, lat = await drive(q.accept, envelopes, producers)
        batches = q._writer.batches
    finally:
        await q.close()
    return wall, lat, f"{len(envelopes) / max(1, batches):.1f} accepts/commit"


async def bench_naive(path: Path, envelopes: list[Envelope], producers: int, sync: str):
    # Same schema as the queue (create it through the queue once).
    q = SqliteQueue(path)
    await q.open()
    await q.close()
    local = threading.local()
    conns: list[object] = []
    lock = threading.Lock()

    def conn():
        c = getattr(local, "conn", None)
        if c is None:
            c = connect(str(path), synchronous=sync)  # type: ignore[arg-type]
            local.conn = c
            with lock:
                conns.append(c)
        return c

    def insert(env: Envelope) -> None:
        c = conn()
        now = time.time()
        c.execute("BEGIN IMMEDIATE")
        c.execute(
            "INSERT INTO queue_inbox (id, dedupe_key, json, received_at) VALUES (?, ?, ?, ?)"
            " ON CONFLICT (dedupe_key) DO NOTHING",
            (env.id, env.dedupe_key, env.to_json(), env.received_at),
        )
        c.execute(
            "INSERT INTO queue_jobs (id, task, args, status, attempts, max_attempts, run_at,"
            " envelope_id, created_at, updated_at)"
            " VALUES (?, 'dispatch', ?, 'queued', 0, 5, ?, ?, ?, ?)",
            (new_id(), json.dumps({"envelope_id": env.id}), now, env.id, now, now),
        )
        c.execute("COMMIT")

    pool = ThreadPoolExecutor(max_workers=8)
    loop = asyncio.get_running_loop()

    async def accept(env: Envelope) -> None:
        await loop.run_in_executor(pool, insert, env)

    try:
        wall, lat = await drive(accept, envelopes, producers)
    finally:
        pool.shutdown(wait=True)
        for c in conns:
            c.close()  # type: ignore[attr-defined]
    return wall, lat, "1 accept/commit, 8 connections"


def summarise(n: int, wall: float, lat: list[float]) -> tuple[float, float, float, float]:
    lat_ms = sorted(x * 1000 for x in lat)
    p99 = lat_ms[min(len(lat_ms) - 1, int(len(lat_ms) * 0.99))]
    return n / wall, statistics.median(lat_ms), p99, lat_ms[-1]


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--accepts", type=int, default=4000)
    parser.add_argument("--producers", type=int, default=32)
    parser.add_argument("--rounds", type=int, default=3, help="cases interleave; medians shown")
    parser.add_argument(
        "--dir", default=".", help="where the files go (a real disk: tmpfs would hide fsync)"
    )
    args = parser.parse_args()
    n, producers = args.accepts, args.producers
    cases = [
        ("SqliteQueue group commit, FULL", bench_queue, "FULL"),
        ("SqliteQueue group commit, NORMAL", bench_queue, "NORMAL"),
        ("naive per-row commit, FULL", bench_naive, "FULL"),
        ("naive per-row commit, NORMAL", bench_naive, "NORMAL"),
    ]
    stats: dict[str, list[tuple[float, float, float, float]]] = {c[0]: [] for c in cases}
    notes: dict[str, str] = {}
    with tempfile.TemporaryDirectory(dir=args.dir) as tmp:
        for r in range(args.rounds):
            for i, (name, fn, sync) in enumerate(cases):
                envelopes = make_envelopes(n, f"r{r}c{i}")
                path = Path(tmp) / f"r{r}c{i}.db"
                wall, lat, notes[name] = await fn(path, envelopes, producers, sync)
                stats[name].append(summarise(n, wall, lat))
    print(
        f"{n} accepts from {producers} concurrent producers; median of {args.rounds} "
        "interleaved rounds; each case on a fresh file\n"
    )
    print("| implementation | accepts/s | p50 ms | p99 ms | max ms | note |")
    print("|---|---:|---:|---:|---:|---|")
    for name, _, _ in cases:
        tput, p50, p99, worst = (statistics.median(col) for col in zip(*stats[name], strict=True))
        print(f"| {name} | {tput:,.0f} | {p50:.2f} | {p99:.2f} | {worst:.1f} | {notes[name]} |")


if __name__ == "__main__":
    asyncio.run(main())
