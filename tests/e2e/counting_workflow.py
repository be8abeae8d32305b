"""A tiny workflow for the process tests: it counts the Slack ``message`` events it ran.

Workers load it with ``workflows.enabled = ["tests.e2e.counting_workflow:workflow"]`` and
``[workflows.counting] run_log = "/path"``, ``pause = 0.05``. For every run of its handler:

1. it sleeps ``pause`` seconds (to widen the window in which a killed worker dies mid-job);
2. it claims ``ran:<event_id>`` in the workflow state store: the idempotent effect, one row
   per event however often the handler runs (the row is what "processed" means);
3. it appends ``<event_id> <envelope_id> <pid> <first>`` to ``run_log`` (one ``write`` on
   an ``O_APPEND`` file, atomic between processes): the raw record of every completed run,
   so tests can count re-runs and see which process ran what.
"""

from __future__ import annotations

import asyncio
import os

from controlroom import Context, Workflow

__all__ = ["workflow"]

workflow = Workflow("counting", events=["message"])


def _append(path: str, line: str) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, line.encode())
    finally:
        os.close(fd)


@workflow.event("message")
async def count(ctx: Context) -> None:
    envelope = ctx.envelope
    assert envelope is not None
    await asyncio.sleep(float(ctx.config.get("pause", 0.0)))
    first = await ctx.state.once(f"ran:{envelope.dedupe_key}")
    line = f"{envelope.dedupe_key} {envelope.id} {os.getpid()} {int(first)}\n"
    _append(str(ctx.config["run_log"]), line)
