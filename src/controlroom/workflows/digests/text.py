"""Text analysis shared by the heuristic summariser and carry-forward: cleaning Slack
mrkdwn, telling noise from content, splitting sentences, and resolving due dates.

Everything here is pure and deterministic; due dates are resolved against the time the
message was sent, in the workspace time zone.
"""

from __future__ import annotations

import contextlib
import re
from datetime import date, datetime, timedelta, tzinfo
from typing import Literal

__all__ = [
    "DONE_REACTIONS",
    "ContentKind",
    "clean_text",
    "content_kind",
    "is_agreement",
    "is_disagreement",
    "is_done_signal",
    "mentions",
    "resolve_due",
    "sentences",
]

ContentKind = Literal["bot", "system", "empty", "emoji", "link", "greeting", "text"]

# Subtypes that carry what a person wrote; every other subtype is system noise.
_CONTENT_SUBTYPES = {None, "thread_broadcast", "file_share", "me_message"}

_MENTION = re.compile(r"<@([UW][A-Z0-9]+)(?:\|[^>]*)?>")
_SPECIAL = re.compile(r"<!([^>|]+)(?:\|([^>]*))?>")
_CHANNEL_REF = re.compile(r"<#([CG][A-Z0-9]+)(?:\|([^>]*))?>")
_LINK = re.compile(r"<((?:https?|mailto):[^>|]+)(?:\|([^>]*))?>")
_BARE_URL = re.compile(r"https?://\S+")
_EMOJI_CODE = re.compile(r":[a-z0-9_+'\-]+(?:::skin-tone-\d)?:")
_EMOJI_CHAR = re.compile(
    "[\U0001f000-\U0001faff\u2600-\u27bf\u2b00-\u2bff\u2300-\u23ff\ufe0f\u200d\u20e3]"
)
_GREETING = re.compile(
    r"^(?:hi|hello|hey|hiya|yo|morning|good morning|good afternoon|good evening|gm|"
    r"thanks|thank you|thx|ty|cheers|lol|haha|nice|cool|great|awesome|"
    r"happy (?:monday|friday|weekend|holidays)|have a good (?:one|weekend)|bye|see you|"
    r"welcome|congrats|congratulations)"
    r"(?:[\s,]+(?:all|team|everyone|folks|y'all|guys|people|again|so much|!))*[\s!.]*$",
    re.IGNORECASE,
)
_SENTENCE = re.compile(r"[^.!?\n\u2014]+(?:[.!?\u2014]+|$)|[.!?\u2014]+")

_AGREE = re.compile(
    r"^(?:\+1|:\+1:|:thumbsup:|:white_check_mark:|:heavy_check_mark:|:ok_hand:|"
    r"\U0001f44d|\u2705|\u2714|\U0001f44c|agreed?|strongly agree|same|lgtm|"
    r"sounds good|sgtm|works for (?:me|us)|fine (?:by|with|for) (?:me|us)|makes sense|love it|"
    r"good idea|yes|yep|yeah|yup|"
    r"no objections?|none from me|none here|ship it|let'?s do it|\U0001f64c)(?![\w'])",
    re.IGNORECASE,
)
_DISAGREE = re.compile(
    r"^(?:-1|:-1:|\U0001f44e|disagree|i disagree|no[,.!]|nope|i don'?t think|not sure|"
    r"i'?d rather not|hold on|wait)",
    re.IGNORECASE,
)
_DONE = re.compile(
    r"^(?:done|fixed|resolved|shipped|merged|deployed|sorted|completed|closed|answered)\b|"
    r"\b(?:is|are|now|has been|have been|was|got)\s+(?:done|fixed|resolved|shipped|merged|"
    r"deployed|live|sorted|completed)\b|\bthis is done\b|\ball done\b",
    re.IGNORECASE,
)
DONE_REACTIONS = frozenset(
    {"white_check_mark", "heavy_check_mark", "ballot_box_with_check", "done", "check"}
)


def mentions(text: str) -> list[str]:
    """User ids mentioned with ``<@U…>``, in order, without duplicates."""
    seen: list[str] = []
    for uid in _MENTION.findall(text):
        if uid not in seen:
            seen.append(uid)
    return seen


def clean_text(text: str) -> str:
    """Readable text: links shown by their label (or URL), channel refs by name,
    ``<@U…>`` mentions kept as they are, special mentions kept as written. Whitespace
    collapsed."""

    def link(m: re.Match[str]) -> str:
        return m.group(2) or m.group(1)

    def channel(m: re.Match[str]) -> str:
        return "#" + (m.group(2) or m.group(1))

    out = _LINK.sub(link, text)
    out = _CHANNEL_REF.sub(channel, out)
    return " ".join(out.split())


def _strip_decoration(text: str) -> str:
    out = _MENTION.sub(" ", text)
    out = _SPECIAL.sub(" ", out)
    out = _CHANNEL_REF.sub(" ", out)
    out = _EMOJI_CODE.sub(" ", out)
    out = _EMOJI_CHAR.sub(" ", out)
    return out


def content_kind(text: str, *, is_bot: bool = False, subtype: str | None = None) -> ContentKind:
    """Classify a message: bot/system noise, empty, emoji-only, links-only, a greeting,
    or text worth reading."""
    if is_bot or subtype == "bot_message":
        return "bot"
    if subtype not in _CONTENT_SUBTYPES:
        return "system"
    if not text.strip():
        return "empty"
    no_links = _BARE_URL.sub(" ", _LINK.sub(" ", text))
    has_link = no_links != text
    rest = _strip_decoration(no_links)
    if not re.search(r"\w", rest):
        if has_link:
            return "link"
        return "emoji" if rest.strip() != text.strip() else "empty"
    if _GREETING.match(rest.strip()):
        return "greeting"
    return "text"


def sentences(text: str) -> list[str]:
    """Split into sentences on ., !, ? and newlines, keeping the terminator."""
    return [s.strip() for s in _SENTENCE.findall(text) if s.strip()]


def is_agreement(text: str) -> bool:
    t = text.strip()
    return bool(_AGREE.match(t)) and not _DISAGREE.match(t)


def is_disagreement(text: str) -> bool:
    return bool(_DISAGREE.match(text.strip()))


def is_done_signal(text: str) -> bool:
    """ "done", "fixed", "it's live", a ✅ in the text..."""
    t = text.strip()
    if _DONE.search(t):
        return True
    return bool(re.search(r":(?:white_check_mark|heavy_check_mark):|\u2705|\u2714", t))


# --- due dates -------------------------------------------------------------------------

_WEEKDAYS = {
    "mon": 0,
    "tue": 1,
    "tues": 1,
    "wed": 2,
    "wednes": 2,
    "thu": 3,
    "thur": 3,
    "thurs": 3,
    "fri": 4,
    "sat": 5,
    "satur": 5,
    "sun": 6,
}
_MONTHS = {
    m: i + 1
    for i, m in enumerate(
        ["jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec"]
    )
}
_PREP = r"(?:by|before|on|until|till|due|for|no later than)"
_RE_WEEKDAY = re.compile(
    rf"\b(?:{_PREP}\s+)?(next\s+|this\s+|{_PREP}\s+)"
    r"(mon|tues?|wed(?:nes)?|thu(?:rs?)?|fri|sat(?:ur)?|sun)(?:day)?(?:'s)?\b",
    re.IGNORECASE,
)
_RE_TODAY = re.compile(
    r"\b(?:today|tonight|eod|end of (?:the )?day|cob|close of business|end of business|asap|"
    r"right (?:now|away)|(?<=\s)now(?=[\s.!,]|$)|"
    r"this (?:morning|afternoon|evening))\b",
    re.IGNORECASE,
)
_RE_TOMORROW = re.compile(r"\b(?:tomorrow|tmrw|tmr|tomorow)\b", re.IGNORECASE)
_RE_EOW = re.compile(r"\b(?:eow|end of (?:the |this )?week|this week)\b", re.IGNORECASE)
_RE_END_NEXT_WEEK = re.compile(r"\bend of next week\b", re.IGNORECASE)
_RE_NEXT_WEEK = re.compile(r"\bnext week\b", re.IGNORECASE)
_RE_ISO = re.compile(r"\b(\d{4})-(\d{2})-(\d{2})\b")
_RE_MONTH_DAY = re.compile(
    r"\b(jan|feb|mar|apr|may|jun|jul|aug|sep|oct|nov|dec)[a-z]*\.?\s+(\d{1,2})(?:st|nd|rd|th)?\b",
    re.IGNORECASE,
)
_RE_DAY_MONTH = re.compile(
    r"\b(\d{1,2})(?:st|nd|rd|th)?\s+(jan|feb|mar|apr|may|jun|jul|aug|sep|oct|nov|dec)[a-z]*\b",
    re.IGNORECASE,
)
_RE_THE_NTH = re.compile(
    rf"(?<!not )\b{_PREP}\s+the\s+(\d{{1,2}})(?:st|nd|rd|th)\b",
    re.IGNORECASE,
)
_RE_IN_N = re.compile(
    r"\bin\s+(an?|\d{1,3})\s*(min(?:ute)?s?|h(?:ou)?rs?|hours?|days?|weeks?)\b",
    re.IGNORECASE,
)
_RE_NOT_BEFORE = re.compile(r"\bnot (?:before|until)\b[^.!?]*", re.IGNORECASE)


def _month_day(today: date, month: int, day: int) -> date | None:
    try:
        d = date(today.year, month, day)
    except ValueError:
        return None
    if d < today - timedelta(days=60):
        try:
            d = date(today.year + 1, month, day)
        except ValueError:
            return None
    return d


def resolve_due(text: str, sent_at: datetime, tz: tzinfo) -> date | None:
    """The due date a sentence states, resolved against ``sent_at`` in ``tz``.

    "by Friday" is the next Friday after the day sent; "next Friday" the Friday of next
    week; "tomorrow", "by EOD", "this week" (Friday), "next week" (its Monday), ISO dates,
    "Dec 10", "the 8th", "in 30 min". When several are stated, the latest one wins.
    Phrases after "not before"/"not until" are earliest starts, not due dates.
    """
    local = sent_at.astimezone(tz)
    today = local.date()
    t = _RE_NOT_BEFORE.sub(" ", text)
    found: list[date] = []
    monday = today - timedelta(days=today.weekday())
    for m in _RE_WEEKDAY.finditer(t):
        lead = m.group(1).strip().lower()
        key = m.group(2).lower()
        wd = _WEEKDAYS.get(key, _WEEKDAYS.get(key[:3], 0))
        if lead == "next":
            found.append(monday + timedelta(days=7 + wd))
        elif lead == "this":
            found.append(monday + timedelta(days=wd))
        else:
            ahead = (wd - today.weekday()) % 7 or 7
            found.append(today + timedelta(days=ahead))
    if _RE_TODAY.search(t):
        found.append(today)
    if _RE_TOMORROW.search(t):
        found.append(today + timedelta(days=1))
    if _RE_END_NEXT_WEEK.search(t):
        found.append(monday + timedelta(days=11))
    elif _RE_NEXT_WEEK.search(t):
        found.append(monday + timedelta(days=7))
    if _RE_EOW.search(t):
        found.append(max(today, monday + timedelta(days=4)))
    for y, mo, d in _RE_ISO.findall(t):
        with contextlib.suppress(ValueError):
            found.append(date(int(y), int(mo), int(d)))
    for mon, d in _RE_MONTH_DAY.findall(t):
        md = _month_day(today, _MONTHS[mon[:3].lower()], int(d))
        if md:
            found.append(md)
    for d, mon in _RE_DAY_MONTH.findall(t):
        md = _month_day(today, _MONTHS[mon[:3].lower()], int(d))
        if md:
            found.append(md)
    for d in _RE_THE_NTH.findall(t):
        day = int(d)
        if 1 <= day <= 31:
            y, mo = today.year, today.month
            if day < today.day:
                y, mo = (y + 1, 1) if mo == 12 else (y, mo + 1)
            with contextlib.suppress(ValueError):
                found.append(date(y, mo, day))
    for n, unit in _RE_IN_N.findall(t):
        count = 1 if n.lower() in ("a", "an") else int(n)
        u = unit.lower()
        if u.startswith("m"):
            delta = timedelta(minutes=count)
        elif u.startswith("h"):
            delta = timedelta(hours=count)
        elif u.startswith("d"):
            delta = timedelta(days=count)
        else:
            delta = timedelta(weeks=count)
        found.append((local + delta).date())
    return max(found) if found else None
