"""The web client's HTTP surface: the page, HTML fragments, JSON actions, live events.

Every action resolves the acting user from a cookie, validates its input (4xx with a
clear message, never a 500), requires the page's CSRF token in ``X-CSRF-Token`` (a header
a cross-site form cannot send) and acts through :class:`~..actor.Actor`.
"""

from __future__ import annotations

import asyncio
import hmac
import json
import re
import secrets
import weakref
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Mapping
from typing import TYPE_CHECKING, Any

from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, Response, StreamingResponse
from starlette.routing import BaseRoute, Mount, Route
from starlette.staticfiles import StaticFiles

from ..actor import ActionError
from ..interactivity import InteractiveResult
from ..state import JSON, Channel, NotFound, User
from ..webapi import ApiError
from .live import CLOSED, LiveHub, Sleep
from .render import Pages, Shortcut, avatar_color, initials

if TYPE_CHECKING:
    from ..core import Sandbox

COOKIE = "cr_sandbox_user"
MAX_BODY = 256_000
MAX_TEXT = 40_000
_TS = re.compile(r"^\d{1,12}\.\d{1,9}$")
_CONV_ID = re.compile(r"^[CGD][A-Z0-9]{2,30}$")
_USER_ID = re.compile(r"^[UW][A-Z0-9]{2,30}$")
_VIEW_ID = re.compile(r"^V[A-Z0-9]{2,30}$")
_EMOJI_NAME = re.compile(r"^[a-z0-9_+'-]{1,100}$")
_ACTION_ID = re.compile(r"^[^\x00-\x1f]{1,255}$")
_COMMAND = re.compile(r"^/[a-z0-9_-]{1,32}$")
_MENTION_IN = re.compile(r"(?<![\w@<&/])@([a-z0-9._-]+)")
_URL_IN = re.compile(r"(?<![\w/<|])https?://[^\s<>\"]+")
_CHANNEL_IN = re.compile(r"(?<![\w#<&/])#([a-z0-9_-]+)")

DEFAULT_SHORTCUTS = (
    Shortcut("escalate", "Escalate", "message", "Escalate this conversation to Tier-2"),
)

Handler = Callable[[Request], Awaitable[Response]]


class BadInput(Exception):
    def __init__(self, status: int, error: str, detail: str = "") -> None:
        super().__init__(error)
        self.status = status
        self.error = error
        self.detail = detail or error


def _field(body: JSON, key: str, pattern: re.Pattern[str] | None = None, max_len: int = 255) -> str:
    value = body.get(key)
    if not isinstance(value, str) or not value:
        raise BadInput(400, "invalid_arguments", f"{key} is required (a string)")
    if len(value) > max_len:
        raise BadInput(400, "too_long", f"{key} is longer than {max_len} characters")
    if pattern is not None and not pattern.fullmatch(value):
        raise BadInput(400, "invalid_arguments", f"{key} is malformed")
    return value


def _optional(body: JSON, key: str, pattern: re.Pattern[str], max_len: int = 255) -> str | None:
    if body.get(key) in (None, ""):
        return None
    return _field(body, key, pattern, max_len)


class WebClient:
    """The web client of one sandbox. ``shortcuts`` are what the app declares."""

    def __init__(
        self,
        sb: Sandbox,
        shortcuts: list[Shortcut] | None = None,
        *,
        live_interval: float = 0.25,
        sleep: Sleep = asyncio.sleep,
    ) -> None:
        self.sb = sb
        self.shortcuts: list[Shortcut] = list(
            shortcuts if shortcuts is not None else _seed_shortcuts(sb)
        )
        self.pages = Pages(sb, self.shortcuts)
        self.pages.env.filters.update(safe_url=_safe_url, safe_color=_safe_color)
        self.hub = LiveHub(sb, interval=live_interval, sleep=sleep)
        self.csrf_token = secrets.token_urlsafe(24)

    def set_shortcuts(self, shortcuts: Iterable[Shortcut | Mapping[str, Any]]) -> None:
        """Replace the shortcuts offered in message menus and the composer.

        Takes :class:`Shortcut` values or Slack manifest entries
        (``features.shortcuts``: ``callback_id``, ``name``, ``type``, ``description``).
        """
        parsed = [Shortcut.parse(item) for item in shortcuts]
        self.shortcuts[:] = [s for s in parsed if s is not None]

    # -- routes ----------------------------------------------------------------------
    def routes(self) -> list[BaseRoute]:
        post = self._post
        return [
            Route("/", self._guard(self.page), methods=["GET"]),
            Route("/web/events", self._guard(self.events), methods=["GET"]),
            Route("/web/fragment/{name}", self._guard(self.fragment), methods=["GET"]),
            Route("/web/user", post(self.switch_user), methods=["POST"]),
            Route("/web/post", post(self.post_message), methods=["POST"]),
            Route("/web/edit", post(self.edit_message), methods=["POST"]),
            Route("/web/delete", post(self.delete_message), methods=["POST"]),
            Route("/web/react", post(self.react), methods=["POST"]),
            Route("/web/join", post(self.join), methods=["POST"]),
            Route("/web/command", post(self.command), methods=["POST"]),
            Route("/web/action", post(self.action), methods=["POST"]),
            Route("/web/select", post(self.select), methods=["POST"]),
            Route("/web/shortcut", post(self.shortcut), methods=["POST"]),
            Route("/web/view/submit", post(self.submit_view), methods=["POST"]),
            Route("/web/view/close", post(self.close_view), methods=["POST"]),
            Route("/web/home/open", post(self.open_home), methods=["POST"]),
            Mount(
                "/web/static",
                app=StaticFiles(packages=[("controlroom.sandbox.web", "static")]),
                name="web-static",
            ),
        ]

    def _guard(self, handler: Handler) -> Handler:
        async def run(request: Request) -> Response:
            try:
                return await handler(request)
            except BadInput as exc:
                return JSONResponse(
                    {"ok": False, "error": exc.error, "detail": exc.detail},
                    status_code=exc.status,
                )
            except NotFound as exc:
                return JSONResponse(
                    {"ok": False, "error": "not_found", "detail": str(exc)}, status_code=404
                )
            except ActionError as exc:
                return JSONResponse(
                    {"ok": False, "error": "action_failed", "detail": str(exc)}, status_code=400
                )
            except ApiError as exc:
                return JSONResponse(
                    {"ok": False, "error": exc.error, "detail": exc.error.replace("_", " ")},
                    status_code=400,
                )

        return run

    def _post(self, handler: Callable[[Request, User, JSON], Awaitable[Response]]) -> Handler:
        async def run(request: Request) -> Response:
            token = request.headers.get("x-csrf-token", "")
            if not hmac.compare_digest(token.encode(), self.csrf_token.encode()):
                raise BadInput(403, "csrf", "missing or wrong X-CSRF-Token header")
            origin = request.headers.get("origin")
            host = request.headers.get("host", "")
            if origin and origin.split("://", 1)[-1] != host:
                raise BadInput(403, "csrf", "cross-origin request refused")
            raw = await request.body()
            if len(raw) > MAX_BODY:
                raise BadInput(413, "too_large", "request body too large")
            try:
                body = json.loads(raw) if raw.strip() else {}
            except ValueError:
                raise BadInput(400, "invalid_json", "the body is not JSON") from None
            if not isinstance(body, dict):
                raise BadInput(400, "invalid_json", "the body must be a JSON object")
            return await handler(request, self.me(request), body)

        return self._guard(run)

    # -- who and where ---------------------------------------------------------------
    def me(self, request: Request) -> User:
        ident = request.cookies.get(COOKIE, "")
        user = self.sb.state.users.get(ident) if _USER_ID.fullmatch(ident) else None
        if user is None or user.is_bot or user.deleted:
            return self.pages.default_user()
        return user

    def _channel(self, me: User, ident: str, *, write: bool = False) -> Channel:
        channel = self.sb.state.channels.get(ident)
        if channel is None or not self.pages.can_read(me, channel):
            raise BadInput(404, "channel_not_found", f"no conversation {ident} for {me.name}")
        if write and me.id not in channel.members:
            raise BadInput(403, "not_in_channel", f"{me.name} is not a member of #{channel.name}")
        return channel

    def _message(self, channel: Channel, ts: str) -> JSON:
        try:
            return self.sb.state.get_message(channel.id, ts)
        except NotFound:
            raise BadInput(404, "message_not_found", f"no message {ts}") from None

    def encode(self, me: User, text: str) -> str:
        """What Slack's client sends for typed text: entities escaped, @names linked."""
        out = text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")

        def user(match: re.Match[str]) -> str:
            name = match.group(1).rstrip(".")
            if name in ("here", "channel", "everyone"):
                return f"<!{name}>" + match.group(1)[len(name) :]
            try:
                found = self.sb.state.user(name, me.team_id)
            except NotFound:
                return match.group(0)
            if found.team_id != me.team_id:
                return match.group(0)
            return f"<@{found.id}>" + match.group(1)[len(name) :]

        def channel(match: re.Match[str]) -> str:
            try:
                found = self.sb.state.channel(match.group(1), me.team_id)
            except NotFound:
                return match.group(0)
            if found.is_private and me.id not in found.members:
                return match.group(0)
            return f"<#{found.id}|{found.name}>"

        def link(match: re.Match[str]) -> str:
            url, tail = match.group(0), ""
            while url and url[-1] in ".,;:!?)]}'":
                url, tail = url[:-1], url[-1] + tail
            return f"<{url}>{tail}"

        out = _URL_IN.sub(link, out)
        return _CHANNEL_IN.sub(channel, _MENTION_IN.sub(user, out))

    # -- pages and fragments -----------------------------------------------------------
    def _frame(self, me: User, current: str) -> JSON:
        team = self.sb.state.team(me.team_id)
        app_color = avatar_color(team.bot_user_id)
        return {
            "me": me,
            "team": team,
            "people": self.pages.people(),
            "me_color": avatar_color(me.id),
            "me_initials": initials(me.real_name),
            "app_color": app_color,
            "app_initials": initials(self.sb.seed.app.name),
            "current": current,
        }

    def _channel_context(self, me: User, channel: Channel) -> JSON:
        app_dm = self.pages.app_dm(me)
        return {
            "channel": channel,
            "is_app_dm": app_dm is not None and app_dm.id == channel.id,
            "label": self.pages.conversation_label(me, channel),
            "member": me.id in channel.members,
        }

    def render_messages(self, me: User, channel: Channel) -> str:
        return self.pages.render(
            viewer=me,
            template="messages.html",
            messages=self.pages.history(me, channel),
            **self._channel_context(me, channel),
        )

    def render_home(self, me: User) -> str:
        frame = self._frame(me, "home")
        return self.pages.render(viewer=me, template="home.html", view=self.pages.home(me), **frame)

    def render_modal(self, me: User) -> str:
        view = self.pages.modal(me)
        frame = self._frame(me, "")
        return self.pages.render(
            viewer=me, template="modal.html", view=view, **self._form_context(me), **frame
        )

    def _form_context(self, me: User) -> JSON:
        people = [u for _, users in self.pages.people() for u in users if u.team_id == me.team_id]
        conversations = [
            c
            for c in self.sb.state.channels.values()
            if c.team_id == me.team_id
            and not (c.is_im or c.is_mpim)
            and self.pages.can_read(me, c)
            and not c.is_archived
        ]
        return {"team_people": people, "conversations": conversations}

    def render_thread(self, me: User, channel: Channel, ts: str) -> str:
        root = self._message(channel, ts)
        if root.get("thread_ts") and root["thread_ts"] != ts:
            ts = str(root["thread_ts"])
        return self.pages.render(
            viewer=me,
            template="thread.html",
            items=self.pages.thread(me, channel, ts),
            ts=ts,
            **self._channel_context(me, channel),
        )

    async def page(self, request: Request) -> Response:
        me = self.me(request)
        wanted = request.query_params.get("c", "")
        frame = self._frame(me, "channel")
        context: JSON = {}
        if wanted == "home":
            frame["current"] = "home"
            context["home"] = self.pages.markup(
                viewer=me, template="home.html", view=self.pages.home(me), **frame
            )
            active = "home"
            title = self.sb.seed.app.name
        else:
            channel = self.sb.state.channels.get(wanted) if wanted else None
            team = self.sb.state.team(me.team_id)
            if wanted == "app" and team.installed:
                # the app's Messages tab: the IM with its bot user, opened on first use
                channel = self.sb.state.dm(me.id, team.bot_user_id)
            if channel is not None and not self.pages.can_read(me, channel):
                channel = None
            if channel is None and not wanted:
                channel = self._first_channel(me)
            if channel is not None:
                context.update(self._channel_context(me, channel))
                context["messages"] = self.pages.markup(
                    viewer=me,
                    template="messages.html",
                    messages=self.pages.history(me, channel),
                    **self._channel_context(me, channel),
                )
                active = "home" if context["is_app_dm"] else channel.id
                title = context["label"] if channel.is_im else f"#{channel.name}"
            else:
                active = ""
                title = "Not found"
        context["sidebar"] = self.pages.markup(
            viewer=me, template="sidebar.html", bar=self.pages.sidebar(me, active), **frame
        )
        view = self.pages.modal(me)
        context["modal"] = self.pages.markup(
            viewer=me, template="modal.html", view=view, **self._form_context(me), **frame
        )
        html = self.pages.render(
            viewer=me,
            template="page.html",
            csrf=self.csrf_token,
            title=title,
            active=active,
            commands=self.sb.seed.app.commands,
            global_shortcuts=[s for s in self.shortcuts if s.kind == "global"],
            **frame,
            **context,
        )
        status = 404 if wanted and active == "" else 200
        return HTMLResponse(html, status_code=status, headers=_NO_STORE)

    def _first_channel(self, me: User) -> Channel | None:
        mine = [
            c
            for c in self.sb.state.channels.values()
            if c.team_id == me.team_id
            and me.id in c.members
            and not (c.is_im or c.is_mpim or c.is_archived)
        ]
        mine.sort(key=lambda c: (c.name != "general", c.name))
        return mine[0] if mine else None

    async def fragment(self, request: Request) -> Response:
        me = self.me(request)
        name = request.path_params["name"]
        params = request.query_params
        if name == "messages":
            channel = self._channel(me, _field(dict(params), "c", _CONV_ID))
            html = self.render_messages(me, channel)
        elif name == "thread":
            channel = self._channel(me, _field(dict(params), "c", _CONV_ID))
            html = self.render_thread(me, channel, _field(dict(params), "ts", _TS))
        elif name == "modal":
            html = self.render_modal(me)
        elif name == "home":
            html = self.render_home(me)
        elif name == "sidebar":
            active = params.get("active", "")
            html = self.pages.render(
                viewer=me,
                template="sidebar.html",
                bar=self.pages.sidebar(me, active),
                **self._frame(me, ""),
            )
        else:
            raise BadInput(404, "not_found", f"no fragment {name!r}")
        return HTMLResponse(html, headers=_NO_STORE)

    # -- live events -------------------------------------------------------------------
    async def events(self, request: Request) -> Response:
        me = self.me(request)
        sub = self.hub.subscribe(me.id, me.team_id)

        async def stream() -> AsyncIterator[str]:
            try:
                yield "retry: 1000\n: connected\n\n"
                while True:
                    try:
                        notice = await asyncio.wait_for(sub.queue.get(), 15.0)
                    except TimeoutError:
                        yield ": ping\n\n"
                        continue
                    if notice is CLOSED:
                        return
                    yield f"data: {json.dumps(notice)}\n\n"
            finally:
                self.hub.unsubscribe(sub)

        return StreamingResponse(
            stream(),
            media_type="text/event-stream",
            headers={**_NO_STORE, "X-Accel-Buffering": "no"},
        )

    # -- actions ---------------------------------------------------------------------
    async def switch_user(self, request: Request, me: User, body: JSON) -> Response:
        ident = _field(body, "user", _USER_ID)
        user = self.sb.state.users.get(ident)
        if user is None or user.is_bot or user.deleted:
            raise BadInput(404, "user_not_found", f"no person {ident}")
        wanted = _optional(body, "channel", re.compile(r"^(home|[CGD][A-Z0-9]{2,30})$"))
        channel = self.sb.state.channels.get(wanted or "")
        if wanted == "home" or (channel is not None and self.pages.can_read(user, channel)):
            next_url = f"/?c={wanted}"
        else:
            next_url = "/"
        response = JSONResponse(
            {"ok": True, "user": user.id, "name": user.real_name, "next": next_url}
        )
        response.set_cookie(COOKIE, user.id, max_age=30 * 86400, httponly=True, samesite="strict")
        return response

    async def post_message(self, request: Request, me: User, body: JSON) -> Response:
        channel = self._channel(me, _field(body, "channel", _CONV_ID), write=True)
        text = _field(body, "text", max_len=MAX_TEXT)
        if not text.strip():
            raise BadInput(400, "no_text", "the message is empty")
        thread_ts = _optional(body, "thread_ts", _TS)
        if thread_ts is not None:
            self._message(channel, thread_ts)
        broadcast = body.get("broadcast") is True and thread_ts is not None
        ts = await self.sb.act.post_message(
            me, channel, self.encode(me, text), thread_ts=thread_ts, reply_broadcast=broadcast
        )
        return JSONResponse({"ok": True, "channel": channel.id, "ts": ts})

    async def edit_message(self, request: Request, me: User, body: JSON) -> Response:
        channel = self._channel(me, _field(body, "channel", _CONV_ID))
        ts = _field(body, "ts", _TS)
        text = _field(body, "text", max_len=MAX_TEXT)
        message = self._message(channel, ts)
        if message.get("user") != me.id or message.get("bot_id"):
            raise BadInput(403, "cant_update_message", "you can only edit your own messages")
        await self.sb.act.edit_message(me, channel, ts, self.encode(me, text))
        return JSONResponse({"ok": True})

    async def delete_message(self, request: Request, me: User, body: JSON) -> Response:
        channel = self._channel(me, _field(body, "channel", _CONV_ID))
        ts = _field(body, "ts", _TS)
        message = self._message(channel, ts)
        if message.get("user") != me.id or message.get("bot_id"):
            raise BadInput(403, "cant_delete_message", "you can only delete your own messages")
        await self.sb.act.delete_message(me, channel, ts)
        return JSONResponse({"ok": True})

    async def react(self, request: Request, me: User, body: JSON) -> Response:
        """Toggle ``name`` on a message for the acting user."""
        channel = self._channel(me, _field(body, "channel", _CONV_ID))
        ts = _field(body, "ts", _TS)
        name = _field(body, "name", max_len=100).strip(":")
        if not _EMOJI_NAME.match(name):
            raise BadInput(400, "invalid_name", "not an emoji name")
        message = self._message(channel, ts)
        reacted = any(
            r.get("name") == name and me.id in r.get("users", [])
            for r in message.get("reactions", []) or []
        )
        if reacted:
            await self.sb.act.remove_reaction(me, channel, ts, name)
        else:
            await self.sb.act.add_reaction(me, channel, ts, name)
        return JSONResponse({"ok": True, "added": not reacted, "name": name})

    async def join(self, request: Request, me: User, body: JSON) -> Response:
        channel = self._channel(me, _field(body, "channel", _CONV_ID))
        if me.id not in channel.members:
            await self.sb.act.join_channel(me, channel)
        return JSONResponse({"ok": True})

    async def command(self, request: Request, me: User, body: JSON) -> Response:
        channel = self._channel(me, _field(body, "channel", _CONV_ID))
        command = _field(body, "command", max_len=33).lower()
        if not _COMMAND.match(command):
            raise BadInput(400, "invalid_command", f"{command} is not a valid command")
        text = body.get("text", "")
        if not isinstance(text, str) or len(text) > MAX_TEXT:
            raise BadInput(400, "invalid_arguments", "text must be a string")
        if command not in self.sb.seed.app.commands:
            raise BadInput(
                400,
                "invalid_command",
                f"{command} is not a valid command. In Slack, all "
                'messages that start with the "/" character are interpreted as commands.',
            )
        # commands get the typed text with Slack's three entities escaped (should_escape off)
        escaped = text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
        result = await self.sb.act.run_command(me, channel, command, escaped)
        return _result(result, failed=f'{command} failed with the error "dispatch_failed"')

    def _container(self, me: User, body: JSON) -> tuple[Channel | None, str | None, str | None]:
        view_id = _optional(body, "view_id", _VIEW_ID)
        if view_id is not None:
            return None, None, view_id
        channel = self._channel(me, _field(body, "channel", _CONV_ID))
        return channel, _field(body, "ts", _TS), None

    async def action(self, request: Request, me: User, body: JSON) -> Response:
        """Click a button in a message, a modal or the Home tab."""
        action_id = _field(body, "action_id", _ACTION_ID)
        value = body.get("value")
        if value is not None and (not isinstance(value, str) or len(value) > 2000):
            raise BadInput(400, "invalid_arguments", "value must be a string")
        channel, ts, view_id = self._container(me, body)
        if view_id is not None:
            result = await self.sb.act.click_view_button(me, view_id, action_id, value)
        else:
            assert channel is not None and ts is not None
            result = await self.sb.act.click_button(me, channel, ts, action_id, value)
        return _result(result, failed="The app did not respond to the click")

    async def select(self, request: Request, me: User, body: JSON) -> Response:
        action_id = _field(body, "action_id", _ACTION_ID)
        value = _field(body, "value", max_len=150)
        channel = self._channel(me, _field(body, "channel", _CONV_ID))
        ts = _field(body, "ts", _TS)
        result = await self.sb.act.select_option(me, channel, ts, action_id, value)
        return _result(result, failed="The app did not respond to the selection")

    async def shortcut(self, request: Request, me: User, body: JSON) -> Response:
        callback_id = _field(body, "callback_id", _ACTION_ID)
        known = {s.callback_id: s for s in self.shortcuts}
        declared = known.get(callback_id)
        if declared is None:
            raise BadInput(404, "unknown_shortcut", f"the app has no shortcut {callback_id!r}")
        if declared.kind == "message":
            channel = self._channel(me, _field(body, "channel", _CONV_ID))
            ts = _field(body, "ts", _TS)
            result = await self.sb.act.message_shortcut(me, channel, ts, callback_id)
        else:
            result = await self.sb.act.global_shortcut(me, callback_id)
        return _result(result, failed=f"{declared.name}: the app did not respond")

    async def submit_view(self, request: Request, me: User, body: JSON) -> Response:
        view_id = _field(body, "view_id", _VIEW_ID)
        values = body.get("values", {})
        if not isinstance(values, dict) or not all(
            isinstance(k, str) and isinstance(v, dict) for k, v in values.items()
        ):
            raise BadInput(400, "invalid_arguments", "values must be {block_id: {action_id: v}}")
        for actions in values.values():
            for key, value in actions.items():
                if not isinstance(key, str) or not (
                    value is None
                    or isinstance(value, str | dict)
                    or (isinstance(value, list) and all(isinstance(v, str) for v in value))
                ):
                    raise BadInput(400, "invalid_arguments", "values must be strings")
                if isinstance(value, str) and len(value) > MAX_TEXT:
                    raise BadInput(400, "too_long", "a value is too long")
        view = next((v for v in self.sb.act.open_views(me) if v["id"] == view_id), None)
        if view is not None:
            values = _multi_values(view, values)
        result = await self.sb.act.submit_view(me, view_id, values)
        if not result.ok:
            return _result(result, failed="We had some trouble connecting. Try again?")
        errors = result.applied.get("errors")
        return JSONResponse(
            {
                "ok": True,
                "delivered": True,
                "response_action": result.applied.get("response_action"),
                "errors": errors if isinstance(errors, dict) else {},
            }
        )

    async def close_view(self, request: Request, me: User, body: JSON) -> Response:
        view_id = _field(body, "view_id", _VIEW_ID)
        await self.sb.act.close_view(me, view_id)
        return JSONResponse({"ok": True})

    async def open_home(self, request: Request, me: User, body: JSON) -> Response:
        if not self.sb.state.team(me.team_id).installed:
            raise BadInput(404, "app_not_installed", "the app is not installed in this workspace")
        event_id = await self.sb.act.open_app_home(me)
        return JSONResponse({"ok": True, "event_id": event_id})


_NO_STORE = {"Cache-Control": "no-store"}


def _result(result: InteractiveResult, failed: str) -> Response:
    if result.ok:
        return JSONResponse({"ok": True, "delivered": True, "status": result.status})
    return JSONResponse(
        {"ok": True, "delivered": False, "status": result.status, "warning": failed}
    )


_MULTI_KEYS = {
    "multi_users_select": "selected_users",
    "multi_conversations_select": "selected_conversations",
    "multi_channels_select": "selected_channels",
}


def _multi_values(view: JSON, values: JSON) -> JSON:
    """Lists from checkboxes and multi-selects -> Slack's ``selected_*`` shapes."""
    elements: dict[tuple[str, str], JSON] = {}
    for block in view.get("blocks", []):
        element = block.get("element") if isinstance(block, dict) else None
        if isinstance(element, dict):
            elements[(str(block.get("block_id")), str(element.get("action_id")))] = element
    out: JSON = {}
    for block_id, actions in values.items():
        out[block_id] = {}
        for action_id, value in actions.items():
            element = elements.get((block_id, action_id), {})
            kind = str(element.get("type", ""))
            if isinstance(value, list) and kind in _MULTI_KEYS:
                value = {_MULTI_KEYS[kind]: value}
            elif isinstance(value, list):
                options = {o.get("value"): o for o in element.get("options", []) or []}
                unknown = [v for v in value if v not in options]
                if unknown:
                    raise BadInput(400, "invalid_arguments", f"no option {unknown[0]!r}")
                value = {"selected_options": [options[v] for v in value]}
            out[block_id][action_id] = value
    return out


def _safe_url(url: Any) -> str:
    if isinstance(url, str) and url.lower().startswith(("http://", "https://", "mailto:")):
        return url
    return "#"


def _safe_color(color: Any) -> str:
    named = {"good": "#2eb67d", "warning": "#ecb22e", "danger": "#e01e5a"}
    if isinstance(color, str):
        if color in named:
            return named[color]
        if re.fullmatch(r"#?[0-9a-fA-F]{3,8}", color):
            return color if color.startswith("#") else "#" + color
    return "#dddddd"


def _seed_shortcuts(sb: Sandbox) -> list[Shortcut]:
    declared = getattr(sb.seed.app, "shortcuts", None)
    if not declared:
        return list(DEFAULT_SHORTCUTS)
    return [s for s in (Shortcut.parse(item) for item in declared) if s is not None]


_CLIENTS: weakref.WeakKeyDictionary[Sandbox, WebClient] = weakref.WeakKeyDictionary()


def web_client(sb: Sandbox) -> WebClient:
    """The sandbox's web client (created on first use)."""
    client = _CLIENTS.get(sb)
    if client is None:
        client = WebClient(sb)
        _CLIENTS[sb] = client
    return client


def web_routes(sb: Sandbox) -> list[BaseRoute]:
    """Routes to mount in the sandbox's app: ``/``, ``/web/...``."""
    return web_client(sb).routes()
