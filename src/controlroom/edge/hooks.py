"""Webhook envelopes: what ``/hooks/{source}`` commits once the provider's signature holds.

De-duplication key (prefixed ``hook:<name>:`` so one source cannot shadow another):

- GitHub: ``X-GitHub-Delivery`` (the same GUID on a redelivery);
- GitLab: ``Idempotency-Key`` (17.4+, stable across retries), else ``X-Gitlab-Event-UUID``;
- Jenkins, generic: ``Idempotency-Key``;
- otherwise ``sha256:<hex digest of the raw body>``.

Provider event: ``X-GitHub-Event``, ``X-Gitlab-Event``, Jenkins' ``build.phase``
(QUEUED, STARTED, COMPLETED, FINALIZED), or the generic body's ``event`` field.
"""

from __future__ import annotations

import hashlib
import re
import time
from collections.abc import Callable, Mapping
from typing import Any

from controlroom.config import HookSource
from controlroom.edge.signing import EdgeRejection, get_header
from controlroom.edge.slack_parse import decode_json_object
from controlroom.envelope import Envelope

__all__ = ["is_json_media_type", "webhook_envelope"]

_TOKEN = re.compile(r"[\x21-\x7e]{1,200}")
_EVENT = re.compile(r"[\x20-\x7e]{1,100}")


def is_json_media_type(content_type: str) -> bool:
    media = content_type.split(";", 1)[0].strip().lower()
    return media == "application/json" or (
        media.startswith("application/") and media.endswith("+json")
    )


def _token(headers: Mapping[str, str], name: str) -> str | None:
    value = get_header(headers, name)
    if value is None or value == "":
        return None
    if not _TOKEN.fullmatch(value):
        raise EdgeRejection(f"malformed {name} header", 400, "bad_header")
    return value


def _event_header(headers: Mapping[str, str], name: str, required: bool) -> str:
    value = get_header(headers, name)
    if not value:
        if required:
            raise EdgeRejection(f"missing {name} header", 400, "bad_header")
        return ""
    if not _EVENT.fullmatch(value):
        raise EdgeRejection(f"malformed {name} header", 400, "bad_header")
    return value


def _delivery_id(provider: str, headers: Mapping[str, str], raw: bytes) -> str:
    names: tuple[str, ...]
    if provider == "github":
        names = ("X-GitHub-Delivery", "Idempotency-Key")
    elif provider == "gitlab":
        names = ("Idempotency-Key", "X-Gitlab-Event-UUID")
    else:
        names = ("Idempotency-Key",)
    for name in names:
        value = _token(headers, name)
        if value is not None:
            return value
    return "sha256:" + hashlib.sha256(raw).hexdigest()


def _provider_event(provider: str, headers: Mapping[str, str], body: dict[str, Any]) -> str:
    if provider == "github":
        return _event_header(headers, "X-GitHub-Event", required=True)
    if provider == "gitlab":
        return _event_header(headers, "X-Gitlab-Event", required=True)
    if provider == "jenkins":
        build = body.get("build")
        phase = build.get("phase") if isinstance(build, dict) else None
        return phase[:100] if isinstance(phase, str) else ""
    event = body.get("event")
    return event[:100] if isinstance(event, str) else ""


def webhook_envelope(
    name: str,
    hook: HookSource,
    headers: Mapping[str, str],
    raw: bytes,
    *,
    clock: Callable[[], float] = time.time,
) -> Envelope:
    """Build the envelope of a verified webhook delivery; raise ``EdgeRejection`` (4xx)
    when it is not JSON or lacks what the provider always sends."""
    content_type = get_header(headers, "Content-Type") or ""
    if not is_json_media_type(content_type):
        raise EdgeRejection("webhook body must be JSON", 415, "bad_content_type")
    body = decode_json_object(raw)
    provider_event = _provider_event(hook.provider, headers, body)
    delivery = _delivery_id(hook.provider, headers, raw)
    return Envelope(
        kind="webhook",
        source=f"hook:{name}",
        body=body,
        dedupe_key=f"hook:{name}:{delivery}",
        provider_event=provider_event,
        received_at=clock(),
    )
