"""Verification of inbound requests, run on the raw body before anything parses it.

Slack (``SlackVerifier``)
    ``X-Slack-Signature: v0=<hex HMAC-SHA256(secret, "v0:{ts}:{raw body}")>`` and
    ``X-Slack-Request-Timestamp: <unix seconds>``. The timestamp must be within
    ``window`` (300 s) of the clock, in either direction, and the exact signature of an
    accepted request is refused for the rest of its window (replay guard, shared by all
    replicas when the ``ReplayCache`` is the SQL one).

GitHub (``GitHubVerifier``)
    ``X-Hub-Signature-256: sha256=<hex HMAC-SHA256(secret, raw body)>``. GitHub signs no
    timestamp, so there is no window; redeliveries are de-duplicated by the inbox on
    ``X-GitHub-Delivery``.

GitLab (``GitLabVerifier``)
    ``X-Gitlab-Token: <the secret token, verbatim>``; compared in constant time (as
    SHA-256 digests, so the comparison leaks neither content nor length).

Jenkins and generic senders (``SignedHookVerifier``): Control Room's own scheme
    ``X-ControlRoom-Signature: t=<unix seconds>,v1=<hex HMAC-SHA256(secret, "{t}.{raw body}")>``

    - ``t`` is the signing time in whole seconds (ASCII digits). It must be within
      300 seconds of the receiver's clock, in either direction.
    - The signed string is the ASCII timestamp, one ``.``, then the raw body bytes,
      exactly as sent.
    - ``v1`` is the lowercase hexadecimal HMAC-SHA256 of that string keyed with the
      source's secret (UTF-8). A header may carry several ``v1=`` entries (a sender that
      rotates its secret signs with both); the request is valid when any one matches.
      Unknown ``key=value`` entries are ignored, so the scheme can grow.
    - Each delivery must be signed afresh: an accepted signature is refused for the
      rest of its window (replay guard). Retries should carry a new ``t`` and the same
      ``Idempotency-Key`` header so that the inbox de-duplicates them.
    - Example (shell): ``t=$(date +%s); sig=$(printf '%s.%s' "$t" "$body" |
      openssl dgst -sha256 -hmac "$SECRET" -hex | sed 's/^.* //')`` then send
      ``X-ControlRoom-Signature: t=$t,v1=$sig``. Jenkins' notification plugin cannot
      sign, so a Jenkins pipeline sends its notification from a ``post`` step that
      computes the header this way (``sign_hook`` computes it in Python).

Every verifier accepts two secrets during a rotation window (``HookSource.secret`` and
``previous_secret``; several Slack signing secrets). Failures raise ``EdgeRejection``
(a ``VerificationError``) with a one-line reason that never contains a secret, the HTTP
status to answer, and a short ``code`` for metrics.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Protocol

from controlroom.config import HookSource
from controlroom.edge.replay import MemoryReplayCache, ReplayCache, SqlReplayCache
from controlroom.errors import VerificationError

__all__ = [
    "EdgeRejection",
    "GitHubVerifier",
    "GitLabVerifier",
    "MemoryReplayCache",
    "ReplayCache",
    "SignedHookVerifier",
    "SlackVerifier",
    "SqlReplayCache",
    "WebhookVerifier",
    "get_header",
    "hook_verifier",
    "sign_hook",
    "sign_slack",
]

DEFAULT_WINDOW = 300
_MAX_HEADER = 512
_SLACK_SIG = re.compile(r"v0=([0-9a-fA-F]{64})")
_GITHUB_SIG = re.compile(r"sha256=([0-9a-fA-F]{64})")
_HEX64 = re.compile(r"[0-9a-fA-F]{64}")


class EdgeRejection(VerificationError):
    """A request the edge refuses: ``status`` to answer, ``reason`` to say (one line,
    no secrets) and ``code``, a short label for metrics."""

    def __init__(self, reason: str, status: int = 401, code: str = "bad_signature") -> None:
        super().__init__(reason, status)
        self.code = code


def get_header(headers: Mapping[str, str], name: str) -> str | None:
    """Case-insensitive header lookup over any mapping (Starlette's ``Headers`` is
    already case-insensitive; a plain dict may not be)."""
    value = headers.get(name)
    if value is None:
        value = headers.get(name.lower())
    if value is None:
        lowered = name.lower()
        for key, candidate in headers.items():
            if key.lower() == lowered:
                return candidate
    return value


def _hmac_hex(secret: str, message: bytes) -> str:
    return hmac.new(secret.encode("utf-8"), message, hashlib.sha256).hexdigest()


def _clean_secrets(secrets: Sequence[str]) -> tuple[str, ...]:
    cleaned = tuple(s for s in secrets if s)
    if not cleaned:
        raise ValueError("at least one non-empty secret is required")
    return cleaned


def _parse_timestamp(value: str, header: str) -> int:
    if len(value) > 15 or not value.isascii() or not value.isdigit():
        raise EdgeRejection(f"{header} is not a unix timestamp", 400, "bad_timestamp")
    return int(value)


def _check_window(ts: int, now: float, window: int) -> None:
    if now - ts > window:
        raise EdgeRejection(
            f"stale request: timestamp is more than {window} seconds old", 401, "stale"
        )
    if ts - now > window:
        raise EdgeRejection(f"timestamp is more than {window} seconds in the future", 401, "future")


def _matches(expected: Sequence[str], given: str) -> bool:
    """Constant-time membership: compares ``given`` with every candidate."""
    found = False
    for candidate in expected:
        found |= hmac.compare_digest(candidate.encode("ascii"), given.encode("ascii"))
    return found


def sign_slack(secret: str, body: bytes, timestamp: int) -> dict[str, str]:
    """The headers Slack would send for ``body`` at ``timestamp`` (tests, the sandbox)."""
    base = b"v0:" + str(timestamp).encode("ascii") + b":" + body
    return {
        "X-Slack-Request-Timestamp": str(timestamp),
        "X-Slack-Signature": "v0=" + _hmac_hex(secret, base),
    }


def sign_hook(secret: str, body: bytes, timestamp: int) -> str:
    """The ``X-ControlRoom-Signature`` value for ``body`` signed at ``timestamp``."""
    ts = str(timestamp)
    return f"t={ts},v1={_hmac_hex(secret, ts.encode('ascii') + b'.' + body)}"


class SlackVerifier:
    """Slack's v0 request signing with the 5-minute window and a replay guard."""

    def __init__(
        self,
        secrets: Sequence[str],
        *,
        clock: Callable[[], float] = time.time,
        window: int = DEFAULT_WINDOW,
        replay: ReplayCache,
    ) -> None:
        self._secrets = _clean_secrets(secrets)
        # HMAC objects with the key already absorbed: each request copies one.
        self._keyed = [hmac.new(s.encode("utf-8"), digestmod=hashlib.sha256) for s in self._secrets]
        self._clock = clock
        self.window = window
        self._replay = replay

    async def verify(self, headers: Mapping[str, str], raw_body: bytes) -> None:
        """Return if the request is Slack's and fresh; raise ``EdgeRejection`` if not."""
        signature = get_header(headers, "x-slack-signature")
        if not signature:
            raise EdgeRejection("missing X-Slack-Signature header", 401, "missing_signature")
        ts_header = get_header(headers, "x-slack-request-timestamp")
        if not ts_header:
            raise EdgeRejection(
                "missing X-Slack-Request-Timestamp header", 401, "missing_timestamp"
            )
        ts = _parse_timestamp(ts_header, "X-Slack-Request-Timestamp")
        now = self._clock()
        _check_window(ts, now, self.window)
        match = _SLACK_SIG.fullmatch(signature) if len(signature) < _MAX_HEADER else None
        if match is None:
            raise EdgeRejection("malformed X-Slack-Signature header", 401, "bad_signature")
        given = match.group(1).lower()
        expected = []
        for keyed in self._keyed:
            mac = keyed.copy()
            mac.update(b"v0:%d:" % ts)
            mac.update(raw_body)
            expected.append(mac.hexdigest())
        if not _matches(expected, given):
            raise EdgeRejection("signature mismatch", 401, "bad_signature")
        fresh = await self._replay.claim("slack:" + given, expires_at=ts + self.window + 1, now=now)
        if not fresh:
            raise EdgeRejection("replayed request: signature already used", 401, "replay")


class WebhookVerifier(Protocol):
    """A provider's verification scheme for ``/hooks/{source}``."""

    async def verify(self, headers: Mapping[str, str], raw_body: bytes) -> None: ...


class GitHubVerifier:
    """``X-Hub-Signature-256: sha256=<hex HMAC-SHA256 of the raw body>``."""

    def __init__(self, secrets: Sequence[str]) -> None:
        self._secrets = _clean_secrets(secrets)

    async def verify(self, headers: Mapping[str, str], raw_body: bytes) -> None:
        signature = get_header(headers, "X-Hub-Signature-256")
        if not signature:
            raise EdgeRejection("missing X-Hub-Signature-256 header", 401, "missing_signature")
        match = _GITHUB_SIG.fullmatch(signature) if len(signature) < _MAX_HEADER else None
        if match is None:
            raise EdgeRejection("malformed X-Hub-Signature-256 header", 401, "bad_signature")
        expected = [_hmac_hex(secret, raw_body) for secret in self._secrets]
        if not _matches(expected, match.group(1).lower()):
            raise EdgeRejection("signature mismatch", 401, "bad_signature")


class GitLabVerifier:
    """``X-Gitlab-Token``: the configured secret token, compared in constant time."""

    def __init__(self, secrets: Sequence[str]) -> None:
        self._digests = [
            hashlib.sha256(s.encode("utf-8")).hexdigest() for s in _clean_secrets(secrets)
        ]

    async def verify(self, headers: Mapping[str, str], raw_body: bytes) -> None:
        token = get_header(headers, "X-Gitlab-Token")
        if not token:
            raise EdgeRejection("missing X-Gitlab-Token header", 401, "missing_signature")
        given = hashlib.sha256(token.encode("utf-8", "surrogateescape")).hexdigest()
        if not _matches(self._digests, given):
            raise EdgeRejection("token mismatch", 401, "bad_signature")


class SignedHookVerifier:
    """Control Room's ``X-ControlRoom-Signature`` scheme (see the module docstring)."""

    header = "X-ControlRoom-Signature"

    def __init__(
        self,
        secrets: Sequence[str],
        *,
        clock: Callable[[], float] = time.time,
        window: int = DEFAULT_WINDOW,
        replay: ReplayCache | None = None,
        namespace: str = "hook",
    ) -> None:
        self._secrets = _clean_secrets(secrets)
        # HMAC objects with the key already absorbed: each request copies one.
        self._keyed = [hmac.new(s.encode("utf-8"), digestmod=hashlib.sha256) for s in self._secrets]
        self._clock = clock
        self.window = window
        self._replay = replay
        self._namespace = namespace

    def _parse(self, value: str) -> tuple[str, list[str]]:
        if len(value) > 2048:
            raise EdgeRejection(f"malformed {self.header} header", 401, "bad_signature")
        ts: str | None = None
        signatures: list[str] = []
        for part in value.split(","):
            key, sep, item = part.strip().partition("=")
            if not sep:
                raise EdgeRejection(f"malformed {self.header} header", 401, "bad_signature")
            if key == "t":
                if ts is not None:
                    raise EdgeRejection(
                        f"malformed {self.header} header: repeated t", 401, "bad_signature"
                    )
                ts = item
            elif key == "v1":
                if not _HEX64.fullmatch(item):
                    raise EdgeRejection(
                        f"malformed {self.header} header: bad v1", 401, "bad_signature"
                    )
                signatures.append(item.lower())
        if ts is None or not signatures:
            raise EdgeRejection(
                f"malformed {self.header} header: needs t= and v1=", 401, "bad_signature"
            )
        return ts, signatures

    async def verify(self, headers: Mapping[str, str], raw_body: bytes) -> None:
        value = get_header(headers, self.header)
        if not value:
            raise EdgeRejection(f"missing {self.header} header", 401, "missing_signature")
        ts_text, signatures = self._parse(value)
        ts = _parse_timestamp(ts_text, f"{self.header} t")
        now = self._clock()
        _check_window(ts, now, self.window)
        message = str(ts).encode("ascii") + b"." + raw_body
        expected = [_hmac_hex(secret, message) for secret in self._secrets]
        matched = ""
        for given in signatures:
            if _matches(expected, given):
                matched = given
        if not matched:
            raise EdgeRejection("signature mismatch", 401, "bad_signature")
        if self._replay is not None:
            fresh = await self._replay.claim(
                f"{self._namespace}:{matched}", expires_at=ts + self.window + 1, now=now
            )
            if not fresh:
                raise EdgeRejection("replayed request: signature already used", 401, "replay")


def hook_verifier(
    name: str,
    hook: HookSource,
    *,
    replay: ReplayCache | None = None,
    clock: Callable[[], float] = time.time,
    window: int = DEFAULT_WINDOW,
) -> WebhookVerifier:
    """The verifier for the configured webhook source ``name``, accepting its current and
    previous secret."""
    secrets = [hook.secret.get()]
    if hook.previous_secret is not None:
        secrets.append(hook.previous_secret.get())
    if hook.provider == "github":
        return GitHubVerifier(secrets)
    if hook.provider == "gitlab":
        return GitLabVerifier(secrets)
    return SignedHookVerifier(
        secrets, clock=clock, window=window, replay=replay, namespace=f"hook:{name}"
    )
