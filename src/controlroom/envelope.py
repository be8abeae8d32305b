"""The unit of inbound work: one verified request, committed before it is answered."""

from __future__ import annotations

import itertools
import json
import time
import uuid
from dataclasses import dataclass, field, fields
from typing import Any, Literal

__all__ = ["Envelope", "EnvelopeKind"]

EnvelopeKind = Literal[
    "event",  # Events API event_callback
    "block_actions",
    "view_submission",
    "view_closed",
    "shortcut",  # global shortcut
    "message_action",  # message shortcut
    "command",  # slash command
    "options",  # block_suggestion / options load
    "webhook",  # CI / CRM / generic
    "schedule",  # a periodic tick
]


_PROCESS = uuid.uuid4().hex[:11]
_COUNTER = itertools.count()


def new_id() -> str:
    """A sortable unique id: milliseconds since the epoch, a random per-process prefix
    and a counter (32 hex digits; no system call per id)."""
    return f"{int(time.time() * 1000):013x}{_PROCESS}{next(_COUNTER) & 0xFFFFFFFF:08x}"


@dataclass(frozen=True, slots=True)
class Envelope:
    """One piece of inbound work.

    ``dedupe_key`` is what makes a retry a duplicate: Slack's ``event_id``, a provider's
    delivery id, or the envelope id itself where the source gives none.
    ``source`` is ``slack`` or ``hook:<name>`` or ``schedule``; ``transport`` says how it
    arrived (``http`` or ``socket``).
    """

    kind: EnvelopeKind
    source: str
    body: dict[str, Any]
    dedupe_key: str
    team_id: str = ""
    enterprise_id: str = ""
    transport: str = "http"
    provider_event: str = ""
    id: str = field(default_factory=new_id)
    received_at: float = field(default_factory=time.time)
    retry_num: int = 0
    #: The body exactly as received, when it was a JSON object: stored as is instead of
    #: serialising ``body`` again (it parses to the same object). Not part of equality.
    body_json: str | None = field(default=None, repr=False, compare=False)

    def to_json(self) -> str:
        if self.body_json is None:
            return json.dumps({name: getattr(self, name) for name in _FIELDS}, separators=_COMPACT)
        text = _json_string
        return (
            f'{{"kind":{text(self.kind)},"source":{text(self.source)},'
            f'"dedupe_key":{text(self.dedupe_key)},"team_id":{text(self.team_id)},'
            f'"enterprise_id":{text(self.enterprise_id)},"transport":{text(self.transport)},'
            f'"provider_event":{text(self.provider_event)},"id":{text(self.id)},'
            f'"received_at":{float(self.received_at)!r},"retry_num":{int(self.retry_num)},'
            f'"body":{self.body_json}}}'
        )

    @classmethod
    def from_json(cls, data: str | bytes) -> Envelope:
        return cls(**json.loads(data))


_FIELDS = tuple(f.name for f in fields(Envelope) if f.name != "body_json")
_COMPACT = (",", ":")
_json_string = json.encoder.encode_basestring_ascii
