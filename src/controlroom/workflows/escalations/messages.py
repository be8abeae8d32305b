"""Block Kit for escalations: the briefing pinned in the incident room, the pointer in the
original thread, the ephemeral customer picker, and the resolution summary.

Every message has a meaningful ``text`` (notifications and screen readers use it) and
stays inside Slack's limits (section text 3000, fields 10 x 2000, header 150, option value
150, 100 options, button value 2000). The quoted source message is made safe: ``&``,
``<``, ``>`` are escaped (without double-escaping Slack's own entities), ``@channel``,
``@here``, ``@everyone`` and user-group pings are neutralised, only http(s)/mailto links
survive, and long text is cut on a token boundary.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from controlroom.errors import ControlRoomError
from controlroom.workflows.escalations.crm.base import Account

__all__ = [
    "ACTION_NO_CUSTOMER",
    "ACTION_PICK_CUSTOMER",
    "ACTION_RESOLVE",
    "ACTION_SET_CUSTOMER",
    "BadActionValue",
    "Briefing",
    "Message",
    "SourceMessage",
    "already_escalated_message",
    "briefing_message",
    "customer_picker",
    "escape_text",
    "format_duration",
    "format_money",
    "parse_escalation_value",
    "parse_picker_value",
    "pointer_message",
    "quote_source",
    "resolution_summary",
    "safe_source_text",
]

ACTION_RESOLVE = "escalations.resolve"
ACTION_SET_CUSTOMER = "escalations.set_customer"
ACTION_PICK_CUSTOMER = "escalations.pick_customer"
ACTION_NO_CUSTOMER = "escalations.no_customer"

SECTION_MAX = 3000
FIELD_MAX = 2000
HEADER_MAX = 150
OPTION_TEXT_MAX = 75
OPTION_VALUE_MAX = 150
OPTIONS_MAX = 100
ZWSP = "\u200b"

Block = dict[str, Any]


class BadActionValue(ControlRoomError):
    """A button or select arrived with a value we did not produce (tampered or stale)."""

    def __init__(self, action_id: str, reason: str) -> None:
        self.action_id = action_id
        self.reason = reason
        super().__init__(f"{action_id}: {reason}")


@dataclass(frozen=True)
class Message:
    text: str
    blocks: list[Block]

    def as_kwargs(self) -> dict[str, Any]:
        """Keyword arguments for ``chat.postMessage`` / ``chat.update``."""
        return {"text": self.text, "blocks": self.blocks}


@dataclass(frozen=True)
class SourceMessage:
    """The escalated message, as fetched from Slack."""

    channel: str
    ts: str
    author: str
    text: str
    permalink: str = ""
    files: tuple[str, ...] = ()
    author_is_bot: bool = False


@dataclass(frozen=True)
class Briefing:
    escalation_id: int
    source: SourceMessage
    escalated_by: str
    escalated_at: datetime
    account: Account | None = None
    crm_unavailable: bool = False
    unknown_reason: str = ""
    matched_by: str = ""
    account_manager_user: str | None = None
    invite_failures: Mapping[str, str] = field(default_factory=dict)
    archive_after: timedelta | None = None
    currency: str = "$"


# -- text safety ---------------------------------------------------------------------------

_ENTITY = re.compile(r"&(amp|lt|gt);")
# Slack markup: <@U…>, <#C…>, <!special>, <scheme:…>. Anything else in <> is plain text.
_TOKEN = re.compile(r"<((?:[@#!]|[a-zA-Z][a-zA-Z0-9+.-]{0,20}:)[^<>\n]{0,3000})>")
_BROADCAST = re.compile(r"(?<![\w@])@(channel|here|everyone)\b", re.IGNORECASE)
_SAFE_URL = re.compile(r"(https?://|mailto:)[^\s|<>]+", re.IGNORECASE)


def escape_text(text: str) -> str:
    """Escape ``&``, ``<``, ``>`` for mrkdwn, leaving existing ``&amp;``/``&lt;``/``&gt;``."""
    parts = _ENTITY.split(text)
    out = []
    for i, part in enumerate(parts):
        if i % 2:
            out.append(f"&{part};")
        else:
            out.append(part.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;"))
    return "".join(out)


def _plain(text: str) -> str:
    """Escaped text with broadcast words broken so they can never ping."""
    return _BROADCAST.sub(lambda m: "@" + ZWSP + m[1], escape_text(text))


def _token(inner: str) -> str:
    """Rewrite one ``<...>`` token of Slack markup into something safe to quote."""
    target, _, label = inner.partition("|")
    if target.startswith("!"):
        name = target[1:]
        if name in ("channel", "here", "everyone"):
            return "@" + ZWSP + name
        if name.startswith("subteam^"):
            handle = (label or "@group").lstrip("@")
            return "@" + ZWSP + _plain(handle)
        return _plain(label or name.split("^", 1)[0])
    if re.fullmatch(r"@[UW][A-Z0-9]{2,}", target) or re.fullmatch(r"#C[A-Z0-9]{2,}", target):
        return f"<{target}>"
    if _SAFE_URL.fullmatch(target):
        return f"<{target}|{_plain(label)}>" if label else f"<{target}>"
    return _plain(label or target)


def _segments(text: str) -> list[tuple[str, bool]]:
    """(safe text, is_atomic) pieces; atomic pieces must not be cut."""
    out: list[tuple[str, bool]] = []
    pos = 0
    for m in _TOKEN.finditer(text):
        if m.start() > pos:
            out.append((_plain(text[pos : m.start()]), False))
        out.append((_token(m[1]), True))
        pos = m.end()
    if pos < len(text):
        out.append((_plain(text[pos:]), False))
    return out


def _cut(safe: str, room: int) -> str:
    cut = safe[:room]
    amp = cut.rfind("&")
    if amp != -1 and ";" not in cut[amp:]:
        cut = cut[:amp]
    return cut


def safe_source_text(text: str, *, limit: int = 2500) -> tuple[str, bool]:
    """The source text made safe to repost, at most ``limit`` characters;
    ``(text, truncated)``."""
    out: list[str] = []
    used = 0
    for piece, atomic in _segments(text):
        if used + len(piece) <= limit:
            out.append(piece)
            used += len(piece)
            continue
        if not atomic:
            out.append(_cut(piece, limit - used))
        return "".join(out).rstrip() + "…", True
    return "".join(out), False


def quote_source(text: str, *, limit: int = 2500) -> str:
    """Safe text as a mrkdwn block quote (``> `` on every line)."""
    safe, truncated = safe_source_text(text, limit=limit)
    if not safe.strip():
        safe = "_(no text)_"
    quoted = "\n".join("> " + line for line in safe.split("\n"))
    return quoted + ("\n_(truncated)_" if truncated else "")


# -- formatting ----------------------------------------------------------------------------


def format_money(amount: float | None, currency: str = "$") -> str:
    """``1250000`` -> ``$1.25M``; ``480000`` -> ``$480K``; None -> ``—``."""
    if amount is None:
        return "—"
    sign = "-" if amount < 0 else ""
    value = abs(amount)
    for div, suffix in ((1e9, "B"), (1e6, "M"), (1e3, "K")):
        if value >= div * 0.9995:
            scaled = value / div
            text = f"{scaled:,.0f}" if scaled >= 999.5 else f"{scaled:.3g}"
            return f"{sign}{currency}{text}{suffix}"
    return f"{sign}{currency}{value:,.0f}"


def format_duration(delta: timedelta) -> str:
    """``2h 14m``, ``45m``, ``3d 2h``, ``under a minute``."""
    minutes = int(delta.total_seconds() // 60)
    if minutes < 1:
        return "under a minute"
    days, rem = divmod(minutes, 1440)
    hours, mins = divmod(rem, 60)
    if days:
        return f"{days}d {hours}h" if hours else f"{days}d"
    if hours:
        return f"{hours}h {mins}m" if mins else f"{hours}h"
    return f"{mins}m"


def _date(when: datetime) -> str:
    """A Slack date token shown in each reader's timezone, with a UTC fallback."""
    utc = when.astimezone(UTC) if when.tzinfo else when.replace(tzinfo=UTC)
    fallback = utc.strftime("%Y-%m-%d %H:%M UTC")
    return f"<!date^{int(utc.timestamp())}^{{date_short_pretty}} at {{time}}|{fallback}>"


def _clip(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1].rstrip() + "…"


def _plain_text(text: str, limit: int) -> dict[str, Any]:
    return {"type": "plain_text", "text": _clip(text, limit), "emoji": True}


def _mrkdwn(text: str, limit: int = SECTION_MAX) -> dict[str, Any]:
    return {"type": "mrkdwn", "text": _clip(text, limit)}


def _manager(account: Account, user_id: str | None) -> str:
    if user_id:
        return f"<@{user_id}>"
    if account.owner_email and account.owner_name:
        return f"{_plain(account.owner_name)} ({_plain(account.owner_email)})"
    return _plain(account.owner_email or account.owner_name) or "—"


def _customer_blocks(b: Briefing) -> list[Block]:
    a = b.account
    if a is None:
        if b.crm_unavailable:
            text = (
                ":warning: *CRM unavailable* — customer details will be added here when it answers."
            )
        else:
            reason = f"\n{_plain(b.unknown_reason)}" if b.unknown_reason else ""
            text = f":grey_question: *Customer unknown*{reason}"
        return [
            {
                "type": "section",
                "block_id": "escalations.customer",
                "text": _mrkdwn(text),
                "accessory": {
                    "type": "button",
                    "action_id": ACTION_SET_CUSTOMER,
                    "text": _plain_text("Set customer", OPTION_TEXT_MAX),
                    "value": str(b.escalation_id),
                },
            }
        ]
    name = _plain(a.name)
    title = f"<{a.crm_url}|{name}>" if _SAFE_URL.fullmatch(a.crm_url or "") else name
    fields = [
        _mrkdwn(f"*Customer*\n{title}", FIELD_MAX),
        _mrkdwn(f"*Tier*\n{_plain(a.tier) or '—'}", FIELD_MAX),
        _mrkdwn(f"*ARR*\n{format_money(a.arr, b.currency)}", FIELD_MAX),
        _mrkdwn(f"*Open cases*\n{a.open_cases if a.open_cases is not None else '—'}", FIELD_MAX),
        _mrkdwn(f"*Account manager*\n{_manager(a, b.account_manager_user)}", FIELD_MAX),
    ]
    if b.matched_by:
        fields.append(_mrkdwn(f"*Matched by*\n{_plain(b.matched_by)}", FIELD_MAX))
    blocks: list[Block] = [
        {"type": "section", "block_id": "escalations.customer", "fields": fields}
    ]
    if b.crm_unavailable:
        blocks.append(
            {
                "type": "context",
                "elements": [
                    _mrkdwn(
                        ":warning: CRM unavailable — details may be stale; "
                        "they will be updated when it answers."
                    )
                ],
            }
        )
    return blocks


def briefing_message(b: Briefing) -> Message:
    """The first message of the incident room (the caller pins it)."""
    customer = b.account.name if b.account else "customer unknown"
    header = f":rotating_light: Incident: {customer}"
    src = b.source
    author = f"<@{src.author}>" if src.author and not src.author_is_bot else "an integration"
    link = f" · <{src.permalink}|view original>" if _SAFE_URL.fullmatch(src.permalink) else ""
    intro = f"*Original message* from {author} in <#{src.channel}>{link}\n"
    blocks: list[Block] = [
        {"type": "header", "text": _plain_text(header, HEADER_MAX)},
        *_customer_blocks(b),
        {"type": "divider"},
        {
            "type": "section",
            "block_id": "escalations.source",
            "text": _mrkdwn(intro + quote_source(src.text, limit=SECTION_MAX - len(intro) - 40)),
        },
    ]
    if src.files:
        names = ", ".join(_plain(f) for f in src.files[:10])
        more = f" and {len(src.files) - 10} more" if len(src.files) > 10 else ""
        blocks.append(
            {"type": "context", "elements": [_mrkdwn(f":paperclip: Files: {names}{more}")]}
        )
    blocks.append(
        {
            "type": "context",
            "elements": [_mrkdwn(f"Escalated by <@{b.escalated_by}> {_date(b.escalated_at)}")],
        }
    )
    if b.invite_failures:
        items = [f"{_who(k)} ({_plain(v)})" for k, v in list(b.invite_failures.items())[:20]]
        blocks.append(
            {
                "type": "context",
                "elements": [_mrkdwn(":information_source: Could not invite: " + ", ".join(items))],
            }
        )
    after = (
        f" and archive this channel after {format_duration(b.archive_after)}"
        if b.archive_after
        else ""
    )
    blocks.append(
        {
            "type": "actions",
            "block_id": "escalations.actions",
            "elements": [
                {
                    "type": "button",
                    "action_id": ACTION_RESOLVE,
                    "text": _plain_text("Resolve", OPTION_TEXT_MAX),
                    "style": "primary",
                    "value": str(b.escalation_id),
                    "confirm": {
                        "title": _plain_text("Resolve this incident?", 100),
                        "text": _plain_text(
                            "This posts a summary to the original thread" + after + ".", 300
                        ),
                        "confirm": _plain_text("Resolve", 30),
                        "deny": _plain_text("Cancel", 30),
                    },
                }
            ],
        }
    )
    text = (
        f"Incident for {_plain(customer)}, escalated by <@{b.escalated_by}> from <#{src.channel}>"
    )
    if b.crm_unavailable:
        text += " (CRM unavailable; details to follow)"
    return Message(text=text, blocks=blocks)


def _who(key: str) -> str:
    return f"<@{key}>" if re.fullmatch(r"[UW][A-Z0-9]{2,}", key) else _plain(key)


def pointer_message(room_channel_id: str, *, escalated_by: str | None = None) -> Message:
    """The reply in the original thread that points to the room."""
    by = f" by <@{escalated_by}>" if escalated_by else ""
    text = f"Escalated to <#{room_channel_id}>{by}"
    return Message(
        text=text,
        blocks=[{"type": "section", "text": _mrkdwn(f":rotating_light: {text}")}],
    )


def already_escalated_message(room_channel_id: str | None) -> Message:
    """The answer to a second reaction (or a racing one) on an escalated message."""
    if room_channel_id:
        text = f"Already escalated to <#{room_channel_id}>"
    else:
        text = "This message is already being escalated; the room will appear here shortly."
    return Message(text=text, blocks=[{"type": "section", "text": _mrkdwn(text)}])


def _option(escalation_id: int, account: Account) -> dict[str, Any] | None:
    value = f"{escalation_id}|{account.id}"
    if len(value) > OPTION_VALUE_MAX:
        return None
    label = account.name
    if account.domains:
        label += f" ({account.domains[0]})"
    return {"text": _plain_text(label, OPTION_TEXT_MAX), "value": value}


def customer_picker(
    escalation_id: int, candidates: Sequence[Account], *, evidence: str = ""
) -> Message:
    """Ephemeral: "which customer is this?" with up to 100 candidates."""
    options = [o for o in (_option(escalation_id, a) for a in candidates) if o][:OPTIONS_MAX]
    why = f" (matched {_plain(evidence)})" if evidence else ""
    prompt = f"Several customers match this message{why}. Which one is it?"
    blocks: list[Block] = [
        {
            "type": "section",
            "block_id": f"escalations.picker.{escalation_id}",
            "text": _mrkdwn(prompt),
            "accessory": {
                "type": "static_select",
                "action_id": ACTION_PICK_CUSTOMER,
                "placeholder": _plain_text("Choose a customer", 150),
                "options": options,
            },
        },
        {
            "type": "actions",
            "elements": [
                {
                    "type": "button",
                    "action_id": ACTION_NO_CUSTOMER,
                    "text": _plain_text("None of these", OPTION_TEXT_MAX),
                    "value": str(escalation_id),
                }
            ],
        },
    ]
    if len(candidates) > len(options):
        blocks.insert(
            1,
            {
                "type": "context",
                "elements": [_mrkdwn(f"Showing {len(options)} of {len(candidates)} matches.")],
            },
        )
    names = ", ".join(a.name for a in candidates[:5])
    more = "…" if len(candidates) > 5 else ""
    return Message(text=f"Which customer is this? {_plain(names)}{more}", blocks=blocks)


def resolution_summary(
    *,
    resolved_by: str,
    resolved_at: datetime,
    opened_at: datetime,
    room_channel_id: str,
    customer_name: str | None = None,
    archive_after: timedelta | None = None,
) -> Message:
    """Posted in the original thread (and the room) when someone clicks Resolve."""
    duration = format_duration(resolved_at - opened_at)
    who = f" for {_plain(customer_name)}" if customer_name else ""
    text = f"Incident{who} resolved by <@{resolved_by}> after {duration} (<#{room_channel_id}>)"
    blocks: list[Block] = [
        {"type": "section", "text": _mrkdwn(f":white_check_mark: {text}")},
    ]
    if archive_after is not None:
        blocks.append(
            {
                "type": "context",
                "elements": [
                    _mrkdwn(f"The room will be archived in {format_duration(archive_after)}.")
                ],
            }
        )
    return Message(text=text, blocks=blocks)


_ID_VALUE = re.compile(r"[1-9][0-9]{0,17}")


def parse_escalation_value(action_id: str, value: object) -> int:
    """The escalation id carried by a Resolve / Set customer / None of these button."""
    if not isinstance(value, str) or not _ID_VALUE.fullmatch(value):
        raise BadActionValue(action_id, "value is not an escalation id")
    return int(value)


def parse_picker_value(value: object) -> tuple[int, str]:
    """``"42|ACC-1001"`` from the customer picker -> ``(42, "ACC-1001")``."""
    if not isinstance(value, str) or len(value) > OPTION_VALUE_MAX:
        raise BadActionValue(ACTION_PICK_CUSTOMER, "value is not a picker option")
    escalation, sep, account_id = value.partition("|")
    if not sep or not _ID_VALUE.fullmatch(escalation) or not account_id.strip():
        raise BadActionValue(ACTION_PICK_CUSTOMER, "value is not a picker option")
    return int(escalation), account_id
