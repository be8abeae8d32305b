"""Splitting long digests into ordered messages and posting them in order.

Slack refuses more than 50 blocks per message and section text over 3,000 characters
(PLATFORM.md §7). :func:`split_blocks` cuts a digest into messages that fit, keeping the
order of blocks and of text; :func:`post_long` posts them one after another (in the
channel, or the rest as replies in the first message's thread), each with a derived
idempotency key so a re-run posts none of them twice.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from slack_sdk.web.async_client import AsyncWebClient

__all__ = ["MAX_BLOCKS", "MAX_SECTION_TEXT", "MAX_TEXT", "post_long", "split_blocks", "split_text"]

MAX_BLOCKS = 50
MAX_SECTION_TEXT = 3000
MAX_TEXT = 4000


def split_text(text: str, limit: int) -> list[str]:
    """Cut ``text`` into pieces of at most ``limit`` characters, preferring line breaks,
    then spaces; nothing is lost (joining the pieces gives ``text`` back)."""
    if limit < 1:
        raise ValueError("limit must be positive")
    pieces: list[str] = []
    rest = text
    while len(rest) > limit:
        cut = rest.rfind("\n", 0, limit + 1)
        if cut <= 0:
            cut = rest.rfind(" ", 0, limit + 1)
        cut = limit if cut <= 0 else cut + 1
        pieces.append(rest[:cut])
        rest = rest[cut:]
    if rest or not pieces:
        pieces.append(rest)
    return pieces


def _split_section(block: Mapping[str, Any]) -> list[dict[str, Any]]:
    text = block.get("text")
    if block.get("type") != "section" or not isinstance(text, Mapping):
        return [dict(block)]
    body = text.get("text")
    if not isinstance(body, str) or len(body) <= MAX_SECTION_TEXT:
        return [dict(block)]
    out: list[dict[str, Any]] = []
    for i, piece in enumerate(split_text(body, MAX_SECTION_TEXT)):
        part: dict[str, Any] = dict(block) if i == 0 else {"type": "section"}
        part["text"] = {**text, "text": piece}
        if i > 0 and isinstance(block.get("block_id"), str):
            part["block_id"] = f"{block['block_id']}-{i}"[:255]
        out.append(part)
    return out


def split_blocks(
    blocks: Sequence[Mapping[str, Any]] | None, text: str = ""
) -> list[dict[str, Any]]:
    """Ordered ``{"blocks": [...], "text": ...}`` messages that each fit Slack's limits.

    Sections over 3,000 characters become consecutive sections; the blocks are then
    packed 50 to a message. ``text`` is every message's notification fallback, suffixed
    ``(i/n)`` when there is more than one. Without blocks, a ``text`` over 4,000
    characters is split into several text messages.
    """
    if not blocks:
        pieces = split_text(text, MAX_TEXT)
        return [{"text": piece} for piece in pieces]
    expanded = [part for block in blocks for part in _split_section(block)]
    groups = [expanded[i : i + MAX_BLOCKS] for i in range(0, len(expanded), MAX_BLOCKS)]
    n = len(groups)
    messages: list[dict[str, Any]] = []
    for i, group in enumerate(groups, start=1):
        fallback = text if n == 1 else f"{text} ({i}/{n})".strip()
        messages.append({"blocks": group, "text": fallback[:MAX_TEXT]})
    return messages


async def post_long(
    client: AsyncWebClient,
    *,
    channel: str,
    blocks: Sequence[Mapping[str, Any]] | None = None,
    text: str = "",
    thread_ts: str | None = None,
    rest_in_thread: bool = False,
    idempotency_key: str | None = None,
    **kwargs: Any,
) -> list[Any]:
    """Post a long digest as ordered messages; returns each ``chat.postMessage`` response.

    With ``thread_ts`` every part goes into that thread; with ``rest_in_thread`` the
    first part goes to the channel and the others into its thread. Part ``i`` carries
    the idempotency key ``f"{idempotency_key}:{i}"`` when a key is given.
    """
    responses: list[Any] = []
    target_thread = thread_ts
    for i, message in enumerate(split_blocks(blocks, text)):
        extra = dict(kwargs)
        if idempotency_key is not None:
            extra["idempotency_key"] = f"{idempotency_key}:{i}"
        if target_thread is not None:
            extra["thread_ts"] = target_thread
        response = await client.chat_postMessage(channel=channel, **message, **extra)
        responses.append(response)
        if rest_in_thread and target_thread is None:
            target_thread = str(response["ts"])
    return responses
