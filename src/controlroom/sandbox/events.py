"""Builders for the payloads Slack emits: messages, events, envelopes, interactivity.

Shapes follow the real payloads in tests/fixtures/slack/events/ field for field.
"""

from __future__ import annotations

import re
import uuid
from typing import Any

from .state import JSON, Channel, Team, User

_MENTION = re.compile(r"<([@#!])([A-Z0-9]+)(?:\|[^>]*)?>")

#: event type -> the subscription name that enables it (None = always delivered)
SUBSCRIPTION = {
    "app_mention": "app_mention",
    "app_home_opened": "app_home_opened",
    "channel_created": "channel_created",
    "member_joined_channel": "member_joined_channel",
    "reaction_added": "reaction_added",
    "reaction_removed": "reaction_removed",
    "tokens_revoked": None,
    "app_uninstalled": None,
}


def message_subscription(channel: Channel) -> str:
    return "message." + {"channel": "channels", "group": "groups"}.get(
        channel.channel_type, channel.channel_type
    )


def rich_text_blocks(text: str, block_id: str) -> list[JSON]:
    """The ``rich_text`` block Slack's clients attach to what a person types."""
    elements: list[JSON] = []
    pos = 0
    for match in _MENTION.finditer(text):
        if match.start() > pos:
            elements.append({"type": "text", "text": text[pos : match.start()]})
        kind, ident = match.group(1), match.group(2)
        if kind == "@":
            elements.append({"type": "user", "user_id": ident})
        elif kind == "#":
            elements.append({"type": "channel", "channel_id": ident})
        else:
            elements.append({"type": "broadcast", "range": ident.lower()})
        pos = match.end()
    if pos < len(text) or not elements:
        elements.append({"type": "text", "text": text[pos:]})
    return [
        {
            "type": "rich_text",
            "block_id": block_id,
            "elements": [{"type": "rich_text_section", "elements": elements}],
        }
    ]


def mentioned_users(text: str) -> list[str]:
    return [m.group(2) for m in _MENTION.finditer(text) if m.group(1) == "@"]


def user_message(team: Team, user: User, text: str, ts: str, block_id: str) -> JSON:
    """A message as stored and as returned by conversations.history."""
    return {
        "client_msg_id": str(uuid.uuid4()),
        "type": "message",
        "text": text,
        "user": user.id,
        "ts": ts,
        "team": team.id,
        "blocks": rich_text_blocks(text, block_id),
    }


def bot_profile(team: Team, app_id: str, app_name: str) -> JSON:
    return {
        "id": team.bot_id,
        "deleted": False,
        "name": app_name,
        "updated": 1700000000,
        "app_id": app_id,
        "icons": {
            "image_36": "https://a.slack-edge.com/80588/img/plugins/app/bot_36.png",
            "image_48": "https://a.slack-edge.com/80588/img/plugins/app/bot_48.png",
            "image_72": "https://a.slack-edge.com/80588/img/plugins/app/service_72.png",
        },
        "team_id": team.id,
    }


def message_event(message: JSON, channel: Channel) -> JSON:
    """The inner ``message`` event for a stored message."""
    event = {k: v for k, v in message.items() if k not in ("reactions", "pinned_to")}
    event["channel"] = channel.id
    event["event_ts"] = message["ts"]
    event["channel_type"] = channel.channel_type
    return event


def root_summary(root: JSON) -> JSON:
    keep = (
        "client_msg_id",
        "type",
        "text",
        "user",
        "ts",
        "team",
        "bot_id",
        "thread_ts",
        "reply_count",
        "reply_users_count",
        "latest_reply",
        "reply_users",
        "is_locked",
    )
    return {k: root[k] for k in keep if k in root}


def message_changed(channel: Channel, previous: JSON, current: JSON, event_ts: str) -> JSON:
    return {
        "type": "message",
        "subtype": "message_changed",
        "message": {k: v for k, v in current.items() if k != "reactions"},
        "previous_message": {k: v for k, v in previous.items() if k != "reactions"},
        "channel": channel.id,
        "hidden": True,
        "ts": event_ts,
        "event_ts": event_ts,
        "channel_type": channel.channel_type,
    }


def message_deleted(channel: Channel, previous: JSON, event_ts: str) -> JSON:
    return {
        "type": "message",
        "subtype": "message_deleted",
        "previous_message": {k: v for k, v in previous.items() if k != "reactions"},
        "channel": channel.id,
        "hidden": True,
        "deleted_ts": previous["ts"],
        "ts": event_ts,
        "event_ts": event_ts,
        "channel_type": channel.channel_type,
    }


def app_mention(message: JSON, channel: Channel) -> JSON:
    event = {
        k: v
        for k, v in message.items()
        if k in ("client_msg_id", "text", "user", "ts", "team", "blocks", "thread_ts", "bot_id")
    }
    event["type"] = "app_mention"
    event["channel"] = channel.id
    event["event_ts"] = message["ts"]
    return event


def reaction_event(
    kind: str, user: str, channel: str, ts: str, name: str, item_user: str, event_ts: str
) -> JSON:
    return {
        "type": kind,
        "user": user,
        "item": {"type": "message", "channel": channel, "ts": ts},
        "reaction": name,
        "item_user": item_user,
        "event_ts": event_ts,
    }


def member_joined(channel: Channel, user: str, inviter: str | None, event_ts: str) -> JSON:
    event: JSON = {
        "type": "member_joined_channel",
        "user": user,
        "channel": channel.id,
        "channel_type": "G" if channel.is_private else "C",
        "team": channel.team_id,
        "event_ts": event_ts,
    }
    if inviter and inviter != user:
        event["inviter"] = inviter
    return event


def channel_created(channel: Channel, event_ts: str) -> JSON:
    return {
        "type": "channel_created",
        "channel": {
            "id": channel.id,
            "is_channel": True,
            "name": channel.name,
            "name_normalized": channel.name,
            "created": channel.created,
            "creator": channel.creator,
            "is_shared": False,
            "is_org_shared": False,
            "context_team_id": channel.team_id,
        },
        "event_ts": event_ts,
    }


def envelope(
    *,
    team: Team,
    app_id: str,
    verification_token: str,
    event: JSON,
    event_id: str,
    event_time: int,
    channel_id: str | None,
) -> JSON:
    """The ``event_callback`` wrapper, authorised for the app's bot user."""
    context_parts = ["1", str(event.get("type")), team.id, channel_id or ""]
    body: JSON = {
        "token": verification_token,
        "team_id": team.id,
        "enterprise_id": team.enterprise_id,
        "context_team_id": team.id,
        "context_enterprise_id": team.enterprise_id,
        "api_app_id": app_id,
        "event": event,
        "type": "event_callback",
        "event_id": event_id,
        "event_time": event_time,
        "authorizations": [
            {
                "enterprise_id": team.enterprise_id,
                "team_id": team.id,
                "user_id": team.bot_user_id,
                "is_bot": True,
                "is_enterprise_install": False,
            }
        ],
        "is_ext_shared_channel": False,
        "event_context": "-".join(context_parts),
        "authed_users": [team.bot_user_id],
    }
    if team.enterprise_id is None:
        del body["enterprise_id"]
    return body


def team_block(team: Team) -> JSON:
    block: JSON = {"id": team.id, "domain": team.domain}
    if team.enterprise_id:
        block["enterprise_id"] = team.enterprise_id
        block["enterprise_name"] = team.enterprise_name
    return block


def user_block(user: User, *, with_name: bool = True) -> JSON:
    block: JSON = {"id": user.id, "username": user.name}
    if with_name:
        block["name"] = user.name
    block["team_id"] = user.team_id
    return block


def enterprise_block(team: Team) -> Any:
    if team.enterprise_id:
        return {"id": team.enterprise_id, "name": team.enterprise_name}
    return None
