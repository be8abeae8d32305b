"""Ingest benchmark: signed Events API requests against /slack/events.

    uv run python benchmarks/ingest/run.py [--seconds 8] [--rate 300] [--conns 32]
        [--rounds 3] [--only bare,bolt,controlroom,controlroom-handler]

Runs, in one invocation, (a) a bare Starlette/uvicorn route, (b) Bolt for Python's
AsyncApp with a no-op listener, (c) Control Room in embedded mode committing every event
to SQLite, and (d) the same with a no-op durable handler subscribed, so that every event
also becomes a job that the workers in the same process run. Each server runs in its
own process pinned to core 0; this load generator is pinned to core 1. Reports ack
latency at a fixed rate and throughput at saturation, with ratios to (a) and (b): the
medians of several rounds, each round measuring every server in turn (one round's ratio
varies by about +-10 % on a 2-core VM).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import platform
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

from loadgen import Result, fixed_rate, saturate, signed_event_requests
from servers import SIGNING_SECRET

HERE = Path(__file__).parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def pin(core: int) -> None:
    with contextlib.suppress(AttributeError, OSError):
        os.sched_setaffinity(0, {core % (os.cpu_count() or 1)})


@contextlib.contextmanager
def server(kind: str) -> Iterator[int]:
    port = free_port()
    with tempfile.TemporaryDirectory() as data:
        proc = subprocess.Popen(
            [sys.executable, str(HERE / "servers.py"), kind, str(port), data],
            preexec_fn=lambda: pin(0),
        )
        try:
            deadline = time.time() + 30
            while time.time() < deadline:
                with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port)):
                    break
                if proc.poll() is not None:
                    raise RuntimeError(f"{kind} server exited with {proc.returncode}")
                time.sleep(0.1)
            yield port
        finally:
            proc.terminate()
            proc.wait(timeout=20)


async def measure(kind: str, seconds: float, rate: float, conns: int) -> tuple[Result, Result]:
    """Latency at the fixed rate first, on a warmed and idle server, then throughput at
    saturation (measured the other way round, a server with durable handlers would still
    be running the jobs the saturation phase queued while its latency is measured)."""
    with server(kind) as port:
        warm = signed_event_requests(500, SIGNING_SECRET, port)
        await saturate(port, warm, conns, 2.0)
        await asyncio.sleep(2.0)
        fixed = await fixed_rate(
            port, signed_event_requests(int(rate * 10), SIGNING_SECRET, port), rate, 16
        )
        await asyncio.sleep(1.0)
        reqs = signed_event_requests(int(seconds * 30000), SIGNING_SECRET, port)
        sat = await saturate(port, reqs, conns, seconds)
    return sat, fixed


def machine() -> str:
    cpu = "unknown cpu"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    return f"{cpu}, {os.cpu_count()} cores, Python {platform.python_version()}, {platform.system()}"


def _median(values: list[float]) -> float:
    return statistics.median(values) if values else float("nan")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--seconds", type=float, default=8.0)
    ap.add_argument("--rate", type=float, default=300.0)
    ap.add_argument("--conns", type=int, default=32)
    ap.add_argument(
        "--rounds",
        type=int,
        default=3,
        help="rounds over all servers, in turn; the table shows each figure's median",
    )
    ap.add_argument("--only", default="bare,bolt,controlroom,controlroom-handler")
    args = ap.parse_args()
    pin(1)
    import uvloop

    kinds = args.only.split(",")
    rounds: dict[str, list[tuple[Result, Result]]] = {kind: [] for kind in kinds}
    for n in range(1, args.rounds + 1):
        for kind in kinds:
            sat, fixed = uvloop.run(measure(kind, args.seconds, args.rate, args.conns))
            rounds[kind].append((sat, fixed))
            print(
                f"round {n} {kind:20s} saturation {sat.rps:8.0f} req/s ({sat.errors} errors)"
                f"   at {args.rate:.0f}/s: p50 {fixed.pct(50):.2f} ms p99 {fixed.pct(99):.2f} ms"
                f" ({fixed.errors} errors)",
                flush=True,
            )
    print(f"\nmachine: {machine()}")
    rps = {kind: _median([sat.rps for sat, _ in runs]) for kind, runs in rounds.items()}
    bare, bolt = rps.get("bare"), rps.get("bolt")
    print(
        f"\nmedians of {args.rounds} round(s)\n"
        f"\n| server | req/s at saturation | vs bare | vs Bolt "
        f"| p50 ack @{args.rate:.0f}/s | p99 ack | vs Bolt, each round |"
    )
    print("|---|---|---|---|---|---|---|")
    for kind, runs in rounds.items():
        vb = f"{rps[kind] / bare:.2f}" if bare else "-"
        vo = f"{rps[kind] / bolt:.2f}" if bolt else "-"
        pairs = zip(runs, rounds["bolt"], strict=True) if "bolt" in rounds else ()
        each = " / ".join(f"{a.rps / b.rps:.2f}" for (a, _), (b, _) in pairs) or "-"
        p50 = _median([fixed.pct(50) for _, fixed in runs])
        p99 = _median([fixed.pct(99) for _, fixed in runs])
        print(f"| {kind} | {rps[kind]:.0f} | {vb} | {vo} | {p50:.2f} ms | {p99:.2f} ms | {each} |")


if __name__ == "__main__":
    main()
