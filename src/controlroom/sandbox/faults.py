"""Fault injection for Web API methods, driven by a seeded RNG so runs repeat."""

from __future__ import annotations

import random
from dataclasses import dataclass, field

from .config import Clock


@dataclass(frozen=True)
class FaultSpec:
    """What can go wrong with one method (``"*"`` means every method).

    * ``error_rate``: answer HTTP 200 ``{"ok": false, "error": "internal_error"}``
      (nothing applied).
    * ``timeout_rate``: apply the call, then hold the response for
      ``SandboxConfig.fault_timeout_hold`` seconds, so the client times out without
      knowing the call succeeded (the ambiguous failure).
    * ``latency``: extra seconds before answering.
    * ``http_5xx_rate``: answer HTTP 503 with Slack's ``service_unavailable`` body.
    * ``storm_seconds``: for that many platform seconds from ``set``, answer every call
      with HTTP 429 ``ratelimited`` and a ``Retry-After`` of the time left.
    """

    error_rate: float = 0.0
    timeout_rate: float = 0.0
    latency: float = 0.0
    http_5xx_rate: float = 0.0
    storm_seconds: float = 0.0
    storm_until: float = 0.0


@dataclass(frozen=True)
class FaultPlan:
    """The faults drawn for one call."""

    error: bool = False
    timeout: bool = False
    http_5xx: bool = False
    latency: float = 0.0
    storm_retry_after: float = 0.0


@dataclass
class Faults:
    clock: Clock
    time_scale: float = 1.0
    seed: int = 0
    specs: dict[str, FaultSpec] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self._rng = random.Random(self.seed)

    def set(
        self,
        method: str,
        error_rate: float = 0.0,
        timeout_rate: float = 0.0,
        latency: float = 0.0,
        http_5xx_rate: float = 0.0,
        storm_seconds: float = 0.0,
    ) -> None:
        for name, rate in (
            ("error_rate", error_rate),
            ("timeout_rate", timeout_rate),
            ("http_5xx_rate", http_5xx_rate),
        ):
            if not 0.0 <= rate <= 1.0:
                raise ValueError(f"{name} must be within [0, 1], got {rate}")
        if latency < 0 or storm_seconds < 0:
            raise ValueError("latency and storm_seconds must be >= 0")
        until = self.clock() + storm_seconds / self.time_scale if storm_seconds else 0.0
        self.specs[method] = FaultSpec(
            error_rate, timeout_rate, latency, http_5xx_rate, storm_seconds, until
        )

    def clear(self, method: str | None = None) -> None:
        if method is None:
            self.specs.clear()
        else:
            self.specs.pop(method, None)

    def draw(self, method: str) -> FaultPlan:
        spec = self.specs.get(method) or self.specs.get("*")
        if spec is None:
            return FaultPlan()
        storm = max(0.0, spec.storm_until - self.clock()) if spec.storm_until else 0.0
        return FaultPlan(
            error=spec.error_rate > 0 and self._rng.random() < spec.error_rate,
            timeout=spec.timeout_rate > 0 and self._rng.random() < spec.timeout_rate,
            http_5xx=spec.http_5xx_rate > 0 and self._rng.random() < spec.http_5xx_rate,
            latency=spec.latency,
            storm_retry_after=storm,
        )
