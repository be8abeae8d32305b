"""The one exception tree of Control Room.

Every error carries the context a person needs to act on it: the configuration key,
the Slack method and workspace, the job id, the webhook source.
"""

from __future__ import annotations

__all__ = [
    "AuthorizationDenied",
    "ConfigError",
    "ControlRoomError",
    "DuplicateEnvelope",
    "JobNotFound",
    "PermanentError",
    "QueueError",
    "RetryLater",
    "SecretError",
    "SlackApiError",
    "SlackRateLimited",
    "SlackTransientError",
    "VerificationError",
]


class ControlRoomError(Exception):
    """Base of every error Control Room raises on purpose."""


class ConfigError(ControlRoomError):
    """The configuration is invalid; ``problems`` lists (key, source, reason) triples."""

    def __init__(self, problems: list[tuple[str, str, str]]) -> None:
        self.problems = problems
        lines = [f"{key} (from {source}): {reason}" for key, source, reason in problems]
        super().__init__("invalid configuration:\n  " + "\n  ".join(lines))


class SecretError(ControlRoomError):
    """A secret reference could not be resolved; names the reference, never the value."""

    def __init__(self, reference: str, reason: str) -> None:
        self.reference = reference
        self.reason = reason
        super().__init__(f"secret {reference!r}: {reason}")


class VerificationError(ControlRoomError):
    """An inbound request failed verification; ``status`` is the HTTP status to answer."""

    def __init__(self, reason: str, status: int = 401) -> None:
        self.reason = reason
        self.status = status
        super().__init__(reason)


class QueueError(ControlRoomError):
    """The job queue could not do what was asked."""


class DuplicateEnvelope(QueueError):
    """An envelope with the same de-duplication key was already committed."""


class JobNotFound(QueueError):
    def __init__(self, job_id: str) -> None:
        self.job_id = job_id
        super().__init__(f"no job with id {job_id!r}")


class PermanentError(ControlRoomError):
    """Raised by a handler: retrying cannot help, dead-letter the job at once."""


class RetryLater(ControlRoomError):
    """Raised by a handler: run the job again after ``delay`` seconds without counting
    an attempt (e.g. the rate gate would make the worker wait too long)."""

    def __init__(self, delay: float, reason: str = "") -> None:
        self.delay = delay
        self.reason = reason
        super().__init__(f"retry in {delay:.2f}s" + (f": {reason}" if reason else ""))


class AuthorizationDenied(ControlRoomError):
    def __init__(self, action: str, actor: str, reason: str) -> None:
        self.action = action
        self.actor = actor
        self.reason = reason
        super().__init__(f"{actor} may not {action}: {reason}")


class SlackApiError(ControlRoomError):
    """Slack answered ``ok: false`` with an error that retrying will not fix."""

    def __init__(self, method: str, workspace: str, error: str, response: object = None) -> None:
        self.method = method
        self.workspace = workspace
        self.error = error
        self.response = response
        super().__init__(f"{method} in {workspace or '?'} failed: {error}")


class SlackTransientError(SlackApiError):
    """A Slack call failed in a way that may succeed later (5xx, timeout, internal_error)."""


class SlackRateLimited(SlackApiError):
    def __init__(self, method: str, workspace: str, retry_after: float) -> None:
        self.retry_after = retry_after
        super().__init__(method, workspace, "ratelimited")
