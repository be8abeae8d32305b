"""Score a summariser on the labelled digest development set.

    uv run python benchmarks/digest_quality/run.py [--summariser heuristic] [--verbose]

A predicted item matches a gold item when the kinds are equal and their source message
sets intersect (one-to-one, greedy in order). Prints precision and recall per item type
for each split named in the files (``dev``: written before the heuristic; ``heldout-1``,
``heldout-2``: written after it, see README.md for which were later tuned on) and for
all together; plus owner and due-date agreement on matched action items.

LLM summarisers: ``--summariser openai --base-url URL --model NAME`` (key from
``OPENAI_API_KEY``) or ``--summariser anthropic --model NAME`` (``ANTHROPIC_API_KEY``).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

from controlroom.workflows.digests.heuristic import summarise_heuristic
from controlroom.workflows.digests.model import DigestItem, DigestResult, Message

DEVSET = Path(__file__).parent / "devset"
KINDS = ("decision", "action_item", "open_question")


@dataclass
class Counts:
    pred: int = 0
    gold: int = 0
    tp_pred: int = 0
    tp_gold: int = 0
    owner_ok: int = 0
    due_ok: int = 0
    matched_actions: int = 0
    misses: list[str] = field(default_factory=list)
    extras: list[str] = field(default_factory=list)


def load(path: Path) -> dict[str, Any]:
    doc: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
    return doc


def messages_of(doc: dict[str, Any]) -> list[Message]:
    return [Message.from_slack(doc["channel"], m) for m in doc["messages"]]


async def run_summariser(name: str, doc: dict[str, Any], args: argparse.Namespace) -> DigestResult:
    tz = ZoneInfo(doc["timezone"])
    msgs = messages_of(doc)
    if name == "heuristic":
        return summarise_heuristic(msgs, tz=tz)
    import httpx

    from controlroom.config import Secret
    from controlroom.workflows.digests.llm import AnthropicSummariser, OpenAICompatibleSummariser

    async with httpx.AsyncClient(timeout=120) as http:
        if name == "openai":
            key = os.environ.get("OPENAI_API_KEY")
            s: OpenAICompatibleSummariser | AnthropicSummariser = OpenAICompatibleSummariser(
                args.base_url, args.model, Secret(key) if key else None, http, tz=tz
            )
        else:
            key = os.environ.get("ANTHROPIC_API_KEY")
            s = AnthropicSummariser(
                args.base_url or "https://api.anthropic.com",
                args.model,
                Secret(key) if key else None,
                http,
                tz=tz,
            )
        return await s.summarise(msgs)


def score(
    items: Sequence[DigestItem], gold: list[dict[str, Any]], counts: dict[str, Counts], label: str
) -> None:
    for kind in KINDS:
        c = counts[kind]
        preds = [i for i in items if i.kind == kind]
        golds = [g for g in gold if g["kind"] == kind]
        c.pred += len(preds)
        c.gold += len(golds)
        used: set[int] = set()
        for p in preds:
            p_ts = {sid.split(":", 1)[1] for sid in p.source_ids}
            hit = None
            for gi, g in enumerate(golds):
                if gi not in used and p_ts & set(g["sources"]):
                    hit = gi
                    break
            if hit is None:
                c.extras.append(f"{label}: {p.text[:90]!r}")
                continue
            used.add(hit)
            c.tp_pred += 1
            g = golds[hit]
            if kind == "action_item":
                c.matched_actions += 1
                c.owner_ok += int((p.owner or None) == (g.get("owner") or None))
                due = p.due.isoformat() if p.due else None
                c.due_ok += int(due == (g.get("due") or None))
        c.tp_gold += len(used)
        for gi, g in enumerate(golds):
            if gi not in used:
                c.misses.append(f"{label}: {g.get('text', g['sources'])!r}")


def ratio(a: int, b: int) -> str:
    return f"{a / b:.2f}" if b else "  - "


def report(title: str, counts: dict[str, Counts], verbose: bool) -> None:
    print(f"\n{title}")
    print(f"  {'type':<14} {'pred':>5} {'gold':>5} {'precision':>10} {'recall':>7}")
    for kind in KINDS:
        c = counts[kind]
        print(
            f"  {kind:<14} {c.pred:>5} {c.gold:>5} {ratio(c.tp_pred, c.pred):>10} "
            f"{ratio(c.tp_gold, c.gold):>7}"
        )
    a = counts["action_item"]
    print(
        f"  action items matched: owner agrees {a.owner_ok}/{a.matched_actions}, "
        f"due date agrees {a.due_ok}/{a.matched_actions}"
    )
    if verbose:
        for kind in KINDS:
            for line in counts[kind].extras:
                print(f"    FP {kind}: {line}")
            for line in counts[kind].misses:
                print(f"    FN {kind}: {line}")


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument(
        "--summariser", default="heuristic", choices=["heuristic", "openai", "anthropic"]
    )
    ap.add_argument("--set", default=str(DEVSET), help="folder of labelled conversations")
    ap.add_argument("--base-url", default="")
    ap.add_argument("--model", default="")
    ap.add_argument("--verbose", "-v", action="store_true")
    args = ap.parse_args(argv)
    files = sorted(Path(args.set).glob("*.json"))
    if not files:
        print(f"no conversations in {args.set}", file=sys.stderr)
        return 2
    splits: dict[str, dict[str, Counts]] = {}
    n: dict[str, int] = {}
    for path in files:
        doc = load(path)
        split = doc.get("split", "dev")
        result = asyncio.run(run_summariser(args.summariser, doc, args))
        for key in (split, "all"):
            counts = splits.setdefault(key, {k: Counts() for k in KINDS})
            score(result.items, doc["gold"], counts, doc["name"])
            n[key] = n.get(key, 0) + 1
    print(f"summariser: {args.summariser}   set: {args.set}")
    order = ["dev", *sorted(k for k in splits if k not in ("dev", "all")), "all"]
    for key in order:
        if key in splits:
            title = {"dev": "development split", "all": "all"}.get(key, f"split {key}")
            report(f"{title} ({n[key]} conversations)", splits[key], args.verbose and key != "all")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
