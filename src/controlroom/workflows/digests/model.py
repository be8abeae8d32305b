"""The vocabulary of digests: messages read, items found, and the result of one digest.

A message is identified by ``"<channel>:<ts>"`` (see ``message_id``); every digest item
carries the ids of the messages it was taken from, so it can link to them and so an item
whose sources are not in the window can be dropped.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, date, datetime
from typing import Any, Literal, Protocol

from controlroom.errors import ControlRoomError

__all__ = [
    "DEFAULT_NO_DIGEST_MARKER",
    "Coverage",
    "DigestItem",
    "DigestResult",
    "ItemKind",
    "ItemStatus",
    "Message",
    "Summariser",
    "SummariserError",
    "SummariserHTTPError",
    "SummariserOutputError",
    "coverage_of",
    "latest_versions",
    "message_id",
    "split_message_id",
    "window_of",
]

DEFAULT_NO_DIGEST_MARKER = "[no-digest]"

ItemKind = Literal["decision", "action_item", "open_question"]
ItemStatus = Literal["new", "open", "resolved"]
ITEM_KINDS: tuple[ItemKind, ...] = ("decision", "action_item", "open_question")


class SummariserError(ControlRoomError):
    """A summariser could not produce a digest; the caller falls back to the heuristic."""

    def __init__(self, summariser: str, reason: str) -> None:
        self.summariser = summariser
        self.reason = reason
        super().__init__(f"{summariser} summariser failed: {reason}")


class SummariserHTTPError(SummariserError):
    """The model endpoint answered with an error status or could not be reached."""

    def __init__(self, summariser: str, reason: str, status: int | None = None) -> None:
        self.status = status
        super().__init__(summariser, reason)


class SummariserOutputError(SummariserError):
    """The model answered, but its output does not match the item schema."""


def message_id(channel: str, ts: str) -> str:
    """The id of a message within a workspace: ``"C123:1700000000.000100"``."""
    return f"{channel}:{ts}"


def split_message_id(mid: str) -> tuple[str, str]:
    """``"C123:1700000000.000100"`` -> ``("C123", "1700000000.000100")``."""
    channel, sep, ts = mid.partition(":")
    if not sep or not channel or not ts:
        raise ValueError(f"not a message id: {mid!r}")
    return channel, ts


def _ts_float(ts: str) -> float:
    try:
        return float(ts)
    except ValueError:
        return 0.0


@dataclass(frozen=True, slots=True)
class Message:
    """One Slack message as the digest sees it (the latest version of its text).

    ``reactions`` are reaction names without colons (``"white_check_mark"``, ``"+1"``).
    ``edited_ts`` is set when the text was edited; when two versions of the same message
    are given, the one with the later ``edited_ts`` wins.
    """

    channel: str
    ts: str
    user: str | None
    text: str
    thread_ts: str | None = None
    edited_ts: str | None = None
    reactions: tuple[str, ...] = ()
    bot_id: str | None = None
    subtype: str | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.reactions, tuple):
            object.__setattr__(self, "reactions", tuple(self.reactions))

    @property
    def id(self) -> str:
        return message_id(self.channel, self.ts)

    @property
    def edited(self) -> bool:
        return self.edited_ts is not None

    @property
    def root_ts(self) -> str:
        """The ts of the thread this message belongs to (its own ts for a top-level one)."""
        return self.thread_ts or self.ts

    @property
    def is_reply(self) -> bool:
        return self.thread_ts is not None and self.thread_ts != self.ts

    @property
    def is_bot(self) -> bool:
        return self.bot_id is not None or self.subtype == "bot_message"

    @property
    def time(self) -> datetime:
        return datetime.fromtimestamp(_ts_float(self.ts), tz=UTC)

    @property
    def sort_key(self) -> float:
        return _ts_float(self.ts)

    @classmethod
    def from_slack(cls, channel: str, data: Mapping[str, Any]) -> Message:
        """Build from a ``conversations.history``/``replies`` item or a ``message`` event.

        For a ``message_changed`` event pass ``event["message"]``. Reactions come as
        ``[{"name": "+1", "count": 2, "users": [...]}]``; ``edited`` as ``{"user", "ts"}``.
        """
        edited = data.get("edited")
        edited_ts = str(edited.get("ts")) if isinstance(edited, Mapping) else None
        raw_reactions = data.get("reactions") or []
        reactions = tuple(
            str(r["name"]) for r in raw_reactions if isinstance(r, Mapping) and r.get("name")
        )
        thread_ts = data.get("thread_ts")
        user = data.get("user")
        return cls(
            channel=str(data.get("channel") or channel),
            ts=str(data["ts"]),
            user=str(user) if user else None,
            text=str(data.get("text") or ""),
            thread_ts=str(thread_ts) if thread_ts else None,
            edited_ts=edited_ts,
            reactions=reactions,
            bot_id=str(data["bot_id"]) if data.get("bot_id") else None,
            subtype=str(data["subtype"]) if data.get("subtype") else None,
        )


@dataclass(frozen=True, slots=True)
class DigestItem:
    """A decision, action item or open question, with the messages it came from."""

    kind: ItemKind
    text: str
    source_ids: tuple[str, ...]
    owner: str | None = None
    due: date | None = None
    status: ItemStatus = "new"

    def __post_init__(self) -> None:
        if not isinstance(self.source_ids, tuple):
            object.__setattr__(self, "source_ids", tuple(self.source_ids))
        if not self.source_ids:
            raise ValueError("a digest item needs at least one source message id")

    @property
    def key(self) -> str:
        """Stable identity across digests: the kind and the first source message."""
        return f"{self.kind}:{self.source_ids[0]}"

    @property
    def channel(self) -> str:
        return split_message_id(self.source_ids[0])[0]

    def with_status(self, status: ItemStatus) -> DigestItem:
        return replace(self, status=status)

    def to_json(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "text": self.text,
            "source_ids": list(self.source_ids),
            "owner": self.owner,
            "due": self.due.isoformat() if self.due else None,
            "status": self.status,
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> DigestItem:
        kind = data["kind"]
        status = data.get("status", "new")
        if kind not in ITEM_KINDS:
            raise ValueError(f"unknown item kind {kind!r}")
        if status not in ("new", "open", "resolved"):
            raise ValueError(f"unknown item status {status!r}")
        due = data.get("due")
        return cls(
            kind=kind,
            text=str(data["text"]),
            source_ids=tuple(str(s) for s in data["source_ids"]),
            owner=data.get("owner") or None,
            due=date.fromisoformat(due) if due else None,
            status=status,
        )


@dataclass(frozen=True, slots=True)
class Coverage:
    """What a digest read: shown on its coverage line.

    ``complete`` is False when the history could not be read in full; the digest then
    says so instead of passing for a full one.
    """

    messages_read: int = 0
    threads_read: int = 0
    start: datetime | None = None
    end: datetime | None = None
    channels: tuple[str, ...] = ()
    complete: bool = True


@dataclass(frozen=True, slots=True)
class DigestResult:
    items: tuple[DigestItem, ...]
    coverage: Coverage
    summariser: str
    notes: tuple[str, ...] = ()
    dropped_ungrounded: int = 0

    def of_kind(self, kind: ItemKind) -> list[DigestItem]:
        return [i for i in self.items if i.kind == kind]

    def with_note(self, note: str) -> DigestResult:
        return replace(self, notes=(*self.notes, note))


def coverage_of(messages: Sequence[Message], *, complete: bool = True) -> Coverage:
    """Count messages and threads (roots that have at least one reply) in a window."""
    if not messages:
        return Coverage(complete=complete)
    threads = {(m.channel, m.thread_ts) for m in messages if m.is_reply}
    times = [m.sort_key for m in messages]
    channels = tuple(sorted({m.channel for m in messages}))
    return Coverage(
        messages_read=len(messages),
        threads_read=len(threads),
        start=datetime.fromtimestamp(min(times), tz=UTC),
        end=datetime.fromtimestamp(max(times), tz=UTC),
        channels=channels,
        complete=complete,
    )


def latest_versions(messages: Sequence[Message]) -> list[Message]:
    """One message per id, the latest edit winning; deleted ones removed; sorted by ts."""
    best: dict[str, Message] = {}
    for m in messages:
        if m.subtype in ("message_deleted", "tombstone"):
            best.pop(m.id, None)
            continue
        prev = best.get(m.id)
        if prev is None or _ts_float(m.edited_ts or "0") >= _ts_float(prev.edited_ts or "0"):
            best[m.id] = m
    return sorted(best.values(), key=lambda m: (m.sort_key, m.channel))


def window_of(
    messages: Sequence[Message], *, no_digest_marker: str | None = DEFAULT_NO_DIGEST_MARKER
) -> list[Message]:
    """The messages a digest may read: latest versions, deletions removed, and any
    message containing the opt-out marker (case-insensitive) left out entirely."""
    window = latest_versions(messages)
    if no_digest_marker:
        marker = no_digest_marker.lower()
        window = [m for m in window if marker not in m.text.lower()]
    return window


class Summariser(Protocol):
    """Anything that turns a window of messages into a digest."""

    @property
    def name(self) -> str: ...

    async def summarise(self, messages: Sequence[Message]) -> DigestResult: ...
