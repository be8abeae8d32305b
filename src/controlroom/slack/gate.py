"""The rate gate: plans every Slack Web API call *before* it goes out.

Two kinds of bucket, one planning rule:

* **sliding window** (Slack's tiers and the workspace-wide posting budget): at most
  ``count`` calls in any ``period``-long span. State: the sorted log of booked send
  times inside the last period. A full window may go as a burst; the next call waits
  until the oldest leaves the window. Windows are widened by ``safety`` seconds so
  that network jitter between the gate's clock and Slack's arrival time never makes a
  call land inside a full window.
* **token bucket as GCRA** (one post per second per channel, short bursts): one number,
  the *theoretical arrival time* ``tat``; interval ``T = period / count``, tolerance
  ``tau = T * (burst - 1)``; a call at ``t`` conforms when ``t >= tat - tau`` and moves
  ``tat`` to ``max(tat, t) + T``.

Sliding windows rather than GCRA for the tiers: Slack states its limits as per-minute
windows, and the sandbox enforces a sliding log; a GCRA with the same long-run rate
either sends more than ``count`` in some minute (429s) or, tuned to never do so, runs at
``count - burst`` per minute (measured: about 1.1x the minimum makespan instead of 1.0x).

Reservations, not checks: :meth:`RateGate.reserve` books the *earliest* time at which
every bucket the call spends from (the method's workspace budget, the channel's
one-post-per-second budget, the cooldowns after a 429) allows it, and returns how long
to wait for it. All buckets are booked at that one common time, so a call delayed by
one bucket never bunches up in another. A caller that would wait longer than
``max_wait`` books nothing and gets :class:`~controlroom.errors.RetryLater` so its job
is re-scheduled instead of holding a worker.

Slack counts a call when it *arrives*, somewhere between the moment the gate let it go
and the moment its answer came back; under load that spread is milliseconds to a few
hundred. So window entries are kept honest in two steps: :meth:`RateGate.settle`
re-stamps a sent call with the time its answer came back (the latest Slack can have
seen it), and a call that slept until its slot re-confirms it on waking
(:meth:`RateGate.acquire`), moving later if re-stamped calls still fill the window or a
cooldown began meanwhile. Token buckets need neither: posts to one channel are
serialised by the client's lanes and keep one token spare.

After a 429 :meth:`RateGate.cooldown` blocks ``(workspace, method)`` (or
``(workspace, method, channel)`` for posting methods) until ``Retry-After`` plus a
random jitter; no reservation for it is granted before then.

``limits_snapshot()`` and :func:`format_limits` are what ``controlroom slack limits``
shows: in the distributed mode any process can open the shared backend and see every
worker's bookings; in the embedded mode they live in the hub's process.

Backends: :class:`MemoryGateBackend` (embedded mode, one process) and
``PostgresGateBackend`` in :mod:`controlroom.slack.gate_pg` (distributed mode, budgets
shared by every worker). Both implement :class:`GateBackend`.
"""

from __future__ import annotations

import asyncio
import bisect
import math
import random
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Protocol

from controlroom.errors import RetryLater
from controlroom.slack.tiers import Limit, TierTable

__all__ = [
    "Bucket",
    "BucketState",
    "GateBackend",
    "LimitState",
    "MemoryGateBackend",
    "RateGate",
    "Reservation",
    "Slot",
    "bucket_key",
    "confirm_in",
    "earliest",
    "format_limits",
    "plan",
    "reserve_in",
    "settle_in",
]

Clock = Callable[[], float]
Sleep = Callable[[float], Awaitable[None]]
SEP = "|"


def bucket_key(kind: str, workspace: str, *parts: str) -> str:
    """``m|T1|chat.update`` (method), ``c|T1|C1`` (channel), ``x|T1|method[|C1]`` (cooldown)."""
    return SEP.join((kind, workspace, *parts))


@dataclass(frozen=True, slots=True)
class Bucket:
    """One bucket a call spends from.

    ``kind`` is ``"window"`` (``size`` calls per ``period``), ``"gcra"`` (interval
    ``period``, tolerance ``size``) or ``"cooldown"`` (blocks until its time passes).
    """

    key: str
    kind: str
    period: float
    size: float

    @classmethod
    def of(cls, key: str, limit: Limit, safety: float = 0.0) -> Bucket:
        if limit.is_window:
            return cls(key, "window", limit.period + safety, float(limit.count))
        return cls(key, "gcra", limit.interval, limit.tolerance)

    @classmethod
    def cooldown(cls, key: str) -> Bucket:
        return cls(key, "cooldown", 0.0, 0.0)


@dataclass(frozen=True, slots=True)
class BucketState:
    """``tat`` (GCRA, cooldown end) or ``log`` (window: sorted booked send times)."""

    tat: float = -math.inf
    log: tuple[float, ...] = ()


EMPTY = BucketState()


@dataclass(frozen=True, slots=True)
class Reservation:
    """The planned send time ``at`` (clock seconds) and whether it was booked."""

    at: float
    wait: float
    booked: bool


@dataclass(frozen=True, slots=True)
class Slot:
    """A granted send: the buckets it spent from, when it may go, how long it waited."""

    method: str
    buckets: tuple[Bucket, ...]
    at: float
    waited: float


@dataclass(frozen=True, slots=True)
class LimitState:
    """One row of ``controlroom slack limits``."""

    kind: str  # "method" | "channel" | "cooldown"
    workspace: str
    method: str
    channel: str
    per_minute: float
    burst: int
    available: int
    next_free_in: float
    cooldown_remaining: float


class GateBackend(Protocol):
    """Where bucket state lives. ``reserve`` must be atomic across all its buckets."""

    async def reserve(
        self, buckets: Sequence[Bucket], now: float, max_wait: float | None
    ) -> Reservation: ...

    async def confirm(self, buckets: Sequence[Bucket], at: float, now: float) -> float:
        """Re-plan a call booked at ``at`` that woke up at ``now``; returns its new time."""
        ...

    async def settle(self, buckets: Sequence[Bucket], at: float, done: float) -> None:
        """Re-stamp a call booked at ``at`` with the time its answer came back."""
        ...

    async def cool(self, key: str, until: float) -> None: ...

    async def rows(self, prefix: str = "") -> list[tuple[Bucket, BucketState]]:
        """Every bucket (with its state) whose key starts with ``prefix``."""
        ...

    async def aclose(self) -> None: ...


def earliest(bucket: Bucket, state: BucketState, t: float) -> float:
    """The earliest time ``>= t`` at which ``bucket`` lets one more call go."""
    if bucket.kind == "gcra":
        return max(t, state.tat - bucket.size)
    if bucket.kind == "cooldown":
        return max(t, state.tat)
    log, n, w = state.log, int(bucket.size), bucket.period
    if not log or t >= log[-1]:
        # Appending at the end (the common case): only the last n-1 bookings matter.
        return t if len(log) < n else max(t, log[-n] + w)
    for cand in (t, *(x + w for x in log if x + w > t)):
        if _window_fits(log, n, w, cand):
            return cand
    return max(t, log[-1] + w)  # pragma: no cover - the last candidate always fits


def _window_fits(log: tuple[float, ...], n: int, w: float, c: float) -> bool:
    """Whether booking ``c`` keeps every span of ``w`` seconds at ``n`` calls or fewer."""
    i = bisect.bisect_right(log, c)
    merged = (*log[max(0, i - n) : i], c, *log[i : i + n])
    return all(merged[a + n] - merged[a] >= w for a in range(len(merged) - n))


def book(bucket: Bucket, state: BucketState, at: float, now: float) -> BucketState:
    """The state after a call is booked at ``at`` (window logs pruned before ``now``)."""
    if bucket.kind == "gcra":
        return BucketState(tat=max(state.tat, at) + bucket.period)
    if bucket.kind == "cooldown":
        return state
    horizon = now - bucket.period
    log = [x for x in state.log if x > horizon]
    bisect.insort(log, at)
    return BucketState(log=tuple(log))


def plan(buckets: Sequence[Bucket], states: Sequence[BucketState], now: float) -> float:
    """The earliest common time at which every bucket lets the call go."""
    at = now
    while True:
        nxt = max((earliest(b, s, at) for b, s in zip(buckets, states, strict=True)), default=at)
        if nxt <= at:
            return at
        at = nxt


def reserve_in(
    buckets: Sequence[Bucket],
    states: Sequence[BucketState],
    now: float,
    max_wait: float | None,
) -> tuple[Reservation, list[BucketState]]:
    """Plan a call and, unless it would wait longer than ``max_wait``, book it."""
    at = plan(buckets, states, now)
    wait = at - now
    if max_wait is not None and wait > max_wait:
        return Reservation(at, wait, booked=False), list(states)
    booked = [book(b, s, at, now) for b, s in zip(buckets, states, strict=True)]
    return Reservation(at, wait, booked=True), booked


def _without(log: tuple[float, ...], at: float) -> tuple[float, ...]:
    i = bisect.bisect_left(log, at)
    return log[:i] + log[i + 1 :] if i < len(log) and log[i] == at else log


def confirm_in(
    buckets: Sequence[Bucket], states: Sequence[BucketState], at: float, now: float
) -> tuple[float, list[BucketState]]:
    """Re-plan a booked call when it wakes up at ``now``: its window entries (booked at
    ``at``) move to the earliest time the windows and cooldowns allow *today*, after
    earlier calls were re-stamped with the time their answer came back."""
    movable = [i for i, b in enumerate(buckets) if b.kind != "gcra"]
    others = [
        BucketState(states[i].tat, _without(states[i].log, at))
        if buckets[i].kind == "window"
        else states[i]
        for i in movable
    ]
    new_at = plan([buckets[i] for i in movable], others, now)
    out = list(states)
    for i, state in zip(movable, others, strict=True):
        if buckets[i].kind == "window":
            log = list(state.log)
            bisect.insort(log, new_at)
            out[i] = BucketState(state.tat, tuple(log))
    return new_at, out


def settle_in(
    buckets: Sequence[Bucket], states: Sequence[BucketState], at: float, done: float
) -> list[BucketState]:
    """Re-stamp a sent call's window entries with ``done``, the time its answer came
    back: Slack saw the call between ``at`` and ``done``, so ``done`` is the safe bound."""
    out = list(states)
    if done <= at:
        return out
    for i, bucket in enumerate(buckets):
        if bucket.kind == "window":
            log = list(_without(states[i].log, at))
            bisect.insort(log, done)
            out[i] = BucketState(states[i].tat, tuple(log))
    return out


class MemoryGateBackend:
    """Bucket state in a dict: embedded mode. Atomic because it never awaits inside."""

    def __init__(self, prune_above: int = 10_000) -> None:
        self._state: dict[str, tuple[Bucket, BucketState]] = {}
        self._prune_above = prune_above

    async def reserve(
        self, buckets: Sequence[Bucket], now: float, max_wait: float | None
    ) -> Reservation:
        res, new = reserve_in(buckets, self._states(buckets), now, max_wait)
        if res.booked:
            self._store(buckets, new)
            if len(self._state) > self._prune_above:
                self._prune(now)
        return res

    async def confirm(self, buckets: Sequence[Bucket], at: float, now: float) -> float:
        new_at, new = confirm_in(buckets, self._states(buckets), at, now)
        self._store(buckets, new)
        return new_at

    async def settle(self, buckets: Sequence[Bucket], at: float, done: float) -> None:
        self._store(buckets, settle_in(buckets, self._states(buckets), at, done))

    def _states(self, buckets: Sequence[Bucket]) -> list[BucketState]:
        return [self._state[b.key][1] if b.key in self._state else EMPTY for b in buckets]

    def _store(self, buckets: Sequence[Bucket], states: Sequence[BucketState]) -> None:
        for bucket, state in zip(buckets, states, strict=True):
            self._state[bucket.key] = (bucket, state)

    async def cool(self, key: str, until: float) -> None:
        old = self._state[key][1].tat if key in self._state else -math.inf
        self._state[key] = (Bucket.cooldown(key), BucketState(tat=max(old, until)))

    async def rows(self, prefix: str = "") -> list[tuple[Bucket, BucketState]]:
        return [v for k, v in sorted(self._state.items()) if k.startswith(prefix)]

    async def aclose(self) -> None:
        self._state.clear()

    def _prune(self, now: float) -> None:
        # A bucket with nothing booked after ``now`` is as good as no state at all.
        stale = [
            k
            for k, (b, s) in self._state.items()
            if s.tat <= now and (not s.log or s.log[-1] + b.period <= now)
        ]
        for key in stale:
            del self._state[key]


class RateGate:
    """Plans Slack calls against per-workspace budgets so that none is throttled.

    ``clock`` and ``sleep`` are injected (tests run on a fake clock); ``max_wait`` is the
    longest a caller may be asked to wait before :class:`RetryLater` is raised instead.
    ``observe_wait(method, seconds)`` is called with every granted wait (metrics).
    """

    def __init__(
        self,
        backend: GateBackend | None = None,
        *,
        tiers: TierTable | None = None,
        clock: Clock | None = None,
        sleep: Sleep = asyncio.sleep,
        max_wait: float = 30.0,
        safety: float = 0.05,
        cooldown_jitter: float = 0.25,
        rng: Callable[[float, float], float] = random.uniform,
        observe_wait: Callable[[str, float], None] | None = None,
    ) -> None:
        self.backend: GateBackend = backend if backend is not None else MemoryGateBackend()
        self.tiers = tiers if tiers is not None else TierTable()
        self.clock: Clock = clock if clock is not None else time.time
        self.sleep: Sleep = sleep
        self.max_wait = max_wait
        self.safety = safety
        self.cooldown_jitter = cooldown_jitter
        self._rng = rng
        self._observe_wait = observe_wait

    def buckets_for(self, workspace: str, method: str, channel: str | None = None) -> list[Bucket]:
        """Every bucket a call to ``method`` (in ``channel``) spends from or waits on."""
        buckets = [
            Bucket.of(bucket_key("m", workspace, method), self.tiers.limit(method), self.safety),
            Bucket.cooldown(bucket_key("x", workspace, method)),
        ]
        if channel and self.tiers.posts_to_channel(method):
            channel_key = bucket_key("c", workspace, channel)
            buckets.append(Bucket.of(channel_key, self.tiers.channel_limit(), self.safety))
            buckets.append(Bucket.cooldown(bucket_key("x", workspace, method, channel)))
        return buckets

    async def reserve(
        self,
        workspace: str,
        method: str,
        channel: str | None = None,
        *,
        max_wait: float | None = None,
    ) -> float:
        """Book the earliest slot for this call; return the seconds to wait (0: go now).

        Raises :class:`RetryLater` (booking nothing) when the wait exceeds ``max_wait``.
        """
        limit = self.max_wait if max_wait is None else max_wait
        now = self.clock()
        res = await self.backend.reserve(self.buckets_for(workspace, method, channel), now, limit)
        if not res.booked:
            raise RetryLater(res.wait, f"slack {method} budget for {workspace} is busy")
        if self._observe_wait is not None:
            self._observe_wait(method, res.wait)
        return max(0.0, res.wait)

    async def acquire(
        self,
        workspace: str,
        method: str,
        channel: str | None = None,
        *,
        max_wait: float | None = None,
    ) -> Slot:
        """Reserve, sleep until the slot, re-confirm it (earlier calls may have been
        re-stamped later, a 429 may have started a cooldown), and return the granted
        :class:`Slot`; pass it to :meth:`settle` when Slack has answered."""
        limit = self.max_wait if max_wait is None else max_wait
        buckets = tuple(self.buckets_for(workspace, method, channel))
        now = self.clock()
        res = await self.backend.reserve(buckets, now, limit)
        if not res.booked:
            raise RetryLater(res.wait, f"slack {method} budget for {workspace} is busy")
        at, waited = res.at, 0.0
        delay = at - now
        while delay > 0:
            await self.sleep(delay)
            waited += delay
            now = self.clock()
            at = await self.backend.confirm(buckets, at, now)
            delay = at - now
            if delay > limit:  # e.g. a 429 storm began while this call slept
                raise RetryLater(delay, f"slack {method} for {workspace} is cooling down")
        if self._observe_wait is not None:
            self._observe_wait(method, waited)
        return Slot(method, buckets, at, waited)

    async def settle(self, slot: Slot, done: float | None = None) -> None:
        """Record that Slack answered ``slot``'s call at ``done`` (default: now)."""
        if any(b.kind == "window" for b in slot.buckets):
            when = self.clock() if done is None else done
            await self.backend.settle(slot.buckets, slot.at, when)

    async def wait(
        self,
        workspace: str,
        method: str,
        channel: str | None = None,
        *,
        max_wait: float | None = None,
    ) -> float:
        """Acquire a slot (see :meth:`acquire`) and return the seconds waited."""
        slot = await self.acquire(workspace, method, channel, max_wait=max_wait)
        return slot.waited

    def cooldown_scope(self, method: str, channel: str | None) -> str | None:
        """The channel a 429 cooldown applies to (None: the whole method)."""
        return channel if channel and self.tiers.posts_to_channel(method) else None

    async def cooldown(
        self, workspace: str, method: str, channel: str | None, retry_after: float
    ) -> float:
        """After a 429: block the method (or the channel for posts) until Retry-After
        plus jitter. Returns the time (clock seconds) the cooldown ends."""
        until = self.clock() + max(0.0, retry_after) + self._rng(0.0, self.cooldown_jitter)
        scope = self.cooldown_scope(method, channel)
        parts = (method,) if scope is None else (method, scope)
        await self.backend.cool(bucket_key("x", workspace, *parts), until)
        return until

    async def limits_snapshot(self, workspace: str | None = None) -> list[LimitState]:
        """Current budgets and cooldowns (for ``controlroom slack limits``)."""
        now = self.clock()
        out: list[LimitState] = []
        for bucket, state in await self.backend.rows():
            kind, _, rest = bucket.key.partition(SEP)
            ws, _, name = rest.partition(SEP)
            if workspace is not None and ws != workspace:
                continue
            if kind == "x":
                remaining = state.tat - now
                if remaining > 0:
                    method, _, channel = name.partition(SEP)
                    out.append(LimitState("cooldown", ws, method, channel, 0, 0, 0, 0, remaining))
                continue
            label = "method" if kind == "m" else "channel"
            method, channel = (name, "") if kind == "m" else ("", name)
            free = earliest(bucket, state, now) - now
            if bucket.kind == "window":
                n = int(bucket.size)
                used = sum(1 for x in state.log if now - bucket.period < x <= now + bucket.period)
                per_minute = n * 60.0 / bucket.period
                avail, burst = max(0, n - used), n
            else:
                burst = round(bucket.size / bucket.period) + 1
                start = state.tat - bucket.size
                avail = (
                    burst
                    if now >= state.tat
                    else max(0, math.floor((now - start) / bucket.period) + 1)
                )
                per_minute = 60.0 / bucket.period
            out.append(
                LimitState(
                    label, ws, method, channel, per_minute, burst, min(avail, burst), free, 0.0
                )
            )
        return out

    async def aclose(self) -> None:
        await self.backend.aclose()


def format_limits(states: Sequence[LimitState]) -> str:
    """A plain-text table: one row per budget in use and per running cooldown."""
    if not states:
        return "no Slack calls planned or cooling down"
    header = (
        "workspace",
        "kind",
        "method/channel",
        "per min",
        "burst",
        "free now",
        "next in",
        "cooldown",
    )
    rows = [header]
    for s in sorted(states, key=lambda s: (s.workspace, s.kind, s.method, s.channel)):
        rows.append(
            (
                s.workspace,
                s.kind,
                s.method if s.method and not s.channel else f"{s.method} {s.channel}".strip(),
                f"{s.per_minute:g}" if s.per_minute else "",
                str(s.burst) if s.burst else "",
                str(s.available) if s.kind != "cooldown" else "",
                f"{s.next_free_in:.1f}s" if s.kind != "cooldown" else "",
                f"{s.cooldown_remaining:.1f}s" if s.kind == "cooldown" else "",
            )
        )
    widths = [max(len(r[i]) for r in rows) for i in range(len(header))]
    return "\n".join(
        "  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in rows
    )
