"""Per-channel ordering and coalescing of outbound writes.

**Ordering.** Posts, updates and deletes to one ``(workspace, channel)`` pass through a
strict FIFO lane: a call takes the lane in the order it was *made* (the order the
coroutines start) and holds it until Slack has answered, retries included, so message
N+1 never overtakes message N, even when N needs a retry. This orders the writes of one
workflow run (and of every run in this process). Across processes, the job queue's
per-key locks (one key per channel for posting jobs) serialise the jobs themselves; the
lane does the rest inside one job. A call that fails (a permanent error, or
``RetryLater`` when the gate would wait too long) releases the lane: calls already queued
behind it still go out, so a workflow that needs "N+1 only after N" across a failure
awaits its posts one by one (the usual ``await`` in sequence) rather than ``gather``-ing
them.

**Coalescing.** A ``chat.update`` of ``(channel, ts)`` that finds an earlier update of the
same message still queued in the lane or waiting at the rate gate replaces that
update's arguments with its own and waits for the same result: only the latest state
is sent, once. The update is sent at the position of the first queued one, so a later
state may go out ahead of posts queued between the two updates; the final state of
every message is what the workflow asked for last.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

__all__ = ["ChannelLanes", "PendingUpdate"]


@dataclass
class _Lane:
    busy: bool = False
    waiters: deque[asyncio.Future[None]] = field(default_factory=deque)


@dataclass
class PendingUpdate:
    """A queued ``chat.update``: its latest arguments and the result every caller awaits."""

    kwargs: dict[str, Any]
    future: asyncio.Future[Any]
    started: bool = False
    superseded: int = 0


class ChannelLanes:
    """FIFO lanes per (workspace, channel) and the registry of queued updates."""

    def __init__(self) -> None:
        self._lanes: dict[tuple[str, str], _Lane] = {}
        self._updates: dict[tuple[str, str, str], PendingUpdate] = {}

    @asynccontextmanager
    async def lane(self, workspace: str, channel: str) -> AsyncIterator[None]:
        key = (workspace, channel)
        lane = self._lanes.setdefault(key, _Lane())
        if lane.busy or lane.waiters:
            fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
            lane.waiters.append(fut)
            try:
                await fut
            except asyncio.CancelledError:
                if fut.done() and not fut.cancelled():
                    self._release(key, lane)  # the lane was handed to us: pass it on
                elif fut in lane.waiters:
                    lane.waiters.remove(fut)
                raise
        else:
            lane.busy = True
        try:
            yield
        finally:
            self._release(key, lane)

    def _release(self, key: tuple[str, str], lane: _Lane) -> None:
        while lane.waiters:
            nxt = lane.waiters.popleft()
            if not nxt.done():
                nxt.set_result(None)  # hand over: the lane stays busy
                return
        lane.busy = False
        if self._lanes.get(key) is lane:
            del self._lanes[key]

    def queued(self, workspace: str, channel: str) -> int:
        lane = self._lanes.get((workspace, channel))
        return 0 if lane is None else len(lane.waiters) + int(lane.busy)

    def pending_update(self, workspace: str, channel: str, ts: str) -> PendingUpdate | None:
        found = self._updates.get((workspace, channel, ts))
        return found if found is not None and not found.started else None

    def register_update(
        self, workspace: str, channel: str, ts: str, kwargs: dict[str, Any]
    ) -> PendingUpdate:
        fut: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        fut.add_done_callback(_consume)
        pending = PendingUpdate(kwargs, fut)
        self._updates[(workspace, channel, ts)] = pending
        return pending

    def start_update(self, workspace: str, channel: str, ts: str, pending: PendingUpdate) -> None:
        pending.started = True
        if self._updates.get((workspace, channel, ts)) is pending:
            del self._updates[(workspace, channel, ts)]


def _consume(fut: asyncio.Future[Any]) -> None:
    # Mark the exception as retrieved: superseded callers may all have gone away.
    if not fut.cancelled():
        fut.exception()
