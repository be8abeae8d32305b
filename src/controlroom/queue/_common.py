"""Pieces shared by the SQLite and PostgreSQL queues: cron ticks, argument matching,
error text and the counting of statuses."""

from __future__ import annotations

import json
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any, get_args
from zoneinfo import ZoneInfo

from croniter import croniter

from controlroom.errors import QueueError
from controlroom.queue.base import JobStatus, PeriodicSpec

__all__ = [
    "ALL_STATUSES",
    "DISPATCH_TASK",
    "MAX_ERROR_CHARS",
    "args_match",
    "check_periodic",
    "describe_error",
    "dump_args",
    "empty_counts",
    "latest_tick",
    "next_tick",
]

DISPATCH_TASK = "dispatch"
MAX_ERROR_CHARS = 2000
ALL_STATUSES: tuple[JobStatus, ...] = get_args(JobStatus)


def describe_error(exc: BaseException) -> str:
    """``repr(exc)``, truncated so a runaway message cannot bloat the job table."""
    text = repr(exc)
    if len(text) > MAX_ERROR_CHARS:
        text = text[: MAX_ERROR_CHARS - 15] + "...[truncated]"
    return text


def dump_args(args: Mapping[str, Any]) -> str:
    """Serialise job arguments; they must be JSON (a job outlives the process)."""
    try:
        return json.dumps(dict(args), separators=(",", ":"), sort_keys=True)
    except (TypeError, ValueError) as exc:
        raise QueueError(f"job arguments must be JSON-serialisable: {exc}") from exc


def args_match(args: Mapping[str, Any], where: Mapping[str, Any]) -> bool:
    """True when ``where`` is a (recursive) subset of ``args``."""
    for key, want in where.items():
        if key not in args:
            return False
        have = args[key]
        if isinstance(want, Mapping):
            if not isinstance(have, Mapping) or not args_match(have, want):
                return False
        elif have != want or isinstance(have, bool) != isinstance(want, bool):
            return False
    return True


def empty_counts() -> dict[str, int]:
    return dict.fromkeys(ALL_STATUSES, 0)


def _zone(spec: PeriodicSpec) -> ZoneInfo:
    try:
        return ZoneInfo(spec.timezone)
    except (KeyError, ValueError) as exc:
        raise QueueError(f"periodic {spec.name!r}: unknown time zone {spec.timezone!r}") from exc


def check_periodic(spec: PeriodicSpec) -> None:
    """Raise ``QueueError`` naming the periodic when its cron or zone is invalid."""
    _zone(spec)
    if not croniter.is_valid(spec.cron) or len(spec.cron.split()) != 5:
        raise QueueError(f"periodic {spec.name!r}: invalid five-field cron {spec.cron!r}")


def latest_tick(spec: PeriodicSpec, now: float) -> float:
    """Epoch seconds of the most recent tick at or before ``now``."""
    zone = _zone(spec)
    here = datetime.fromtimestamp(now, tz=UTC).astimezone(zone)
    prev: datetime = croniter(spec.cron, here).get_prev(datetime)
    following: datetime = croniter(spec.cron, prev).get_next(datetime)
    if following.timestamp() <= now:
        prev = following
    return prev.timestamp()


def next_tick(spec: PeriodicSpec, now: float) -> float:
    """Epoch seconds of the first tick strictly after ``now``."""
    zone = _zone(spec)
    here = datetime.fromtimestamp(now, tz=UTC).astimezone(zone)
    nxt: datetime = croniter(spec.cron, here).get_next(datetime)
    return nxt.timestamp()
