"""Keep secrets out of logs.

A ``Redactor`` knows the shapes of Slack tokens (``xoxb-``, ``xoxp-``, ``xoxa-``,
``xoxr-``, ``xoxe.xoxb-``, ``xoxe-1-``, ``xapp-``...), ``Authorization``/``Bearer``
headers, a few key names that always hold secrets, and every secret value registered
with ``add``. It is used three ways:

- as the last-but-one structlog processor (``redaction_processor``), recursively over
  the event dict;
- as a ``logging.Filter`` (``RedactionFilter``) on stdlib handlers;
- directly (``redact``/``redact_value``), e.g. by the audit log before it stores details.

``configure_logging`` wires structlog and the stdlib root logger into one JSON (or
pretty, on a TTY) stream with redaction just before rendering and the envelope id bound
through contextvars (``bind_envelope``). ``RateLimitedLogger`` keeps security events
(bad signatures, replays, denied clicks) from flooding the logs.
"""

from __future__ import annotations

import logging
import re
import sys
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable, Iterator, Mapping, MutableMapping
from contextlib import contextmanager
from typing import Any, Literal, TextIO

import structlog

from controlroom.config import Secret

__all__ = [
    "REDACTED",
    "RateLimitedLogger",
    "RedactionFilter",
    "Redactor",
    "bind_envelope",
    "configure_logging",
]

REDACTED = "[redacted]"

# Slack token shapes. Legacy/bot/user/app tokens, refresh tokens, rotating (xoxe.) tokens.
_TOKEN = r"(?:xoxe\.xox[a-z]|xox[a-z]|xapp)-[A-Za-z0-9][A-Za-z0-9\-]*"  # noqa: S105 (a pattern)
# "Authorization: Bearer abc", "authorization=Basic xyz", "'Authorization': 'Bearer x'".
_AUTH_HEADER = (
    r"(?i:(?P<auth_key>(?:proxy-)?authorization)(?P<auth_sep>['\"]?\s*[:=]\s*['\"]?))"
    r"(?P<auth_val>[^\s'\",;}]+(?:\s+[^\s'\",;}]+)?)"
)
_BEARER = r"(?i:(?P<bearer>bearer\s+))(?P<bearer_val>[A-Za-z0-9\-._~+/=]{8,})"
_PATTERN = re.compile(f"(?P<token>{_TOKEN})|{_AUTH_HEADER}|{_BEARER}")

# Keys whose values are secrets whatever they look like (compared lower-cased, with
# dashes as underscores).
SENSITIVE_KEYS = frozenset(
    {
        "authorization",
        "proxy_authorization",
        "cookie",
        "set_cookie",
        "password",
        "passwd",
        "secret",
        "client_secret",
        "signing_secret",
        "access_token",
        "refresh_token",
        "bot_token",
        "user_token",
        "app_token",
        "token",
        "api_key",
        "x_slack_signature",
        "master_key",
    }
)
# Secrets shorter than this are only redacted as whole words, so a short value does not
# shred unrelated text.
_SHORT = 8
_MAX_DEPTH = 20


def _sub(match: re.Match[str]) -> str:
    if match.group("token") is not None:
        return REDACTED
    if match.group("auth_key") is not None:
        return match.group("auth_key") + match.group("auth_sep") + REDACTED
    return match.group("bearer") + REDACTED


class Redactor:
    """Replaces token shapes, auth headers and registered secret values with
    ``[redacted]``. Thread-safe; ``add`` may be called while logging happens."""

    def __init__(self, secrets: Iterable[str] = ()) -> None:
        self._lock = threading.Lock()
        self._values: set[str] = set()
        self._compiled: re.Pattern[str] | None = None
        for s in secrets:
            self.add(s)

    def add(self, secret: str | Secret) -> None:
        """Register a secret value so it is redacted wherever it appears."""
        value = secret.get() if isinstance(secret, Secret) else secret
        value = value.strip()
        if not value:
            return
        with self._lock:
            if value in self._values:
                return
            self._values.add(value)
            parts = []
            for v in sorted(self._values, key=len, reverse=True):
                esc = re.escape(v)
                parts.append(esc if len(v) >= _SHORT else rf"(?<![A-Za-z0-9]){esc}(?![A-Za-z0-9])")
            self._compiled = re.compile("|".join(parts))

    def add_settings(self, settings: Any) -> int:
        """Register every resolved ``Secret`` found in a Settings tree; returns how many."""
        found = 0

        def walk(node: Any, depth: int) -> None:
            nonlocal found
            if depth > _MAX_DEPTH:
                return
            if isinstance(node, Secret):
                self.add(node)
                found += 1
            elif hasattr(node, "__pydantic_fields__"):
                for name in type(node).__pydantic_fields__:
                    walk(getattr(node, name), depth + 1)
            elif isinstance(node, Mapping):
                for v in node.values():
                    walk(v, depth + 1)
            elif isinstance(node, list | tuple):
                for v in node:
                    walk(v, depth + 1)

        walk(settings, 0)
        return found

    def __len__(self) -> int:
        return len(self._values)

    def redact(self, text: str) -> str:
        """Redact one string."""
        compiled = self._compiled
        if compiled is not None:
            text = compiled.sub(REDACTED, text)
        return _PATTERN.sub(_sub, text)

    def redact_value(self, value: Any, _depth: int = 0) -> Any:
        """Redact recursively: strings, bytes, mappings (sensitive keys lose their value),
        lists, tuples, sets, ``Secret``. Other objects become their redacted ``str``
        (they would be rendered as text by the log renderer anyway), except numbers,
        booleans and None."""
        if value is None or isinstance(value, bool | int | float):
            return value
        if isinstance(value, str):
            return self.redact(value)
        if isinstance(value, Secret):
            return REDACTED
        if _depth > _MAX_DEPTH:
            return "[too deep]"
        if isinstance(value, Mapping):
            return {k: self._redact_item(k, v, _depth) for k, v in value.items()}
        if isinstance(value, list | tuple | set | frozenset):
            return [self.redact_value(v, _depth + 1) for v in value]
        if isinstance(value, bytes | bytearray):
            return self.redact(bytes(value).decode("utf-8", "replace"))
        return self.redact(str(value))

    def _redact_item(self, key: Any, value: Any, depth: int) -> Any:
        if isinstance(key, str) and _is_sensitive_key(key) and value not in (None, ""):
            if isinstance(value, bool | int | float):
                return value
            return REDACTED
        return self.redact_value(value, depth + 1)

    # structlog processor -------------------------------------------------------------
    def __call__(
        self, _logger: Any, _method: str, event_dict: MutableMapping[str, Any]
    ) -> MutableMapping[str, Any]:
        for key in list(event_dict):
            event_dict[key] = self._redact_item(key, event_dict[key], 0)
        return event_dict


def _is_sensitive_key(key: str) -> bool:
    k = key.lower().replace("-", "_")
    return k in SENSITIVE_KEYS or k.endswith(("_token", "_secret", "_password"))


class RedactionFilter(logging.Filter):
    """A stdlib ``logging.Filter`` that redacts the message, its arguments, the
    formatted exception and stack, and string ``extra`` attributes of every record."""

    _STANDARD = frozenset(logging.makeLogRecord({}).__dict__) | {"message", "asctime"}

    def __init__(self, redactor: Redactor) -> None:
        super().__init__()
        self.redactor = redactor

    def filter(self, record: logging.LogRecord) -> bool:
        r = self.redactor
        try:
            message = record.getMessage()
        except (TypeError, ValueError):
            message = str(record.msg)
        record.msg = r.redact(message)
        record.args = None
        if record.exc_info and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = r.redact(record.exc_text)
        if record.stack_info:
            record.stack_info = r.redact(record.stack_info)
        for key, value in list(record.__dict__.items()):
            if key in self._STANDARD or key.startswith("_"):
                continue
            record.__dict__[key] = r._redact_item(key, value, 0)
        return True


@contextmanager
def bind_envelope(envelope_id: str, **more: Any) -> Iterator[None]:
    """Bind ``envelope_id`` (and more keys) to every log line emitted in this context
    (task or thread), through structlog's contextvars."""
    with structlog.contextvars.bound_contextvars(envelope_id=envelope_id, **more):
        yield


def configure_logging(
    level: str | int = "INFO",
    fmt: Literal["json", "pretty", "auto"] = "auto",
    redactor: Redactor | None = None,
    *,
    stream: TextIO | None = None,
) -> Redactor:
    """Send structlog and stdlib logging to ``stream`` (stderr) as JSON lines, or pretty
    console output when ``fmt`` is ``pretty`` (or ``auto`` on a TTY). The redactor runs
    last-but-one, after exceptions are formatted, just before rendering. Returns the
    redactor in use (so callers can ``add`` secrets later)."""
    redactor = redactor or Redactor()
    out = stream or sys.stderr
    if isinstance(level, str):
        numeric = logging.getLevelNamesMapping().get(level.upper())
        if numeric is None:
            raise ValueError(f"unknown log level {level!r}")
        level = numeric
    pretty = fmt == "pretty" or (fmt == "auto" and out.isatty())
    renderer: Any = (
        structlog.dev.ConsoleRenderer(colors=out.isatty())
        if pretty
        else structlog.processors.JSONRenderer(sort_keys=True)
    )
    shared: list[Any] = [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        structlog.processors.StackInfoRenderer(),
        structlog.processors.format_exc_info,
    ]
    structlog.configure(
        processors=[*shared, redactor, renderer],
        wrapper_class=structlog.make_filtering_bound_logger(level),
        logger_factory=structlog.PrintLoggerFactory(out),
        cache_logger_on_first_use=False,
    )
    formatter = structlog.stdlib.ProcessorFormatter(
        foreign_pre_chain=[structlog.stdlib.add_logger_name, *shared],
        processors=[structlog.stdlib.ProcessorFormatter.remove_processors_meta, redactor, renderer],
    )
    handler = logging.StreamHandler(out)
    handler.setFormatter(formatter)
    handler.addFilter(RedactionFilter(redactor))
    handler.set_name("controlroom")
    root = logging.getLogger()
    for old in list(root.handlers):
        if old.get_name() == "controlroom":
            root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level)
    return redactor


class RateLimitedLogger:
    """Logs at most ``per_minute`` events per key per minute and counts the rest.

    The first event after a window with suppressed events carries ``suppressed=N``.
    ``counts`` holds every event seen per key (logged or not) for metrics; an optional
    ``on_event(key, logged)`` hook lets a metrics counter follow along. At most
    ``max_keys`` windows are kept (oldest evicted) so attacker-chosen keys cannot grow
    memory without bound.
    """

    def __init__(
        self,
        logger: Any,
        *,
        per_minute: int = 10,
        clock: Callable[[], float] = time.monotonic,
        on_event: Callable[[str, bool], None] | None = None,
        max_keys: int = 10_000,
        window: float = 60.0,
    ) -> None:
        if per_minute < 1:
            raise ValueError("per_minute must be at least 1")
        self._logger = logger
        self._per_minute = per_minute
        self._clock = clock
        self._on_event = on_event
        self._max_keys = max_keys
        self._window = window
        self._lock = threading.Lock()
        # key -> [window_start, logged_in_window, suppressed_in_window]
        self._windows: OrderedDict[str, list[float]] = OrderedDict()
        self.counts: dict[str, int] = {}
        self.suppressed_total: dict[str, int] = {}

    def log(self, key: str, event: str, *, level: str = "warning", **fields: Any) -> bool:
        """Log ``event`` under ``key`` unless the key's budget for this minute is spent.
        Returns whether the line was written."""
        now = self._clock()
        with self._lock:
            self.counts[key] = self.counts.get(key, 0) + 1
            win = self._windows.get(key)
            carried = 0
            if win is None or now - win[0] >= self._window:
                carried = int(win[2]) if win is not None else 0
                win = [now, 0.0, 0.0]
                self._windows[key] = win
                self._windows.move_to_end(key)
                while len(self._windows) > self._max_keys:
                    self._windows.popitem(last=False)
            if win[1] >= self._per_minute:
                win[2] += 1
                self.suppressed_total[key] = self.suppressed_total.get(key, 0) + 1
                logged = False
            else:
                win[1] += 1
                logged = True
        if logged:
            if carried:
                fields["suppressed"] = carried
            getattr(self._logger, level)(event, security_event=key, **fields)
        if self._on_event is not None:
            self._on_event(key, logged)
        return logged

    def warning(self, key: str, event: str, **fields: Any) -> bool:
        return self.log(key, event, level="warning", **fields)
