"""auth.test, users.*, usergroups.*, reactions.*, pins.add, team.info, bots.info."""

from __future__ import annotations

from .api_chat import author, decode_cursor, encode_cursor
from .api_conversations import READ, need
from .state import JSON, NotFound
from .webapi import ApiError, Call, method


@method("auth.test")
async def auth_test(call: Call) -> JSON:
    team = call.team
    user = call.sb.state.users[call.actor_id]
    out: JSON = {
        "url": f"https://{team.domain}.slack.com/",
        "team": team.name,
        "user": user.name,
        "team_id": team.id,
        "user_id": user.id,
    }
    if call.is_bot:
        out["bot_id"] = team.bot_id
    if team.enterprise_id:
        out["enterprise_id"] = team.enterprise_id
    out["is_enterprise_install"] = False
    return out


@method("users.info", scopes=("users:read",))
async def users_info(call: Call) -> JSON:
    user = call.user()
    data = user.to_api()
    if not call.has_scope("users:read.email"):
        data["profile"].pop("email", None)
    return {"user": data}


@method("users.list", scopes=("users:read",))
async def users_list(call: Call) -> JSON:
    limit = call.integer("limit", 200, 1, 1000)
    offset = int(decode_cursor(call.opt("cursor"), "offset") or 0)
    members = [u for u in call.sb.state.users.values() if u.team_id == call.team.id]
    page = members[offset : offset + limit]
    email = call.has_scope("users:read.email")
    out = []
    for u in page:
        data = u.to_api()
        if not email:
            data["profile"].pop("email", None)
        out.append(data)
    more = offset + limit < len(members)
    return {
        "members": out,
        "cache_ts": int(call.sb.clock()),
        "response_metadata": {
            "next_cursor": encode_cursor("offset", offset + limit) if more else ""
        },
    }


@method("users.lookupByEmail", scopes=("users:read.email",))
async def users_lookup_by_email(call: Call) -> JSON:
    email = call.req("email", "users_not_found").strip().lower()
    for user in call.sb.state.users.values():
        if user.team_id == call.team.id and user.email.lower() == email and not user.is_bot:
            return {"user": user.to_api()}
    raise ApiError("users_not_found")


def _group_out(group: JSON, include_users: bool, include_count: bool) -> JSON:
    data = {k: v for k, v in group.items() if k != "users"}
    if include_users:
        data["users"] = list(group["users"])
    if include_count:
        data["user_count"] = len(group["users"])
    return data


@method("usergroups.list", scopes=("usergroups:read",))
async def usergroups_list(call: Call) -> JSON:
    groups = [g for g in call.sb.state.usergroups.values() if g["team_id"] == call.team.id]
    include_users = call.flag("include_users")
    include_count = call.flag("include_count")
    return {"usergroups": [_group_out(g, include_users, include_count) for g in groups]}


@method("usergroups.users.list", scopes=("usergroups:read",))
async def usergroups_users_list(call: Call) -> JSON:
    group_id = call.req("usergroup", "no_such_subteam")
    group = call.sb.state.usergroups.get(group_id)
    if group is None or group["team_id"] != call.team.id:
        raise ApiError("no_such_subteam")
    return {"users": list(group["users"])}


def _reaction_target(call: Call) -> tuple[str, str]:
    channel = call.channel()
    ts = call.opt("timestamp") or call.opt("ts")
    if ts is None:
        raise ApiError("no_item_specified")
    return channel.id, ts


@method("reactions.add", scopes=("reactions:write",))
async def reactions_add(call: Call) -> JSON:
    channel_id, ts = _reaction_target(call)
    name = call.req("name", "invalid_name")
    state = call.sb.state
    call.sb.ops.react(author(call), state.channels[channel_id], ts, name, add=True)
    return {}


@method("reactions.remove", scopes=("reactions:write",))
async def reactions_remove(call: Call) -> JSON:
    channel_id, ts = _reaction_target(call)
    name = call.req("name", "invalid_name")
    state = call.sb.state
    call.sb.ops.react(author(call), state.channels[channel_id], ts, name, add=False)
    return {}


@method("reactions.get", scopes=("reactions:read",))
async def reactions_get(call: Call) -> JSON:
    channel_id, ts = _reaction_target(call)
    try:
        message = dict(call.sb.state.get_message(channel_id, ts))
    except NotFound:
        raise ApiError("message_not_found") from None
    message.pop("metadata", None)
    return {"type": "message", "channel": channel_id, "message": message}


@method("pins.add", scopes=("pins:write",))
async def pins_add(call: Call) -> JSON:
    channel = call.channel()
    ts = call.opt("timestamp")
    if ts is None:
        raise ApiError("no_item_specified")
    if call.actor_id not in channel.members:
        raise ApiError("not_in_channel")
    try:
        message = call.sb.state.get_message(channel.id, ts)
    except NotFound:
        raise ApiError("message_not_found") from None
    pins = call.sb.state.pins.setdefault(channel.id, [])
    if ts in pins:
        raise ApiError("already_pinned")
    pins.append(ts)
    message["pinned_to"] = [channel.id]
    return {}


@method("team.info", scopes=("team:read",))
async def team_info(call: Call) -> JSON:
    team_id = call.opt("team") or call.team.id
    if team_id != call.team.id:
        raise ApiError("team_not_found")
    return {"team": call.team.to_api()}


@method("bots.info", scopes=("users:read",))
async def bots_info(call: Call) -> JSON:
    bot_id = call.req("bot", "bot_not_found")
    for team in call.sb.state.teams.values():
        if team.bot_id == bot_id and team.id == call.team.id:
            return {
                "bot": {
                    "id": team.bot_id,
                    "deleted": not team.installed,
                    "name": call.sb.seed.app.name,
                    "updated": 1700000000,
                    "app_id": call.sb.app_id,
                    "user_id": team.bot_user_id,
                    "icons": {"image_36": "", "image_48": "", "image_72": ""},
                }
            }
    raise ApiError("bot_not_found")


__all__ = ["READ", "need"]
