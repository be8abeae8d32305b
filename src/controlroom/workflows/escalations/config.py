"""``[workflows.escalations]``: validated once when the hub starts, frozen, passed in.

```toml
[workflows.escalations]
reactions = ["rotating_light"]          # reaction names that open a room
channels = ["support", "C0VIPCUST1"]    # where they count: channel names or ids
room_name = "incident-{customer}-{yyyy}-{seq:03}"
tier2_lead = "S0T2ONCALL"               # a user id, or a user group (its members)
archive_after = 3600                    # seconds between Resolve and archiving the room
crm_retry_interval = 60                 # seconds between CRM retries while it is down
crm_retry_limit = 30                    # then the briefing keeps saying "CRM unavailable"
sweep_after = 600                       # resume opening flows stalled this long (0: never)

[workflows.escalations.crm]             # see crm/factory.py (file, salesforce, hubspot)
kind = "file"

[workflows.escalations.resolve]         # see resolve.py (ResolveRules)
internal_domains = ["northwind.example"]
```

Every problem is a ``ConfigError`` naming the key (``workflows.escalations.tier2_lead``).
"""

from __future__ import annotations

import re
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from controlroom.errors import ConfigError
from controlroom.workflows.escalations.crm.factory import build_crm
from controlroom.workflows.escalations.naming import DEFAULT_TEMPLATE, validate_template
from controlroom.workflows.escalations.resolve import ResolveRules

__all__ = ["EscalationsConfig"]

_REACTION = re.compile(r"^[a-z0-9_+'\-]{1,100}(::skin-tone-[2-6])?$")
_CHANNEL_ID = re.compile(r"^[CG][A-Z0-9]{2,}$")
_CHANNEL_NAME = re.compile(r"^[a-z0-9_\-]{1,80}$")
_LEAD = re.compile(r"^([UW]|S)[A-Z0-9]{2,}$")


class EscalationsConfig(BaseModel):
    """The escalations workflow's settings (``ctx.config``)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    reactions: tuple[str, ...] = ("rotating_light",)
    channels: tuple[str, ...] = ("support",)
    room_name: str = DEFAULT_TEMPLATE
    tier2_lead: str = ""
    crm: dict[str, Any] = Field(default_factory=dict)
    resolve: ResolveRules = ResolveRules()
    archive_after: float = Field(default=3600.0, ge=0, le=90 * 86400)
    crm_retry_interval: float = Field(default=60.0, gt=0, le=86400)
    crm_retry_limit: int = Field(default=30, ge=0, le=1000)
    #: seconds an opening flow may stall (its job dead) before the sweeper resumes it;
    #: flows older than a day are left for an operator
    sweep_after: float = Field(default=600.0, ge=0, le=86400)
    currency: str = Field(default="$", max_length=4)

    @field_validator("reactions", mode="before")
    @classmethod
    def _reactions(cls, v: Any) -> Any:
        if isinstance(v, str):
            v = [v]
        if isinstance(v, list | tuple):
            v = [r.strip().strip(":") if isinstance(r, str) else r for r in v]
        return v

    @field_validator("reactions")
    @classmethod
    def _check_reactions(cls, v: tuple[str, ...]) -> tuple[str, ...]:
        if not v:
            raise ValueError("list at least one reaction")
        bad = [r for r in v if not _REACTION.fullmatch(r)]
        if bad:
            raise ValueError(f"{bad} are not reaction names (e.g. rotating_light)")
        return v

    @field_validator("channels", mode="before")
    @classmethod
    def _channels(cls, v: Any) -> Any:
        if isinstance(v, str):
            v = [v]
        if isinstance(v, list | tuple):
            v = [c.strip().lstrip("#") if isinstance(c, str) else c for c in v]
        return v

    @field_validator("channels")
    @classmethod
    def _check_channels(cls, v: tuple[str, ...]) -> tuple[str, ...]:
        if not v:
            raise ValueError("list at least one channel (a name like support, or an id)")
        bad = [c for c in v if not (_CHANNEL_ID.fullmatch(c) or _CHANNEL_NAME.fullmatch(c))]
        if bad:
            raise ValueError(f"{bad} are neither channel names nor channel ids")
        return v

    @field_validator("room_name")
    @classmethod
    def _template(cls, v: str) -> str:
        try:
            validate_template(v)
        except ConfigError as exc:
            raise ValueError("; ".join(reason for _, _, reason in exc.problems)) from None
        return v

    @field_validator("tier2_lead")
    @classmethod
    def _lead(cls, v: str) -> str:
        v = v.strip()
        if v and not _LEAD.fullmatch(v):
            raise ValueError(f"{v!r}: give a user id (U...) or a user group id (S...)")
        return v

    @model_validator(mode="after")
    def _crm(self) -> EscalationsConfig:
        # Validates the shape (a ConfigError naming workflows.escalations.crm.<key>);
        # the connector is built for real, with the secret policy, when the hub starts.
        build_crm(self.crm, allow_plain=True)
        return self

    def allows_channel(self, channel_id: str, channel_name: str | None) -> bool:
        return channel_id in self.channels or (
            channel_name is not None and channel_name in self.channels
        )

    @property
    def lead_is_group(self) -> bool:
        return self.tier2_lead.startswith("S")
