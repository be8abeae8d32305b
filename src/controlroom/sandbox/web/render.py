"""View models and HTML rendering for the web client (Jinja2, autoescaped)."""

from __future__ import annotations

import re
import zlib
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from jinja2 import Environment, PackageLoader, select_autoescape
from markupsafe import Markup

from ..state import JSON, Channel, NotFound, User
from .mrkdwn import EMOJI, PICKER, Renderer, emoji

if TYPE_CHECKING:
    from ..core import Sandbox

_PALETTE = (
    "#e01e5a",
    "#2eb67d",
    "#ecb22e",
    "#36c5f0",
    "#4a154b",
    "#1264a3",
    "#e8912d",
    "#007a5a",
    "#9e3997",
    "#0b4c8c",
)


#: the most recent messages a channel view shows (Slack pages older ones in on scroll)
HISTORY_LIMIT = 300


def avatar_color(ident: str) -> str:
    return _PALETTE[zlib.crc32(ident.encode()) % len(_PALETTE)]


def initials(name: str) -> str:
    parts = [p for p in name.replace("-", " ").split() if p]
    if not parts:
        return "?"
    if len(parts) == 1:
        return parts[0][:2].upper()
    return (parts[0][0] + parts[-1][0]).upper()


@dataclass(frozen=True)
class Shortcut:
    """A shortcut the app declares: ``kind`` is ``"message"`` or ``"global"``."""

    callback_id: str
    name: str
    kind: str = "message"
    description: str = ""

    @classmethod
    def parse(cls, item: Any) -> Shortcut | None:
        """From a manifest entry (``{"callback_id", "name", "type", "description"}``),
        an object with those attributes, or a Shortcut; None when it has no callback_id."""
        if isinstance(item, Shortcut):
            return item
        if isinstance(item, dict):
            get = item.get
        else:

            def get(key: str, default: Any = None) -> Any:
                return getattr(item, key, default)

        callback_id = get("callback_id")
        if not isinstance(callback_id, str) or not callback_id:
            return None
        kind = get("type", None) or get("kind", "message")
        return cls(
            callback_id,
            str(get("name", None) or callback_id),
            "global" if kind == "global" else "message",
            str(get("description", "") or ""),
        )


@dataclass
class SidebarItem:
    id: str
    label: str
    kind: str  # channel | private | dm | app
    active: bool = False
    member: bool = True
    color: str = ""
    initials: str = ""


@dataclass
class Sidebar:
    channels: list[SidebarItem] = field(default_factory=list)
    more: list[SidebarItem] = field(default_factory=list)
    dms: list[SidebarItem] = field(default_factory=list)
    apps: list[SidebarItem] = field(default_factory=list)


def _is_rich_text_only(blocks: Any) -> bool:
    return (
        isinstance(blocks, list)
        and bool(blocks)
        and all(isinstance(b, dict) and b.get("type") == "rich_text" for b in blocks)
    )


class Pages:
    """Everything the templates need, computed from the sandbox's state for one viewer."""

    def __init__(self, sb: Sandbox, shortcuts: list[Shortcut]) -> None:
        self.sb = sb
        self.shortcuts = shortcuts
        self.env = Environment(
            loader=PackageLoader("controlroom.sandbox.web", "templates"),
            autoescape=select_autoescape(default=True, default_for_string=True),
            trim_blocks=True,
            lstrip_blocks=True,
        )
        self.env.globals.update(emoji=emoji, picker=PICKER, EMOJI=EMOJI)

    # -- names ---------------------------------------------------------------------
    def user_name(self, ident: str) -> str | None:
        user = self.sb.state.users.get(ident)
        if user is None:
            return None
        return user.real_name if user.is_bot else user.name

    def real_name(self, ident: str) -> str:
        user = self.sb.state.users.get(ident)
        return user.real_name if user else ident

    def channel_name(self, ident: str) -> str | None:
        channel = self.sb.state.channels.get(ident)
        if channel is None or channel.is_im or channel.is_mpim:
            return None
        return channel.name

    def group_name(self, ident: str) -> str | None:
        group = self.sb.state.usergroups.get(ident)
        return str(group["handle"]) if group else None

    def decode(self, text: str) -> str:
        """Stored Slack text -> what the person typed (for the edit box)."""

        def sub(match: re.Match[str]) -> str:
            target, _, label = match.group(1).partition("|")
            if target.startswith("@"):
                return "@" + (self.user_name(target[1:]) or label or target[1:])
            if target.startswith("#"):
                return "#" + (self.channel_name(target[1:]) or label or target[1:])
            if target in ("!here", "!channel", "!everyone"):
                return "@" + target[1:]
            if target.lower().startswith(("http://", "https://", "mailto:")):
                return label or target
            return match.group(0)

        out = re.sub(r"<([^<>\n]+)>", sub, text)
        return out.replace("&lt;", "<").replace("&gt;", ">").replace("&amp;", "&")

    def renderer(self, viewer: User | None = None) -> Renderer:
        """A mrkdwn renderer; channels ``viewer`` cannot see show as ``private-channel``."""

        def channel_name(ident: str) -> str | None:
            channel = self.sb.state.channels.get(ident)
            if channel is not None and viewer is not None and not self.can_read(viewer, channel):
                return "private-channel"
            return self.channel_name(ident)

        return Renderer(self.user_name, channel_name, self.group_name)

    # -- access --------------------------------------------------------------------
    def people(self) -> list[tuple[str, list[User]]]:
        """Seeded people to act as, grouped by workspace name."""
        out: list[tuple[str, list[User]]] = []
        for team in self.sb.state.teams.values():
            users = [
                u
                for u in self.sb.state.users.values()
                if u.team_id == team.id and not u.is_bot and not u.deleted
            ]
            out.append((team.name, users))
        return out

    def default_user(self) -> User:
        team = self.sb.state.primary_team
        for user in self.sb.state.users.values():
            if user.team_id == team.id and not user.is_bot and not user.deleted:
                return user
        raise NotFound("the seed has no people")

    def can_read(self, viewer: User, channel: Channel) -> bool:
        if channel.team_id != viewer.team_id:
            return False
        if viewer.id in channel.members:
            return True
        return not (channel.is_private or channel.is_im or channel.is_mpim)

    def app_dm(self, viewer: User) -> Channel | None:
        team = self.sb.state.team(viewer.team_id)
        for channel in self.sb.state.channels.values():
            if channel.is_im and set(channel.members) == {viewer.id, team.bot_user_id}:
                return channel
        return None

    def conversation_label(self, viewer: User, channel: Channel) -> str:
        if channel.is_im or channel.is_mpim:
            others = [m for m in channel.members if m != viewer.id] or [viewer.id]
            names = []
            for ident in others:
                user = self.sb.state.users.get(ident)
                names.append(user.real_name if user else ident)
            return ", ".join(names)
        return channel.name

    def sidebar(self, viewer: User, active: str | None) -> Sidebar:
        bar = Sidebar()
        team = self.sb.state.team(viewer.team_id)
        for channel in sorted(self.sb.state.channels.values(), key=lambda c: c.name):
            if channel.team_id != viewer.team_id or channel.is_archived:
                continue
            if channel.is_im or channel.is_mpim:
                if viewer.id not in channel.members or team.bot_user_id in channel.members:
                    continue
                label = self.conversation_label(viewer, channel)
                other = next((m for m in channel.members if m != viewer.id), viewer.id)
                bar.dms.append(
                    SidebarItem(
                        channel.id,
                        label,
                        "dm",
                        channel.id == active,
                        color=avatar_color(other),
                        initials=initials(label),
                    )
                )
                continue
            kind = "private" if channel.is_private else "channel"
            item = SidebarItem(channel.id, channel.name, kind, channel.id == active)
            if viewer.id in channel.members:
                bar.channels.append(item)
            elif not channel.is_private:
                item.member = False
                bar.more.append(item)
        if team.installed:
            app_name = self.sb.seed.app.name
            bar.apps.append(
                SidebarItem(
                    "home",
                    app_name,
                    "app",
                    active == "home",
                    color=avatar_color(team.bot_user_id),
                    initials=initials(app_name),
                )
            )
        return bar

    # -- messages ------------------------------------------------------------------
    def _zone(self, viewer: User) -> ZoneInfo | None:
        try:
            return ZoneInfo(viewer.tz)
        except (ZoneInfoNotFoundError, ValueError):
            return None

    def when(self, viewer: User, ts: str) -> tuple[str, str]:
        """(``14:05``, full date-time for the tooltip) in the viewer's time zone."""
        try:
            moment = datetime.fromtimestamp(float(ts), tz=UTC)
        except (ValueError, OverflowError, OSError):
            return ("", "")
        zone = self._zone(viewer)
        if zone is not None:
            moment = moment.astimezone(zone)
        return moment.strftime("%H:%M"), moment.strftime("%A, %d %B %Y %H:%M:%S %Z")

    def author(self, message: JSON) -> tuple[str, str, bool]:
        """(display name, id for the avatar colour, is an app)."""
        if message.get("bot_id"):
            profile = message.get("bot_profile") or {}
            name = message.get("username") or profile.get("name") or self.sb.seed.app.name
            return str(name), str(message.get("user") or message.get("bot_id")), True
        ident = str(message.get("user", ""))
        user = self.sb.state.users.get(ident)
        if user is None:
            return ident or "unknown", ident, False
        return user.real_name, user.id, user.is_bot

    def message(
        self, viewer: User, channel: Channel, raw: JSON, *, ephemeral: bool = False
    ) -> JSON:
        """One message as the templates want it (``ephemeral``: shown to ``viewer`` only)."""
        r = self.renderer(viewer)
        mine = raw.get("user") == viewer.id and not raw.get("bot_id") and not ephemeral
        name, ident, is_app = self.author(raw)
        if ephemeral:  # shown to one person, sent by the app
            bot = self.sb.state.team(channel.team_id).bot_user_id
            name, ident, is_app = self.sb.seed.app.name, bot, True
        short, full = self.when(viewer, str(raw.get("ts", "")))
        blocks = raw.get("blocks")
        show_blocks = isinstance(blocks, list) and bool(blocks) and not _is_rich_text_only(blocks)
        reactions = []
        for reaction in raw.get("reactions", []) or []:
            users = [str(u) for u in reaction.get("users", [])]
            names = [self.user_name(u) or u for u in users]
            reactions.append(
                {
                    "name": reaction.get("name", ""),
                    "char": emoji(str(reaction.get("name", ""))),
                    "count": int(reaction.get("count", len(users))),
                    "mine": viewer.id in users,
                    "who": ", ".join(names),
                }
            )
        reply_users = [
            {"id": u, "initials": initials(self.real_name(u)), "color": avatar_color(u)}
            for u in (raw.get("reply_users") or [])[:5]
        ]
        return {
            "ts": str(raw.get("ts", "")),
            "channel": channel.id,
            "author": name,
            "author_id": ident,
            "is_app": is_app,
            "initials": initials(name),
            "color": avatar_color(ident),
            "time": short,
            "time_full": full,
            "text": r.mrkdwn(str(raw.get("text", "") or "")),
            "raw_text": str(raw.get("text", "") or ""),
            "blocks": blocks if show_blocks else [],
            "edited": bool(raw.get("edited")),
            "reactions": reactions,
            "reply_count": int(raw.get("reply_count", 0) or 0),
            "reply_users": reply_users,
            "thread_ts": raw.get("thread_ts"),
            "is_reply": bool(raw.get("thread_ts")) and raw.get("thread_ts") != raw.get("ts"),
            "broadcast": raw.get("subtype") == "thread_broadcast",
            "mine": mine,
            "edit_text": self.decode(str(raw.get("text", "") or "")) if mine else "",
            "ephemeral": ephemeral,
            "pinned": str(raw.get("ts", "")) in self.sb.state.pins.get(channel.id, []),
            "attachments": raw.get("attachments") or [],
        }

    def day(self, viewer: User, ts: str) -> str:
        """``Today``, ``Yesterday`` or ``Monday, 30 November`` in the viewer's zone."""
        zone = self._zone(viewer) or UTC
        try:
            moment = datetime.fromtimestamp(float(ts), tz=UTC).astimezone(zone)
        except (ValueError, OverflowError, OSError):
            return ""
        today = datetime.fromtimestamp(self.sb.clock(), tz=UTC).astimezone(zone).date()
        delta = (today - moment.date()).days
        if delta == 0:
            return "Today"
        if delta == 1:
            return "Yesterday"
        return moment.strftime("%A, %d %B")

    def group(self, viewer: User, messages: list[JSON]) -> list[JSON]:
        """Mark day changes and Slack's compact follow-ups (same author within 5 min)."""
        previous: JSON | None = None
        for m in messages:
            m["day"] = self.day(viewer, m["ts"])
            m["new_day"] = previous is None or previous["day"] != m["day"]
            m["compact"] = bool(
                previous is not None
                and not m["new_day"]
                and not m["ephemeral"]
                and not previous["ephemeral"]
                and not m["broadcast"]
                and previous["author_id"] == m["author_id"]
                and previous["author"] == m["author"]
                and float(m["ts"]) - float(previous["ts"]) < 300
            )
            previous = m
        return messages

    def history(self, viewer: User, channel: Channel) -> list[JSON]:
        """The channel as ``viewer`` sees it: messages and their own ephemerals, by ts."""
        stored = self.sb.state.messages(channel.id)[-HISTORY_LIMIT:]
        messages = [self.message(viewer, channel, m) for m in stored]
        for eph in self.sb.state.ephemerals(viewer.id):
            if eph.get("channel") == channel.id and not eph.get("thread_ts"):
                messages.append(self.message(viewer, channel, eph, ephemeral=True))
        messages.sort(key=lambda m: float(m["ts"] or 0))
        return self.group(viewer, messages[-HISTORY_LIMIT:])

    def thread(self, viewer: User, channel: Channel, ts: str) -> list[JSON]:
        items = [self.message(viewer, channel, m) for m in self.sb.state.replies(channel.id, ts)]
        for eph in self.sb.state.ephemerals(viewer.id):
            if eph.get("channel") == channel.id and eph.get("thread_ts") == ts:
                items.append(self.message(viewer, channel, eph, ephemeral=True))
        items[1:] = sorted(items[1:], key=lambda m: float(m["ts"] or 0))
        self.group(viewer, items[1:])
        for m in items[:1]:
            m["compact"] = False
        return items

    # -- views ---------------------------------------------------------------------
    def modal(self, viewer: User) -> JSON | None:
        stack = self.sb.act.open_views(viewer)
        return stack[-1] if stack else None

    def home(self, viewer: User) -> JSON | None:
        view_id = self.sb.interactions.home.get(viewer.id)
        return self.sb.state.views.get(view_id) if view_id else None

    # -- rendering -----------------------------------------------------------------
    def render(self, template: str, viewer: User | None = None, **context: Any) -> str:
        r = self.renderer(viewer)
        context.setdefault("sb", self.sb)
        context.setdefault("shortcuts", self.shortcuts)
        return self.env.get_template(template).render(
            mrkdwn=r.mrkdwn, plain=r.plain, text=r.text_object, **context
        )

    def markup(self, template: str, viewer: User | None = None, **context: Any) -> Markup:
        return Markup(self.render(template, viewer, **context))  # noqa: S704 - autoescaped
