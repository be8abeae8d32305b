"""Digests: the decisions, action items and open questions of busy channels.

This package decides what a digest says (summarisers, grounding, carry-forward) and how
it looks (Block Kit). The Slack wiring (events, backfill, schedules, posting through the
rate gate) lives elsewhere and calls:

    result = await summarise_with_fallback(primary, messages, fallback=HeuristicSummariser(tz))
    carried = carry_forward(previous_open_items, result.items, messages)
    messages = render_digest_messages(replace(result, items=carried.items), permalink=...)

The wiring is ``controlroom.workflows.digests.workflow`` (handlers, ``[workflows.digests]``
in ``config``), with ``runner`` (history, building, posting) and ``store`` (tables).
"""

from __future__ import annotations

from controlroom.workflows.digests.carry import CarryForward, carry_forward, is_resolved
from controlroom.workflows.digests.heuristic import HeuristicSummariser, summarise_heuristic
from controlroom.workflows.digests.llm import (
    AnthropicSummariser,
    OpenAICompatibleSummariser,
    redact_pii,
    summarise_with_fallback,
)
from controlroom.workflows.digests.model import (
    DEFAULT_NO_DIGEST_MARKER,
    Coverage,
    DigestItem,
    DigestResult,
    Message,
    Summariser,
    SummariserError,
    SummariserHTTPError,
    SummariserOutputError,
    message_id,
    split_message_id,
)
from controlroom.workflows.digests.render import (
    RenderedMessage,
    archive_permalink,
    fallback_text,
    render_digest,
    render_digest_messages,
)
from controlroom.workflows.digests.settings import SummariserSettings, build_summariser

__all__ = [
    "DEFAULT_NO_DIGEST_MARKER",
    "AnthropicSummariser",
    "CarryForward",
    "Coverage",
    "DigestItem",
    "DigestResult",
    "HeuristicSummariser",
    "Message",
    "OpenAICompatibleSummariser",
    "RenderedMessage",
    "Summariser",
    "SummariserError",
    "SummariserHTTPError",
    "SummariserOutputError",
    "SummariserSettings",
    "archive_permalink",
    "build_summariser",
    "carry_forward",
    "fallback_text",
    "is_resolved",
    "message_id",
    "redact_pii",
    "render_digest",
    "render_digest_messages",
    "split_message_id",
    "summarise_heuristic",
    "summarise_with_fallback",
]
