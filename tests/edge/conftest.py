"""Shared pieces for the edge tests: a settable clock, a real SqliteQueue, the edge app
over httpx.ASGITransport, and signed-request helpers."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
from prometheus_client import CollectorRegistry
from starlette.applications import Starlette

from controlroom.config import HookSource, Secret, ServerSettings, Settings, SlackSettings
from controlroom.edge.http import EdgeMetrics, edge_routes
from controlroom.edge.replay import MemoryReplayCache, ReplayCache
from controlroom.edge.shared import InlineHandler
from controlroom.edge.signing import sign_hook, sign_slack
from controlroom.envelope import Envelope
from controlroom.queue.base import JobInfo
from controlroom.queue.sqlite import SqliteQueue

FIXTURES = Path(__file__).parent.parent / "fixtures" / "edge"
SLACK_SECRET = "slack-signing-secret-for-tests"
GITHUB_SECRET = "github-secret-now"
GITHUB_OLD_SECRET = "github-secret-before"
GITLAB_TOKEN = "gitlab-token-now"
JENKINS_SECRET = "jenkins-secret-now"
GENERIC_SECRET = "generic-secret-now"
GENERIC_OLD_SECRET = "generic-secret-before"
NOW = 1_800_000_000.0


def fixture_bytes(relative: str) -> bytes:
    return (FIXTURES / relative).read_bytes()


def fixture_json(relative: str) -> dict[str, Any]:
    data: dict[str, Any] = json.loads(fixture_bytes(relative))
    return data


class Clock:
    """A clock the test sets."""

    def __init__(self, now: float = NOW) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def edge_app(
    queue: SqliteQueue,
    *,
    replay: ReplayCache | None = None,
    clock: Callable[[], float] = lambda: NOW,
) -> Starlette:
    """The intake routes alone, with default settings and no inline handlers."""
    return Starlette(
        routes=edge_routes(
            make_settings(),
            queue,
            replay=replay if replay is not None else MemoryReplayCache(),
            inline=None,
            metrics=EdgeMetrics(CollectorRegistry()),
            clock=clock,
        )
    )


def make_settings(**server: Any) -> Settings:
    return Settings(
        server=ServerSettings(**server),
        slack=SlackSettings(signing_secret=Secret(SLACK_SECRET)),
        hooks={
            "gh": HookSource(
                provider="github",
                secret=Secret(GITHUB_SECRET),
                previous_secret=Secret(GITHUB_OLD_SECRET),
            ),
            "gl": HookSource(provider="gitlab", secret=Secret(GITLAB_TOKEN)),
            "ci": HookSource(provider="jenkins", secret=Secret(JENKINS_SECRET)),
            "crm": HookSource(
                provider="generic",
                secret=Secret(GENERIC_SECRET),
                previous_secret=Secret(GENERIC_OLD_SECRET),
            ),
        },
    )


def slack_headers(
    body: bytes, ts: float = NOW, content_type: str = "application/json", **extra: str
) -> dict[str, str]:
    headers = sign_slack(SLACK_SECRET, body, int(ts))
    headers["Content-Type"] = content_type
    headers.update(extra)
    return headers


def hook_headers(secret: str, body: bytes, ts: float = NOW, **extra: str) -> dict[str, str]:
    headers = {
        "Content-Type": "application/json",
        "X-ControlRoom-Signature": sign_hook(secret, body, int(ts)),
    }
    headers.update(extra)
    return headers


@dataclass
class Inline:
    """An inline registry answering by envelope kind, recording what it ran."""

    handlers: dict[str, InlineHandler] = field(default_factory=dict)
    ran: list[Envelope] = field(default_factory=list)
    #: envelope kinds no durable handler wants (committed without a dispatch job)
    undispatched: set[str] = field(default_factory=set)

    def needs_dispatch(self, envelope: Envelope) -> bool:
        return envelope.kind not in self.undispatched

    def find(self, envelope: Envelope) -> InlineHandler | None:
        handler = self.handlers.get(envelope.kind)
        if handler is None:
            return None

        async def run(env: Envelope) -> dict[str, Any] | None:
            self.ran.append(env)
            return await handler(env)

        return run


@dataclass
class Edge:
    client: httpx.AsyncClient
    queue: SqliteQueue
    clock: Clock
    registry: CollectorRegistry
    inline: Inline

    async def dispatch_jobs(self) -> list[JobInfo]:
        return await self.queue.list_jobs(task="dispatch", limit=1000)

    async def envelopes(self) -> list[Envelope]:
        out = []
        for job in await self.dispatch_jobs():
            assert job.envelope_id is not None
            env = await self.queue.get_envelope(job.envelope_id)
            assert env is not None
            out.append(env)
        return out

    def metric(self, name: str, **labels: str) -> float:
        value = self.registry.get_sample_value(name, labels)
        return 0.0 if value is None else value


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
async def queue(tmp_path: Path) -> AsyncIterator[SqliteQueue]:
    q = SqliteQueue(tmp_path / "queue.db")
    await q.open()
    try:
        yield q
    finally:
        await q.close()


@pytest.fixture
async def edge(queue: SqliteQueue, clock: Clock) -> AsyncIterator[Edge]:
    registry = CollectorRegistry()
    inline = Inline()
    app = Starlette(
        routes=edge_routes(
            make_settings(max_body_bytes=256 * 1024),
            queue,
            replay=MemoryReplayCache(),
            inline=inline,
            metrics=EdgeMetrics(registry),
            clock=clock,
            inline_budget=0.5,
        )
    )
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://edge.test") as client:
        yield Edge(client, queue, clock, registry, inline)
