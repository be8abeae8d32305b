"""Prometheus metrics of the outbound Slack client, registered on a given registry."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Histogram

__all__ = ["SlackMetrics"]

_WAIT_BUCKETS = (0.0, 0.001, 0.005, 0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)


class SlackMetrics:
    """Calls per method and outcome, gate waits, 429s received, retries, coalesced updates.

    ``outcome`` is ``ok``, ``recovered`` (an ambiguous post found already delivered), or
    Slack's error code (``channel_not_found``, ``http_503``, ``timeout`` ...).
    """

    def __init__(self, registry: CollectorRegistry, namespace: str = "controlroom") -> None:
        self.registry = registry
        self.calls = Counter(
            "slack_calls",
            "Slack Web API calls by method and final outcome",
            ["method", "outcome"],
            namespace=namespace,
            registry=registry,
        )
        self.gate_wait = Histogram(
            "slack_gate_wait_seconds",
            "Time a call waited at the rate gate before going out",
            ["method"],
            namespace=namespace,
            registry=registry,
            buckets=_WAIT_BUCKETS,
        )
        self.rate_limited = Counter(
            "slack_ratelimited",
            "HTTP 429 responses received from Slack (the goal is zero)",
            ["method"],
            namespace=namespace,
            registry=registry,
        )
        self.retries = Counter(
            "slack_retries",
            "Slack calls sent again, by method and reason",
            ["method", "reason"],
            namespace=namespace,
            registry=registry,
        )
        self.coalesced = Counter(
            "slack_coalesced_updates",
            "chat.update calls superseded by a newer state before they were sent",
            namespace=namespace,
            registry=registry,
        )

    def observe_wait(self, method: str, seconds: float) -> None:
        self.gate_wait.labels(method).observe(max(0.0, seconds))
