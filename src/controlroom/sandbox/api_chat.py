"""chat.* methods."""

from __future__ import annotations

import base64
import copy
from typing import Any

from .blocks import normalise_blocks, validate_blocks
from .state import JSON, Channel, NotFound, User
from .webapi import ApiError, Call, method

WRITE = ("chat:write", "chat:write:bot", "chat:write:user")


def encode_cursor(kind: str, value: str | int) -> str:
    return base64.b64encode(f"{kind}:{value}".encode()).decode()


def decode_cursor(cursor: str | None, kind: str) -> str | None:
    if not cursor:
        return None
    try:
        decoded = base64.b64decode(cursor.encode(), validate=True).decode()
    except (ValueError, UnicodeDecodeError):
        raise ApiError("invalid_cursor") from None
    prefix, _, value = decoded.partition(":")
    if prefix != kind or not value:
        raise ApiError("invalid_cursor")
    try:
        number = float(value) if kind == "next_ts" else int(value)
    except ValueError:
        raise ApiError("invalid_cursor") from None
    if number < 0:
        raise ApiError("invalid_cursor")
    return value


def author(call: Call) -> User:
    return call.sb.state.users[call.actor_id]


def blocks_param(call: Call, max_blocks: int = 50) -> list[JSON] | None:
    blocks = call.json_value("blocks", "invalid_blocks_format")
    if blocks is None:
        return None
    problems = validate_blocks(blocks, max_blocks)
    if problems:
        raise ApiError("invalid_blocks", response_metadata={"messages": problems})
    assert isinstance(blocks, list)
    return normalise_blocks(blocks, lambda: call.sb.state.ids.new("", 4))


def attachments_param(call: Call) -> list[JSON] | None:
    value = call.json_value("attachments", "invalid_attachments")
    if value is None:
        return None
    if not isinstance(value, list) or not all(isinstance(a, dict) for a in value):
        raise ApiError("invalid_attachments")
    if len(value) > 100:
        raise ApiError("too_many_attachments")
    return value


def metadata_param(call: Call) -> JSON | None:
    value = call.json_value("metadata", "invalid_metadata_format")
    if value is None:
        return None
    if (
        not isinstance(value, dict)
        or not isinstance(value.get("event_type"), str)
        or not isinstance(value.get("event_payload", {}), dict)
    ):
        raise ApiError("invalid_metadata_schema")
    return {"event_type": value["event_type"], "event_payload": value.get("event_payload", {})}


def writable_channel(call: Call) -> Channel:
    channel = call.channel()
    if channel.is_archived:
        raise ApiError("is_archived")
    if call.actor_id not in channel.members:
        public = not channel.is_private and not channel.is_im
        if not (public and call.has_scope("chat:write.public")):
            raise ApiError("not_in_channel")
    return channel


def _message_out(message: JSON) -> JSON:
    return {k: v for k, v in message.items() if k not in ("pinned_to",)}


@method("chat.postMessage", scopes=WRITE)
async def chat_post_message(call: Call) -> JSON:
    text = call.opt("text") or ""
    markdown_text = call.opt("markdown_text")
    blocks = blocks_param(call)
    attachments = attachments_param(call)
    if markdown_text is not None:
        if text or blocks:
            raise ApiError("markdown_text_conflict")
        if len(markdown_text) > 12000:
            raise ApiError("msg_too_long")
        text = markdown_text
    if not text and not blocks and not attachments:
        raise ApiError("no_text")
    if len(text) > 40000:
        raise ApiError("msg_too_long")
    metadata = metadata_param(call)
    channel = writable_channel(call)
    message = call.sb.ops.post(
        author(call),
        channel,
        text=text,
        blocks=blocks,
        attachments=attachments,
        thread_ts=call.opt("thread_ts"),
        reply_broadcast=call.flag("reply_broadcast"),
        metadata=metadata,
    )
    return {"channel": channel.id, "ts": message["ts"], "message": _message_out(message)}


@method("chat.update", scopes=WRITE)
async def chat_update(call: Call) -> JSON:
    channel = call.channel()
    ts = call.req("ts", "message_not_found")
    text = call.opt("text")
    blocks = blocks_param(call)
    attachments = attachments_param(call)
    if text is None and blocks is None and attachments is None:
        raise ApiError("no_text")
    message = call.sb.ops.edit(
        author(call),
        channel,
        ts,
        text=text,
        blocks=blocks,
        attachments=attachments,
        metadata=metadata_param(call),
    )
    return {
        "channel": channel.id,
        "ts": ts,
        "text": message.get("text", ""),
        "message": _message_out(message),
    }


@method("chat.delete", scopes=WRITE)
async def chat_delete(call: Call) -> JSON:
    channel = call.channel()
    ts = call.req("ts", "message_not_found")
    call.sb.ops.delete(author(call), channel, ts)
    return {"channel": channel.id, "ts": ts}


@method("chat.postEphemeral", scopes=WRITE)
async def chat_post_ephemeral(call: Call) -> JSON:
    channel = call.channel()
    user = call.user()
    text = call.opt("text") or ""
    blocks = blocks_param(call)
    if not text and not blocks and not attachments_param(call):
        raise ApiError("no_text")
    if call.actor_id not in channel.members and not (
        not channel.is_private and call.has_scope("chat:write.public")
    ):
        raise ApiError("not_in_channel")
    if user.id not in channel.members:
        raise ApiError("user_not_in_channel")
    ts = call.sb.ops.ephemeral(channel, user, text, blocks, call.opt("thread_ts"))
    return {"message_ts": ts}


@method("chat.getPermalink", scopes=())
async def chat_get_permalink(call: Call) -> JSON:
    channel = call.channel()
    ts = call.req("message_ts", "message_not_found")
    try:
        message = call.sb.state.get_message(channel.id, ts)
    except NotFound:
        raise ApiError("message_not_found") from None
    base = call.sb.public_url.rstrip("/")
    link = f"{base}/archives/{channel.id}/p{ts.replace('.', '')}"
    thread_ts = message.get("thread_ts")
    if thread_ts and thread_ts != ts:
        link += f"?thread_ts={thread_ts}&cid={channel.id}"
    return {"channel": channel.id, "permalink": link}


def ts_bounds(call: Call) -> tuple[float, float]:
    """``oldest``/``latest`` as floats; Slack's invalid_ts_* errors for garbage."""
    bounds = []
    for name, default in (("oldest", 0.0), ("latest", float("inf"))):
        raw = call.opt(name)
        try:
            bounds.append(float(raw) if raw else default)
        except ValueError:
            raise ApiError(f"invalid_ts_{name}") from None
    return bounds[0], bounds[1]


def history_page(
    call: Call, messages: list[JSON], default_limit: int, max_limit: int
) -> dict[str, Any]:
    """Newest-first slicing with oldest/latest/inclusive and a ``next_ts`` cursor."""
    limit = call.integer("limit", default_limit, 1, max_limit)
    oldest, latest = ts_bounds(call)
    inclusive = call.flag("inclusive")
    cursor = decode_cursor(call.opt("cursor"), "next_ts")

    def within(m: JSON) -> bool:
        ts = float(m["ts"])
        if inclusive:
            return oldest <= ts <= latest
        return oldest < ts < latest

    chosen = [m for m in messages if within(m)]
    chosen.sort(key=lambda m: float(m["ts"]), reverse=True)
    if cursor is not None:
        chosen = [m for m in chosen if float(m["ts"]) <= float(cursor)]
    page, rest = chosen[:limit], chosen[limit:]
    with_meta = call.flag("include_all_metadata")
    out = []
    for m in page:
        item = copy.deepcopy(m)
        if not with_meta:
            item.pop("metadata", None)
        out.append(item)
    return {
        "messages": out,
        "has_more": bool(rest),
        "next_cursor": encode_cursor("next_ts", rest[0]["ts"]) if rest else "",
    }
