"""Interactivity plumbing: trigger_ids, response_urls, modal stacks, payload delivery."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any
from urllib.parse import urlencode

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from .blocks import normalise_blocks, validate_blocks, validate_view
from .delivery import DeliveryRecord
from .state import JSON, Channel, User
from .webapi import ApiError

if TYPE_CHECKING:
    from .core import Sandbox

RESPONSE_URL_TTL = 30 * 60.0
RESPONSE_URL_USES = 5
VIEW_MAX_BYTES = 250_000
MAX_STACK = 3


@dataclass
class Trigger:
    user_id: str
    created: float
    used: bool = False


@dataclass
class ResponseUrl:
    team_id: str
    channel_id: str | None
    user_id: str
    message_ts: str | None
    is_ephemeral: bool
    created: float
    uses: int = 0


@dataclass(frozen=True)
class InteractiveResult:
    """What the app answered to an interactive payload or command."""

    ok: bool
    status: int | None
    body: Any  # parsed JSON, raw text, or None
    applied: JSON = field(default_factory=dict)


class Interactions:
    def __init__(self, sb: Sandbox) -> None:
        self.sb = sb
        self.triggers: dict[str, Trigger] = {}
        self.response_urls: dict[str, ResponseUrl] = {}
        self.stacks: dict[str, list[str]] = {}  # user -> modal view ids, root first
        self.home: dict[str, str] = {}  # user -> home view id

    def _block_id(self) -> str:
        return self.sb.state.ids.new("", 4)

    # -- trigger_id ----------------------------------------------------------------
    def new_trigger(self, user_id: str) -> str:
        ids = self.sb.state.ids
        trigger = f"{ids.new('', 12).lower()}.{ids.new('', 11).lower()}.{ids.hex(32)}"
        trigger = "".join(c for c in trigger if c.isalnum() or c == ".")
        self.triggers[trigger] = Trigger(user_id, self.sb.clock())
        return trigger

    def consume_trigger(self, trigger_id: str) -> Trigger:
        trigger = self.triggers.get(trigger_id)
        if trigger is None:
            raise ApiError("invalid_trigger_id")
        if trigger.used:
            raise ApiError("exchanged_trigger_id")
        if self.sb.clock() - trigger.created > self.sb.config.trigger_ttl:
            raise ApiError("expired_trigger_id")
        trigger.used = True
        return trigger

    # -- response_url --------------------------------------------------------------
    def new_response_url(
        self,
        kind: str,
        team_id: str,
        channel_id: str | None,
        user_id: str,
        message_ts: str | None = None,
        is_ephemeral: bool = False,
    ) -> str:
        ids = self.sb.state.ids
        key = f"{ids.new('', 12)}/{ids.hex(24)}"
        self.response_urls[key] = ResponseUrl(
            team_id, channel_id, user_id, message_ts, is_ephemeral, self.sb.clock()
        )
        return f"{self.sb.public_url}/hooks/{kind}/{team_id}/{key}"

    async def handle_response_url(self, request: Request) -> Response:
        key = f"{request.path_params['num']}/{request.path_params['secret']}"
        target = self.response_urls.get(key)
        if target is None or target.team_id != request.path_params["team"]:
            return JSONResponse({"ok": False, "error": "no_such_url"}, status_code=404)
        if self.sb.clock() - target.created > self.sb.config.scaled(RESPONSE_URL_TTL):
            return JSONResponse({"ok": False, "error": "expired_url"}, status_code=404)
        if target.uses >= RESPONSE_URL_USES:
            return JSONResponse({"ok": False, "error": "used_url"}, status_code=404)
        raw = await request.body()
        try:
            body = json.loads(raw) if raw.strip() else {}
        except ValueError:
            return JSONResponse({"ok": False, "error": "invalid_json"}, status_code=400)
        if not isinstance(body, dict):
            return JSONResponse({"ok": False, "error": "invalid_json"}, status_code=400)
        try:
            self.apply_message_response(target, body)
        except ApiError as exc:
            return JSONResponse({"ok": False, "error": exc.error, **exc.extra})
        target.uses += 1
        return JSONResponse({"ok": True})

    def apply_message_response(self, target: ResponseUrl, body: JSON) -> JSON:
        """Apply a response_url (or slash-command reply) message body."""
        sb = self.sb
        state = sb.state
        team = state.team(target.team_id)
        bot = state.users[team.bot_user_id]
        if target.channel_id is None:
            raise ApiError("channel_not_found")
        channel = state.channels[target.channel_id]
        user = state.users[target.user_id]
        blocks = body.get("blocks")
        if blocks is not None:
            problems = validate_blocks(blocks)
            if problems:
                raise ApiError("invalid_blocks", response_metadata={"messages": problems})
        text = body.get("text")
        thread_ts = body.get("thread_ts")
        if (text is not None and not isinstance(text, str)) or (
            thread_ts is not None and not isinstance(thread_ts, str)
        ):
            raise ApiError("invalid_arguments")
        if body.get("delete_original"):
            if target.is_ephemeral:
                self._drop_ephemeral(user.id, target.message_ts)
            elif target.message_ts:
                sb.ops.delete(bot, channel, target.message_ts)
            return {"deleted": target.message_ts}
        if body.get("replace_original") and target.message_ts:
            if target.is_ephemeral:
                self._drop_ephemeral(user.id, target.message_ts)
                ts = sb.ops.ephemeral(channel, user, text or "", blocks, None)
                target.message_ts = ts
                return {"replaced": ts}
            message = sb.ops.edit(bot, channel, target.message_ts, text=text, blocks=blocks)
            return {"replaced": message["ts"]}
        if not text and not blocks and not body.get("attachments"):
            raise ApiError("no_text")
        if body.get("response_type") == "in_channel":
            message = sb.ops.post(bot, channel, text=text or "", blocks=blocks, thread_ts=thread_ts)
            return {"posted": message["ts"]}
        ts = sb.ops.ephemeral(channel, user, text or "", blocks, thread_ts)
        return {"ephemeral": ts}

    def _drop_ephemeral(self, user_id: str, ts: str | None) -> None:
        if ts is not None:
            self.sb.state.remove_ephemeral(user_id, ts)

    # -- views ---------------------------------------------------------------------
    def _check_view(self, view: Any) -> JSON:
        if view is None:
            raise ApiError(
                "invalid_arguments",
                response_metadata={"messages": ["[ERROR] missing required field: view"]},
            )
        problems = validate_view(view)
        if problems:
            raise ApiError("invalid_arguments", response_metadata={"messages": problems})
        if len(json.dumps(view)) > VIEW_MAX_BYTES:
            raise ApiError("view_too_large")
        assert isinstance(view, dict)
        return view

    def _make_view(
        self, team_id: str, user_id: str, spec: JSON, root: str | None, previous: str | None
    ) -> JSON:
        sb = self.sb
        team = sb.state.team(team_id)
        view_id = sb.state.ids.new("V")
        external_id = spec.get("external_id", "")
        if external_id and any(
            v.get("external_id") == external_id for v in sb.state.views.values()
        ):
            raise ApiError("duplicate_external_id")
        view: JSON = {
            "id": view_id,
            "team_id": team_id,
            "type": spec["type"],
            "blocks": normalise_blocks(spec.get("blocks", []), self._block_id),
            "private_metadata": spec.get("private_metadata", ""),
            "callback_id": spec.get("callback_id", ""),
            "state": {"values": {}},
            "hash": f"{int(sb.clock())}.{sb.state.ids.new('', 8)}",
            "title": spec.get("title"),
            "clear_on_close": bool(spec.get("clear_on_close", False)),
            "notify_on_close": bool(spec.get("notify_on_close", False)),
            "close": spec.get("close"),
            "submit": spec.get("submit"),
            "previous_view_id": previous,
            "root_view_id": root or view_id,
            "app_id": sb.app_id,
            "external_id": external_id,
            "app_installed_team_id": team_id,
            "bot_id": team.bot_id,
            "user_id": user_id,
        }
        sb.state.views[view_id] = view
        sb.notify(team_id, {"type": "view_opened", "user": user_id, "view": self.public(view)})
        return view

    @staticmethod
    def public(view: JSON) -> JSON:
        return {k: v for k, v in view.items() if k != "user_id"}

    def open(self, team_id: str, trigger_id: str, spec: Any) -> JSON:
        view_spec = self._check_view(spec)
        if view_spec["type"] != "modal":
            raise ApiError("invalid_arguments")
        trigger = self.consume_trigger(trigger_id)
        view = self._make_view(team_id, trigger.user_id, view_spec, None, None)
        self.stacks[trigger.user_id] = [view["id"]]
        return view

    def push(self, team_id: str, trigger_id: str, spec: Any) -> JSON:
        view_spec = self._check_view(spec)
        trigger = self.consume_trigger(trigger_id)
        stack = self.stacks.get(trigger.user_id) or []
        if not stack:
            raise ApiError("not_found")
        if len(stack) >= MAX_STACK:
            raise ApiError("push_limit_reached")
        view = self._make_view(team_id, trigger.user_id, view_spec, stack[0], stack[-1])
        stack.append(view["id"])
        return view

    def find(self, view_id: str | None, external_id: str | None) -> JSON:
        for view in self.sb.state.views.values():
            if (view_id and view["id"] == view_id) or (
                external_id and view.get("external_id") == external_id
            ):
                return view
        raise ApiError("not_found")

    def update(self, view: JSON, spec: Any, hash_: str | None) -> JSON:
        view_spec = self._check_view(spec)
        if hash_ and hash_ != view["hash"]:
            raise ApiError("hash_conflict")
        for key in (
            "blocks",
            "private_metadata",
            "callback_id",
            "title",
            "close",
            "submit",
            "clear_on_close",
            "notify_on_close",
        ):
            if key in view_spec:
                view[key] = view_spec[key]
        view["blocks"] = normalise_blocks(view["blocks"], self._block_id)
        view["external_id"] = view_spec.get("external_id", view.get("external_id", ""))
        view["hash"] = f"{int(self.sb.clock())}.{self.sb.state.ids.new('', 8)}"
        self.sb.notify(
            view["team_id"],
            {"type": "view_updated", "user": view["user_id"], "view": self.public(view)},
        )
        return view

    def publish(self, team_id: str, user: User, spec: Any, hash_: str | None) -> JSON:
        view_spec = self._check_view(spec)
        if view_spec["type"] != "home":
            raise ApiError("invalid_arguments")
        current_id = self.home.get(user.id)
        if current_id:
            return self.update(self.sb.state.views[current_id], view_spec, hash_)
        view = self._make_view(team_id, user.id, view_spec, None, None)
        self.home[user.id] = view["id"]
        return view

    def close_stack(self, user_id: str, upto: str | None = None) -> None:
        stack = self.stacks.get(user_id, [])
        if upto is None or upto not in stack:
            closed, self.stacks[user_id] = stack, []
        else:
            closed, self.stacks[user_id] = stack[stack.index(upto) :], stack[: stack.index(upto)]
        for view_id in closed:
            view = self.sb.state.views[view_id]
            self.sb.notify(
                view["team_id"], {"type": "view_closed", "user": user_id, "view_id": view_id}
            )

    # -- delivery of interactive payloads ------------------------------------------
    async def send(self, payload: JSON, *, command: bool = False) -> InteractiveResult:
        """Deliver one interactive payload (or a slash command's fields) and await the ack."""
        sb = self.sb
        kind = "slash_command" if command else str(payload.get("type"))
        if sb.config.socket_mode:
            envelope_type = "slash_commands" if command else "interactive"
            acked, ack_payload = await sb.socket.request(envelope_type, payload)
            return InteractiveResult(acked, 200 if acked else None, ack_payload)
        url = (sb.config.commands_url if command else sb.config.interactivity_url) or sb.request_url
        if not url:
            sb.deliverer.records.append(
                DeliveryRecord("", kind, "none", 0, None, False, "no_request_url", time=sb.clock())
            )
            return InteractiveResult(False, None, None)
        if command:
            raw = urlencode({k: "" if v is None else str(v) for k, v in payload.items()}).encode()
        else:
            raw = urlencode({"payload": json.dumps(payload)}).encode()
        result = await sb.deliverer.post(url, raw, "application/x-www-form-urlencoded")
        sb.deliverer.records.append(
            DeliveryRecord(
                "", kind, "http", 0, result.status, result.ok, result.reason, time=sb.clock()
            )
        )
        body: Any = None
        text = result.body.decode(errors="replace").strip()
        if text:
            try:
                body = json.loads(text)
            except ValueError:
                body = text
        return InteractiveResult(result.ok, result.status, body)


def channel_block(channel: Channel) -> JSON:
    return {"id": channel.id, "name": channel.name if not channel.is_im else "directmessage"}
