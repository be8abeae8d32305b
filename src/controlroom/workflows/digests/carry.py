"""Carry forward: open items stay open across digests until a later message resolves them.

Given the items still open after the previous digest and the messages of the new window,
decide for each whether it is now resolved (its question answered in the thread, a
"done"/"fixed" reply, a ✅ / white_check_mark / heavy_check_mark reaction on a source
message) or still open; then add the new window's items, labelled new. Decisions are
news once and are not carried.

The window may include the current version of the old source messages (their reactions
change after they were first read): pass them in ``messages`` too.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from controlroom.workflows.digests.heuristic import replies_answer, reply_closes
from controlroom.workflows.digests.model import (
    DigestItem,
    ItemStatus,
    Message,
    latest_versions,
    split_message_id,
)
from controlroom.workflows.digests.text import DONE_REACTIONS

__all__ = ["CarryForward", "carry_forward", "is_resolved"]

CARRIED_KINDS = ("action_item", "open_question")


@dataclass(frozen=True, slots=True)
class CarryForward:
    """The items a digest shows, each with its status, and the same split by status."""

    items: tuple[DigestItem, ...]

    @property
    def new(self) -> list[DigestItem]:
        return [i for i in self.items if i.status == "new"]

    @property
    def still_open(self) -> list[DigestItem]:
        return [i for i in self.items if i.status == "open"]

    @property
    def resolved(self) -> list[DigestItem]:
        return [i for i in self.items if i.status == "resolved"]

    def open_items(self) -> list[DigestItem]:
        """What the next digest carries: unresolved action items and questions."""
        return [
            i.with_status("open")
            for i in self.items
            if i.status != "resolved" and i.kind in CARRIED_KINDS
        ]


class _Index:
    def __init__(self, messages: Iterable[Message]) -> None:
        self.by_id: dict[str, Message] = {}
        self.replies: dict[tuple[str, str], list[Message]] = defaultdict(list)
        for m in messages:
            self.by_id[m.id] = m
            if m.is_reply and m.thread_ts is not None:
                self.replies[(m.channel, m.thread_ts)].append(m)

    def thread_replies(self, source_id: str, after: float) -> list[Message]:
        channel, ts = split_message_id(source_id)
        roots = {ts}
        src = self.by_id.get(source_id)
        if src is not None and src.thread_ts:
            roots.add(src.thread_ts)
        out: list[Message] = []
        for root in roots:
            out.extend(r for r in self.replies.get((channel, root), []) if r.sort_key > after)
        return out


def _ts(source_id: str) -> float:
    try:
        return float(split_message_id(source_id)[1])
    except ValueError:
        return 0.0


def is_resolved(item: DigestItem, messages: Sequence[Message]) -> bool:
    """Whether ``messages`` resolve ``item`` (see the module docstring)."""
    return _resolved(item, _Index(latest_versions(messages)))


def _resolved(item: DigestItem, index: _Index) -> bool:
    for sid in item.source_ids:
        src = index.by_id.get(sid)
        if src is not None and any(r in DONE_REACTIONS for r in src.reactions):
            return True
    last = max(_ts(s) for s in item.source_ids)
    replies: list[Message] = []
    for sid in item.source_ids:
        replies.extend(index.thread_replies(sid, after=last))
    if not replies:
        return False
    if item.kind == "open_question":
        asker = item.owner
        src = index.by_id.get(item.source_ids[0])
        if src is not None:
            asker = src.user
        return replies_answer(asker, replies)
    return any(reply_closes(r) for r in replies)


def carry_forward(
    previous: Sequence[DigestItem],
    new_items: Sequence[DigestItem],
    messages: Sequence[Message],
) -> CarryForward:
    """Statuses for a digest: previous open items are ``resolved`` or ``open``; the new
    window's items are ``new`` (or ``resolved`` when resolved within the window).

    An item found again in the new window (same kind and first source) keeps its
    carried status rather than showing as new twice.
    """
    index = _Index(latest_versions(messages))
    out: list[DigestItem] = []
    seen: set[str] = set()
    for item in previous:
        if item.kind not in CARRIED_KINDS or item.status == "resolved" or item.key in seen:
            continue
        seen.add(item.key)
        out.append(item.with_status("resolved" if _resolved(item, index) else "open"))
    for item in new_items:
        if item.key in seen:
            continue
        seen.add(item.key)
        status: ItemStatus = "resolved" if item.status == "resolved" else "new"
        if status == "new" and item.kind in CARRIED_KINDS and _resolved(item, index):
            status = "resolved"
        out.append(item.with_status(status))
    return CarryForward(items=tuple(out))
