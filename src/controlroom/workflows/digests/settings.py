"""Choosing a summariser per digest from configuration.

[workflows.digests.summariser]          # or per digest
kind = "openai"                         # heuristic | openai | anthropic
base_url = "http://127.0.0.1:11434/v1"  # Ollama; default OpenAI / Anthropic
model = "llama3.1"
api_key = "env:OPENAI_API_KEY"          # a secret reference, never the key
redact = true
"""

from __future__ import annotations

from datetime import tzinfo
from typing import Literal

import httpx
from pydantic import BaseModel, ConfigDict, Field, model_validator

from controlroom.config import Secret, resolve_secret
from controlroom.errors import ConfigError, SecretError
from controlroom.workflows.digests.heuristic import HeuristicSummariser
from controlroom.workflows.digests.llm import AnthropicSummariser, OpenAICompatibleSummariser
from controlroom.workflows.digests.model import DEFAULT_NO_DIGEST_MARKER, Summariser

__all__ = ["SummariserSettings", "build_summariser"]

DEFAULT_BASE_URLS = {
    "openai": "https://api.openai.com/v1",
    "anthropic": "https://api.anthropic.com",
}


class SummariserSettings(BaseModel):
    """How one digest is summarised. ``api_key`` is a secret reference (``env:NAME``,
    ``file:/path``, ...), resolved by ``build_summariser``."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    kind: Literal["heuristic", "openai", "anthropic"] = "heuristic"
    base_url: str = ""
    model: str = ""
    api_key: str | None = None
    api_version: str | None = None
    auth: Literal["bearer", "api-key"] = "bearer"
    redact: bool = False
    max_input_tokens: int = Field(default=12_000, ge=500, le=2_000_000)
    timeout: float = Field(default=120.0, gt=0, le=600)
    no_digest_marker: str | None = DEFAULT_NO_DIGEST_MARKER

    @model_validator(mode="after")
    def _model_required(self) -> SummariserSettings:
        if self.kind != "heuristic" and not self.model:
            raise ValueError(f"model is required for the {self.kind} summariser")
        if self.base_url and not self.base_url.startswith(("https://", "http://")):
            raise ValueError("base_url must be an http(s) URL")
        return self


def build_summariser(
    settings: SummariserSettings,
    *,
    tz: tzinfo,
    http: httpx.AsyncClient,
    allow_plaintext_secrets: bool = False,
    key_path: str = "workflows.digests.summariser",
) -> Summariser:
    """The summariser ``settings`` describe. Raises ``ConfigError`` naming the key when
    the API key reference cannot be resolved."""
    if settings.kind == "heuristic":
        return HeuristicSummariser(tz, no_digest_marker=settings.no_digest_marker)
    api_key: Secret | None = None
    if settings.api_key:
        try:
            api_key = resolve_secret(settings.api_key, allow_plain=allow_plaintext_secrets)
        except SecretError as exc:
            raise ConfigError([(f"{key_path}.api_key", "digest settings", str(exc))]) from None
    base_url = settings.base_url or DEFAULT_BASE_URLS[settings.kind]
    if settings.kind == "openai":
        return OpenAICompatibleSummariser(
            base_url,
            settings.model,
            api_key,
            http,
            tz=tz,
            redact=settings.redact,
            max_input_tokens=settings.max_input_tokens,
            timeout=settings.timeout,
            no_digest_marker=settings.no_digest_marker,
            api_version=settings.api_version,
            auth=settings.auth,
        )
    return AnthropicSummariser(
        base_url,
        settings.model,
        api_key,
        http,
        tz=tz,
        redact=settings.redact,
        max_input_tokens=settings.max_input_tokens,
        timeout=settings.timeout,
        no_digest_marker=settings.no_digest_marker,
    )
