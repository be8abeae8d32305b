"""The default summariser: offline, deterministic, rule based.

It reads a window of messages (several channels at once is fine) and finds

- decisions: "we decided", "let's go with", "going with", "agreed", "approved",
  "decision:", "X it is", "let's do it", "locking it in", "that's the plan", a proposal
  (parent or reply) that at least two other people +1 / ✅ with nobody objecting, or
  someone closing their own question with "ok, … then";
- action items: "<@U…> will …", "I'll …", "I will …", "will …", "I need to …", "TODO",
  "action item"/"AI:", "can/could/would you …", "mind doing …", "please …", and an
  "I can …" offer once someone else says yes; a request is merged with its acceptance in the
  thread ("yep", "on it", "I'll …" by the person asked), which gives it its owner; due
  dates ("by Friday", "by EOD", "tomorrow", "next week", "by 2026-12-03") are resolved
  against the message time in the workspace time zone;
- open questions: a message that asks (a question mark, "does anyone know", "should
  we") and has no answer in its thread from another person, no direct answer right after
  it in the channel, and was not resolved later (a ✅ reaction, "never mind").

Threads are read with their parent; an edited message counts with its latest text;
bot messages, system messages, greetings and emoji-only or links-only messages are noise.
Every item carries the ids of its source messages.
"""

from __future__ import annotations

import asyncio
import re
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, tzinfo

from controlroom.workflows.digests.model import (
    DEFAULT_NO_DIGEST_MARKER,
    DigestItem,
    DigestResult,
    ItemKind,
    ItemStatus,
    Message,
    coverage_of,
    window_of,
)
from controlroom.workflows.digests.text import (
    DONE_REACTIONS,
    ContentKind,
    clean_text,
    content_kind,
    is_agreement,
    is_disagreement,
    is_done_signal,
    mentions,
    resolve_due,
    sentences,
)

__all__ = ["HeuristicSummariser", "summarise_heuristic"]

MAX_ITEM_TEXT = 300
# Windows larger than this are summarised in a worker thread.
_INLINE_LIMIT = 1000
# A question answered by the next top-level message within this many seconds.
_ADJACENT_ANSWER_WINDOW = 3600.0
# Explicit decisions in the same thread this close together are one decision restated.
_RESTATEMENT_WINDOW = 1800.0

_URL = re.compile(r"\b(?:https?|mailto):\S+", re.IGNORECASE)
_DECISION = re.compile(
    r"\bwe(?:'ve| have)?\s+(?:now\s+)?decided\b|\bdecided\s+(?:to|that|on|against)\b|"
    r"\bdecision\s*[:\-\u2014]|\blet'?s\s+go\s+with\b|\bgoing\s+with\b|"
    r"\bwe(?:'ll|\s+will)\s+go\s+with\b|\bagreed\b|\bapproved\b|\bsettled\s+on\b|"
    r"\bsticking\s+with\b|\bgo\s+ahead\s+(?:with|and)\b|\bgreen[- ]light(?:ed)?\b|"
    r"\bconsensus\s+is\b|\blet'?s\s+do\s+(?:it|that|this)\b|\block(?:ing|ed)\s+(?:it\s+)?in\b|"
    r"\bfinal\s+(?:call|decision|answer)\b|\bthat'?s\s+the\s+plan\b|\bit'?s\s+decided\b|"
    r"(?<![\w'])(?!(?:what|that|this|how|so|as|there|here|whatever|which)\b)\w+\s+it\s+is\s*[.!]?$",
    re.IGNORECASE,
)
_DECISION_NEGATED = re.compile(
    r"\b(?:not|n't|never|no|nothing|yet to|haven't|hasn't)\s+(?:\w+\s+){0,2}"
    r"(?:decided|agreed|approved)\b|\bundecided\b|\bif\s+(?:we|you|they)\s+(?:agree|decide)",
    re.IGNORECASE,
)
_PROPOSAL = re.compile(
    r"\bproposal\b|\bpropos(?:e|ing)\b|\brfc\b|\bplan\s*:|\bobjections\s*\?|\bthoughts\s*\?|"
    r"\bshould\s+we\b|\bhow\s+about\b|\bwhat\s+if\s+we\b|\bi\s+suggest\b|\bsuggest\s+we\b|"
    r"\bwe\s+should\b",
    re.IGNORECASE,
)
_CLOSE_OWN_QUESTION = re.compile(
    r"^(?:ok|okay|alright|fine|right)\b.*\bthen\s*[.!]*$|^(?:ok|okay|alright|right)[, ]+then\b|"
    r"^(?:ok|okay|alright)[, ]+so\b",
    re.I,
)
_OFFER = re.compile(
    r"(?<![\w'])i\s+(?:can|could)\s+(?!see\b|confirm\s+that\b|tell\b|imagine\b|think\b|"
    r"understand\b|live\s+with\b|not\b|never\b|only\b|also\s+see\b)\w+",
    re.IGNORECASE,
)
_ACCEPT_OFFER = re.compile(
    r"^(?:yes|yep|yeah|sure|ok|okay)?[,! ]*(?:please(?:\s+do)?|go\s+for\s+it|do\s+it|"
    r"that'?s\s+(?:fine|great|perfect)|that\s+would\s+be\s+great|sounds\s+good|love\s+it)\b|"
    r"\bplease\s+do\b|\byes\s+please\b",
    re.IGNORECASE,
)
_SELF_COMMIT = re.compile(
    r"^will\s+(?!do\b|you\b|we\b|it\b|this\b|that\b|there\b|they\b|he\b|she\b)\w+|"
    r"(?<![\w'])i\s+(?:need|have|must|got)\s+to\s+(?!know\b|understand\b|see\b|think\b|ask\b|"
    r"say\b|admit\b|go\b|leave\b|run\b)\w+|"
    r"(?<![\w'])i(?:'ll|\u2019ll|\s+will|\s+am\s+going\s+to|'m\s+going\s+to|\s+shall)\s+"
    r"(?!not\b|be\s+(?:out|off|away|on\s+(?:holiday|leave|pto|vacation))\b|"
    r"need\b|have\s+to\s+check\b)",
    re.IGNORECASE,
)
_OWNER_WILL = re.compile(
    r"<@([UW][A-Z0-9]+)(?:\|[^>]*)?>\s*(?:will|to|is\s+going\s+to|'ll|is\s+on|can\s+take|"
    r"owns|takes)\b",
    re.IGNORECASE,
)
_REQUEST = re.compile(
    r"\b(?:can|could|would|will)\s+you\b|\b(?:would\s+you\s+|do\s+you\s+)?mind\s+\w+ing\b|(?:^|[,;:>]\s*|\b(?:and|then)\s+)please\s+"
    r"(?!do\b|let\s+me\s+know\b|see\b|note\b|ignore\b|don't\b)\w+",
    re.IGNORECASE,
)
_TODO = re.compile(r"\bTODO\b|\baction\s+item\b|^\s*(?:AI|action)\s*[:\-]", re.IGNORECASE)
_ASK_ANYONE = re.compile(
    r"\b(?:does|do|did|has|have)?\s*(?:any\s*one|someone|somebody|anybody)\s+know\b|"
    r"\bcan\s+(?:someone|anyone|somebody|anybody)\b|\bany\s+idea\b|^\s*should\s+we\b|"
    r"\bwondering\s+(?:if|whether|why|how|what|when)\b",
    re.IGNORECASE,
)
_ACCEPT = re.compile(
    r"^(?:yes|yep|yeah|yup|sure|ok|okay|will\s+do|on\s+it|done|can\s+do|sounds\s+good|"
    r"absolutely|no\s+problem|np|of\s+course|happy\s+to|\+1|:\+1:|:thumbsup:|"
    r":white_check_mark:|:heavy_check_mark:|\U0001f44d|\u2705|will\s+have)(?![\w'])",
    re.IGNORECASE,
)
_NON_ANSWER = re.compile(
    r"\b(?:don'?t\s+know|do\s+not\s+know|no\s+idea|not\s+sure|idk|dunno|no\s+clue|"
    r"same\s+question|following|bump)\b|^\s*(?:\+1|same|me\s+too)\s*[.!]*$",
    re.IGNORECASE,
)
_DIRECT_ANSWER_START = re.compile(r"^(?:yes|yep|yeah|no|nope|nah)\b", re.IGNORECASE)
_RESOLVED_BY_ASKER = re.compile(
    r"\b(?:never\s*mind|nvm|figured\s+it\s+out|found\s+it|sorted\s+it|got\s+it)\b", re.I
)
_QUESTION_START = re.compile(
    r"^(?:does|do|did|is|are|was|were|can|could|should|would|will|who|what|when|where|why|"
    r"how|which|has|have|any)\b",
    re.IGNORECASE,
)


@dataclass(slots=True)
class _M:
    """A message with what the rules need precomputed."""

    msg: Message
    kind: ContentKind
    text: str
    sents: list[str]
    mentioned: list[str]

    @property
    def user(self) -> str:
        return self.msg.user or ""


@dataclass(slots=True)
class _Draft:
    kind: ItemKind
    primary: _M
    sources: list[str]
    owner: str | None = None
    due: date | None = None
    accepted: bool = False
    requester: str | None = None
    resolved: bool = False
    extra_text: list[str] = field(default_factory=list)

    def item(self) -> DigestItem:
        text = " \u2192 ".join([*self.extra_text, clean_text(self.primary.msg.text)])
        if len(text) > MAX_ITEM_TEXT:
            text = text[: MAX_ITEM_TEXT - 1].rstrip() + "\u2026"
        status: ItemStatus = "resolved" if self.resolved else "new"
        return DigestItem(
            kind=self.kind,
            text=text,
            source_ids=tuple(dict.fromkeys(self.sources)),
            owner=self.owner,
            due=self.due,
            status=status,
        )


def _prepare(msg: Message) -> _M:
    kind = content_kind(msg.text, is_bot=msg.is_bot, subtype=msg.subtype)
    # URLs are replaced for analysis: their dots and question marks are not sentences.
    text = _URL.sub("(link)", clean_text(msg.text))
    return _M(msg=msg, kind=kind, text=text, sents=sentences(text), mentioned=mentions(msg.text))


def _is_question_sentence(s: str) -> bool:
    words = re.findall(r"[\w'@<>]+", s)
    if s.rstrip().endswith("?"):
        return len(words) >= 3
    return bool(_ASK_ANYONE.search(s))


def _decision_sentence(m: _M) -> bool:
    for s in m.sents:
        if s.rstrip().endswith("?"):
            continue
        if _DECISION.search(s) and not _DECISION_NEGATED.search(s):
            return True
    return False


def _request_sentences(m: _M) -> list[str]:
    return [s for s in m.sents if _REQUEST.search(s) or _TODO.search(s)]


def _due(m: _M, parts: Sequence[str], tz: tzinfo) -> date | None:
    """The due date in the sentences that state the action, else anywhere in the message."""
    return resolve_due(" ".join(parts), m.msg.time, tz) or resolve_due(m.text, m.msg.time, tz)


class _Thread:
    __slots__ = ("messages", "root")

    def __init__(self) -> None:
        self.root: _M | None = None
        self.messages: list[_M] = []


def summarise_heuristic(
    messages: Sequence[Message],
    *,
    tz: tzinfo = UTC,
    complete: bool = True,
    no_digest_marker: str | None = DEFAULT_NO_DIGEST_MARKER,
) -> DigestResult:
    """Run the heuristic over a window; see the module docstring for the rules.

    A message containing ``no_digest_marker`` is not read at all."""
    window = window_of(messages, no_digest_marker=no_digest_marker)
    prepared = [_prepare(m) for m in window]
    by_channel: dict[str, list[_M]] = defaultdict(list)
    for pm in prepared:
        by_channel[pm.msg.channel].append(pm)
    drafts: list[_Draft] = []
    for channel in sorted(by_channel):
        drafts.extend(_channel_items(by_channel[channel], tz))
    order = {"decision": 0, "action_item": 1, "open_question": 2}
    drafts.sort(key=lambda d: (order[d.kind], d.primary.msg.channel, d.primary.msg.sort_key))
    return DigestResult(
        items=tuple(d.item() for d in drafts),
        coverage=coverage_of(window, complete=complete),
        summariser="heuristic",
    )


def _channel_items(msgs: list[_M], tz: tzinfo) -> list[_Draft]:
    threads: dict[str, _Thread] = defaultdict(_Thread)
    top_level: list[_M] = []
    for m in msgs:
        th = threads[m.msg.root_ts]
        if m.msg.is_reply:
            th.messages.append(m)
        else:
            th.root = m
            th.messages.insert(0, m)
            top_level.append(m)
    out: list[_Draft] = []
    for root_ts in sorted(threads, key=float):
        th = threads[root_ts]
        out.extend(_thread_decisions(th))
        out.extend(_thread_actions(th, tz))
    out.extend(_open_questions(threads, top_level))
    return out


# --- decisions -------------------------------------------------------------------------


def _thread_decisions(th: _Thread) -> list[_Draft]:
    out: list[_Draft] = []
    for m in th.messages:
        if m.kind != "text":
            continue
        explicit = _decision_sentence(m)
        context: list[str] = []
        if not explicit and m.msg.is_reply and any(_CLOSE_OWN_QUESTION.match(s) for s in m.sents):
            question = _asked_earlier(th, m)
            if question is not None:
                explicit = True
                context = [question]
        if not explicit:
            continue
        last = out[-1] if out else None
        if last is not None and m.msg.sort_key - last.primary.msg.sort_key <= _RESTATEMENT_WINDOW:
            last.sources.append(m.msg.id)
            last.primary = m
            continue
        out.append(_Draft(kind="decision", primary=m, sources=[m.msg.id], extra_text=context))
    if out:
        return out
    # Consensus on a proposal (the parent or a reply): at least two other people agree
    # after it (replies, or reactions on it) and nobody objects.
    for idx, prop in enumerate(th.messages):
        if prop.kind != "text" or not _PROPOSAL.search(prop.text):
            continue
        consensus = _consensus(prop, th.messages[idx + 1 :])
        if consensus is not None:
            out.append(
                _Draft(
                    kind="decision",
                    primary=prop,
                    sources=[prop.msg.id, *(a.msg.id for a in consensus)],
                )
            )
            break
    return out


def _consensus(prop: _M, after: list[_M]) -> list[_M] | None:
    agreeing: list[_M] = []
    agree_users: set[str] = set()
    for m in after:
        if m.user == prop.user or m.msg.is_bot:
            continue
        if is_disagreement(m.text):
            return None
        if is_agreement(m.text) or (m.kind == "emoji" and is_agreement(m.msg.text)):
            agreeing.append(m)
            agree_users.add(m.user)
    reaction_votes = sum(
        1 for r in prop.msg.reactions if r in ("+1", "thumbsup", "white_check_mark")
    )
    return agreeing if len(agree_users) + reaction_votes >= 2 else None


def _asked_earlier(th: _Thread, m: _M) -> str | None:
    """The last question the author of ``m`` asked earlier in the thread, if any."""
    found: str | None = None
    for x in th.messages:
        if x.msg.sort_key >= m.msg.sort_key:
            break
        if x.user == m.user:
            asked = [s for s in x.sents if _is_question_sentence(s)]
            if asked:
                found = asked[-1]
    return found


# --- action items ----------------------------------------------------------------------


def _thread_actions(th: _Thread, tz: tzinfo) -> list[_Draft]:
    out: list[_Draft] = []
    pending: list[_Draft] = []  # requests in this thread not yet accepted
    offers: list[_Draft] = []  # "I can …" offers, items once someone else accepts them
    out_offers: list[_Draft] = []
    for m in th.messages:
        if m.kind in ("bot", "system", "empty", "link", "greeting"):
            continue
        if m.kind == "emoji":
            if m.msg.is_reply and _accept(pending, m, tz) is None:
                _accept_offer(offers, m, tz)
            continue
        own = [s for s in m.sents if _SELF_COMMIT.search(s) and not s.rstrip().endswith("?")]
        owned = _OWNER_WILL.findall(m.msg.text)
        requests = _request_sentences(m)
        done = is_done_signal(m.text)
        if m.msg.is_reply and (own or _ACCEPT.match(m.text) or done):
            target = _accept(pending, m, tz)
            if target is not None:
                if done and target.owner == m.user:
                    target.resolved = True
                continue
            closed = False
            if done and not own:
                for d in out:
                    if d.owner == m.user and d.primary.msg.sort_key < m.msg.sort_key:
                        d.resolved = True
                        d.sources.append(m.msg.id)
                        closed = True
            if closed:
                continue
        if m.msg.is_reply and _accept_offer(offers, m, tz):
            continue
        if owned:
            parts = [s for s in m.sents if _OWNER_WILL.search(s)] or m.sents
            out.append(
                _Draft(
                    kind="action_item",
                    primary=m,
                    sources=[m.msg.id],
                    owner=owned[0],
                    due=_due(m, parts, tz),
                    accepted=True,
                )
            )
        elif requests and not _ASK_ANYONE.search(" ".join(requests)):
            owner = m.mentioned[0] if m.mentioned else None
            if owner is None and any(re.match(r"^\s*(?:AI|action)\b", s, re.I) for s in requests):
                owner = m.user or None
            d = _Draft(
                kind="action_item",
                primary=m,
                sources=[m.msg.id],
                owner=owner,
                due=_due(m, requests, tz),
                # A TODO may be taken by its author; a "can you" is not accepted by the asker.
                requester=m.user if any(_REQUEST.search(s) for s in requests) else None,
            )
            out.append(d)
            pending.append(d)
        elif own:
            out.append(
                _Draft(
                    kind="action_item",
                    primary=m,
                    sources=[m.msg.id],
                    owner=m.user or None,
                    due=_due(m, own, tz),
                    accepted=True,
                )
            )
        else:
            offered = [s for s in m.sents if _OFFER.search(s) and not s.rstrip().endswith("?")]
            if offered:
                d = _Draft(
                    kind="action_item",
                    primary=m,
                    sources=[m.msg.id],
                    owner=m.user or None,
                    due=_due(m, offered, tz),
                    requester=m.user,
                )
                offers.append(d)
                out_offers.append(d)
    out.extend(d for d in out_offers if d.accepted)
    out.sort(key=lambda d: d.primary.msg.sort_key)
    for d in out:
        if any(r in DONE_REACTIONS for r in d.primary.msg.reactions):
            d.resolved = True
    return out


def _accept_offer(offers: list[_Draft], m: _M, tz: tzinfo) -> bool:
    """Someone else says yes to an "I can …" offer: it becomes an action item."""
    if not (is_agreement(m.msg.text) or _ACCEPT_OFFER.search(m.text)):
        return False
    for d in reversed(offers):
        if d.owner == m.user or d.primary.msg.sort_key >= m.msg.sort_key:
            continue
        d.sources.append(m.msg.id)
        due = _due(m, m.sents, tz)
        if due is not None and d.due is None:
            d.due = due
        d.accepted = True
        offers.remove(d)
        return True
    return False


def _accept(pending: list[_Draft], m: _M, tz: tzinfo) -> _Draft | None:
    """Attach an acceptance reply to the latest open request it answers."""
    for d in reversed(pending):
        if d.requester == m.user:
            continue
        if d.owner is not None and d.owner != m.user:
            continue
        if d.primary.msg.sort_key >= m.msg.sort_key:
            continue
        d.owner = m.user or d.owner
        d.sources.append(m.msg.id)
        due = _due(m, m.sents, tz)
        if due is not None:
            d.due = due
        d.accepted = True
        pending.remove(d)
        return d
    return None


# --- open questions --------------------------------------------------------------------


def _open_questions(threads: dict[str, _Thread], top_level: list[_M]) -> list[_Draft]:
    out: list[_Draft] = []
    # The next top-level message that could be an answer, for each top-level message.
    next_top: dict[str, _M | None] = {}
    nxt: _M | None = None
    for m in reversed(top_level):
        next_top[m.msg.id] = nxt
        if m.kind in ("text", "link") and not m.msg.is_bot:
            nxt = m
    for th in threads.values():
        for idx, m in enumerate(th.messages):
            if m.kind != "text" or not any(_is_question_sentence(s) for s in m.sents):
                continue
            if _decision_sentence(m) or _OWNER_WILL.search(m.msg.text):
                continue
            reqs = _request_sentences(m)
            if reqs and not _ASK_ANYONE.search(" ".join(reqs)):
                continue  # a request to someone: an action item, not a question
            if any(r in DONE_REACTIONS for r in m.msg.reactions):
                continue
            after = [x for x in th.messages[idx + 1 :] if x.msg.sort_key > m.msg.sort_key]
            if _answered_in_thread(m, after):
                continue
            if not m.msg.is_reply and _answered_next(m, next_top.get(m.msg.id)):
                continue
            out.append(
                _Draft(kind="open_question", primary=m, sources=[m.msg.id], owner=m.user or None)
            )
    return out


def _answered_in_thread(q: _M, later: list[_M]) -> bool:
    for r in later:
        if r.msg.is_bot:
            continue
        if r.user == q.user:
            if _RESOLVED_BY_ASKER.search(r.text):
                return True
            continue
        if r.kind in ("text", "link") and not _NON_ANSWER.search(r.text):
            return True
        if r.kind == "emoji" and is_done_signal(r.msg.text):
            return True
    return False


def _answered_next(q: _M, nxt: _M | None) -> bool:
    if nxt is None or nxt.user == q.user:
        return False
    if nxt.msg.sort_key - q.msg.sort_key > _ADJACENT_ANSWER_WINDOW:
        return False
    if nxt.kind == "link":
        return True
    if q.user and q.user in nxt.mentioned:
        return True
    return bool(_DIRECT_ANSWER_START.match(nxt.text)) and not _QUESTION_START.match(nxt.text)


class HeuristicSummariser:
    """The ``heuristic`` summariser behind the common interface."""

    name = "heuristic"

    def __init__(
        self, tz: tzinfo = UTC, *, no_digest_marker: str | None = DEFAULT_NO_DIGEST_MARKER
    ) -> None:
        self.tz = tz
        self.no_digest_marker = no_digest_marker

    def summarise_sync(self, messages: Sequence[Message], *, complete: bool = True) -> DigestResult:
        return summarise_heuristic(
            messages, tz=self.tz, complete=complete, no_digest_marker=self.no_digest_marker
        )

    async def summarise(self, messages: Sequence[Message]) -> DigestResult:
        if len(messages) <= _INLINE_LIMIT:
            return self.summarise_sync(messages)
        # About 60 µs a message: keep the event loop free for long windows.
        return await asyncio.to_thread(self.summarise_sync, list(messages))


def replies_answer(asker: str | None, replies: Sequence[Message]) -> bool:
    """Whether any of ``replies`` answers a question asked by ``asker`` (the rules used for
    open questions: another person's non-empty answer, or the asker's "never mind")."""
    prepared = [_prepare(r) for r in sorted(replies, key=lambda r: r.sort_key)]
    q = _M(
        msg=Message(channel="", ts="0", user=asker, text=""),
        kind="text",
        text="",
        sents=[],
        mentioned=[],
    )
    return _answered_in_thread(q, prepared)


def reply_closes(reply: Message) -> bool:
    """Whether a reply says the work is finished ("done", "fixed", "it's live", ✅)."""
    pm = _prepare(reply)
    if pm.kind in ("bot", "system", "empty"):
        return False
    return is_done_signal(pm.text if pm.kind != "emoji" else reply.text)
