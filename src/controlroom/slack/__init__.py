"""Outbound Slack: a rate-gated ``slack_sdk`` client that plans its calls.

``SlackOutbound`` (one per process) hands out ``SlackClient`` instances bound to one
workspace; every call passes the ``RateGate`` (tier budgets, one post per second per
channel, the workspace posting budget, 429 cooldowns) and posts are idempotent.
"""

from __future__ import annotations

from controlroom.slack.blocks import post_long, split_blocks
from controlroom.slack.client import (
    AuthErrorHook,
    RetryPolicy,
    SlackClient,
    SlackOutbound,
    SlackScopeError,
)
from controlroom.slack.gate import (
    GateBackend,
    LimitState,
    MemoryGateBackend,
    RateGate,
    format_limits,
)
from controlroom.slack.idempotent import PostOutcomeUnknown
from controlroom.slack.metrics import SlackMetrics
from controlroom.slack.tiers import Limit, TierTable

__all__ = [
    "AuthErrorHook",
    "GateBackend",
    "Limit",
    "LimitState",
    "MemoryGateBackend",
    "PostOutcomeUnknown",
    "RateGate",
    "RetryPolicy",
    "SlackClient",
    "SlackMetrics",
    "SlackOutbound",
    "SlackScopeError",
    "TierTable",
    "format_limits",
    "post_long",
    "split_blocks",
]
