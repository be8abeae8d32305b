"""The seed: a YAML description of the sandbox's workspaces, people and app.

Validated with pydantic so a bad seed fails with the path of the offending key.
"""

from __future__ import annotations

import re
from importlib import resources
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

_CHANNEL_NAME = re.compile(r"^[a-z0-9_-]{1,80}$")
_SCOPE = re.compile(r"^[a-z_.]+(:[a-z_.]+)*$")


class SeedError(ValueError):
    """The seed file is missing, not YAML, or does not follow the schema."""


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class SeedEnterprise(_Model):
    id: str = Field(pattern=r"^E[A-Z0-9]{2,20}$")
    name: str


class SeedUser(_Model):
    id: str = Field(pattern=r"^[UW][A-Z0-9]{2,20}$")
    name: str = Field(pattern=r"^[a-z0-9._-]{1,80}$")
    real_name: str
    email: str = Field(pattern=r"^[^@\s]+@[^@\s]+\.[^@\s]+$")
    title: str = ""
    is_admin: bool = False
    is_owner: bool = False
    tz: str = "Europe/London"
    deleted: bool = False


class SeedUsergroup(_Model):
    id: str = Field(pattern=r"^S[A-Z0-9]{2,20}$")
    handle: str = Field(pattern=r"^[a-z0-9._-]{1,80}$")
    name: str
    description: str = ""
    users: list[str] = []


class SeedReply(_Model):
    user: str
    text: str = Field(min_length=1, max_length=40000)
    reactions: dict[str, list[str]] = {}


class SeedMessage(_Model):
    """A message already in the channel when the sandbox starts (no events are sent)."""

    user: str
    text: str = Field(min_length=1, max_length=40000)
    minutes_ago: float = Field(default=60.0, ge=0)
    reactions: dict[str, list[str]] = {}
    replies: list[SeedReply] = []


class SeedChannel(_Model):
    id: str = Field(pattern=r"^[CG][A-Z0-9]{2,20}$")
    name: str
    is_private: bool = False
    topic: str = ""
    purpose: str = ""
    creator: str | None = None
    members: list[str] = []
    bot_member: bool = True
    history: list[SeedMessage] = []

    @field_validator("name")
    @classmethod
    def _valid_name(cls, value: str) -> str:
        if not _CHANNEL_NAME.match(value):
            raise ValueError("channel names are lowercase letters, digits, - and _ (<=80)")
        return value


class SeedDM(_Model):
    id: str = Field(pattern=r"^D[A-Z0-9]{2,20}$")
    members: list[str] = Field(min_length=2, max_length=8)


class SeedBot(_Model):
    user_id: str = Field(pattern=r"^[UW][A-Z0-9]{2,20}$")
    bot_id: str = Field(pattern=r"^B[A-Z0-9]{2,20}$")
    name: str = "controlroom"
    token: str | None = Field(default=None, pattern=r"^xoxb-[A-Za-z0-9-]+$")


class SeedTeam(_Model):
    id: str = Field(pattern=r"^T[A-Z0-9]{2,20}$")
    name: str
    domain: str = Field(pattern=r"^[a-z0-9-]{1,60}$")
    enterprise: SeedEnterprise | None = None
    installed: bool = True
    bot: SeedBot
    users: list[SeedUser] = Field(min_length=1)
    usergroups: list[SeedUsergroup] = []
    channels: list[SeedChannel] = []
    dms: list[SeedDM] = []

    @model_validator(mode="after")
    def _references_resolve(self) -> SeedTeam:
        names = {u.name for u in self.users} | {u.id for u in self.users}
        ids = [u.id for u in self.users] + [self.bot.user_id]
        if len(set(ids)) != len(ids):
            raise ValueError(f"team {self.id}: duplicate user ids")
        if len({u.name for u in self.users}) != len(self.users):
            raise ValueError(f"team {self.id}: duplicate user names")
        if len({c.name for c in self.channels}) != len(self.channels):
            raise ValueError(f"team {self.id}: duplicate channel names")
        for group in self.usergroups:
            for ref in group.users:
                if ref not in names:
                    raise ValueError(f"usergroup {group.handle}: unknown user {ref!r}")
        for channel in self.channels:
            for ref in [*channel.members, *([channel.creator] if channel.creator else [])]:
                if ref not in names:
                    raise ValueError(f"channel {channel.name}: unknown user {ref!r}")
            for message in channel.history:
                items: list[SeedMessage | SeedReply] = [message, *message.replies]
                for item in items:
                    refs = [item.user, *(u for us in item.reactions.values() for u in us)]
                    for ref in refs:
                        if ref not in names:
                            raise ValueError(f"channel {channel.name}: unknown user {ref!r}")
        for dm in self.dms:
            for ref in dm.members:
                if ref not in names and ref != "bot":
                    raise ValueError(f"dm {dm.id}: unknown user {ref!r}")
        return self


class SeedApp(_Model):
    app_id: str = Field(pattern=r"^A[A-Z0-9]{2,20}$")
    name: str
    client_id: str = Field(pattern=r"^[0-9]+\.[0-9]+$")
    client_secret: str | None = None
    verification_token: str = "verification_token_sandbox"  # noqa: S105 - public sandbox value
    bot_scopes: list[str] = Field(min_length=1)
    user_scopes: list[str] = []
    redirect_urls: list[str] = []
    events: list[str] = []
    commands: list[str] = []
    token_rotation: bool = False

    @field_validator("bot_scopes", "user_scopes")
    @classmethod
    def _scopes_look_like_scopes(cls, value: list[str]) -> list[str]:
        for scope in value:
            if not _SCOPE.match(scope):
                raise ValueError(f"not an OAuth scope: {scope!r}")
        return value


class Seed(_Model):
    app: SeedApp
    teams: list[SeedTeam] = Field(min_length=1)

    @model_validator(mode="after")
    def _unique_ids(self) -> Seed:
        seen: set[str] = set()
        for team in self.teams:
            for ident in [team.id, *(c.id for c in team.channels), *(d.id for d in team.dms)]:
                if ident in seen:
                    raise ValueError(f"duplicate id {ident!r} across the seed")
                seen.add(ident)
        return self


def _format_errors(exc: ValidationError) -> str:
    lines = []
    for err in exc.errors():
        where = ".".join(str(p) for p in err["loc"]) or "<root>"
        lines.append(f"  {where}: {err['msg']}")
    return "\n".join(lines)


def parse_seed(data: Any, source: str = "<seed>") -> Seed:
    """Validate an already-loaded YAML document."""
    if not isinstance(data, dict):
        raise SeedError(f"{source}: the seed must be a mapping with 'app' and 'teams'")
    try:
        return Seed.model_validate(data)
    except ValidationError as exc:
        raise SeedError(f"{source}: invalid seed\n{_format_errors(exc)}") from None


BUNDLED = ("default", "demo")


def load_seed(path: str | Path | None = None) -> Seed:
    """Load a seed file, or a packaged seed: ``None``/``"default"`` (an empty-history
    workspace, what tests build on) or ``"demo"`` (the same people with channel history)."""
    if path is None or (isinstance(path, str) and path in BUNDLED):
        name = f"{path or 'default'}.yaml"
        text = resources.files("controlroom.sandbox").joinpath(f"seeds/{name}").read_text()
        source = name
    else:
        try:
            text = Path(path).read_text(encoding="utf-8")
        except OSError as exc:
            raise SeedError(f"{path}: cannot read seed ({exc.strerror})") from None
        source = str(path)
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise SeedError(f"{source}: not valid YAML ({exc})") from None
    return parse_seed(data, source)
