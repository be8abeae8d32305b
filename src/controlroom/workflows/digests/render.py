"""Block Kit for a digest.

Per channel: a header, then sections for Decisions, Action items (owner mentioned, due
date) and Open questions, each item linking to its source message, each labelled new,
still open or resolved; then a context line saying what was read and by which
summariser. Split across several messages when over Slack's limits (50 blocks per
message, 3,000 characters per section text), each with a plain-text fallback.

A digest never pings. Text quoted from messages (or written by a model) has its special
mentions neutralised (``<!channel>``, ``<!here>``, ``<!everyone>``, ``<!subteam^…>``,
``@channel``, ``@here``, ``@everyone`` become "@\u200bchannel" and so on), user mentions
shown as names, and ``&``, ``<``, ``>`` escaped. Only item owners are mentioned, on
purpose (``mention_owners``).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, tzinfo
from typing import Any

from controlroom.workflows.digests.model import DigestItem, DigestResult, ItemKind

__all__ = [
    "MAX_BLOCKS",
    "MAX_SECTION_TEXT",
    "RenderedMessage",
    "archive_permalink",
    "fallback_text",
    "neutralise",
    "render_digest",
    "render_digest_messages",
]

MAX_BLOCKS = 50
MAX_SECTION_TEXT = 3000
MAX_HEADER_TEXT = 150
MAX_CONTEXT_TEXT = 2000
MAX_FALLBACK_TEXT = 3000
MAX_ITEM_LABEL = 280
ZWSP = "\u200b"

Permalink = Callable[[str, str], str]
Block = dict[str, Any]

_SECTION_TITLES: dict[ItemKind, str] = {
    "decision": "Decisions",
    "action_item": "Action items",
    "open_question": "Open questions",
}
_STATUS_LABEL = {"new": "new", "open": "still open", "resolved": "resolved"}
_SPECIAL = re.compile(r"<!([^>|]*)(?:\|([^>]*))?>")
_USER = re.compile(r"<@([UW][A-Z0-9]+)(?:\|([^>]*))?>")
_CHANNEL = re.compile(r"<#([CG][A-Z0-9]+)(?:\|([^>]*))?>")
_LINK = re.compile(r"<([^<>|]+)\|([^<>]*)>|<((?:https?|mailto):[^<>|]+)>")
_BROADCAST = re.compile(r"@(channel|here|everyone)\b", re.IGNORECASE)
_USER_ID = re.compile(r"^[UW][A-Z0-9]{2,}$")


def archive_permalink(workspace_url: str) -> Permalink:
    """A ``permalink(channel, ts)`` building Slack's archive links without an API call:
    ``https://acme.slack.com/archives/C123/p1700000000000100`` (what
    ``chat.getPermalink`` returns for a top-level message)."""
    base = workspace_url.rstrip("/")
    if not base.startswith(("https://", "http://")):
        raise ValueError("workspace_url must be an http(s) URL")

    def permalink(channel: str, ts: str) -> str:
        if not re.fullmatch(r"[A-Z0-9]+", channel) or not re.fullmatch(r"\d+\.\d+", ts):
            raise ValueError(f"not a Slack channel id and ts: {channel!r}, {ts!r}")
        return f"{base}/archives/{channel}/p{ts.replace('.', '')}"

    return permalink


def _special_label(name: str, label: str | None) -> str:
    if name.startswith("subteam^"):
        handle = (label or "usergroup").lstrip("@")
        return "@" + ZWSP + handle
    if name in ("channel", "here", "everyone"):
        return "@" + ZWSP + name
    if label:
        return label
    return name.split("^", 1)[0]


def neutralise(text: str, user_names: Mapping[str, str] | None = None) -> str:
    """Quoted text made safe for mrkdwn: no broadcast or group pings, no user pings (names
    instead), links reduced to their label, ``&``, ``<``, ``>`` escaped."""
    names = user_names or {}
    out = _SPECIAL.sub(lambda m: _special_label(m.group(1), m.group(2)), text)
    out = _USER.sub(lambda m: "@" + (m.group(2) or names.get(m.group(1)) or ZWSP + m.group(1)), out)
    out = _CHANNEL.sub(lambda m: "#" + (m.group(2) or m.group(1)), out)
    out = _LINK.sub(lambda m: m.group(2) or m.group(1) or m.group(3) or "", out)
    # Slack sends text HTML-escaped; decode once so it is escaped exactly once below.
    out = out.replace("&lt;", "<").replace("&gt;", ">").replace("&amp;", "&")
    # Decoding may reveal "<!channel>" written as text: neutralise again, then escape.
    out = _SPECIAL.sub(lambda m: _special_label(m.group(1), m.group(2)), out)
    out = _BROADCAST.sub(lambda m: "@" + ZWSP + m.group(1), out)
    out = out.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
    return " ".join(out.split())


def _clip(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1].rstrip() + "\u2026"


def _plain(text: str, limit: int) -> str:
    """For plain_text fields (header, fallback): no escaping, no pings."""
    out = neutralise(text).replace("&lt;", "<").replace("&gt;", ">").replace("&amp;", "&")
    return _clip(out, limit)


@dataclass(frozen=True, slots=True)
class RenderedMessage:
    """One Slack message of a digest: its blocks and its plain-text fallback."""

    blocks: list[Block]
    text: str


def _item_line(
    item: DigestItem,
    permalink: Permalink,
    *,
    user_names: Mapping[str, str] | None,
    mention_owners: bool,
) -> str:
    label = _clip(neutralise(item.text, user_names), MAX_ITEM_LABEL).replace("|", "\u00a6")
    first_channel, first_ts = item.source_ids[0].split(":", 1)
    url = permalink(first_channel, first_ts)
    line = f"\u2022 <{_safe_url(url)}|{label}>"
    extra = []
    for n, sid in enumerate(item.source_ids[1:6], start=2):
        ch, ts = sid.split(":", 1)
        extra.append(f"<{_safe_url(permalink(ch, ts))}|{n}>")
    if extra:
        line += " (" + ", ".join(extra) + ")"
    meta = []
    if item.kind == "action_item":
        if item.owner and _USER_ID.match(item.owner):
            if mention_owners:
                meta.append(f"<@{item.owner}>")
            else:
                name = (user_names or {}).get(item.owner, item.owner)
                meta.append("@" + neutralise(name))
        else:
            meta.append("no owner")
        if item.due:
            meta.append("due " + item.due.strftime("%a %d %b %Y"))
    meta.append(f"_{_STATUS_LABEL[item.status]}_")
    return _clip(line + " \u2014 " + " \u00b7 ".join(meta), MAX_SECTION_TEXT)


def _safe_url(url: str) -> str:
    return url.replace("<", "%3C").replace(">", "%3E").replace("|", "%7C").replace(" ", "%20")


def _sections(title: str, lines: list[str]) -> list[Block]:
    """One or more sections holding ``lines``, each text at most 3,000 characters."""
    blocks: list[Block] = []
    current = f"*{title}*"
    for line in lines:
        candidate = current + "\n" + line
        if len(candidate) > MAX_SECTION_TEXT:
            blocks.append(_section(current))
            current = f"*{title} (continued)*\n{line}"
        else:
            current = candidate
    blocks.append(_section(current))
    return blocks


def _section(text: str) -> Block:
    return {"type": "section", "text": {"type": "mrkdwn", "text": _clip(text, MAX_SECTION_TEXT)}}


def _fmt_time(dt: datetime | None, tz: tzinfo) -> str:
    if dt is None:
        return "?"
    return dt.astimezone(tz).strftime("%a %d %b %H:%M")


def _coverage_text(result: DigestResult, tz: tzinfo, channel_label: str) -> str:
    cov = result.coverage
    parts = [
        f"Read {cov.messages_read} message{'s' if cov.messages_read != 1 else ''} and "
        f"{cov.threads_read} thread{'s' if cov.threads_read != 1 else ''}{channel_label}",
    ]
    if cov.start is not None:
        parts[0] += f", {_fmt_time(cov.start, tz)} \u2013 {_fmt_time(cov.end, tz)}"
        tzname = getattr(tz, "key", None) or cov.start.astimezone(tz).tzname() or "UTC"
        parts[0] += f" ({tzname})"
    parts.append(f"summariser: {neutralise(result.summariser)}")
    if not cov.complete:
        parts.append("history incomplete")
    if result.dropped_ungrounded:
        parts.append(f"{result.dropped_ungrounded} ungrounded item(s) dropped")
    for note in result.notes:
        parts.append(neutralise(note))
    return _clip(" \u00b7 ".join(parts), MAX_CONTEXT_TEXT)


def _channel_blocks(
    channel: str,
    items: list[DigestItem],
    result: DigestResult,
    *,
    permalink: Permalink,
    tz: tzinfo,
    channel_names: Mapping[str, str] | None,
    user_names: Mapping[str, str] | None,
    mention_owners: bool,
) -> tuple[Block, list[Block]]:
    name = (channel_names or {}).get(channel, channel)
    header: Block = {
        "type": "header",
        "text": {"type": "plain_text", "text": _plain("#" + name, MAX_HEADER_TEXT)},
    }
    body: list[Block] = []
    if not result.coverage.complete:
        body.append(
            _section(
                ":warning: *The history of this channel could not be read completely;* "
                "this digest covers only part of the period."
            )
        )
    for kind, title in _SECTION_TITLES.items():
        of_kind = [i for i in items if i.kind == kind]
        if not of_kind:
            continue
        lines = [
            _item_line(i, permalink, user_names=user_names, mention_owners=mention_owners)
            for i in of_kind
        ]
        body.extend(_sections(title, lines))
    if not items:
        body.append(_section("_Nothing to report._"))
    channel_label = f" in #{neutralise(name)}" if len(result.coverage.channels) > 1 else ""
    body.append(
        {
            "type": "context",
            "elements": [{"type": "mrkdwn", "text": _coverage_text(result, tz, channel_label)}],
        }
    )
    return header, body


def render_digest_messages(
    results: DigestResult | Sequence[DigestResult],
    *,
    permalink: Permalink,
    tz: tzinfo = UTC,
    title: str = "Digest",
    channel_names: Mapping[str, str] | None = None,
    user_names: Mapping[str, str] | None = None,
    mention_owners: bool = True,
    max_blocks: int = MAX_BLOCKS,
) -> list[RenderedMessage]:
    """Render one or more digest results into ordered Slack messages (blocks + fallback).

    Items are grouped by the channel of their first source message; a channel with no
    items still gets its header and coverage line when the result covered it.
    ``max_blocks`` (at most Slack's 50) caps the blocks of one message.
    """
    max_blocks = max(3, min(max_blocks, MAX_BLOCKS))
    if isinstance(results, DigestResult):
        results = [results]
    groups: list[tuple[Block, list[Block]]] = []
    counts = {k: 0 for k in _SECTION_TITLES}
    for result in results:
        channels: list[str] = list(result.coverage.channels)
        for item in result.items:
            if item.channel not in channels:
                channels.append(item.channel)
            counts[item.kind] += 1
        if not channels:
            channels = [""]
        for channel in channels:
            items = [i for i in result.items if i.channel == channel]
            groups.append(
                _channel_blocks(
                    channel or "(no channel)",
                    items,
                    result,
                    permalink=permalink,
                    tz=tz,
                    channel_names=channel_names,
                    user_names=user_names,
                    mention_owners=mention_owners,
                )
            )
    messages: list[list[Block]] = []
    current: list[Block] = []
    for header, body in groups:
        if current and len(current) + 2 > max_blocks:
            messages.append(current)
            current = []
        current.append(header)
        for block in body:
            if len(current) >= max_blocks:
                messages.append(current)
                cont = dict(header)
                cont["text"] = {
                    "type": "plain_text",
                    "text": _clip(header["text"]["text"] + " (continued)", MAX_HEADER_TEXT),
                }
                current = [cont]
            current.append(block)
    if current:
        messages.append(current)
    summary = (
        f"{counts['decision']} decision(s), {counts['action_item']} action item(s), "
        f"{counts['open_question']} open question(s)"
    )
    out: list[RenderedMessage] = []
    total = len(messages)
    for n, blocks in enumerate(messages, start=1):
        part = f" (part {n}/{total})" if total > 1 else ""
        text = _plain(f"{title}: {summary}{part}", MAX_FALLBACK_TEXT)
        out.append(RenderedMessage(blocks=blocks, text=text))
    return out


def render_digest(
    results: DigestResult | Sequence[DigestResult],
    *,
    permalink: Permalink,
    tz: tzinfo = UTC,
    title: str = "Digest",
    channel_names: Mapping[str, str] | None = None,
    user_names: Mapping[str, str] | None = None,
    mention_owners: bool = True,
) -> list[list[Block]]:
    """The blocks of each message of the digest, in posting order (see
    ``render_digest_messages`` for the plain-text fallbacks too)."""
    return [
        m.blocks
        for m in render_digest_messages(
            results,
            permalink=permalink,
            tz=tz,
            title=title,
            channel_names=channel_names,
            user_names=user_names,
            mention_owners=mention_owners,
        )
    ]


def fallback_text(blocks: Sequence[Block]) -> str:
    """A plain-text rendering of blocks (for notifications and screen readers)."""
    lines: list[str] = []
    for b in blocks:
        if b.get("type") in ("header", "section"):
            lines.append(str(b["text"]["text"]))
        elif b.get("type") == "context":
            lines.extend(str(e.get("text", "")) for e in b.get("elements", []))
    return _clip("\n".join(lines), MAX_FALLBACK_TEXT)
