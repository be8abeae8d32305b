"""The gate backends share one contract: the in-memory one and the PostgreSQL one."""

from __future__ import annotations

import asyncio
import contextlib
import os
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import psycopg
import pytest

from controlroom.slack.gate import (
    Bucket,
    GateBackend,
    MemoryGateBackend,
    RateGate,
)
from controlroom.slack.gate_pg import PostgresGateBackend, gate_for_database

PG_URL = os.environ.get("CONTROLROOM_TEST_PG_URL", "postgresql://postgres@127.0.0.1:5432/postgres")

WINDOW = Bucket("m|T1|conversations.list", "window", 10.0, 3.0)
CHANNEL = Bucket("c|T1|C1", "gcra", 1.0, 1.0)
COOL = Bucket.cooldown("x|T1|conversations.list")


@contextlib.asynccontextmanager
async def temp_database() -> AsyncIterator[str]:
    name = f"cr_slack_{uuid.uuid4().hex[:10]}"
    async with await psycopg.AsyncConnection.connect(PG_URL, autocommit=True) as admin:
        await admin.execute(f'CREATE DATABASE "{name}"')
    try:
        yield PG_URL.rsplit("/", 1)[0] + "/" + name
    finally:
        async with await psycopg.AsyncConnection.connect(PG_URL, autocommit=True) as admin:
            await admin.execute(f'DROP DATABASE "{name}" WITH (FORCE)')


@pytest.fixture
async def pg_url() -> AsyncIterator[str]:
    async with temp_database() as url:
        yield url


Factory = Callable[[], Awaitable[GateBackend]]


@pytest.fixture(params=["memory", pytest.param("postgres", marks=pytest.mark.postgres)])
async def factory(request: pytest.FixtureRequest) -> AsyncIterator[Factory]:
    opened: list[GateBackend] = []
    if request.param == "memory":
        shared = MemoryGateBackend()

        async def make_memory() -> GateBackend:
            return shared

        yield make_memory
        return
    async with temp_database() as url:

        async def make() -> GateBackend:
            backend = await PostgresGateBackend(url).open()
            opened.append(backend)
            return backend

        try:
            yield make
        finally:
            for backend in opened:
                await backend.aclose()


async def test_a_window_lets_its_count_go_then_books_the_next_slot_after_the_window(
    factory: Factory,
) -> None:
    backend = await factory()
    got = [await backend.reserve([WINDOW, COOL], 100.0, None) for _ in range(4)]
    assert [r.at for r in got] == [100.0, 100.0, 100.0, 110.0]
    assert all(r.booked for r in got)


async def test_max_wait_refuses_without_booking(factory: Factory) -> None:
    backend = await factory()
    for _ in range(3):
        await backend.reserve([WINDOW], 100.0, 1.0)
    refused = await backend.reserve([WINDOW], 100.0, 1.0)
    assert (refused.booked, refused.wait) == (False, 10.0)
    [(_, state)] = await backend.rows("m|T1|conversations.list")
    assert state.log == (100.0, 100.0, 100.0)


async def test_settle_restamps_and_confirm_moves_a_woken_call_later(factory: Factory) -> None:
    backend = await factory()
    for _ in range(3):
        await backend.reserve([WINDOW], 100.0, None)
    late = await backend.reserve([WINDOW], 100.0, None)
    assert late.at == 110.0
    # The three calls were answered at 100.5: Slack may have seen them that late.
    for _ in range(3):
        await backend.settle([WINDOW], 100.0, 100.5)
    assert await backend.confirm([WINDOW], 110.0, 110.0) == 110.5
    [(_, state)] = await backend.rows("m|T1|conversations.list")
    assert state.log == (100.5, 100.5, 100.5, 110.5)


async def test_a_cooldown_holds_every_reservation_and_confirmation(factory: Factory) -> None:
    backend = await factory()
    await backend.cool(COOL.key, 130.0)
    assert (await backend.reserve([WINDOW, COOL], 100.0, None)).at == 130.0
    await backend.cool(COOL.key, 140.0)
    assert await backend.confirm([WINDOW, COOL], 130.0, 130.0) == 140.0


async def test_token_bucket_state_round_trips(factory: Factory) -> None:
    backend = await factory()
    got = [(await backend.reserve([CHANNEL], 50.0, None)).at for _ in range(4)]
    assert got == [50.0, 50.0, 51.0, 52.0]
    rows = dict((b.key, (b, s)) for b, s in await backend.rows())
    bucket, state = rows["c|T1|C1"]
    assert (bucket.kind, bucket.period, bucket.size, state.tat) == ("gcra", 1.0, 1.0, 54.0)


@pytest.mark.postgres
async def test_workers_sharing_postgres_never_overbook_a_bucket(pg_url: str) -> None:
    workers = [await PostgresGateBackend(pg_url, max_size=2).open() for _ in range(4)]
    booked: list[float] = []

    async def worker(backend: PostgresGateBackend) -> None:
        for _ in range(15):
            res = await backend.reserve([WINDOW, CHANNEL], 0.0, None)
            booked.append(res.at)

    try:
        await asyncio.gather(*(worker(w) for w in workers))
    finally:
        for w in workers:
            await w.aclose()
    times = sorted(booked)
    assert len(times) == 60
    # window: at most 3 in any 10 s; channel: burst 2 then one per second
    assert all(times[i + 3] - times[i] >= 10.0 for i in range(len(times) - 3))
    tat = float("-inf")
    for t in times:
        assert t >= tat - 1.0
        tat = max(tat, t) + 1.0
    assert times[:6] == [0.0, 0.0, 1.0, 10.0, 10.0, 11.0]


async def test_the_gate_works_on_either_backend(factory: Factory) -> None:
    now = [0.0]

    async def sleep(seconds: float) -> None:
        now[0] += seconds

    gate = RateGate(await factory(), clock=lambda: now[0], sleep=sleep, safety=0.0, max_wait=100.0)
    for _ in range(20):
        await gate.wait("T1", "conversations.create")
    slot = await gate.acquire("T1", "conversations.create")
    assert slot.waited == pytest.approx(60.0)
    await gate.settle(slot, done=61.0)
    snapshot: list[Any] = await gate.limits_snapshot("T1")
    [row] = [s for s in snapshot if s.method == "conversations.create"]
    assert row.per_minute == pytest.approx(20.0)


def test_the_database_url_chooses_the_backend() -> None:
    assert isinstance(gate_for_database(None).backend, MemoryGateBackend)
    assert isinstance(gate_for_database("sqlite:///var/cr.db").backend, MemoryGateBackend)
    shared = gate_for_database("postgresql+psycopg://postgres@127.0.0.1/cr", max_wait=5.0)
    assert isinstance(shared.backend, PostgresGateBackend)
    assert shared.max_wait == 5.0
    assert shared.backend.url == "postgresql://postgres@127.0.0.1/cr"


@pytest.mark.postgres
async def test_workers_starting_at_once_create_the_table_once(pg_url: str) -> None:
    backends = [PostgresGateBackend(pg_url) for _ in range(3)]
    try:
        results = await asyncio.gather(
            *(b.reserve([CHANNEL], 0.0, None) for b in backends for _ in range(2))
        )
    finally:
        for b in backends:
            await b.aclose()
    assert sorted(r.at for r in results) == [0.0, 0.0, 1.0, 2.0, 3.0, 4.0]
