"""Turn a verified Slack request body into an ``Envelope`` (or a control message that the
route answers itself).

Only the fields we route on are validated (pydantic models below); the envelope keeps the
full body. The same functions serve HTTP (``parse_slack_body``, from raw bytes and the
content type) and Socket Mode (``parse_socket_payload``, from the envelope's payload).

What arrives, and what it becomes:

========================================  ==========================================
``{"type": "event_callback", ...}``       kind ``event``, dedupe on ``event_id``
``{"type": "url_verification", ...}``     ``SlackControl("url_verification")``
``{"type": "app_rate_limited", ...}``     ``SlackControl("app_rate_limited")``
form ``ssl_check=1``                      ``SlackControl("ssl_check")``
form ``payload={"type": ...}``            block_actions, view_submission, view_closed,
                                          shortcut, message_action, options
                                          (``block_suggestion``); dedupe on
                                          ``<kind>:<trigger_id>`` when there is one,
                                          else the envelope id (never a duplicate)
form with ``command=/...``                kind ``command``, dedupe on
                                          ``command:<trigger_id>``
========================================  ==========================================
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal, TypeVar, cast
from urllib.parse import parse_qsl

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from controlroom.edge.signing import EdgeRejection
from controlroom.envelope import Envelope, EnvelopeKind, new_id

__all__ = [
    "INTERACTIVE_KINDS",
    "SlackControl",
    "decode_form",
    "decode_json_object",
    "parse_slack_body",
    "parse_socket_payload",
    "payload_error",
]

INTERACTIVE_KINDS: dict[str, EnvelopeKind] = {
    "block_actions": "block_actions",
    "view_submission": "view_submission",
    "view_closed": "view_closed",
    "shortcut": "shortcut",
    "message_action": "message_action",
    "block_suggestion": "options",
}
_MAX_FORM_FIELDS = 100
_ID = Field(min_length=1, max_length=255)


def payload_error(reason: str, code: str = "bad_payload", status: int = 400) -> EdgeRejection:
    """A 4xx for a body that was signed but is not something we accept."""
    return EdgeRejection(reason, status, code)


@dataclass(frozen=True, slots=True)
class SlackControl:
    """A Slack request answered by the edge itself and never enqueued."""

    kind: Literal["url_verification", "ssl_check", "app_rate_limited"]
    challenge: str = ""
    team_id: str = ""


# -- the shapes we route on (extra fields are kept in the body, not validated) ---------


class _Model(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True)


class _Authorization(_Model):
    enterprise_id: str | None = None
    team_id: str | None = None


class _InnerEvent(_Model):
    type: str = Field(min_length=1, max_length=255)
    subtype: str | None = None


class _EventCallback(_Model):
    type: Literal["event_callback"]
    event_id: str = _ID
    team_id: str | None = None
    enterprise_id: str | None = None
    context_team_id: str | None = None
    context_enterprise_id: str | None = None
    authorizations: list[_Authorization] = []
    event: _InnerEvent


class _UrlVerification(_Model):
    type: Literal["url_verification"]
    challenge: str = Field(min_length=1, max_length=1024)


class _AppRateLimited(_Model):
    type: Literal["app_rate_limited"]
    team_id: str | None = None
    minute_rate_limited: int | None = None


class _Team(_Model):
    id: str | None = None
    enterprise_id: str | None = None


class _Enterprise(_Model):
    id: str | None = None


class _User(_Model):
    id: str | None = None
    team_id: str | None = None


class _Interactive(_Model):
    type: str
    team: _Team | None = None
    enterprise: _Enterprise | None = None
    user: _User | None = None
    trigger_id: str | None = Field(default=None, max_length=255)


class _SlashCommand(_Model):
    command: str = Field(pattern=r"^/\S{1,64}$")
    team_id: str = _ID
    enterprise_id: str | None = None
    trigger_id: str | None = Field(default=None, max_length=255)
    user_id: str | None = None
    channel_id: str | None = None


_M = TypeVar("_M", bound=_Model)


def _validation_reason(what: str, exc: ValidationError) -> str:
    err = exc.errors(include_url=False, include_input=False)[0]
    loc = ".".join(str(p) for p in err["loc"]) or "(body)"
    msg = " ".join(str(err["msg"]).split())
    return f"invalid {what}: {loc}: {msg}"[:200]


def _validate(model: type[_M], data: dict[str, Any], what: str) -> _M:
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise payload_error(_validation_reason(what, exc)) from None


# -- decoding ---------------------------------------------------------------------------


def decode_json_object(raw: bytes | str, what: str = "body") -> dict[str, Any]:
    """Parse ``raw`` as a JSON object or raise a 400."""
    try:
        data = json.loads(raw)
    except (ValueError, RecursionError):
        raise payload_error(f"{what} is not valid JSON", "bad_json") from None
    if not isinstance(data, dict):
        raise payload_error(f"{what} must be a JSON object", "bad_json")
    return data


def decode_form(raw: bytes) -> dict[str, str]:
    """Parse an ``application/x-www-form-urlencoded`` body; repeated fields are refused."""
    try:
        text = raw.decode("utf-8")
        pairs = parse_qsl(
            text,
            keep_blank_values=True,
            strict_parsing=bool(text),
            max_num_fields=_MAX_FORM_FIELDS,
            errors="strict",
        )
    except (UnicodeDecodeError, ValueError):
        raise payload_error("form body is not valid url-encoded UTF-8", "bad_form") from None
    form: dict[str, str] = {}
    for key, value in pairs:
        if key in form:
            raise payload_error(f"repeated form field {key[:40]!r}", "bad_form")
        form[key] = value
    return form


def _utf8_text(raw: bytes) -> str | None:
    """``raw`` as text when it can be stored verbatim inside the envelope's JSON: strict
    UTF-8 without a byte-order mark. Anything else the parser accepted (a BOM, UTF-16 or
    UTF-32, escaped surrogates) is serialised again from the parsed body instead."""
    if raw[:3] == b"\xef\xbb\xbf":
        return None
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        return None


def _media_type(content_type: str) -> str:
    return content_type.split(";", 1)[0].strip().lower()


# -- building envelopes -----------------------------------------------------------------


def _event_envelope(
    body: dict[str, Any], transport: str, retry_num: int, now: float, raw: str | None = None
) -> Envelope:
    model = _validate(_EventCallback, body, "event_callback")
    enterprise = model.enterprise_id or model.context_enterprise_id or ""
    team = model.team_id or model.context_team_id or ""
    if model.authorizations:
        first = model.authorizations[0]
        team = team or (first.team_id or "")
        enterprise = enterprise or (first.enterprise_id or "")
    return Envelope(
        kind="event",
        source="slack",
        body=body,
        dedupe_key=model.event_id,
        team_id=team,
        enterprise_id=enterprise,
        transport=transport,
        provider_event=model.event.type,
        received_at=now,
        retry_num=retry_num,
        body_json=raw,
    )


def _interactive_envelope(
    body: dict[str, Any], transport: str, retry_num: int, now: float
) -> Envelope:
    kind_name = body.get("type")
    kind = INTERACTIVE_KINDS.get(kind_name) if isinstance(kind_name, str) else None
    if kind is None:
        shown = kind_name[:40] if isinstance(kind_name, str) else type(kind_name).__name__
        raise payload_error(f"unsupported interactive payload type {shown!r}", "unknown_type")
    model = _validate(_Interactive, body, str(kind_name))
    team = (model.team.id if model.team else None) or (model.user.team_id if model.user else "")
    enterprise = (model.team.enterprise_id if model.team else None) or (
        model.enterprise.id if model.enterprise else ""
    )
    envelope_id = new_id()
    return Envelope(
        kind=kind,
        source="slack",
        body=body,
        dedupe_key=f"{kind}:{model.trigger_id}" if model.trigger_id else envelope_id,
        team_id=team or "",
        enterprise_id=enterprise or "",
        transport=transport,
        provider_event=str(kind_name),
        id=envelope_id,
        received_at=now,
        retry_num=retry_num,
    )


def _command_envelope(form: dict[str, Any], transport: str, retry_num: int, now: float) -> Envelope:
    model = _validate(_SlashCommand, form, "slash command")
    envelope_id = new_id()
    return Envelope(
        kind="command",
        source="slack",
        body=dict(form),
        dedupe_key=f"command:{model.trigger_id}" if model.trigger_id else envelope_id,
        team_id=model.team_id,
        enterprise_id=model.enterprise_id or "",
        transport=transport,
        provider_event=model.command,
        id=envelope_id,
        received_at=now,
        retry_num=retry_num,
    )


def _json_body(
    body: dict[str, Any], transport: str, retry_num: int, now: float, raw: str | None = None
) -> Envelope | SlackControl:
    outer = body.get("type")
    if outer == "event_callback":
        return _event_envelope(body, transport, retry_num, now, raw)
    if outer == "url_verification":
        challenge = _validate(_UrlVerification, body, "url_verification").challenge
        return SlackControl("url_verification", challenge)
    if outer == "app_rate_limited":
        model = _validate(_AppRateLimited, body, "app_rate_limited")
        return SlackControl("app_rate_limited", team_id=model.team_id or "")
    if isinstance(outer, str) and outer in INTERACTIVE_KINDS:
        # Interactivity is form-encoded over HTTP, but Socket Mode hands it over as JSON.
        return _interactive_envelope(body, transport, retry_num, now)
    shown = outer[:40] if isinstance(outer, str) else type(outer).__name__
    raise payload_error(f"unsupported Slack payload type {shown!r}", "unknown_type")


def parse_slack_body(
    raw: bytes,
    content_type: str,
    *,
    retry_num: int = 0,
    transport: str = "http",
    clock: Callable[[], float] = time.time,
) -> Envelope | SlackControl:
    """Parse a verified Slack HTTP request body; raise ``EdgeRejection`` (4xx) if it is
    not one of the shapes above."""
    media = _media_type(content_type)
    now = clock()
    if media == "application/json":
        text = _utf8_text(raw)
        body = decode_json_object(raw if text is None else text)
        return _json_body(body, transport, retry_num, now, text)
    if media == "application/x-www-form-urlencoded":
        form = decode_form(raw)
        if "payload" in form:
            payload = decode_json_object(form["payload"].encode("utf-8"), "payload")
            return _interactive_envelope(payload, transport, retry_num, now)
        if "command" in form:
            return _command_envelope(form, transport, retry_num, now)
        if form.get("ssl_check") == "1":
            return SlackControl("ssl_check")
        raise payload_error("form body has neither payload nor command", "unknown_type")
    shown = media[:60] or "(none)"
    raise payload_error(f"unsupported content type {shown}", "bad_content_type", 415)


SocketEnvelopeType = Literal["events_api", "interactive", "slash_commands"]


def parse_socket_payload(
    envelope_type: str,
    payload: Any,
    *,
    retry_num: int = 0,
    clock: Callable[[], float] = time.time,
) -> Envelope | SlackControl:
    """Parse the ``payload`` of a Socket Mode envelope (transport ``socket``)."""
    if not isinstance(payload, dict):
        raise payload_error("socket mode payload must be a JSON object", "bad_json")
    body = cast(dict[str, Any], payload)
    now = clock()
    if envelope_type == "events_api":
        return _json_body(body, "socket", retry_num, now)
    if envelope_type == "interactive":
        return _interactive_envelope(body, "socket", retry_num, now)
    if envelope_type == "slash_commands":
        return _command_envelope(body, "socket", retry_num, now)
    raise payload_error(
        f"unsupported socket mode envelope type {envelope_type[:40]!r}", "unknown_type"
    )
