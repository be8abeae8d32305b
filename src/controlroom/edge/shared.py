"""What both transports (HTTP and Socket Mode) share once a request is parsed: the
Prometheus metrics of the edge and the inline handlers.

Metrics are registered on a registry the caller gives. Label values are bounded:
``source`` is ``slack``, ``socket`` or ``hook:<configured name>`` (``hook:unknown``
otherwise); ``reason`` is a short code from ``EdgeRejection``.

Inline handlers are the few interactions that must be answered with a body inside Slack's
3 seconds (opening a modal with a ``trigger_id``, a ``view_submission`` answered with
``response_action``, a slash command's immediate reply, options for a select). They run
only after the envelope is committed, under a time budget; on timeout or error the request
is still answered (empty) because the durable work is already queued.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any, Protocol

import structlog
from prometheus_client import CollectorRegistry, Counter, Histogram

from controlroom.envelope import Envelope

__all__ = [
    "DEFAULT_INLINE_BUDGET",
    "EdgeMetrics",
    "InlineHandler",
    "InlineRegistry",
    "run_inline",
]

_ACK_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)


class EdgeMetrics:
    """Counters and histograms for intake: requests by outcome, rejections by reason,
    time from first byte to answer, inline handler outcomes."""

    def __init__(self, registry: CollectorRegistry, namespace: str = "controlroom") -> None:
        self.requests = Counter(
            "edge_requests",
            "Inbound requests by source and outcome "
            "(accepted, duplicate, control, rejected, unavailable).",
            ["source", "outcome"],
            namespace=namespace,
            registry=registry,
        )
        self.rejections = Counter(
            "edge_rejections",
            "Inbound requests refused, by source and reason code.",
            ["source", "reason"],
            namespace=namespace,
            registry=registry,
        )
        self.ack_seconds = Histogram(
            "edge_ack_seconds",
            "Seconds from reading the request to answering it (after commit).",
            ["source"],
            buckets=_ACK_BUCKETS,
            namespace=namespace,
            registry=registry,
        )
        self.inline = Counter(
            "edge_inline",
            "Inline handler runs by outcome (ok, timeout, error).",
            ["outcome"],
            namespace=namespace,
            registry=registry,
        )

    def rejected(self, source: str, code: str) -> None:
        self.requests.labels(source, "rejected").inc()
        self.rejections.labels(source, code).inc()


DEFAULT_INLINE_BUDGET = 2.5

InlineHandler = Callable[[Envelope], Awaitable[dict[str, Any] | None]]

_log = structlog.get_logger("controlroom.edge")


class InlineRegistry(Protocol):
    """Finds the inline handler for an envelope, if it has one."""

    def find(self, envelope: Envelope) -> InlineHandler | None: ...

    def needs_dispatch(self, envelope: Envelope) -> bool:
        """False when no durable handler is interested: the envelope is still committed
        (and de-duplicated) but no job is made for it."""
        ...


async def run_inline(
    registry: InlineRegistry | None,
    envelope: Envelope,
    *,
    budget: float = DEFAULT_INLINE_BUDGET,
    metrics: EdgeMetrics | None = None,
) -> dict[str, Any] | None:
    """Run the envelope's inline handler (if any) within ``budget`` seconds and return its
    answer; None when there is no handler, it returned nothing, failed or ran out of time.
    Call only after the envelope is committed."""
    if registry is None:
        return None
    try:
        handler = registry.find(envelope)
    except Exception:
        _log.exception("inline_lookup_failed", envelope_id=envelope.id, kind=envelope.kind)
        if metrics is not None:
            metrics.inline.labels("error").inc()
        return None
    if handler is None:
        return None
    try:
        async with asyncio.timeout(budget):
            result = await handler(envelope)
    except TimeoutError:
        _log.warning("inline_timeout", envelope_id=envelope.id, kind=envelope.kind, budget=budget)
        if metrics is not None:
            metrics.inline.labels("timeout").inc()
        return None
    except Exception:
        _log.exception("inline_failed", envelope_id=envelope.id, kind=envelope.kind)
        if metrics is not None:
            metrics.inline.labels("error").inc()
        return None
    if metrics is not None:
        metrics.inline.labels("ok").inc()
    if result is not None and not isinstance(result, dict):
        _log.error("inline_bad_result", envelope_id=envelope.id, type=type(result).__name__)
        return None
    return result
