"""The edge: verified, durable intake of Slack requests (HTTP and Socket Mode) and
CI/CRM webhooks. Verify on the raw body, commit the envelope, then answer.

``SocketModeIntake`` is imported lazily (it pulls in aiohttp and the SDK's socket client).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from controlroom.edge.hooks import webhook_envelope
from controlroom.edge.http import DEFAULT_SLACK_MAX_BODY, SLACK_PATHS, edge_routes
from controlroom.edge.replay import MemoryReplayCache, ReplayCache, SqlReplayCache
from controlroom.edge.shared import EdgeMetrics, InlineHandler, InlineRegistry, run_inline
from controlroom.edge.signing import (
    EdgeRejection,
    GitHubVerifier,
    GitLabVerifier,
    SignedHookVerifier,
    SlackVerifier,
    WebhookVerifier,
    hook_verifier,
    sign_hook,
    sign_slack,
)
from controlroom.edge.slack_parse import SlackControl, parse_slack_body, parse_socket_payload

if TYPE_CHECKING:
    from controlroom.edge.socket_mode import SocketModeIntake

__all__ = [
    "DEFAULT_SLACK_MAX_BODY",
    "SLACK_PATHS",
    "EdgeMetrics",
    "EdgeRejection",
    "GitHubVerifier",
    "GitLabVerifier",
    "InlineHandler",
    "InlineRegistry",
    "MemoryReplayCache",
    "ReplayCache",
    "SignedHookVerifier",
    "SlackControl",
    "SlackVerifier",
    "SocketModeIntake",
    "SqlReplayCache",
    "WebhookVerifier",
    "edge_routes",
    "hook_verifier",
    "parse_slack_body",
    "parse_socket_payload",
    "run_inline",
    "sign_hook",
    "sign_slack",
    "webhook_envelope",
]


def __getattr__(name: str) -> Any:
    if name == "SocketModeIntake":
        from controlroom.edge.socket_mode import SocketModeIntake

        return SocketModeIntake
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
