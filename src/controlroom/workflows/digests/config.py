"""``[workflows.digests]``: which channels are read, where and when digests are posted.

```toml
[workflows.digests]
workspace_url = ""            # archive links without API calls; "" = chat.getPermalink

[[workflows.digests.digests]]
name = "aurora"
channels = ["proj-aurora", "C0AURORA01"]   # names or ids
target = "leadership-digest"               # the default (private)
cron = "0 9 * * 1-5"
timezone = "Europe/Paris"
# window_hours = 24     # default: since the last digest (the first one: since the
#                       # previous cron tick)
retention_days = 14
no_digest_marker = "[no-digest]"
redact = true           # emails and phone numbers removed before an LLM sees them
[workflows.digests.digests.summariser]
kind = "heuristic"      # or openai / anthropic (see settings.SummariserSettings)
```
"""

from __future__ import annotations

import re
from datetime import datetime, timedelta
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from croniter import croniter
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from controlroom.workflows.digests.model import DEFAULT_NO_DIGEST_MARKER
from controlroom.workflows.digests.settings import SummariserSettings

__all__ = [
    "DEFAULT_TARGET",
    "DigestSettings",
    "DigestsConfig",
    "channel_ref",
    "due_periods",
    "previous_tick",
]

DEFAULT_TARGET = "leadership-digest"
_CHANNEL_LINK = re.compile(r"^<#([CG][A-Z0-9]+)(?:\|[^>]*)?>$")
_CHANNEL_NAME = re.compile(r"^[a-z0-9][a-z0-9._\-]{0,79}$")
_CHANNEL_ID = re.compile(r"^[CG][A-Z0-9]{6,}$")


def channel_ref(raw: str) -> str:
    """``"#proj-aurora"``, ``"<#C0AURORA01|proj-aurora>"``, ``"C0AURORA01"`` -> the
    channel name or id; ``ValueError`` for anything else."""
    text = raw.strip()
    link = _CHANNEL_LINK.match(text)
    if link:
        return link.group(1)
    text = text.removeprefix("#")
    if _CHANNEL_ID.match(text):
        return text
    if _CHANNEL_NAME.match(text):
        return text
    raise ValueError(f"not a channel name or id: {raw[:100]!r}")


def is_channel_id(ref: str) -> bool:
    return bool(_CHANNEL_ID.match(ref))


class DigestSettings(BaseModel):
    """One digest: what it reads, where and when it posts, how it summarises."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str = Field(pattern=r"^[a-z0-9][a-z0-9_\-]{0,62}$")
    channels: tuple[str, ...] = Field(min_length=1, max_length=100)
    target: str = DEFAULT_TARGET
    cron: str = "0 9 * * 1-5"
    timezone: str = "UTC"
    window_hours: float | None = Field(default=None, gt=0, le=24 * 90)
    summariser: SummariserSettings = SummariserSettings()
    retention_days: float = Field(default=14.0, gt=0, le=3650)
    no_digest_marker: str = Field(default=DEFAULT_NO_DIGEST_MARKER, min_length=1, max_length=100)
    redact: bool = False
    title: str = Field(default="", max_length=100)
    mention_owners: bool = True
    #: blocks per Slack message (Slack allows 50); the digest is split beyond it
    max_blocks: int = Field(default=50, ge=5, le=50)
    #: how late (minutes after its cron tick) a digest is still posted, e.g. after a restart
    catch_up_minutes: float = Field(default=60.0, ge=1, le=7 * 24 * 60)

    @field_validator("channels")
    @classmethod
    def _channels(cls, v: tuple[str, ...]) -> tuple[str, ...]:
        return tuple(dict.fromkeys(channel_ref(c) for c in v))

    @field_validator("target")
    @classmethod
    def _target(cls, v: str) -> str:
        return channel_ref(v)

    @field_validator("cron")
    @classmethod
    def _cron(cls, v: str) -> str:
        if len(v.split()) != 5 or not croniter.is_valid(v):
            raise ValueError(f"invalid cron expression {v!r} (five fields)")
        return v

    @field_validator("timezone")
    @classmethod
    def _timezone(cls, v: str) -> str:
        try:
            ZoneInfo(v)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError(f"unknown time zone {v!r}") from None
        return v

    @property
    def tz(self) -> ZoneInfo:
        return ZoneInfo(self.timezone)

    @property
    def retention_seconds(self) -> float:
        return self.retention_days * 86400.0

    def summariser_settings(self) -> SummariserSettings:
        """The summariser settings with this digest's marker and redaction applied."""
        s = self.summariser
        return s.model_copy(
            update={"redact": s.redact or self.redact, "no_digest_marker": self.no_digest_marker}
        )

    def excludes(self, text: str) -> bool:
        """Whether a message with this text must never be stored or read."""
        return self.no_digest_marker.lower() in text.lower()


class DigestsConfig(BaseModel):
    """``[workflows.digests]``."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    digests: tuple[DigestSettings, ...] = ()
    #: e.g. "https://acme.slack.com": build archive links locally instead of calling
    #: chat.getPermalink for each source message
    workspace_url: str = ""
    #: on start, read the history of opted-in channels that have no stored message
    backfill_on_start: bool = True
    #: read each channel's history for the window before a digest (catches missed events)
    reconcile: bool = True
    history_retries: int = Field(default=2, ge=0, le=10)
    history_retry_delay: float = Field(default=1.0, ge=0, le=60)
    max_history_pages: int = Field(default=200, ge=1, le=100_000)
    history_page_size: int = Field(default=200, ge=1, le=1000)
    #: seconds of clock difference tolerated with Slack: a stored message missing from
    #: a complete history read is forgotten only when older than the read by this much
    clock_skew: float = Field(default=60.0, ge=0, le=3600)
    #: daily purge of messages past their retention (cron, UTC)
    purge_cron: str = "17 3 * * *"

    @field_validator("workspace_url")
    @classmethod
    def _url(cls, v: str) -> str:
        if v and not v.startswith(("https://", "http://")):
            raise ValueError("workspace_url must be an http(s) URL")
        return v.rstrip("/")

    @model_validator(mode="after")
    def _unique_names(self) -> DigestsConfig:
        names = [d.name for d in self.digests]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ValueError(f"digest names must be unique: {', '.join(dupes)}")
        return self

    def digest(self, name: str) -> DigestSettings | None:
        return next((d for d in self.digests if d.name == name), None)


def previous_tick(cron: str, tick: datetime) -> datetime:
    """The cron tick before ``tick`` (in ``tick``'s time zone)."""
    prev: datetime = croniter(cron, tick).get_prev(datetime)
    return prev


def latest_tick(cron: str, now: datetime) -> datetime:
    """The latest cron tick at or before ``now`` (aware, in ``now``'s time zone)."""
    tick: datetime = croniter(cron, now + timedelta(microseconds=1)).get_prev(datetime)
    return tick


def due_periods(config: DigestsConfig, now: datetime) -> list[tuple[DigestSettings, datetime]]:
    """The digests whose latest cron tick (in their own time zone) is at most
    ``catch_up_minutes`` before ``now``, each with that tick (its period)."""
    out: list[tuple[DigestSettings, datetime]] = []
    for d in config.digests:
        tick = latest_tick(d.cron, now.astimezone(d.tz))
        if now - tick <= timedelta(minutes=d.catch_up_minutes):
            out.append((d, tick))
    return out
