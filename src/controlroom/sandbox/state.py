"""The sandbox's in-memory world: teams, users, conversations, messages, views, tokens.

Plain data and synchronous operations only; nothing here does I/O or emits events
(callers in ``webapi``/``actor`` do that), so a web client can read and drive it directly.
"""

from __future__ import annotations

import copy
import random
import string
from dataclasses import dataclass, field
from typing import Any, Literal

from .config import Clock
from .seed import Seed, SeedMessage

JSON = dict[str, Any]
TokenKind = Literal["bot", "user", "app"]

_ID_ALPHABET = string.ascii_uppercase + string.digits


class NotFound(LookupError):
    """A user, channel, message or view reference that does not resolve."""


@dataclass
class Team:
    id: str
    name: str
    domain: str
    enterprise_id: str | None
    enterprise_name: str | None
    installed: bool
    bot_user_id: str
    bot_id: str
    bot_name: str
    scopes: tuple[str, ...] = ()

    def to_api(self) -> JSON:
        data: JSON = {
            "id": self.id,
            "name": self.name,
            "domain": self.domain,
            "email_domain": f"{self.domain}.example",
            "icon": {"image_default": True},
        }
        if self.enterprise_id:
            data["enterprise_id"] = self.enterprise_id
            data["enterprise_name"] = self.enterprise_name
        return data


@dataclass
class User:
    id: str
    team_id: str
    name: str
    real_name: str
    email: str
    title: str = ""
    is_admin: bool = False
    is_owner: bool = False
    tz: str = "Europe/London"
    deleted: bool = False
    is_bot: bool = False
    bot_id: str | None = None

    def to_api(self) -> JSON:
        profile: JSON = {
            "title": self.title,
            "real_name": self.real_name,
            "real_name_normalized": self.real_name,
            "display_name": self.name,
            "display_name_normalized": self.name,
            "first_name": self.real_name.split(" ")[0],
            "last_name": " ".join(self.real_name.split(" ")[1:]),
            "team": self.team_id,
            "status_text": "",
            "status_emoji": "",
            "image_48": f"https://avatars.sandbox.invalid/{self.id}_48.png",
        }
        if not self.is_bot:
            profile["email"] = self.email
        if self.bot_id:
            profile["bot_id"] = self.bot_id
        return {
            "id": self.id,
            "team_id": self.team_id,
            "name": self.name,
            "deleted": self.deleted,
            "real_name": self.real_name,
            "tz": self.tz,
            "tz_label": self.tz,
            "tz_offset": 0,
            "profile": profile,
            "is_admin": self.is_admin,
            "is_owner": self.is_owner,
            "is_primary_owner": self.is_owner,
            "is_restricted": False,
            "is_ultra_restricted": False,
            "is_bot": self.is_bot,
            "is_app_user": False,
            "updated": 1700000000,
        }


@dataclass
class Channel:
    id: str
    team_id: str
    name: str
    created: int
    creator: str
    is_private: bool = False
    is_im: bool = False
    is_mpim: bool = False
    is_archived: bool = False
    topic: str = ""
    purpose: str = ""
    members: list[str] = field(default_factory=list)

    @property
    def channel_type(self) -> str:
        """The ``channel_type`` of message events."""
        if self.is_im:
            return "im"
        if self.is_mpim:
            return "mpim"
        return "group" if self.is_private else "channel"

    def to_api(self, viewer: str | None = None) -> JSON:
        if self.is_im:
            other = next((m for m in self.members if m != viewer), self.members[0])
            return {
                "id": self.id,
                "created": self.created,
                "is_im": True,
                "is_org_shared": False,
                "user": other,
                "is_user_deleted": False,
                "priority": 0,
            }
        return {
            "id": self.id,
            "name": self.name,
            "is_channel": not self.is_private and not self.is_mpim,
            "is_group": self.is_private and not self.is_mpim,
            "is_im": False,
            "is_mpim": self.is_mpim,
            "is_private": self.is_private,
            "created": self.created,
            "is_archived": self.is_archived,
            "is_general": self.name == "general",
            "unlinked": 0,
            "name_normalized": self.name,
            "is_shared": False,
            "is_org_shared": False,
            "is_ext_shared": False,
            "is_pending_ext_shared": False,
            "context_team_id": self.team_id,
            "creator": self.creator,
            "is_member": viewer in self.members if viewer else False,
            "topic": {"value": self.topic, "creator": self.creator, "last_set": 0},
            "purpose": {"value": self.purpose, "creator": self.creator, "last_set": 0},
            "num_members": len(self.members),
        }


@dataclass
class Token:
    value: str
    kind: TokenKind
    team_id: str
    user_id: str
    scopes: tuple[str, ...]
    created: float
    expires_at: float | None = None
    revoked: bool = False
    refresh_token: str | None = None
    exchanged: bool = False


@dataclass(frozen=True)
class ApiCall:
    """One Web API request as the sandbox saw it (token values are never recorded)."""

    method: str
    params: JSON
    token_kind: str | None
    team_id: str | None
    http_status: int
    error: str | None
    time: float


class IdFactory:
    """Slack-shaped ids from a seeded RNG, so a run is reproducible."""

    def __init__(self, seed: int) -> None:
        self._rng = random.Random(seed)
        self._issued: set[str] = set()

    def new(self, prefix: str, length: int = 10) -> str:
        while True:
            ident = prefix + "".join(self._rng.choice(_ID_ALPHABET) for _ in range(length))
            if ident not in self._issued:
                self._issued.add(ident)
                return ident

    def hex(self, length: int = 32) -> str:
        return "".join(self._rng.choice("0123456789abcdef") for _ in range(length))


class State:
    """All mutable sandbox data. Lookups accept ids, names, ``@name``/``#name`` or emails."""

    def __init__(self, seed: Seed, clock: Clock, ids: IdFactory) -> None:
        self.clock = clock
        self.ids = ids
        self.teams: dict[str, Team] = {}
        self.users: dict[str, User] = {}
        self.channels: dict[str, Channel] = {}
        self.usergroups: dict[str, JSON] = {}
        self.tokens: dict[str, Token] = {}
        self.views: dict[str, JSON] = {}
        self.calls: list[ApiCall] = []
        self.pins: dict[str, list[str]] = {}
        self._messages: dict[str, dict[str, JSON]] = {}
        self._ephemerals: dict[str, list[JSON]] = {}
        self._last_ts = 0.0
        self._load(seed)

    # -- loading -------------------------------------------------------------------
    def _load(self, seed: Seed) -> None:
        now = int(self.clock())
        for t in seed.teams:
            team = Team(
                id=t.id,
                name=t.name,
                domain=t.domain,
                enterprise_id=t.enterprise.id if t.enterprise else None,
                enterprise_name=t.enterprise.name if t.enterprise else None,
                installed=t.installed,
                bot_user_id=t.bot.user_id,
                bot_id=t.bot.bot_id,
                bot_name=t.bot.name,
                scopes=tuple(seed.app.bot_scopes) if t.installed else (),
            )
            self.teams[team.id] = team
            for u in t.users:
                self.users[u.id] = User(
                    id=u.id,
                    team_id=t.id,
                    name=u.name,
                    real_name=u.real_name,
                    email=u.email,
                    title=u.title,
                    is_admin=u.is_admin,
                    is_owner=u.is_owner,
                    tz=u.tz,
                    deleted=u.deleted,
                )
            self.users[t.bot.user_id] = User(
                id=t.bot.user_id,
                team_id=t.id,
                name=t.bot.name,
                real_name=seed.app.name,
                email="",
                is_bot=True,
                bot_id=t.bot.bot_id,
            )
            for g in t.usergroups:
                self.usergroups[g.id] = {
                    "id": g.id,
                    "team_id": t.id,
                    "handle": g.handle,
                    "name": g.name,
                    "description": g.description,
                    "is_usergroup": True,
                    "is_external": False,
                    "date_create": now,
                    "date_update": now,
                    "date_delete": 0,
                    "auto_type": None,
                    "is_subteam": True,
                    "auto_provision": False,
                    "enterprise_subteam_id": "",
                    "created_by": t.users[0].id,
                    "updated_by": t.users[0].id,
                    "deleted_by": None,
                    "prefs": {"channels": [], "groups": []},
                    "users": [self.user(ref, t.id).id for ref in g.users],
                }
            for c in t.channels:
                members = [self.user(ref, t.id).id for ref in c.members]
                if c.bot_member and t.installed:
                    members.append(t.bot.user_id)
                creator = self.user(c.creator, t.id).id if c.creator else t.users[0].id
                self.channels[c.id] = Channel(
                    id=c.id,
                    team_id=t.id,
                    name=c.name,
                    created=now - 86400 * 90,
                    creator=creator,
                    is_private=c.is_private,
                    topic=c.topic,
                    purpose=c.purpose,
                    members=members,
                )
            for c in t.channels:
                self._load_history(t.id, c.id, c.history, now)
            for d in t.dms:
                ids = [
                    t.bot.user_id if ref == "bot" else self.user(ref, t.id).id for ref in d.members
                ]
                self.channels[d.id] = Channel(
                    id=d.id,
                    team_id=t.id,
                    name=d.id,
                    created=now - 86400 * 30,
                    creator=ids[0],
                    is_private=True,
                    is_im=len(ids) == 2,
                    is_mpim=len(ids) > 2,
                    members=ids,
                )

    def _load_history(
        self, team_id: str, channel_id: str, history: list[SeedMessage], now: float
    ) -> None:
        from .events import rich_text_blocks

        def make(user_ref: str, text: str, ts: float, reactions: dict[str, list[str]]) -> JSON:
            user = self.user(user_ref, team_id)
            message: JSON = {
                "client_msg_id": f"seed-{self.ids.hex(12)}",
                "type": "message",
                "text": text,
                "user": user.id,
                "ts": f"{ts:.6f}",
                "team": team_id,
                "blocks": rich_text_blocks(text, self.ids.new("", 4).lower()),
            }
            self._last_ts = max(self._last_ts, round(ts, 6))
            if reactions:
                message["reactions"] = [
                    {
                        "name": name,
                        "users": [self.user(u, team_id).id for u in users],
                        "count": len(users),
                    }
                    for name, users in reactions.items()
                ]
            return message

        for seq, item in enumerate(sorted(history, key=lambda m: -m.minutes_ago)):
            base = now - item.minutes_ago * 60 + seq * 1e-6
            root = make(item.user, item.text, base, item.reactions)
            self.add_message(channel_id, root)
            for n, reply in enumerate(item.replies, start=1):
                message = make(reply.user, reply.text, base + n * 30, reply.reactions)
                message["thread_ts"] = root["ts"]
                self.add_message(channel_id, message)

    # -- lookups -------------------------------------------------------------------
    @property
    def primary_team(self) -> Team:
        return next(iter(self.teams.values()))

    def team(self, team_id: str | None = None) -> Team:
        if team_id is None:
            return self.primary_team
        try:
            return self.teams[team_id]
        except KeyError:
            raise NotFound(f"no team {team_id!r}") from None

    def user(self, ref: str, team_id: str | None = None) -> User:
        key = ref.removeprefix("@")
        if key in self.users:
            return self.users[key]
        for u in self.users.values():
            if team_id and u.team_id != team_id:
                continue
            if key in (u.name, u.email) or (u.email and key.lower() == u.email.lower()):
                return u
        raise NotFound(f"no user {ref!r}")

    def channel(self, ref: str, team_id: str | None = None) -> Channel:
        key = ref.removeprefix("#")
        if key in self.channels:
            return self.channels[key]
        named = [c for c in self.channels.values() if c.name == key and not c.is_im]
        if team_id is not None:
            named = [c for c in named if c.team_id == team_id]
        # without a team, the primary workspace wins a name clash
        named.sort(key=lambda c: c.team_id != self.primary_team.id)
        if named:
            return named[0]
        raise NotFound(f"no channel {ref!r}")

    def dm(self, user_a: str, user_b: str) -> Channel:
        """The IM between two users, created on first use."""
        for c in self.channels.values():
            if c.is_im and set(c.members) == {user_a, user_b}:
                return c
        team_id = self.users[user_a].team_id
        channel = Channel(
            id=self.ids.new("D"),
            team_id=team_id,
            name="",
            created=int(self.clock()),
            creator=user_a,
            is_private=True,
            is_im=True,
            members=[user_a, user_b],
        )
        channel.name = channel.id
        self.channels[channel.id] = channel
        return channel

    def conversations_for(self, user: str) -> list[Channel]:
        """Conversations a user is a member of (channels first, then DMs), by name."""
        member = self.user(user)
        found = [c for c in self.channels.values() if member.id in c.members]
        return sorted(found, key=lambda c: (c.is_im or c.is_mpim, c.name))

    # -- messages ------------------------------------------------------------------
    def next_ts(self) -> str:
        now = self.clock()
        ts = max(now, self._last_ts + 0.000001)
        self._last_ts = round(ts, 6)
        return f"{self._last_ts:.6f}"

    def _store(self, channel_id: str) -> dict[str, JSON]:
        return self._messages.setdefault(channel_id, {})

    def get_message(self, channel_id: str, ts: str) -> JSON:
        try:
            return self._store(channel_id)[ts]
        except KeyError:
            raise NotFound(f"no message {ts} in {channel_id}") from None

    def add_message(self, channel_id: str, message: JSON) -> JSON:
        """Store a message (its ``ts`` already set); keep thread counters right."""
        store = self._store(channel_id)
        store[message["ts"]] = message
        thread_ts = message.get("thread_ts")
        if thread_ts and thread_ts != message["ts"]:
            root = store.get(thread_ts)
            if root is None:
                raise NotFound(f"no thread parent {thread_ts}")
            root["thread_ts"] = thread_ts
            root["reply_count"] = int(root.get("reply_count", 0)) + 1
            users = list(root.get("reply_users", []))
            author = message.get("user") or message.get("bot_id", "")
            if author and author not in users:
                users.append(author)
            root["reply_users"] = users
            root["reply_users_count"] = len(users)
            root["latest_reply"] = message["ts"]
            root.setdefault("is_locked", False)
            root.setdefault("subscribed", False)
            message["parent_user_id"] = root.get("user", "")
        return message

    def remove_message(self, channel_id: str, ts: str) -> JSON:
        store = self._store(channel_id)
        message = store.pop(ts, None)
        if message is None:
            raise NotFound(f"no message {ts} in {channel_id}")
        thread_ts = message.get("thread_ts")
        if thread_ts and thread_ts != ts and thread_ts in store:
            root = store[thread_ts]
            root["reply_count"] = max(0, int(root.get("reply_count", 1)) - 1)
        return message

    def messages(self, channel: str) -> list[JSON]:
        """Channel history, oldest first: top-level messages and thread broadcasts."""
        return [copy.deepcopy(m) for m in self.top_level(self.channel(channel).id)]

    def top_level(self, channel_id: str) -> list[JSON]:
        """Like :meth:`messages` but the stored dicts themselves (do not mutate)."""
        found = [
            m
            for m in self._store(channel_id).values()
            if not m.get("thread_ts")
            or m["thread_ts"] == m["ts"]
            or m.get("subtype") == "thread_broadcast"
        ]
        found.sort(key=lambda m: float(m["ts"]))
        return found

    def replies(self, channel: str, ts: str) -> list[JSON]:
        """A thread, parent first; just the message when it has no replies."""
        chan = self.channel(channel)
        root = self.get_message(chan.id, ts)
        thread = [
            m for m in self._store(chan.id).values() if m.get("thread_ts") == ts and m["ts"] != ts
        ]
        thread.sort(key=lambda m: float(m["ts"]))
        return [copy.deepcopy(root), *(copy.deepcopy(m) for m in thread)]

    # -- ephemerals ----------------------------------------------------------------
    def add_ephemeral(self, user_id: str, message: JSON) -> None:
        self._ephemerals.setdefault(user_id, []).append(message)

    def remove_ephemeral(self, user_id: str, ts: str) -> None:
        messages = self._ephemerals.get(user_id, [])
        self._ephemerals[user_id] = [m for m in messages if m["ts"] != ts]

    def ephemerals(self, user: str) -> list[JSON]:
        """Ephemeral messages shown to one user, oldest first."""
        return copy.deepcopy(self._ephemerals.get(self.user(user).id, []))

    # -- tokens --------------------------------------------------------------------
    def issue_token(
        self,
        kind: TokenKind,
        team_id: str,
        user_id: str,
        scopes: tuple[str, ...],
        *,
        value: str | None = None,
        expires_in: float | None = None,
    ) -> Token:
        if value is None:
            prefix = {"bot": "xoxb", "user": "xoxp", "app": "xapp"}[kind]
            num = "".join(c for c in team_id if c.isdigit()) or "1"
            value = f"{prefix}-{num}-{self.ids.hex(12)}-{self.ids.hex(24)}"
            if expires_in is not None:
                value = f"xoxe.{value}"
        now = self.clock()
        token = Token(
            value=value,
            kind=kind,
            team_id=team_id,
            user_id=user_id,
            scopes=scopes,
            created=now,
            expires_at=None if expires_in is None else now + expires_in,
        )
        self.tokens[value] = token
        return token

    def active_tokens(self, team_id: str, user_id: str, kind: TokenKind) -> list[Token]:
        return [
            t
            for t in self.tokens.values()
            if t.team_id == team_id and t.user_id == user_id and t.kind == kind and not t.revoked
        ]
