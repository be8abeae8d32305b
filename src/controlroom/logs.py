"""Logging set-up: structlog JSON (pretty on a terminal), every line passed through the
redactor, which knows Slack token shapes and every secret resolved from configuration."""

from __future__ import annotations

import logging
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
    configured = _configure(settings.log_level, settings.log_format, redactor, stream=stream)
    # Client libraries log every request at INFO: ids and outcomes are ours to log.
    for noisy in ("httpx", "httpcore", "slack_sdk", "aiohttp.access"):
        logging.getLogger(noisy).setLevel(max(logging.WARNING, logging.getLogger().level))
    return configured
