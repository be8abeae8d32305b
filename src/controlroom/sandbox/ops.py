"""World operations shared by the Web API, the actor API and the web client.

Each operation validates, changes :class:`~.state.State` and emits the events Slack
would emit. Failures raise :class:`~.webapi.ApiError` with Slack's error code.
"""

from __future__ import annotations

import copy
import re
from typing import TYPE_CHECKING

from . import events as ev
from .state import JSON, Channel, NotFound, Team, User
from .webapi import ApiError

if TYPE_CHECKING:
    from .core import Sandbox

_NAME_OK = re.compile(r"^[a-z0-9_-]+$")


def validate_channel_name(name: str) -> None:
    if not name:
        raise ApiError("invalid_name_required")
    if len(name) > 80:
        raise ApiError("invalid_name_maxlength")
    if all(not c.isalnum() for c in name):
        raise ApiError("invalid_name_punctuation")
    if not _NAME_OK.match(name):
        raise ApiError("invalid_name_specials")


def normalise_channel_name(name: str) -> str:
    name = name.strip().lstrip("#").lower().replace(" ", "-")
    return re.sub(r"[^a-z0-9_-]", "", name)[:80]


class Ops:
    def __init__(self, sb: Sandbox) -> None:
        self.sb = sb

    def _emit(self, team_id: str, event: JSON, channel: Channel | None = None) -> None:
        self.sb.notify(team_id, event)
        self.sb.deliverer.emit(team_id, event, channel)

    def _block_id(self) -> str:
        return self.sb.state.ids.new("", 4).lower()

    # -- messages ------------------------------------------------------------------
    def post(
        self,
        author: User,
        channel: Channel,
        *,
        text: str = "",
        blocks: list[JSON] | None = None,
        attachments: list[JSON] | None = None,
        thread_ts: str | None = None,
        reply_broadcast: bool = False,
        metadata: JSON | None = None,
    ) -> JSON:
        """Post as a person (user message) or as the app's bot user (bot message)."""
        state = self.sb.state
        team = state.team(channel.team_id)
        if channel.is_archived:
            raise ApiError("is_archived")
        if thread_ts is not None:
            try:
                root = state.get_message(channel.id, thread_ts)
            except NotFound:
                raise ApiError("thread_not_found") from None
            if root.get("thread_ts") not in (None, root["ts"]):
                thread_ts = root["thread_ts"]  # replying to a reply joins its thread
        ts = state.next_ts()
        if author.is_bot:
            message: JSON = {
                "bot_id": author.bot_id,
                "type": "message",
                "text": text,
                "user": author.id,
                "ts": ts,
                "app_id": self.sb.app_id,
            }
            if blocks:
                message["blocks"] = blocks
            message["team"] = team.id
            message["bot_profile"] = ev.bot_profile(team, self.sb.app_id, self.sb.seed.app.name)
        else:
            message = ev.user_message(team, author, text, ts, self._block_id())
            if blocks:
                message["blocks"] = blocks
        if attachments:
            message["attachments"] = attachments
        if metadata:
            message["metadata"] = metadata
        if thread_ts:
            message["thread_ts"] = thread_ts
            if reply_broadcast:
                message["subtype"] = "thread_broadcast"
        state.add_message(channel.id, message)
        event = ev.message_event(message, channel)
        if thread_ts and reply_broadcast:
            event["root"] = ev.root_summary(state.get_message(channel.id, thread_ts))
        self._emit(team.id, event, channel)
        if not author.is_bot and team.bot_user_id in ev.mentioned_users(text):
            self._emit(team.id, ev.app_mention(message, channel), channel)
        return copy.deepcopy(message)

    def edit(
        self,
        actor: User,
        channel: Channel,
        ts: str,
        *,
        text: str | None = None,
        blocks: list[JSON] | None = None,
        attachments: list[JSON] | None = None,
        metadata: JSON | None = None,
    ) -> JSON:
        state = self.sb.state
        try:
            message = state.get_message(channel.id, ts)
        except NotFound:
            raise ApiError("message_not_found") from None
        if message.get("user") != actor.id:
            raise ApiError("cant_update_message")
        if channel.is_archived:
            raise ApiError("is_archived")
        previous = copy.deepcopy(message)
        if text is not None:
            message["text"] = text
            if not actor.is_bot and blocks is None:
                message["blocks"] = ev.rich_text_blocks(text, self._block_id())
        if blocks is not None:
            message["blocks"] = blocks
        if attachments is not None:
            message["attachments"] = attachments
        if metadata is not None:
            message["metadata"] = metadata
        event_ts = state.next_ts()
        message["edited"] = {"user": actor.id, "ts": event_ts}
        self._emit(
            channel.team_id, ev.message_changed(channel, previous, message, event_ts), channel
        )
        return copy.deepcopy(message)

    def delete(self, actor: User, channel: Channel, ts: str) -> None:
        state = self.sb.state
        try:
            message = state.get_message(channel.id, ts)
        except NotFound:
            raise ApiError("message_not_found") from None
        user = state.users.get(actor.id)
        if message.get("user") != actor.id and not (user and user.is_admin):
            raise ApiError("cant_delete_message")
        previous = state.remove_message(channel.id, ts)
        event_ts = state.next_ts()
        self._emit(channel.team_id, ev.message_deleted(channel, previous, event_ts), channel)

    def ephemeral(
        self,
        channel: Channel,
        user: User,
        text: str,
        blocks: list[JSON] | None,
        thread_ts: str | None,
    ) -> str:
        ts = self.sb.state.next_ts()
        message: JSON = {
            "type": "message",
            "subtype": "ephemeral",
            "text": text,
            "ts": ts,
            "channel": channel.id,
            "user": user.id,
        }
        if blocks:
            message["blocks"] = blocks
        if thread_ts:
            message["thread_ts"] = thread_ts
        self.sb.state.add_ephemeral(user.id, message)
        self.sb.notify(channel.team_id, {"type": "ephemeral", "user": user.id, "message": message})
        return ts

    # -- reactions -----------------------------------------------------------------
    def react(self, actor: User, channel: Channel, ts: str, name: str, *, add: bool) -> None:
        state = self.sb.state
        name = name.strip(":")
        if not name:
            raise ApiError("invalid_name")
        try:
            message = state.get_message(channel.id, ts)
        except NotFound:
            raise ApiError("message_not_found") from None
        reactions: list[JSON] = message.setdefault("reactions", [])
        entry = next((r for r in reactions if r["name"] == name), None)
        if add:
            if entry and actor.id in entry["users"]:
                raise ApiError("already_reacted")
            if entry is None:
                entry = {"name": name, "users": [], "count": 0}
                reactions.append(entry)
            entry["users"].append(actor.id)
            entry["count"] = len(entry["users"])
        else:
            if entry is None or actor.id not in entry["users"]:
                raise ApiError("no_reaction")
            entry["users"].remove(actor.id)
            entry["count"] = len(entry["users"])
            if not entry["users"]:
                reactions.remove(entry)
        if not reactions:
            message.pop("reactions", None)
        kind = "reaction_added" if add else "reaction_removed"
        item_user = str(message.get("user", ""))
        event = ev.reaction_event(kind, actor.id, channel.id, ts, name, item_user, state.next_ts())
        self._emit(channel.team_id, event, channel)

    # -- conversations -------------------------------------------------------------
    def create_channel(self, team: Team, creator: User, name: str, *, private: bool) -> Channel:
        validate_channel_name(name)
        state = self.sb.state
        if any(c.team_id == team.id and c.name == name for c in state.channels.values()):
            raise ApiError("name_taken")
        channel = Channel(
            id=state.ids.new("G" if private else "C"),
            team_id=team.id,
            name=name,
            created=int(self.sb.clock()),
            creator=creator.id,
            is_private=private,
            members=[creator.id],
        )
        state.channels[channel.id] = channel
        if not private:
            self._emit(team.id, ev.channel_created(channel, state.next_ts()))
        self._emit(team.id, ev.member_joined(channel, creator.id, None, state.next_ts()), channel)
        return channel

    def join(self, channel: Channel, user: User, inviter: User | None = None) -> None:
        if channel.is_archived:
            raise ApiError("is_archived")
        if user.id in channel.members:
            raise ApiError("already_in_channel")
        channel.members.append(user.id)
        event = ev.member_joined(
            channel, user.id, inviter.id if inviter else None, self.sb.state.next_ts()
        )
        self._emit(channel.team_id, event, channel)

    def leave(self, channel: Channel, user: User) -> None:
        if user.id not in channel.members:
            raise ApiError("not_in_channel")
        channel.members.remove(user.id)
        self._emit(
            channel.team_id,
            {
                "type": "member_left_channel",
                "user": user.id,
                "channel": channel.id,
                "channel_type": "G" if channel.is_private else "C",
                "team": channel.team_id,
                "event_ts": self.sb.state.next_ts(),
            },
            channel,
        )
