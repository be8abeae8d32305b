"""views.* methods."""

from __future__ import annotations

from .interactivity import Interactions
from .state import JSON
from .webapi import ApiError, Call, method


@method("views.open", scopes=(), token_types=("bot", "user"))
async def views_open(call: Call) -> JSON:
    trigger_id = call.opt("trigger_id") or call.opt("interactivity_pointer")
    if trigger_id is None:
        raise ApiError(
            "invalid_arguments",
            response_metadata={"messages": ["[ERROR] missing required field: trigger_id"]},
        )
    view = call.sb.interactions.open(
        call.team.id, trigger_id, call.json_value("view", "invalid_json")
    )
    return {"view": Interactions.public(view)}


@method("views.push", scopes=())
async def views_push(call: Call) -> JSON:
    trigger_id = call.req("trigger_id", "invalid_trigger_id")
    view = call.sb.interactions.push(
        call.team.id, trigger_id, call.json_value("view", "invalid_json")
    )
    return {"view": Interactions.public(view)}


@method("views.update", scopes=())
async def views_update(call: Call) -> JSON:
    interactions = call.sb.interactions
    view_id, external_id = call.opt("view_id"), call.opt("external_id")
    if not view_id and not external_id:
        raise ApiError(
            "invalid_arguments",
            response_metadata={"messages": ["[ERROR] view_id or external_id required"]},
        )
    target = interactions.find(view_id, external_id)
    if target["team_id"] != call.team.id:
        raise ApiError("not_found")
    view = interactions.update(target, call.json_value("view", "invalid_json"), call.opt("hash"))
    return {"view": Interactions.public(view)}


@method("views.publish", scopes=())
async def views_publish(call: Call) -> JSON:
    user = call.user("user_id")
    view = call.sb.interactions.publish(
        call.team.id, user, call.json_value("view", "invalid_json"), call.opt("hash")
    )
    return {"view": Interactions.public(view)}
