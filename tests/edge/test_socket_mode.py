"""Socket Mode intake against a loopback Socket Mode server: acks only after commit,
redeliveries not run twice, reconnects after disconnect frames and failures."""

from __future__ import annotations

import asyncio
import copy
import random
from collections.abc import AsyncIterator
from typing import Any

import pytest
from prometheus_client import CollectorRegistry

from controlroom.edge.shared import EdgeMetrics
from controlroom.edge.socket_mode import SocketModeIntake
from controlroom.envelope import Envelope
from controlroom.queue.base import AcceptResult, Backoff
from controlroom.queue.sqlite import SqliteQueue

from .conftest import Inline, fixture_json
from .fake_socket_slack import APP_TOKEN, FakeSocketSlack

SLASH = fixture_json(
    "slack/socket-mode/python-slack-sdk__socket_mode_envelopes.0.slash_commands.json"
)
EVENT = fixture_json("slack/socket-mode/python-slack-sdk__socket_mode_envelopes.1.events_api.json")
SHORTCUT = fixture_json(
    "slack/socket-mode/python-slack-sdk__socket_mode_envelopes.2.interactive.json"
)


class CommitTracker:
    """Delegates to the real SqliteQueue, slows every commit down a little and records
    which envelopes had been committed, so an ack can be checked against it."""

    def __init__(self, queue: SqliteQueue, delay: float = 0.2) -> None:
        self.queue = queue
        self.delay = delay
        self.committed: list[str] = []
        self.fail_next = 0

    async def accept(self, envelope: Envelope, *, dispatch: bool = True) -> AcceptResult:
        await asyncio.sleep(self.delay)
        if self.fail_next:
            self.fail_next -= 1
            raise OSError("disk unavailable")
        result = await self.queue.accept(envelope, dispatch=dispatch)
        self.committed.append(envelope.dedupe_key)
        return result

    def __getattr__(self, name: str) -> Any:
        return getattr(self.queue, name)


@pytest.fixture
async def slack() -> AsyncIterator[FakeSocketSlack]:
    fake = FakeSocketSlack()
    await fake.start()
    try:
        yield fake
    finally:
        await fake.close()


class Sleeps:
    def __init__(self) -> None:
        self.delays: list[float] = []

    async def __call__(self, delay: float) -> None:
        self.delays.append(delay)
        await asyncio.sleep(0)


async def make_intake(
    slack: FakeSocketSlack, queue: Any, **kwargs: Any
) -> AsyncIterator[SocketModeIntake]:
    intake = SocketModeIntake(APP_TOKEN, queue, api_url=slack.api_url, ping_interval=2.0, **kwargs)
    await intake.start()
    try:
        async with asyncio.timeout(10):
            await intake.wait_connected()
        yield intake
    finally:
        await intake.close()


def envelope(frame: dict[str, Any], envelope_id: str, **changes: Any) -> dict[str, Any]:
    out = copy.deepcopy(frame)
    out["envelope_id"] = envelope_id
    out.update(changes)
    return out


async def dispatched(queue: SqliteQueue) -> list[Envelope]:
    envs = []
    for job in await queue.list_jobs(task="dispatch"):
        assert job.envelope_id is not None
        env = await queue.get_envelope(job.envelope_id)
        assert env is not None
        envs.append(env)
    return envs


async def test_envelope_is_acked_only_after_it_was_committed(
    slack: FakeSocketSlack, queue: SqliteQueue
) -> None:
    tracker = CommitTracker(queue)
    slack.on_ack = lambda frame: list(tracker.committed)
    registry = CollectorRegistry()
    async for _ in make_intake(slack, tracker, metrics=EdgeMetrics(registry)):
        await slack.wait_for(lambda: len(slack.connections) == 1)
        await slack.send(EVENT)
        ack = await slack.next_ack()
        assert ack.frame == {"envelope_id": EVENT["envelope_id"]}
        assert ack.snapshot == ["Ev111"]  # committed before the ack left
        [env] = await dispatched(queue)
        assert (env.kind, env.transport, env.dedupe_key, env.retry_num) == (
            "event",
            "socket",
            "Ev111",
            0,
        )
        assert env.body == EVENT["payload"]
    assert (
        registry.get_sample_value(
            "controlroom_edge_requests_total", {"source": "socket", "outcome": "accepted"}
        )
        == 1
    )
    assert slack.authorizations == [f"Bearer {APP_TOKEN}"]


async def test_redelivered_envelope_is_acked_and_not_run_twice(
    slack: FakeSocketSlack, queue: SqliteQueue
) -> None:
    inline = Inline()

    async def answer(env: Envelope) -> dict[str, Any] | None:
        return None

    inline.handlers["event"] = answer
    async for _ in make_intake(slack, queue, inline=inline):
        await slack.wait_for(lambda: len(slack.connections) == 1)
        await slack.send(EVENT)
        await slack.next_ack()
        await slack.send(envelope(EVENT, "redelivery-1", retry_attempt=1, retry_reason="timeout"))
        ack = await slack.next_ack()
        assert ack.frame == {"envelope_id": "redelivery-1"}
    assert len(await dispatched(queue)) == 1
    assert len(inline.ran) == 1


async def test_first_seen_redelivery_records_its_retry_attempt(
    slack: FakeSocketSlack, queue: SqliteQueue
) -> None:
    async for _ in make_intake(slack, queue):
        await slack.wait_for(lambda: len(slack.connections) == 1)
        await slack.send(envelope(EVENT, "e-2", retry_attempt=2, retry_reason="timeout"))
        await slack.next_ack()
    [env] = await dispatched(queue)
    assert env.retry_num == 2


async def test_slash_command_ack_carries_the_inline_answer(
    slack: FakeSocketSlack, queue: SqliteQueue
) -> None:
    inline = Inline()

    async def reply(env: Envelope) -> dict[str, Any]:
        assert await queue.get_envelope(env.id) is not None  # runs after commit
        return {"response_type": "ephemeral", "text": "Deploying"}

    inline.handlers["command"] = reply
    inline.handlers["shortcut"] = reply
    async for _ in make_intake(slack, queue, inline=inline):
        await slack.wait_for(lambda: len(slack.connections) == 1)
        await slack.send(SLASH)
        ack = await slack.next_ack()
        assert ack.frame == {
            "envelope_id": SLASH["envelope_id"],
            "payload": {"response_type": "ephemeral", "text": "Deploying"},
        }
        # accepts_response_payload is false for this shortcut: a bare ack
        await slack.send(SHORTCUT)
        ack = await slack.next_ack()
        assert ack.frame == {"envelope_id": SHORTCUT["envelope_id"]}
    kinds = sorted(env.kind for env in await dispatched(queue))
    assert kinds == ["command", "shortcut"]


async def test_unparseable_envelope_is_acked_without_a_job(
    slack: FakeSocketSlack, queue: SqliteQueue
) -> None:
    registry = CollectorRegistry()
    async for _ in make_intake(slack, queue, metrics=EdgeMetrics(registry)):
        await slack.wait_for(lambda: len(slack.connections) == 1)
        await slack.send(
            {"envelope_id": "odd", "type": "events_api", "payload": {"type": "mystery"}}
        )
        ack = await slack.next_ack()
        assert ack.frame == {"envelope_id": "odd"}
    assert await dispatched(queue) == []
    assert (
        registry.get_sample_value(
            "controlroom_edge_rejections_total", {"source": "socket", "reason": "unknown_type"}
        )
        == 1
    )


async def test_envelope_whose_commit_failed_is_not_acked_and_is_taken_on_redelivery(
    slack: FakeSocketSlack, queue: SqliteQueue
) -> None:
    tracker = CommitTracker(queue, delay=0)
    tracker.fail_next = 1
    async for _ in make_intake(slack, tracker):
        await slack.wait_for(lambda: len(slack.connections) == 1)
        await slack.send(EVENT)  # commit fails: no ack
        await asyncio.sleep(0.1)
        await slack.send(SLASH)
        assert (await slack.next_ack()).frame["envelope_id"] == SLASH["envelope_id"]
        await slack.send(envelope(EVENT, "again", retry_attempt=1))
        assert (await slack.next_ack()).frame == {"envelope_id": "again"}
        assert slack.acks.empty()
    assert sorted(env.dedupe_key for env in await dispatched(queue)) == [
        "Ev111",
        "command:111.222.xxx",
    ]


async def test_disconnect_frame_makes_the_client_reconnect_with_a_new_url(
    slack: FakeSocketSlack, queue: SqliteQueue
) -> None:
    async for intake in make_intake(slack, queue):
        await slack.wait_for(lambda: len(slack.connections) == 1)
        await slack.send(
            {"type": "disconnect", "reason": "refresh_requested", "debug_info": {"host": "wss-1"}}
        )
        await slack.wait_for(lambda: slack.connected_total == 2 and len(slack.connections) == 1)
        assert slack.opens == 2
        await slack.send(EVENT)
        ack = await slack.next_ack()
        assert (ack.frame, ack.connection) == ({"envelope_id": EVENT["envelope_id"]}, 1)
        assert intake.clients[0].connects == 2
    assert len(await dispatched(queue)) == 1


async def test_failed_connection_attempts_back_off_and_ask_for_a_fresh_url(
    slack: FakeSocketSlack, queue: SqliteQueue
) -> None:
    slack.fail_opens = 2  # apps.connections.open answers ok: false twice
    slack.bad_url_opens = 3  # then hands out a URL nobody listens on
    sleeps = Sleeps()
    backoff = Backoff(base=0.5, cap=8.0)
    async for intake in make_intake(
        slack, queue, sleep=sleeps, backoff=backoff, rng=random.Random(7)
    ):
        await slack.wait_for(lambda: len(slack.connections) == 1)
        assert slack.opens == 4  # a fresh URL for every attempt
        assert intake.clients[0].failures == 3
    expected_rng = random.Random(7)
    assert sleeps.delays == [backoff.delay(n, expected_rng) for n in (1, 2, 3)]


async def test_several_connections_are_opened_and_all_deliver(
    slack: FakeSocketSlack, queue: SqliteQueue
) -> None:
    async for intake in make_intake(slack, queue, connections=3):
        await slack.wait_for(lambda: len(slack.connections) == 3)
        assert slack.opens == 3
        for n in range(3):
            await slack.send(
                envelope(EVENT, f"e{n}", payload={**EVENT["payload"], "event_id": f"Ev{n}"}), n
            )
        acks = sorted([(await slack.next_ack()).frame["envelope_id"] for _ in range(3)])
        assert acks == ["e0", "e1", "e2"]
        assert len(intake.clients) == 3
    assert len(await dispatched(queue)) == 3


@pytest.mark.parametrize("connections", [0, 11])
def test_connection_count_is_bounded_by_slacks_limit(connections: int) -> None:
    with pytest.raises(ValueError, match="1 to 10"):
        SocketModeIntake(APP_TOKEN, None, connections=connections)  # type: ignore[arg-type]


def test_an_app_level_token_is_required() -> None:
    with pytest.raises(ValueError, match="xapp"):
        SocketModeIntake("xoxb-123", None)  # type: ignore[arg-type]


async def test_close_stops_a_connection_that_is_still_retrying(
    slack: FakeSocketSlack, queue: SqliteQueue
) -> None:
    slack.fail_opens = 10_000
    sleeps = Sleeps()
    intake = SocketModeIntake(APP_TOKEN, queue, api_url=slack.api_url, sleep=sleeps)
    await intake.start()
    await slack.wait_for_opens(3)
    await intake.close()
    opens = slack.opens
    await asyncio.sleep(0.05)
    assert slack.opens == opens
    assert slack.connections == []
    assert len(sleeps.delays) >= 2


async def test_server_closing_the_socket_makes_the_client_reconnect(
    slack: FakeSocketSlack, queue: SqliteQueue
) -> None:
    async for intake in make_intake(slack, queue):
        await slack.wait_for(lambda: len(slack.connections) == 1)
        await slack.connections[0].close()
        await slack.wait_for(lambda: slack.connected_total == 2 and len(slack.connections) == 1)
        assert slack.opens == 2  # a fresh URL for the new session
        await slack.send(EVENT)
        assert (await slack.next_ack()).connection == 1
        assert intake.clients[0].connects == 2
