from __future__ import annotations

from pathlib import Path
from zoneinfo import ZoneInfo

import httpx
import pytest
from pydantic import ValidationError

import controlroom.workflows.digests as digests
from controlroom.errors import ConfigError
from controlroom.workflows.digests import (
    AnthropicSummariser,
    HeuristicSummariser,
    OpenAICompatibleSummariser,
    SummariserSettings,
    build_summariser,
)

TZ = ZoneInfo("Europe/Paris")


def test_the_package_exports_exactly_the_curated_api() -> None:
    assert sorted(digests.__all__) == sorted(
        [
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
    )
    for name in digests.__all__:
        assert getattr(digests, name) is not None


async def test_default_is_the_heuristic() -> None:
    async with httpx.AsyncClient() as http:
        s = build_summariser(SummariserSettings(), tz=TZ, http=http)
    assert isinstance(s, HeuristicSummariser) and s.tz is TZ


async def test_openai_settings_resolve_the_key_reference(tmp_path: Path) -> None:
    key = tmp_path / "key"
    key.write_text("sk-from-file\n")
    settings = SummariserSettings(
        kind="openai",
        model="gpt-4o",
        api_key=f"file:{key}",
        redact=True,
        base_url="https://res.openai.azure.com/openai/deployments/d",
        api_version="2024-10-21",
        auth="api-key",
    )
    async with httpx.AsyncClient() as http:
        s = build_summariser(settings, tz=TZ, http=http)
    assert isinstance(s, OpenAICompatibleSummariser)
    assert s.api_key is not None and s.api_key.get() == "sk-from-file"
    assert (s.redact, s.api_version, s.auth) == (True, "2024-10-21", "api-key")
    assert "sk-from-file" not in repr(s.api_key)


async def test_anthropic_defaults_to_the_public_endpoint() -> None:
    async with httpx.AsyncClient() as http:
        s = build_summariser(
            SummariserSettings(kind="anthropic", model="claude-x"), tz=TZ, http=http
        )
    assert isinstance(s, AnthropicSummariser)
    assert (s.base_url, s.api_key) == ("https://api.anthropic.com", None)


async def test_a_plain_text_key_is_refused_with_the_config_key() -> None:
    settings = SummariserSettings(kind="openai", model="gpt-4o", api_key="sk-plain-in-config")
    async with httpx.AsyncClient() as http:
        with pytest.raises(ConfigError) as info:
            build_summariser(settings, tz=TZ, http=http)
    assert info.value.problems[0][0] == "workflows.digests.summariser.api_key"
    assert "sk-plain-in-config" not in str(info.value)


@pytest.mark.parametrize(
    "bad",
    [
        {"kind": "openai"},
        {"kind": "gemini", "model": "x"},
        {"kind": "openai", "model": "m", "base_url": "ftp://x"},
        {"max_input_tokens": 10},
        {"surprise": True},
    ],
)
def test_invalid_settings_are_rejected(bad: dict[str, object]) -> None:
    with pytest.raises(ValidationError):
        SummariserSettings.model_validate(bad)
