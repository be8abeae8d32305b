"""Configuration: one TOML file plus ``CONTROLROOM_*`` environment overrides, validated
once at start, frozen, and passed in. Nothing here runs at import time.

Secrets are referenced, not written: ``env:NAME``, ``file:/path`` (and more schemes
registered by ``controlroom.security.secrets``). They resolve to ``Secret`` values whose
``repr`` is redacted.
"""

from __future__ import annotations

import os
import re
import tomllib
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, ValidationInfo, field_validator

from controlroom.errors import ConfigError, SecretError

__all__ = [
    "DatabaseSettings",
    "HookSource",
    "QueueSettings",
    "SandboxSettings",
    "Secret",
    "ServerSettings",
    "Settings",
    "SlackSettings",
    "load_settings",
    "parse_duration",
    "register_secret_scheme",
    "resolve_secret",
]


class Secret:
    """A secret value. Its repr and str never show the value."""

    __slots__ = ("_reference", "_value")

    def __init__(self, value: str, reference: str = "inline") -> None:
        self._value = value
        self._reference = reference

    def get(self) -> str:
        return self._value

    @property
    def reference(self) -> str:
        return self._reference

    def __repr__(self) -> str:
        return f"Secret({self._reference!r}, '**********')"

    __str__ = __repr__

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Secret) and other._value == self._value

    def __hash__(self) -> int:
        return hash(self._value)


SecretResolver = Callable[[str], str]
_SCHEMES: dict[str, SecretResolver] = {}


def register_secret_scheme(scheme: str, resolver: SecretResolver) -> None:
    """Teach ``resolve_secret`` a reference scheme (``keystore``, ``vault``, ...)."""
    _SCHEMES[scheme] = resolver


def _env(name: str, environ: Mapping[str, str] | None = None) -> str:
    try:
        value = (os.environ if environ is None else environ)[name]
    except KeyError:
        raise SecretError(f"env:{name}", "environment variable is not set") from None
    if not value:
        raise SecretError(f"env:{name}", "environment variable is empty")
    return value


def _file(path: str) -> str:
    p = Path(path).expanduser()
    try:
        value = p.read_text(encoding="utf-8").strip()
    except OSError as exc:
        raise SecretError(f"file:{path}", f"cannot read: {exc.strerror}") from None
    if not value:
        raise SecretError(f"file:{path}", "file is empty")
    return value


register_secret_scheme("env", _env)
register_secret_scheme("file", _file)


def resolve_secret(
    reference: str, *, allow_plain: bool, environ: Mapping[str, str] | None = None
) -> Secret:
    """Resolve ``scheme:rest`` to a Secret. A value with no known scheme is a plain-text
    secret, refused unless ``allow_plain`` (development only)."""
    scheme, sep, rest = reference.partition(":")
    if sep and scheme == "env":
        return Secret(_env(rest, environ), reference=reference)
    if sep and scheme in _SCHEMES:
        return Secret(_SCHEMES[scheme](rest), reference=reference)
    if sep and re.fullmatch(r"[a-z][a-z0-9-]{1,15}", scheme) and not rest.startswith("//"):
        known = ", ".join(sorted(_SCHEMES))
        raise SecretError(reference.split(":", 1)[0] + ":…", f"unknown scheme (known: {known})")
    if not allow_plain:
        raise SecretError(
            "(inline value)",
            "plain-text secret in configuration; use env:NAME or file:PATH "
            "(or set allow_plaintext_secrets = true for development)",
        )
    return Secret(reference, reference="inline")


class _Model(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid", arbitrary_types_allowed=True)


class ServerSettings(_Model):
    host: str = "127.0.0.1"
    port: int = Field(default=8080, ge=0, le=65535)
    max_body_bytes: int = Field(default=1_048_576, ge=1024)
    public_url: str = ""


class SlackSettings(_Model):
    signing_secret: Secret | None = None
    bot_token: Secret | None = None
    app_token: Secret | None = None
    client_id: str = ""
    client_secret: Secret | None = None
    api_url: str = "https://slack.com/api/"
    socket_mode: bool = False
    socket_connections: int = Field(default=1, ge=1, le=10)
    team_id: str = ""

    @property
    def configured(self) -> bool:
        return self.signing_secret is not None or self.app_token is not None


_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smhdw]?)\s*$")
_DURATION_UNIT = {"": 1.0, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0, "w": 604800.0}
_DAY = 86400.0


def parse_duration(value: str | float) -> float:
    """Seconds in ``30s``, ``5m``, ``2h``, ``7d``, ``1w`` or a plain number of seconds.
    Raises ``ValueError`` naming the accepted forms."""
    if isinstance(value, bool):
        raise ValueError("a duration is a number of seconds or 30s, 5m, 2h, 7d, 1w")
    if isinstance(value, int | float):
        seconds = float(value)
    else:
        m = _DURATION.match(value)
        if m is None:
            raise ValueError(f"{value!r} is not a duration (30s, 5m, 2h, 7d, 1w, or seconds)")
        seconds = float(m.group(1)) * _DURATION_UNIT[m.group(2)]
    if seconds < 0:
        raise ValueError("a duration cannot be negative")
    return seconds


class QueueSettings(_Model):
    workers: int = Field(default=8, ge=1, le=256)
    max_attempts: int = Field(default=5, ge=1, le=100)
    backoff_base: float = Field(default=1.0, gt=0)
    backoff_cap: float = Field(default=300.0, gt=0)
    lease_seconds: float = Field(default=60.0, gt=0)
    inbox_retention: float = Field(
        default=7 * _DAY,
        description=(
            "How long accepted envelopes (and finished jobs) are kept, as seconds or "
            "30s/5m/2h/7d/1w; at least 1d. De-duplication lasts exactly this long: an "
            "envelope purged from the inbox no longer stops a redelivery with the same "
            "dedupe_key. Slack retries an event for up to about an hour and delayed event "
            "delivery can retry over hours, hence the one-day floor. Envelopes a queued, "
            "running, retrying or dead-lettered job still refers to are never purged."
        ),
    )
    inbox_purge_batch: int = Field(
        default=500,
        ge=1,
        le=100_000,
        description="Rows deleted per transaction by the hourly purge (keeps writes short).",
    )

    @field_validator("inbox_retention", mode="before")
    @classmethod
    def _retention_duration(cls, v: Any) -> Any:
        return parse_duration(v) if isinstance(v, str | int | float) else v

    @field_validator("inbox_retention")
    @classmethod
    def _retention_floor(cls, v: float) -> float:
        if v < _DAY:
            raise ValueError(
                "must be at least 1d: Slack retries an event for up to about an hour and "
                "delayed event delivery can retry over hours; a shorter retention would "
                "run such retries again"
            )
        return v


class DatabaseSettings(_Model):
    """Connection pools per process on PostgreSQL (SQLite opens connections as needed).
    A process holds at most ``pool_size + max_overflow`` store connections plus
    ``queue_pool_max`` queue connections, ``gate_pool_max`` rate-gate connections and, in
    a worker, one LISTEN connection."""

    pool_size: int = Field(
        default=3, ge=1, le=100, description="SQLAlchemy connections kept open per process."
    )
    max_overflow: int = Field(
        default=2,
        ge=0,
        le=100,
        description="SQLAlchemy connections opened beyond pool_size in bursts, then closed.",
    )
    queue_pool_min: int = Field(
        default=1, ge=1, le=100, description="Queue (psycopg) connections kept open."
    )
    queue_pool_max: int = Field(
        default=4, ge=1, le=100, description="Queue (psycopg) connections at most."
    )
    gate_pool_max: int = Field(
        default=4,
        ge=1,
        le=100,
        description="Connections the shared Slack rate gate uses at most (one is kept open).",
    )

    @field_validator("queue_pool_max")
    @classmethod
    def _queue_pool_order(cls, v: int, info: ValidationInfo) -> int:
        low = info.data.get("queue_pool_min")
        if isinstance(low, int) and low > v:
            raise ValueError(f"must be at least queue_pool_min ({low})")
        return v


class SandboxSettings(_Model):
    enabled: Literal["auto", "on", "off"] = "auto"
    host: str = "127.0.0.1"
    port: int = Field(default=8090, ge=0, le=65535)
    seed: str = ""
    delivery: Literal["http", "socket"] = "http"
    time_scale: float = Field(default=1.0, gt=0)


class HookSource(_Model):
    provider: Literal["github", "gitlab", "jenkins", "generic"]
    secret: Secret
    previous_secret: Secret | None = None


class Settings(_Model):
    data_dir: Path = Path(".controlroom")
    database_url: str = ""
    allow_plaintext_secrets: bool = False
    log_format: Literal["auto", "json", "pretty"] = "auto"
    log_level: str = "INFO"
    server: ServerSettings = ServerSettings()
    slack: SlackSettings = SlackSettings()
    queue: QueueSettings = QueueSettings()
    database: DatabaseSettings = DatabaseSettings()
    sandbox: SandboxSettings = SandboxSettings()
    hooks: dict[str, HookSource] = {}
    workflows: dict[str, dict[str, Any]] = {}
    enabled_workflows: tuple[str, ...] = ()
    policy: dict[str, Any] = {}

    @field_validator("database_url")
    @classmethod
    def _db_scheme(cls, v: str) -> str:
        if v and not v.startswith(("sqlite:", "postgresql:", "postgres:")):
            raise ValueError("must start with sqlite:/// or postgresql://")
        return v

    @property
    def effective_database_url(self) -> str:
        return self.database_url or f"sqlite:///{self.data_dir / 'controlroom.db'}"

    @property
    def is_distributed(self) -> bool:
        return self.effective_database_url.startswith(("postgresql:", "postgres:"))


# Keys whose string values are secret references.
_SECRET_KEYS = {
    ("slack", "signing_secret"),
    ("slack", "bot_token"),
    ("slack", "app_token"),
    ("slack", "client_secret"),
}
_ENV_PREFIX = "CONTROLROOM_"
# CONTROLROOM_* variables that are not settings overrides (read by their own modules).
_NOT_SETTINGS = frozenset(
    {"CONTROLROOM_MASTER_KEY", "CONTROLROOM_MASTER_KEY_FILE", "CONTROLROOM_CONFIG"}
)


def _set_path(tree: dict[str, Any], path: list[str], value: Any) -> None:
    node = tree
    for part in path[:-1]:
        node = node.setdefault(part, {})
    node[path[-1]] = value


def _env_overrides(environ: Mapping[str, str]) -> dict[tuple[str, ...], str]:
    """``CONTROLROOM_SLACK__SIGNING_SECRET=env:X`` -> ("slack", "signing_secret")."""
    out: dict[tuple[str, ...], str] = {}
    for name, value in environ.items():
        if name in _NOT_SETTINGS:
            continue
        if name.startswith(_ENV_PREFIX) and not name.startswith(_ENV_PREFIX + "TEST"):
            out[tuple(name[len(_ENV_PREFIX) :].lower().split("__"))] = value
    return out


def _coerce_env(value: str) -> Any:
    low = value.lower()
    if low in ("true", "false"):
        return low == "true"
    try:
        return int(value)
    except ValueError:
        pass
    if value.startswith("["):
        import json

        try:
            return json.loads(value)
        except ValueError:
            return value
    return value


def load_settings(
    path: Path | None = None,
    *,
    environ: Mapping[str, str] | None = None,
    overrides: Mapping[str, Any] | None = None,
) -> Settings:
    """Read, merge, resolve and validate. Raises ``ConfigError`` listing every problem
    with its key and source."""
    env = os.environ if environ is None else environ
    raw: dict[str, Any] = {}
    sources: dict[tuple[str, ...], str] = {}
    problems: list[tuple[str, str, str]] = []
    file_label = str(path) if path else "defaults"
    if path is not None:
        try:
            raw = tomllib.loads(Path(path).read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise ConfigError([("(file)", str(path), "file not found")]) from None
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError([("(file)", str(path), f"not valid TOML: {exc}")]) from None
    for key_path, value in _env_overrides(env).items():
        _set_path(raw, list(key_path), _coerce_env(value))
        sources[key_path] = _ENV_PREFIX + "__".join(key_path).upper()
    for dotted, value in (overrides or {}).items():
        key_path = tuple(dotted.split("."))
        _set_path(raw, list(key_path), value)
        sources[key_path] = "command line"

    def source_of(key_path: tuple[str, ...]) -> str:
        return sources.get(key_path, file_label)

    allow_plain = bool(raw.get("allow_plaintext_secrets", False))
    # Resolve secret references.
    for section, key in _SECRET_KEYS:
        sect = raw.get(section)
        if isinstance(sect, dict) and isinstance(sect.get(key), str):
            try:
                sect[key] = resolve_secret(sect[key], allow_plain=allow_plain, environ=env)
            except SecretError as exc:
                problems.append((f"{section}.{key}", source_of((section, key)), str(exc)))
                sect.pop(key)
    hooks = raw.get("hooks")
    if isinstance(hooks, dict):
        for name, hook in hooks.items():
            if not isinstance(hook, dict):
                continue
            for key in ("secret", "previous_secret"):
                if isinstance(hook.get(key), str):
                    try:
                        hook[key] = resolve_secret(hook[key], allow_plain=allow_plain, environ=env)
                    except SecretError as exc:
                        problems.append(
                            (f"hooks.{name}.{key}", source_of(("hooks", name, key)), str(exc))
                        )
                        hook.pop(key)
    wf = raw.get("workflows")
    if isinstance(wf, dict) and "enabled" in wf:
        raw["enabled_workflows"] = tuple(wf.pop("enabled") or ())
    try:
        settings = Settings.model_validate(raw)
    except ValidationError as exc:
        for err in exc.errors():
            loc = tuple(str(p) for p in err["loc"])
            problems.append((".".join(loc), source_of(loc), err["msg"]))
        raise ConfigError(problems) from None
    if problems:
        raise ConfigError(problems)
    return settings
