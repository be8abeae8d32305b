"""The provider-neutral deploy event, its errors, and the parsing helpers the provider
modules share. Public names are re-exported by ``controlroom.workflows.deploys.sources``."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal, get_args

from controlroom.errors import PermanentError

__all__ = [
    "TERMINAL",
    "DeployEvent",
    "DeployStatus",
    "MalformedPayload",
    "Normalised",
    "Provider",
    "parse_time",
]

Provider = Literal["github", "gitlab", "jenkins", "generic"]
DeployStatus = Literal["queued", "in_progress", "succeeded", "failed", "cancelled", "unstable"]
TERMINAL: frozenset[str] = frozenset({"succeeded", "failed", "cancelled", "unstable"})
_PROVIDERS: frozenset[str] = frozenset(get_args(Provider))


class MalformedPayload(PermanentError):
    """A webhook body is not what its provider sends: ``field`` names what is missing or
    invalid. ``status`` is the HTTP status an endpoint should answer (400)."""

    status = 400

    def __init__(self, provider: str, field: str, reason: str = "missing") -> None:
        self.provider = provider
        self.field = field
        self.reason = reason
        super().__init__(f"{provider} payload: {field}: {reason}")


@dataclass(frozen=True, slots=True)
class DeployEvent:
    """One provider event about one deployment run, in provider-neutral terms.

    ``run_key`` identifies the run across all of its events (queued, started,
    finished), e.g. ``github:octo-org/octo-repo:run:289782451:1``. ``repository``,
    ``workflow``, ``job`` and ``branch`` are what routes match on.
    """

    provider: Provider
    delivery_id: str
    event_name: str
    run_key: str
    status: DeployStatus
    repository: str = ""
    workflow: str = ""
    job: str = ""
    branch: str = ""
    service: str = ""
    environment: str = ""
    version: str = ""
    commit_sha: str = ""
    commit_url: str = ""
    author_name: str = ""
    author_email: str = ""
    author_login: str = ""
    run_url: str = ""
    run_id: str = ""
    run_attempt: int = 1
    started_at: datetime | None = None
    finished_at: datetime | None = None
    details: Mapping[str, str] = field(default_factory=dict)

    @property
    def finished(self) -> bool:
        return self.status in TERMINAL


@dataclass(frozen=True, slots=True)
class Normalised:
    """The outcome of ``normalise``: an event, or ``None`` and the reason it was ignored."""

    event: DeployEvent | None
    reason: str = ""


# ---------------------------------------------------------------------------------------
# small helpers


def parse_time(value: object) -> datetime | None:
    """Parse the timestamps providers send (ISO 8601 with ``Z``, GitLab's
    ``2016-08-12 15:23:28 UTC`` and ``2021-04-28 21:50:00 +0200``, unix seconds or
    Jenkins' milliseconds) into an aware UTC datetime; ``None`` when absent or unreadable."""
    if value is None or value == "" or isinstance(value, bool):
        return None
    if isinstance(value, int | float):
        seconds = value / 1000 if value > 1e11 else value
        try:
            return datetime.fromtimestamp(seconds, UTC)
        except (OverflowError, OSError, ValueError):
            return None
    if not isinstance(value, str):
        return None
    text = value.strip()
    if text.endswith(" UTC"):
        text = text[:-4] + "+00:00"
    elif text.endswith("Z"):
        text = text[:-1] + "+00:00"
    try:
        parsed = datetime.fromisoformat(text)
    except ValueError:
        try:
            parsed = datetime.strptime(text, "%Y-%m-%d %H:%M:%S %z")
        except ValueError:
            return None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)
    return parsed.astimezone(UTC)


def _s(value: object) -> str:
    """A string field, tolerating absent / null / numbers."""
    if value is None or isinstance(value, dict | list):
        return ""
    return str(value)


def _obj(payload: Mapping[str, Any], key: str) -> Mapping[str, Any]:
    value = payload.get(key)
    return value if isinstance(value, Mapping) else {}


def _require(provider: str, payload: Mapping[str, Any], path: str) -> Any:
    """Walk ``a.b.c``; raise ``MalformedPayload`` naming the first missing part."""
    node: Any = payload
    walked: list[str] = []
    for part in path.split("."):
        walked.append(part)
        if not isinstance(node, Mapping) or node.get(part) in (None, ""):
            raise MalformedPayload(provider, ".".join(walked))
        node = node[part]
    return node


def _req_obj(provider: str, payload: Mapping[str, Any], path: str) -> Mapping[str, Any]:
    value = _require(provider, payload, path)
    if not isinstance(value, Mapping):
        raise MalformedPayload(provider, path, "not an object")
    return value


def _req_str(provider: str, payload: Mapping[str, Any], path: str) -> str:
    value = _require(provider, payload, path)
    if isinstance(value, bool) or not isinstance(value, str | int | float):
        raise MalformedPayload(provider, path, "not a string or number")
    return str(value)


def _items(value: object) -> list[Any]:
    return value if isinstance(value, list) else []


def _int(value: object, default: int) -> int:
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    if isinstance(value, str | float):
        try:
            return int(value)
        except (ValueError, OverflowError):
            return default
    return default


def _headers(headers: Mapping[str, str]) -> dict[str, str]:
    return {k.lower(): v for k, v in headers.items()}


def _body_hash(provider: str, payload: Mapping[str, Any]) -> str:
    canonical = json.dumps(payload, sort_keys=True, separators=(",", ":"), default=str)
    return f"{provider}-" + hashlib.sha256(canonical.encode()).hexdigest()[:32]


def _branch(ref: str) -> str:
    for prefix in ("refs/heads/", "refs/tags/", "origin/"):
        if ref.startswith(prefix):
            return ref[len(prefix) :]
    return ref


def _commit_url(repo_url: str, sha: str) -> str:
    if not sha or not repo_url.startswith(("https://", "http://")):
        return ""
    return repo_url.removesuffix("/").removesuffix(".git") + "/commit/" + sha


def _ignored(reason: str) -> Normalised:
    return Normalised(None, reason)
