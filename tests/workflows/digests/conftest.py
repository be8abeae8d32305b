"""Helpers for digest tests: a message factory on a fixed clock, and a fake LLM
provider (a Starlette app serving OpenAI's and Anthropic's real response shapes) run
by uvicorn on a loopback port."""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import pytest
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from controlroom.workflows.digests.model import Message

# Tuesday 1 December 2026, 09:00 UTC.
T0 = datetime(2026, 12, 1, 9, 0, tzinfo=UTC).timestamp()
CHANNEL = "C0DIGEST"


def ts_at(minutes: float, seq: int = 0) -> str:
    return f"{int(T0 + minutes * 60)}.{seq:06d}"


class MessageFactory:
    """``make(minute, user, text, thread=<root Message>, ...)`` on the fixed clock."""

    def __init__(self) -> None:
        self.seq = 0

    def __call__(
        self,
        minute: float,
        user: str | None,
        text: str,
        *,
        thread: Message | None = None,
        channel: str = CHANNEL,
        reactions: tuple[str, ...] = (),
        bot: bool = False,
        subtype: str | None = None,
        edited_at: float | None = None,
        ts: str | None = None,
    ) -> Message:
        self.seq += 1
        return Message(
            channel=channel,
            ts=ts or ts_at(minute, self.seq),
            user=user,
            text=text,
            thread_ts=thread.ts if thread is not None else None,
            edited_ts=ts_at(edited_at) if edited_at is not None else None,
            reactions=reactions,
            bot_id="B0BOT" if bot else None,
            subtype=subtype or ("bot_message" if bot else None),
        )


@pytest.fixture
def make() -> MessageFactory:
    return MessageFactory()


# --- fake LLM providers --------------------------------------------------------------

ModelFn = Callable[[str, str], Any]


@dataclass
class FakeProvider:
    """What the fake model answers (``model(system, user) -> items``), or a canned raw
    answer/status; every request is recorded."""

    base_url: str = ""
    model: ModelFn = lambda system, user: []
    raw_content: str | None = None
    raw_tool_input: Any = None
    status: int = 200
    requests: list[dict[str, Any]] = field(default_factory=list)

    def user_text(self, n: int = 0) -> str:
        body = self.requests[n]["json"]
        if "system" in body:  # Anthropic
            return str(body["messages"][0]["content"][0]["text"])
        return str(body["messages"][1]["content"])

    def sent_messages(self, n: int = 0) -> list[dict[str, Any]]:
        m = re.search(r"<messages>\n(.*)\n</messages>", self.user_text(n), re.S)
        assert m is not None
        data: list[dict[str, Any]] = json.loads(m.group(1))
        return data


def _openai_completion(content: str) -> dict[str, Any]:
    """The shape of an OpenAI chat.completion object."""
    return {
        "id": "chatcmpl-B9MBs8CjcvOU2jLn4n570S5qMJKcT",
        "object": "chat.completion",
        "created": 1764576000,
        "model": "gpt-4o-2024-08-06",
        "choices": [
            {
                "index": 0,
                "message": {
                    "role": "assistant",
                    "content": content,
                    "refusal": None,
                    "annotations": [],
                },
                "logprobs": None,
                "finish_reason": "stop",
            }
        ],
        "usage": {
            "prompt_tokens": 812,
            "completion_tokens": 96,
            "total_tokens": 908,
            "prompt_tokens_details": {"cached_tokens": 0, "audio_tokens": 0},
            "completion_tokens_details": {
                "reasoning_tokens": 0,
                "audio_tokens": 0,
                "accepted_prediction_tokens": 0,
                "rejected_prediction_tokens": 0,
            },
        },
        "service_tier": "default",
        "system_fingerprint": "fp_50cad350e4",
    }


def _anthropic_message(tool_input: Any) -> dict[str, Any]:
    """The shape of an Anthropic Messages API response with a forced tool call."""
    return {
        "id": "msg_01Aq9w938a90dw8q",
        "type": "message",
        "role": "assistant",
        "model": "claude-sonnet-4-5-20250929",
        "content": [
            {
                "type": "tool_use",
                "id": "toolu_01A09q90qw90lq917835lq9",
                "name": "record_digest_items",
                "input": tool_input,
            }
        ],
        "stop_reason": "tool_use",
        "stop_sequence": None,
        "usage": {
            "input_tokens": 812,
            "output_tokens": 96,
            "cache_creation_input_tokens": 0,
            "cache_read_input_tokens": 0,
        },
    }


def fake_provider_app(state: FakeProvider) -> Starlette:
    async def record(request: Request) -> dict[str, Any]:
        body = await request.json()
        state.requests.append(
            {
                "path": request.url.path,
                "query": dict(request.query_params),
                "headers": dict(request.headers),
                "json": body,
            }
        )
        return dict(body)

    async def chat(request: Request) -> Response:
        body = await record(request)
        if state.status != 200:
            return JSONResponse(
                {
                    "error": {
                        "message": "The server had an error while processing your request.",
                        "type": "server_error",
                        "param": None,
                        "code": None,
                    }
                },
                status_code=state.status,
            )
        if state.raw_content is not None:
            return JSONResponse(_openai_completion(state.raw_content))
        items = state.model(body["messages"][0]["content"], body["messages"][1]["content"])
        return JSONResponse(_openai_completion(json.dumps({"items": items})))

    async def messages(request: Request) -> Response:
        body = await record(request)
        if state.status != 200:
            return JSONResponse(
                {
                    "type": "error",
                    "error": {"type": "api_error", "message": "Internal server error"},
                },
                status_code=state.status,
            )
        if state.raw_tool_input is not None:
            return JSONResponse(_anthropic_message(state.raw_tool_input))
        items = state.model(body["system"], body["messages"][0]["content"][0]["text"])
        return JSONResponse(_anthropic_message({"items": items}))

    return Starlette(
        routes=[
            Route("/v1/chat/completions", chat, methods=["POST"]),
            Route("/openai/deployments/{dep}/chat/completions", chat, methods=["POST"]),
            Route("/v1/messages", messages, methods=["POST"]),
        ]
    )


@pytest.fixture
async def fake_provider() -> AsyncIterator[FakeProvider]:
    state = FakeProvider()
    config = uvicorn.Config(
        fake_provider_app(state),
        host="127.0.0.1",
        port=0,
        log_level="warning",
        lifespan="off",
        access_log=False,
    )
    server = uvicorn.Server(config)
    task = asyncio.create_task(server.serve())
    while not server.started:
        await asyncio.sleep(0.01)
        if task.done():
            task.result()
    port = server.servers[0].sockets[0].getsockname()[1]
    state.base_url = f"http://127.0.0.1:{port}"
    try:
        yield state
    finally:
        server.should_exit = True
        await task
