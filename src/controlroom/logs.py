"""Logging set-up: structlog JSON (pretty on a terminal), every line passed through the
redactor, which knows Slack token shapes and every secret resolved from configuration."""

from __future__ import annotations

from typing import TextIO

from controlroom.config import Settings
from controlroom.security.redaction import Redactor
from controlroom.security.redaction import configure_logging as _configure

__all__ = ["configure_logging"]


def configure_logging(settings: Settings, *, stream: TextIO | None = None) -> Redactor:
    """Configure once at start; returns the redactor so later secrets (sandbox tokens,
    OAuth installs) can be added to it."""
    redactor = Redactor()
    redactor.add_settings(settings)
    return _configure(settings.log_level, settings.log_format, redactor, stream=stream)
