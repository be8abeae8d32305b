"""conversations.* methods."""

from __future__ import annotations

from .api_chat import author, decode_cursor, encode_cursor, history_page, ts_bounds
from .ops import normalise_channel_name, validate_channel_name
from .state import JSON, Channel, NotFound
from .webapi import ApiError, Call, method

READ = ("channels:read", "groups:read", "im:read", "mpim:read")
HISTORY = ("channels:history", "groups:history", "im:history", "mpim:history")
MANAGE = ("channels:manage", "groups:write", "im:write", "mpim:write")

_KIND_INDEX = {"channel": 0, "group": 1, "im": 2, "mpim": 3}


def need(call: Call, family: tuple[str, ...], channel: Channel) -> None:
    """The scope of ``family`` that matches the conversation type."""
    scope = family[_KIND_INDEX[channel.channel_type]]
    extra = ("channels:write",) if scope == "channels:manage" else ()
    call.require_scope(scope, *extra)


def _member_or_error(call: Call, channel: Channel) -> None:
    if call.actor_id not in channel.members:
        raise ApiError("not_in_channel")


@method("conversations.create", scopes=("channels:manage", "groups:write", "channels:write"))
async def conversations_create(call: Call) -> JSON:
    name = call.opt("name") or ""
    private = call.flag("is_private")
    call.require_scope(
        "groups:write" if private else "channels:manage", *(() if private else ("channels:write",))
    )
    channel = call.sb.ops.create_channel(call.team, author(call), name, private=private)
    return {"channel": channel.to_api(call.actor_id)}


@method("conversations.invite", scopes=(*MANAGE, "channels:write"))
async def conversations_invite(call: Call) -> JSON:
    channel = call.channel()
    need(call, MANAGE, channel)
    if channel.is_archived:
        raise ApiError("is_archived")
    if channel.is_im:
        raise ApiError("method_not_supported_for_channel_type")
    _member_or_error(call, channel)
    raw = call.req("users", "no_user")
    ids = [u.strip() for u in raw.split(",") if u.strip()]
    if not ids:
        raise ApiError("no_user")
    if len(ids) > 1000:
        raise ApiError("too_many_users")
    inviter = author(call)
    state = call.sb.state
    for uid in ids:
        user = state.users.get(uid)
        if user is None or user.team_id != channel.team_id or user.deleted:
            raise ApiError("user_not_found")
        if uid == call.actor_id:
            raise ApiError("cant_invite_self")
    errors = []
    for uid in ids:
        if uid in channel.members:
            errors.append({"user": uid, "ok": False, "error": "already_in_channel"})
            continue
        call.sb.ops.join(channel, state.users[uid], inviter)
    if errors and len(errors) == len(ids):
        raise ApiError("already_in_channel", errors=errors)
    return {"channel": channel.to_api(call.actor_id)}


@method("conversations.kick", scopes=(*MANAGE, "channels:write"))
async def conversations_kick(call: Call) -> JSON:
    channel = call.channel()
    need(call, MANAGE, channel)
    user = call.user()
    if user.id == call.actor_id:
        raise ApiError("cant_kick_self")
    if user.id not in channel.members:
        raise ApiError("not_in_channel")
    call.sb.ops.leave(channel, user)
    return {}


@method("conversations.archive", scopes=(*MANAGE, "channels:write"))
async def conversations_archive(call: Call) -> JSON:
    channel = call.channel()
    need(call, MANAGE, channel)
    if channel.is_archived:
        raise ApiError("already_archived")
    if channel.name == "general":
        raise ApiError("cant_archive_general")
    channel.is_archived = True
    return {}


@method("conversations.rename", scopes=(*MANAGE, "channels:write"))
async def conversations_rename(call: Call) -> JSON:
    channel = call.channel()
    need(call, MANAGE, channel)
    name = normalise_channel_name(call.req("name", "invalid_name_required"))
    validate_channel_name(name)
    if channel.is_archived:
        raise ApiError("is_archived")
    if any(
        c.team_id == channel.team_id and c.name == name and c.id != channel.id
        for c in call.sb.state.channels.values()
    ):
        raise ApiError("name_taken")
    channel.name = name
    return {"channel": channel.to_api(call.actor_id)}


@method("conversations.setTopic", scopes=(*MANAGE, "channels:write"))
async def conversations_set_topic(call: Call) -> JSON:
    channel = call.channel()
    need(call, MANAGE, channel)
    topic = call.opt("topic") or ""
    if len(topic) > 250:
        raise ApiError("too_long")
    if channel.is_archived:
        raise ApiError("is_archived")
    _member_or_error(call, channel)
    channel.topic = topic
    return {"channel": channel.to_api(call.actor_id)}


@method("conversations.join", scopes=("channels:join", "channels:write"))
async def conversations_join(call: Call) -> JSON:
    channel = call.channel()
    if channel.is_private or channel.is_im:
        raise ApiError("method_not_supported_for_channel_type")
    if channel.is_archived:
        raise ApiError("is_archived")
    user = author(call)
    warning = None
    if user.id in channel.members:
        warning = "already_in_channel"
    else:
        call.sb.ops.join(channel, user)
    out: JSON = {"channel": channel.to_api(user.id)}
    if warning:
        out["warning"] = warning
        out["response_metadata"] = {"warnings": [warning]}
    return out


@method("conversations.info", scopes=READ)
async def conversations_info(call: Call) -> JSON:
    channel = call.channel()
    need(call, READ, channel)
    data = channel.to_api(call.actor_id)
    if not call.flag("include_num_members"):
        data.pop("num_members", None)
    return {"channel": data}


@method("conversations.list", scopes=READ)
async def conversations_list(call: Call) -> JSON:
    raw_types = call.opt("types") or "public_channel"
    wanted = {t.strip() for t in raw_types.split(",") if t.strip()}
    allowed = {"public_channel", "private_channel", "im", "mpim"}
    if not wanted <= allowed:
        raise ApiError("invalid_types")
    type_scope = {
        "public_channel": "channels:read",
        "private_channel": "groups:read",
        "im": "im:read",
        "mpim": "mpim:read",
    }
    for kind in wanted:
        call.require_scope(type_scope[kind])
    exclude_archived = call.flag("exclude_archived")
    limit = call.integer("limit", 100, 1, 1000)
    offset = int(decode_cursor(call.opt("cursor"), "offset") or 0)
    actor = call.actor_id
    kinds = {"channel": "public_channel", "group": "private_channel", "im": "im", "mpim": "mpim"}
    found = [
        c
        for c in call.sb.state.channels.values()
        if c.team_id == call.team.id
        and kinds[c.channel_type] in wanted
        and (not c.is_private or actor in c.members)
        and not (exclude_archived and c.is_archived)
    ]
    page = found[offset : offset + limit]
    more = offset + limit < len(found)
    return {
        "channels": [c.to_api(actor) for c in page],
        "response_metadata": {
            "next_cursor": encode_cursor("offset", offset + limit) if more else ""
        },
    }


@method("conversations.members", scopes=READ)
async def conversations_members(call: Call) -> JSON:
    channel = call.channel()
    need(call, READ, channel)
    limit = call.integer("limit", 100, 1, 1000)
    offset = int(decode_cursor(call.opt("cursor"), "offset") or 0)
    page = channel.members[offset : offset + limit]
    more = offset + limit < len(channel.members)
    return {
        "members": page,
        "response_metadata": {
            "next_cursor": encode_cursor("offset", offset + limit) if more else ""
        },
    }


def _history_limits(call: Call, default: int, maximum: int) -> tuple[int, int]:
    if call.sb.config.non_marketplace_app:
        return 15, 15
    return default, maximum


@method("conversations.history", scopes=HISTORY)
async def conversations_history(call: Call) -> JSON:
    channel = call.channel()
    need(call, HISTORY, channel)
    _member_or_error(call, channel)
    default, maximum = _history_limits(call, 100, 999)
    page = history_page(call, call.sb.state.top_level(channel.id), default, maximum)
    return {
        "messages": page["messages"],
        "has_more": page["has_more"],
        "pin_count": len(call.sb.state.pins.get(channel.id, [])),
        "channel_actions_ts": None,
        "channel_actions_count": 0,
        "response_metadata": {"next_cursor": page["next_cursor"]},
    }


@method("conversations.replies", scopes=HISTORY)
async def conversations_replies(call: Call) -> JSON:
    channel = call.channel()
    need(call, HISTORY, channel)
    _member_or_error(call, channel)
    ts = call.req("ts", "thread_not_found")
    try:
        thread = call.sb.state.replies(channel.id, ts)
    except NotFound:
        raise ApiError("thread_not_found") from None
    default, maximum = _history_limits(call, 1000, 1000)
    limit = call.integer("limit", default, 1, maximum)
    cursor = decode_cursor(call.opt("cursor"), "next_ts")
    oldest, latest = ts_bounds(call)
    chosen = [m for m in thread if oldest <= float(m["ts"]) <= latest]
    if cursor is not None:
        chosen = [m for m in chosen if float(m["ts"]) >= float(cursor)]
    page, rest = chosen[:limit], chosen[limit:]
    if not call.flag("include_all_metadata"):
        for m in page:
            m.pop("metadata", None)
    return {
        "messages": page,
        "has_more": bool(rest),
        "response_metadata": {
            "next_cursor": encode_cursor("next_ts", rest[0]["ts"]) if rest else ""
        },
    }


@method("conversations.open", scopes=("im:write", "mpim:write"))
async def conversations_open(call: Call) -> JSON:
    raw = call.req("users", "users_list_not_supplied")
    ids = [u.strip() for u in raw.split(",") if u.strip()]
    state = call.sb.state
    for uid in ids:
        if uid not in state.users:
            raise ApiError("user_not_found")
    if len(ids) != 1:
        raise ApiError("not_supported")
    try:
        channel = state.dm(call.actor_id, ids[0])
    except NotFound:
        raise ApiError("user_not_found") from None
    return {"channel": {"id": channel.id}}
