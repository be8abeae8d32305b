"""Control Room: run operations from Slack.

The public API for workflow authors. Everything else lives in modules a workflow need
not import.
"""

from __future__ import annotations

from controlroom.context import Context
from controlroom.envelope import Envelope
from controlroom.errors import (
    AuthorizationDenied,
    ConfigError,
    ControlRoomError,
    PermanentError,
    RetryLater,
    SlackApiError,
)
from controlroom.workflow import Workflow

__all__ = [
    "AuthorizationDenied",
    "ConfigError",
    "Context",
    "ControlRoomError",
    "Envelope",
    "PermanentError",
    "RetryLater",
    "SlackApiError",
    "Workflow",
    "__version__",
]

__version__ = "0.1.0"
