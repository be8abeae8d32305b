"""Sandbox configuration: built once, frozen, passed in."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

Clock = Callable[[], float]
Sleep = Callable[[float], Awaitable[None]]


@dataclass(frozen=True)
class SandboxConfig:
    """Everything that shapes one sandbox.

    ``time_scale`` divides every platform duration (rate-limit windows, retry delays,
    code and response_url lifetimes, token expiry, Socket Mode refresh timers): a value
    of 60 turns a per-minute window into one second.

    The deadlines an *app* must meet stay in real seconds, so a large time scale does not
    shrink them to milliseconds on a busy machine: ``delivery_timeout`` (HTTP 3 s rule),
    ``socket_ack_timeout`` (Socket Mode ack before redelivery / interactive answer) and
    ``trigger_ttl`` (a trigger_id is valid for 3 s).
    """

    seed_path: str | Path | None = None
    time_scale: float = 1.0
    rate_limits: bool = True
    request_url: str | None = None
    socket_mode: bool = False
    signing_secret: str | None = None
    clock: Clock = time.time
    sleep: Sleep = asyncio.sleep
    random_seed: int = 0
    #: separate Request URLs; both default to ``request_url``
    interactivity_url: str | None = None
    commands_url: str | None = None
    delivery_timeout: float = 3.0
    #: real seconds before an unacknowledged Socket Mode envelope counts as failed
    socket_ack_timeout: float = 3.0
    #: real seconds a trigger_id stays valid
    trigger_ttl: float = 3.0
    #: seconds (platform time) between Socket Mode refreshes; None = never
    socket_refresh_interval: float | None = None
    #: the 2025 cohort of commercially distributed non-Marketplace apps:
    #: conversations.history/replies become Tier 1 with limit <= 15
    non_marketplace_app: bool = False
    #: events per workspace per app per (platform) hour before ``app_rate_limited``
    event_rate_limit: int = 30_000
    #: failed-delivery rule: disable subscriptions when >95% of at least this many
    #: attempts in the last (platform) hour failed (Slack: apps under 1,000/h are exempt)
    disable_min_attempts: int = 1_000
    #: seconds (real time) a ``timeout_rate`` fault holds the response
    fault_timeout_hold: float = 30.0
    #: public base URL used in response_url / Socket Mode URLs (set by serve_sandbox)
    public_url: str | None = None

    def __post_init__(self) -> None:
        if self.time_scale <= 0:
            raise ValueError("SandboxConfig.time_scale must be > 0")
        if self.delivery_timeout <= 0:
            raise ValueError("SandboxConfig.delivery_timeout must be > 0")

    def scaled(self, seconds: float) -> float:
        """Platform seconds -> real seconds under ``time_scale``."""
        return seconds / self.time_scale
