"""Acting as a seeded user: what a person does in the Slack client.

Each action changes the world and delivers exactly what Slack would deliver
(an Events API ``event_callback``, an interactive payload or a slash command).
Users and channels are given by id or name (``"priya"``, ``"#support"``).
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

from . import events as ev
from .interactivity import InteractiveResult, channel_block
from .state import JSON, Channel, NotFound, User

if TYPE_CHECKING:
    from .core import Sandbox


class ActionError(ValueError):
    """The action is impossible in Slack (no such button, not a member, ...)."""


def _action_ts() -> str:
    return f"{time.time():.6f}"


class Actor:
    def __init__(self, sb: Sandbox) -> None:
        self.sb = sb

    # -- resolution --------------------------------------------------------------------
    def _user(self, ref: str | User) -> User:
        if isinstance(ref, User):
            return ref
        try:
            return self.sb.state.user(ref)
        except NotFound as exc:
            raise ActionError(str(exc)) from None

    def _channel(self, ref: str | Channel, user: User) -> Channel:
        if isinstance(ref, Channel):
            return ref
        try:
            return self.sb.state.channel(ref, user.team_id)
        except NotFound as exc:
            raise ActionError(str(exc)) from None

    def _member(self, user: User, channel: Channel) -> None:
        if user.id not in channel.members:
            raise ActionError(f"{user.name} is not a member of {channel.name}")

    # -- messages ------------------------------------------------------------------------
    async def post_message(
        self,
        user: str | User,
        channel: str | Channel,
        text: str,
        thread_ts: str | None = None,
        reply_broadcast: bool = False,
    ) -> str:
        """Post as ``user``; returns the message ``ts``."""
        author = self._user(user)
        chan = self._channel(channel, author)
        self._member(author, chan)
        message = self.sb.ops.post(
            author, chan, text=text, thread_ts=thread_ts, reply_broadcast=reply_broadcast
        )
        return str(message["ts"])

    async def edit_message(
        self, user: str | User, channel: str | Channel, ts: str, text: str
    ) -> None:
        author = self._user(user)
        self.sb.ops.edit(author, self._channel(channel, author), ts, text=text)

    async def delete_message(self, user: str | User, channel: str | Channel, ts: str) -> None:
        author = self._user(user)
        self.sb.ops.delete(author, self._channel(channel, author), ts)

    async def add_reaction(
        self, user: str | User, channel: str | Channel, ts: str, name: str
    ) -> None:
        actor = self._user(user)
        self.sb.ops.react(actor, self._channel(channel, actor), ts, name, add=True)

    async def remove_reaction(
        self, user: str | User, channel: str | Channel, ts: str, name: str
    ) -> None:
        actor = self._user(user)
        self.sb.ops.react(actor, self._channel(channel, actor), ts, name, add=False)

    async def join_channel(self, user: str | User, channel: str | Channel) -> None:
        actor = self._user(user)
        self.sb.ops.join(self._channel(channel, actor), actor)

    async def invite(self, inviter: str | User, channel: str | Channel, *users: str | User) -> None:
        """Add people (or the app's bot user, e.g. ``"controlroom"``) to a channel."""
        actor = self._user(inviter)
        chan = self._channel(channel, actor)
        self._member(actor, chan)
        for ref in users:
            self.sb.ops.join(chan, self._user(ref), actor)

    async def leave_channel(self, user: str | User, channel: str | Channel) -> None:
        actor = self._user(user)
        self.sb.ops.leave(self._channel(channel, actor), actor)

    async def create_channel(self, user: str | User, name: str, private: bool = False) -> Channel:
        actor = self._user(user)
        return self.sb.ops.create_channel(
            self.sb.state.team(actor.team_id), actor, name, private=private
        )

    # -- interactivity ---------------------------------------------------------------------
    def _find_message(self, user: User, channel: Channel, ts: str) -> tuple[JSON, bool]:
        try:
            return self.sb.state.get_message(channel.id, ts), False
        except NotFound:
            for message in self.sb.state.ephemerals(user.id):
                if message["ts"] == ts and message.get("channel") == channel.id:
                    return message, True
        raise ActionError(f"no message {ts} in {channel.name}")

    @staticmethod
    def _find_element(blocks: list[JSON], action_id: str) -> tuple[JSON, str]:
        for block in blocks:
            candidates: list[Any] = []
            if block.get("type") == "actions":
                candidates = list(block.get("elements", []))
            elif block.get("type") == "section" and "accessory" in block:
                candidates = [block["accessory"]]
            elif block.get("type") == "input" and "element" in block:
                candidates = [block["element"]]
            for element in candidates:
                if isinstance(element, dict) and element.get("action_id") == action_id:
                    return element, str(block.get("block_id", ""))
        raise ActionError(f"no element with action_id {action_id!r}")

    def _base(self, kind: str, user: User) -> JSON:
        team = self.sb.state.team(user.team_id)
        return {
            "type": kind,
            "user": ev.user_block(user),
            "api_app_id": self.sb.app_id,
            "token": self.sb.seed.app.verification_token,
            "trigger_id": self.sb.interactions.new_trigger(user.id),
            "team": ev.team_block(team),
            "enterprise": ev.enterprise_block(team),
            "is_enterprise_install": False,
        }

    async def _message_action(
        self,
        user: str | User,
        channel: str | Channel,
        ts: str,
        action_id: str,
        build: Any,
    ) -> InteractiveResult:
        actor = self._user(user)
        chan = self._channel(channel, actor)
        message, ephemeral = self._find_message(actor, chan, ts)
        element, block_id = self._find_element(list(message.get("blocks", [])), action_id)
        payload = self._base("block_actions", actor)
        payload["container"] = {
            "type": "message",
            "message_ts": ts,
            "channel_id": chan.id,
            "is_ephemeral": ephemeral,
        }
        payload["channel"] = channel_block(chan)
        if not ephemeral:
            payload["message"] = {k: v for k, v in message.items() if k != "metadata"}
        payload["state"] = {"values": {}}
        payload["response_url"] = self.sb.interactions.new_response_url(
            "actions", actor.team_id, chan.id, actor.id, ts, ephemeral
        )
        action = build(element, block_id)
        action["action_ts"] = _action_ts()
        payload["actions"] = [action]
        return await self.sb.interactions.send(payload)

    async def click_button(
        self,
        user: str | User,
        channel: str | Channel,
        ts: str,
        action_id: str,
        value: str | None = None,
    ) -> InteractiveResult:
        """Click a button in a message (``block_actions``)."""

        def build(element: JSON, block_id: str) -> JSON:
            if element.get("type") != "button":
                raise ActionError(f"{action_id!r} is a {element.get('type')}, not a button")
            action: JSON = {
                "action_id": action_id,
                "block_id": block_id,
                "text": element.get("text"),
                "type": "button",
            }
            chosen = value if value is not None else element.get("value")
            if chosen is not None:
                action["value"] = chosen
            if element.get("style"):
                action["style"] = element["style"]
            return action

        return await self._message_action(user, channel, ts, action_id, build)

    async def click_view_button(
        self, user: str | User, view_id: str, action_id: str, value: str | None = None
    ) -> InteractiveResult:
        """Click a button inside an open modal or the Home tab (``container.type: view``)."""
        actor = self._user(user)
        view = self._view(actor, view_id)
        element, block_id = self._find_element(list(view.get("blocks", [])), action_id)
        if element.get("type") != "button":
            raise ActionError(f"{action_id!r} is a {element.get('type')}, not a button")
        payload = self._base("block_actions", actor)
        payload["container"] = {"type": "view", "view_id": view_id}
        payload["view"] = self.sb.interactions.public(view)
        payload["state"] = view.get("state", {"values": {}})
        action: JSON = {
            "action_id": action_id,
            "block_id": block_id,
            "text": element.get("text"),
            "type": "button",
            "action_ts": _action_ts(),
        }
        chosen = value if value is not None else element.get("value")
        if chosen is not None:
            action["value"] = chosen
        payload["actions"] = [action]
        return await self.sb.interactions.send(payload)

    async def select_option(
        self, user: str | User, channel: str | Channel, ts: str, action_id: str, value: str
    ) -> InteractiveResult:
        """Pick an option of a static select (or overflow) in a message."""

        def build(element: JSON, block_id: str) -> JSON:
            options = list(element.get("options", []))
            for group in element.get("option_groups", []):
                options.extend(group.get("options", []))
            option = next((o for o in options if o.get("value") == value), None)
            if option is None:
                raise ActionError(f"{action_id!r} has no option {value!r}")
            action: JSON = {
                "type": element.get("type"),
                "action_id": action_id,
                "block_id": block_id,
                "selected_option": option,
            }
            if "placeholder" in element:
                action["placeholder"] = element["placeholder"]
            return action

        return await self._message_action(user, channel, ts, action_id, build)

    async def run_command(
        self, user: str | User, channel: str | Channel, command: str, text: str = ""
    ) -> InteractiveResult:
        """Run a slash command; the app's immediate reply is shown like Slack does."""
        actor = self._user(user)
        chan = self._channel(channel, actor)
        if command not in self.sb.seed.app.commands:
            raise ActionError(f"{command} is not a valid command")
        team = self.sb.state.team(actor.team_id)
        response_url = self.sb.interactions.new_response_url("commands", team.id, chan.id, actor.id)
        fields: JSON = {
            "token": self.sb.seed.app.verification_token,
            "team_id": team.id,
            "team_domain": team.domain,
            "channel_id": chan.id,
            "channel_name": channel_block(chan)["name"],
            "user_id": actor.id,
            "user_name": actor.name,
            "command": command,
            "text": text,
            "api_app_id": self.sb.app_id,
            "is_enterprise_install": "false",
            "response_url": response_url,
            "trigger_id": self.sb.interactions.new_trigger(actor.id),
        }
        if team.enterprise_id:
            fields["enterprise_id"] = team.enterprise_id
            fields["enterprise_name"] = team.enterprise_name
        result = await self.sb.interactions.send(fields, command=True)
        applied: JSON = {}
        body = result.body
        if result.ok and body:
            reply = body if isinstance(body, dict) else {"text": str(body)}
            if reply.get("text") or reply.get("blocks"):
                target = self.sb.interactions.response_urls[response_url.split("/", 6)[-1]]
                applied = self.sb.interactions.apply_message_response(target, reply)
        return InteractiveResult(result.ok, result.status, body, applied)

    async def message_shortcut(
        self, user: str | User, channel: str | Channel, ts: str, callback_id: str
    ) -> InteractiveResult:
        actor = self._user(user)
        chan = self._channel(channel, actor)
        message, _ = self._find_message(actor, chan, ts)
        payload = self._base("message_action", actor)
        payload["user"] = {
            "id": actor.id,
            "name": actor.name,
            "username": actor.name,
            "team_id": actor.team_id,
        }
        payload["action_ts"] = _action_ts()
        payload["channel"] = channel_block(chan)
        payload["callback_id"] = callback_id
        payload["message_ts"] = ts
        payload["message"] = {k: v for k, v in message.items() if k != "metadata"}
        payload["response_url"] = self.sb.interactions.new_response_url(
            "app", actor.team_id, chan.id, actor.id, ts
        )
        return await self.sb.interactions.send(payload)

    async def global_shortcut(self, user: str | User, callback_id: str) -> InteractiveResult:
        actor = self._user(user)
        payload = self._base("shortcut", actor)
        payload["user"] = {"id": actor.id, "username": actor.name, "team_id": actor.team_id}
        payload["action_ts"] = _action_ts()
        payload["callback_id"] = callback_id
        return await self.sb.interactions.send(payload)

    # -- modals and home ----------------------------------------------------------------
    def _view(self, actor: User, view_id: str) -> JSON:
        view = self.sb.state.views.get(view_id)
        open_ids = self.sb.interactions.stacks.get(actor.id, [])
        home = self.sb.interactions.home.get(actor.id)
        if view is None or view.get("user_id") != actor.id or view_id not in [*open_ids, home]:
            raise ActionError(f"{actor.name} has no view {view_id}")
        return view

    @staticmethod
    def state_values(view: JSON, values: dict[str, Any]) -> JSON:
        """``{block_id: {action_id: value}}`` -> Slack's ``view.state.values``.

        Plain strings become the element's value shape (``value``, ``selected_option``,
        ``selected_user``...); dicts are taken as already Slack-shaped.
        """
        out: JSON = {}
        elements: dict[tuple[str, str], JSON] = {}
        for block in view.get("blocks", []):
            el = block.get("element") if block.get("type") == "input" else None
            if isinstance(el, dict):
                elements[(str(block.get("block_id")), str(el.get("action_id")))] = el
        for block_id, actions in values.items():
            for action_id, raw in actions.items():
                el = elements.get((block_id, action_id), {"type": "plain_text_input"})
                kind = str(el.get("type", "plain_text_input"))
                if isinstance(raw, dict):
                    entry = {"type": kind, **raw}
                elif kind in ("static_select", "radio_buttons", "external_select"):
                    opts = {o.get("value"): o for o in el.get("options", [])}
                    entry = {"type": kind, "selected_option": opts.get(raw, {"value": raw})}
                elif kind == "users_select":
                    entry = {"type": kind, "selected_user": raw}
                elif kind in ("conversations_select", "channels_select"):
                    key = "selected_conversation" if kind.startswith("conv") else "selected_channel"
                    entry = {"type": kind, key: raw}
                elif kind == "datepicker":
                    entry = {"type": kind, "selected_date": raw}
                else:
                    entry = {"type": kind, "value": raw}
                out.setdefault(block_id, {})[action_id] = entry
        return out

    async def submit_view(
        self, user: str | User, view_id: str, values: dict[str, Any] | None = None
    ) -> InteractiveResult:
        """Submit a modal; honours ``response_action`` (errors/update/push/clear)."""
        actor = self._user(user)
        view = self._view(actor, view_id)
        view["state"] = {"values": self.state_values(view, values or {})}
        payload = self._base("view_submission", actor)
        payload["view"] = self.sb.interactions.public(view)
        payload["response_urls"] = []
        result = await self.sb.interactions.send(payload)
        interactions = self.sb.interactions
        body = result.body if isinstance(result.body, dict) else {}
        action = body.get("response_action")
        applied: JSON = {"response_action": action}
        if not result.ok:
            return result
        if action == "errors":
            applied["errors"] = body.get("errors", {})
        elif action == "update":
            interactions.update(view, body.get("view"), None)
        elif action == "push":
            pushed = interactions._make_view(
                view["team_id"],
                actor.id,
                interactions._check_view(body.get("view")),
                view["root_view_id"],
                view["id"],
            )
            interactions.stacks.setdefault(actor.id, []).append(pushed["id"])
            applied["view_id"] = pushed["id"]
        elif action == "clear":
            interactions.close_stack(actor.id)
        else:
            interactions.close_stack(actor.id, view["id"])
        return InteractiveResult(result.ok, result.status, result.body, applied)

    async def close_view(self, user: str | User, view_id: str) -> InteractiveResult | None:
        """Close a modal; sends ``view_closed`` when the view asked with notify_on_close."""
        actor = self._user(user)
        view = self._view(actor, view_id)
        self.sb.interactions.close_stack(actor.id, view["id"])
        if not view.get("notify_on_close"):
            return None
        payload = self._base("view_closed", actor)
        payload.pop("trigger_id")
        payload["view"] = self.sb.interactions.public(view)
        payload["is_cleared"] = False
        return await self.sb.interactions.send(payload)

    def open_views(self, user: str | User) -> list[JSON]:
        """The user's modal stack, root first."""
        actor = self._user(user)
        return [self.sb.state.views[v] for v in self.sb.interactions.stacks.get(actor.id, [])]

    async def open_app_home(self, user: str | User, tab: str = "home") -> str | None:
        """Open the app's Home (or ``"messages"``) tab; returns the event_id (if subscribed)."""
        if tab not in ("home", "messages"):
            raise ActionError(f"no app tab {tab!r}")
        actor = self._user(user)
        team = self.sb.state.team(actor.team_id)
        dm = self.sb.state.dm(actor.id, team.bot_user_id)
        event: JSON = {
            "type": "app_home_opened",
            "user": actor.id,
            "channel": dm.id,
            "tab": tab,
            "event_ts": self.sb.state.next_ts(),
        }
        home = self.sb.interactions.home.get(actor.id)
        if home and tab == "home":
            event["view"] = self.sb.interactions.public(self.sb.state.views[home])
        return self.sb.deliverer.emit(team.id, event, dm)
