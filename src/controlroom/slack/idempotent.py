"""No duplicate posts: idempotency keys in message metadata, looked up before a re-send.

Every ``chat.postMessage`` made through :class:`~controlroom.slack.client.SlackClient`
carries an idempotency key: the caller's ``idempotency_key=`` or a random one. It is
stored in the message's ``metadata`` (``event_type`` ``"controlroom_post"``,
``event_payload`` ``{"key": ...}``; when the caller already sends metadata of its own,
the key is added to its payload as ``"controlroom_key"``).

A post whose outcome is *unknown* (the request may have reached Slack: a timeout or a
connection reset after sending, an HTTP 5xx, ``internal_error``/``fatal_error``/
``service_unavailable``/``request_timeout``) is never simply sent again. Before every
re-send the client reads the channel with ``conversations.history`` (or the thread with
``conversations.replies`` for a ``thread_ts`` post), ``include_all_metadata=true``,
``oldest`` = the first attempt's wall-clock time minus ``lookup_margin`` (60 s, for
clock skew), following cursors, and re-sends only when no message carries the key. When
it finds one it returns that message as the call's result (``ok``, ``channel``, ``ts``,
``message``), counted as outcome ``recovered``.

The guarantee, precisely:

* **Exactly once, within one call**, as long as the channel (or thread) history is
  readable when a re-send is considered: the post is on Slack once, and the caller gets
  its ``ts``.
* **When the history is not readable** (``missing_scope`` for ``channels:history``,
  ``not_in_channel``, the lookup itself failing after its retries, or the 2025
  non-Marketplace cohort's 1-per-minute ``conversations.history`` making the lookup
  wait longer than ``max_wait``), the client does **not** re-send: it raises
  :class:`PostOutcomeUnknown` (a :class:`~controlroom.errors.SlackTransientError`, or the
  gate's :class:`~controlroom.errors.RetryLater`), so the message is delivered *at most*
  once by this call. Pass ``on_unreadable="resend"`` to the client to prefer *at least*
  once instead.
* **Across calls** (a job re-run after a crash or a ``RetryLater``), exactly-once needs a
  *stable* key: pass ``idempotency_key=`` derived from the job (e.g. the envelope id and
  a step name). The client remembers in-process which keys are in doubt and looks them
  up before the next send with the same key; after a process restart, pass
  ``verify_first=True`` on the re-run (the job's attempt number > 1 is the signal) so the
  history is read before the first send.
* Deletion by a person between the attempts, or a message older than the history the
  token can read, make the key invisible: the post is then sent again.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Mapping, MutableMapping
from typing import Any

from controlroom.errors import SlackTransientError

__all__ = [
    "EVENT_TYPE",
    "KEY_FIELD",
    "PostOutcomeUnknown",
    "attach_key",
    "key_of",
    "new_key",
]

EVENT_TYPE = "controlroom_post"
KEY_FIELD = "controlroom_key"


class PostOutcomeUnknown(SlackTransientError):
    """A post may or may not be on Slack, and the history could not tell."""

    def __init__(self, method: str, workspace: str, key: str, reason: str) -> None:
        self.key = key
        self.reason = reason
        super().__init__(method, workspace, "post_outcome_unknown", {"key": key, "reason": reason})


def new_key() -> str:
    return uuid.uuid4().hex


def attach_key(body: MutableMapping[str, Any], key: str, *, form: bool) -> None:
    """Put ``key`` into the post's ``metadata`` (a JSON string in form bodies)."""
    raw = body.get("metadata")
    meta: dict[str, Any]
    if raw is None:
        meta = {"event_type": EVENT_TYPE, "event_payload": {"key": key}}
    else:
        if isinstance(raw, str):
            meta = dict(json.loads(raw))
        elif hasattr(raw, "to_dict"):
            meta = dict(raw.to_dict())
        else:
            meta = dict(raw)
        payload = dict(meta.get("event_payload") or {})
        if meta.get("event_type") == EVENT_TYPE:
            payload["key"] = key
        else:
            payload[KEY_FIELD] = key
        meta["event_payload"] = payload
    body["metadata"] = json.dumps(meta, separators=(",", ":")) if form else meta


def key_of(message: Mapping[str, Any]) -> str | None:
    """The idempotency key a Slack message carries, if any."""
    meta = message.get("metadata")
    if not isinstance(meta, Mapping):
        return None
    payload = meta.get("event_payload")
    if not isinstance(payload, Mapping):
        return None
    if meta.get("event_type") == EVENT_TYPE and isinstance(payload.get("key"), str):
        return str(payload["key"])
    found = payload.get(KEY_FIELD)
    return found if isinstance(found, str) else None
