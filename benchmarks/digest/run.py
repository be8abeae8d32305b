"""Time and peak memory to digest synthetic messages with the heuristic summariser.

    uv run python benchmarks/digest/run.py [--messages 10000] [--repeat 3]

Messages are generated deterministically (seeded): 20 channels, about a third of them
thread replies, a mix of decisions, commitments with due dates, requests, questions,
answers, chatter, bot messages, emoji and links, a few edits. Time is the median of
``--repeat`` runs (perf_counter); peak memory is measured by tracemalloc in a separate
run (tracemalloc slows the code it measures), and covers the summariser's own
allocations, not the input messages.
"""

from __future__ import annotations

import argparse
import random
import statistics
import time
import tracemalloc
from collections.abc import Callable
from zoneinfo import ZoneInfo

from controlroom.workflows.digests.carry import carry_forward
from controlroom.workflows.digests.heuristic import summarise_heuristic
from controlroom.workflows.digests.model import DigestResult, Message
from controlroom.workflows.digests.render import render_digest

TOPICS = [
    "the failover script",
    "the billing worker",
    "CSV export",
    "the v1 search API",
    "the onboarding checklist",
    "SSO for the Team plan",
    "the kafka retention",
]
TEMPLATES = [
    "We decided to go ahead with {t}.",
    "let's go with option B for {t}",
    "Agreed, {t} ships next week",
    "I'll update {t} by Friday",
    "<@U{u:03d}> will look at {t} tomorrow",
    "<@U{u:03d}> can you review {t} before Monday?",
    "TODO: write the runbook for {t}",
    "Does anyone know who owns {t}?",
    "Should we move {t} to the new cluster?",
    "Is {t} still broken on staging?",
    "yes, fixed it this morning",
    "on it",
    "+1",
    ":tada:",
    "https://docs.example.com/{u}",
    "morning all",
    "I looked at {t}, it's the N+1 on widgets again, will dig more after lunch",
    "fwiw the dashboards for {t} look normal to me",
]


def synthetic(n: int, seed: int = 7) -> list[Message]:
    rng = random.Random(seed)
    t0 = 1796115600.0
    msgs: list[Message] = []
    roots: dict[str, list[str]] = {}
    for i in range(n):
        channel = f"C{rng.randrange(20):04d}"
        ts = f"{t0 + i * 8.64:.6f}"
        text = rng.choice(TEMPLATES).format(t=rng.choice(TOPICS), u=rng.randrange(200))
        user = f"U{rng.randrange(200):03d}"
        thread = None
        if roots.get(channel) and rng.random() < 0.35:
            thread = rng.choice(roots[channel][-30:])
        bot = rng.random() < 0.05
        msgs.append(
            Message(
                channel=channel,
                ts=ts,
                user=user,
                text=text,
                thread_ts=thread,
                bot_id="B1" if bot else None,
                reactions=("white_check_mark",) if rng.random() < 0.03 else (),
            )
        )
        if thread is None:
            roots.setdefault(channel, []).append(ts)
        if rng.random() < 0.02:  # an edit of this message
            msgs.append(
                Message(
                    channel=channel,
                    ts=ts,
                    user=user,
                    text=text + " (edited)",
                    thread_ts=thread,
                    edited_ts=f"{float(ts) + 30:.6f}",
                )
            )
    return msgs


def timed(fn: Callable[[], object], repeat: int) -> float:
    runs = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        runs.append(time.perf_counter() - start)
    return statistics.median(runs)


def peak_mib(fn: Callable[[], object]) -> float:
    tracemalloc.start()
    try:
        fn()
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    return peak / 2**20


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--messages", type=int, default=10_000)
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args()
    tz = ZoneInfo("Europe/Paris")
    print(f"{'messages':>9} {'step':<22} {'median s':>9} {'msg/s':>9} {'peak MiB':>9} {'items':>6}")
    for n in sorted({1_000, args.messages}):
        msgs = synthetic(n)
        result = summarise_heuristic(msgs, tz=tz)

        def heuristic(msgs: list[Message] = msgs) -> object:
            return summarise_heuristic(msgs, tz=tz)

        def carry(msgs: list[Message] = msgs, result: DigestResult = result) -> object:
            return carry_forward([], result.items, msgs)

        def render(result: DigestResult = result) -> object:
            return render_digest(result, permalink=lambda c, t: f"https://x.slack.com/{c}/p{t}")

        steps: list[tuple[str, Callable[[], object]]] = [
            ("heuristic summarise", heuristic),
            ("carry forward", carry),
            ("render Block Kit", render),
        ]
        for name, fn in steps:
            secs = timed(fn, args.repeat)
            mib = peak_mib(fn)
            print(
                f"{n:>9} {name:<22} {secs:>9.3f} {n / secs:>9.0f} {mib:>9.1f} "
                f"{len(result.items):>6}"
            )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
