"""Helpers for the process-level tests: real ``controlroom`` processes on loopback ports,
signed Slack Events API requests, and readers for what the counting workflow recorded.

A process is started as ``python -c "from controlroom.cli import main; main()" <command>``
(what the ``controlroom`` console script runs) from the repository root, so that
``tests.e2e.counting_workflow`` is importable; its stdout and stderr go to files beside
the test's data (read them when a test fails: ``Proc.tail()``).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Awaitable, Callable, Iterable, Iterator
from dataclasses import dataclass, replace
from pathlib import Path

import httpx
import psycopg
from sqlalchemy import select
from sqlalchemy.exc import SQLAlchemyError

from controlroom.errors import QueueError
from controlroom.queue import open_queue
from controlroom.store.db import Database
from controlroom.store.state import state_table
from controlroom.testing import sign_slack_request

ROOT = Path(__file__).resolve().parents[2]
PG_ADMIN_URL = os.environ.get(
    "CONTROLROOM_TEST_PG_URL", "postgresql://postgres@127.0.0.1:5432/postgres"
)
SIGNING_SECRET = "proc-tests-" + "8f14e45fceea167a5a36dedd4bea2543"
SECRET_ENV = "CR_PROC_SIGNING_SECRET"
WORKFLOW = "tests.e2e.counting_workflow:workflow"
_URL = re.compile(r"http://127\.0\.0\.1:(\d+)")


# -- configuration and processes ---------------------------------------------------------


def write_config(
    directory: Path,
    *,
    database_url: str,
    run_log: Path,
    pause: float,
    lease_seconds: float,
    workers: int = 8,
) -> Path:
    """A ``controlroom.toml`` for the counting workflow; the signing secret is referenced
    from the environment (``env:CR_PROC_SIGNING_SECRET``), never written."""
    text = f"""\
data_dir = {json.dumps(str(directory / "data"))}
database_url = {json.dumps(database_url)}
log_level = "WARNING"
log_format = "json"

[server]
host = "127.0.0.1"
port = 0

[slack]
signing_secret = "env:{SECRET_ENV}"

[queue]
workers = {workers}
lease_seconds = {lease_seconds}
max_attempts = 10
backoff_base = 0.05
backoff_cap = 0.5

[sandbox]
enabled = "off"

[workflows]
enabled = [{json.dumps(WORKFLOW)}]

[workflows.counting]
run_log = {json.dumps(str(run_log))}
pause = {pause}
"""
    path = directory / "controlroom.toml"
    path.write_text(text, encoding="utf-8")
    return path


def _environment() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CONTROLROOM_")}
    env[SECRET_ENV] = SIGNING_SECRET
    env["PYTHONUNBUFFERED"] = "1"
    return env


class Proc:
    """One ``controlroom`` process; ``kill()`` is SIGKILL, ``stop()`` a clean SIGTERM."""

    def __init__(self, name: str, args: list[str], *, config: Path, logs: Path) -> None:
        logs.mkdir(parents=True, exist_ok=True)
        self.name = name
        self.out = logs / f"{name}.out"
        self.err = logs / f"{name}.err"
        with self.out.open("wb") as out, self.err.open("wb") as err:
            self.proc = subprocess.Popen(
                [
                    sys.executable,
                    "-c",
                    "from controlroom.cli import main; main()",
                    *args,
                    "--config",
                    str(config),
                ],
                cwd=ROOT,
                env=_environment(),
                stdout=out,
                stderr=err,
                stdin=subprocess.DEVNULL,
            )

    @property
    def pid(self) -> int:
        return self.proc.pid

    async def url(self, within: float = 30.0) -> str:
        """The base URL the process printed once it was listening."""
        deadline = time.monotonic() + within
        while time.monotonic() < deadline:
            match = _URL.search(self.out.read_text(errors="replace"))
            if match:
                return f"http://127.0.0.1:{match.group(1)}"
            if self.proc.poll() is not None:
                raise AssertionError(f"{self.name} exited ({self.proc.returncode}): {self.tail()}")
            await asyncio.sleep(0.05)
        raise AssertionError(f"{self.name} printed no URL within {within}s: {self.tail()}")

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(10)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)

    def tail(self, chars: int = 3000) -> str:
        text = ""
        for path in (self.out, self.err):
            if path.exists():
                text += f"\n--- {path.name}\n" + path.read_text(errors="replace")[-chars:]
        return text


class Procs:
    """Starts processes for one test and stops every one still running at the end."""

    def __init__(self, config: Path, logs: Path) -> None:
        self.config = config
        self.logs = logs
        self.started: list[Proc] = []
        self._n = 0

    def start(self, command: str, *extra: str) -> Proc:
        self._n += 1
        proc = Proc(
            f"{self._n:02d}-{command}", [command, *extra], config=self.config, logs=self.logs
        )
        self.started.append(proc)
        return proc

    def close(self) -> None:
        for proc in self.started:
            proc.stop()

    def tails(self) -> str:
        return "".join(p.tail(1500) for p in self.started)


# -- PostgreSQL --------------------------------------------------------------------------


@contextlib.contextmanager
def pg_database() -> Iterator[str]:
    """A fresh database ``cr_proc_<random>``, dropped (connections and all) afterwards."""
    name = f"cr_proc_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(PG_ADMIN_URL, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    try:
        yield PG_ADMIN_URL.rsplit("/", 1)[0] + "/" + name
    finally:
        with psycopg.connect(PG_ADMIN_URL, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


# -- Slack requests ----------------------------------------------------------------------


@dataclass(frozen=True)
class Delivery:
    """One HTTP delivery of an event: where, and whether it is a Slack retry."""

    url: str
    event_id: str
    body: bytes
    retry_num: int = 0
    timestamp: int | None = None  # signing time; None is "now"


def event_body(event_id: str, n: int) -> bytes:
    """A Slack Events API ``message`` callback with a unique ``event_id``."""
    now = time.time()
    return json.dumps(
        {
            "token": "unused-verification-token",
            "team_id": "T0PROCTEST",
            "api_app_id": "A0PROCTEST",
            "type": "event_callback",
            "event_id": event_id,
            "event_time": int(now),
            "authorizations": [{"team_id": "T0PROCTEST", "user_id": "U0BOT", "is_bot": True}],
            "event": {
                "type": "message",
                "channel": "C0PROCTEST",
                "user": "U0PRIYA",
                "text": f"load test message {n}",
                "ts": f"{now:.6f}",
                "event_ts": f"{now:.6f}",
                "channel_type": "channel",
            },
        },
        separators=(",", ":"),
    ).encode()


def event_ids(count: int) -> list[str]:
    tag = uuid.uuid4().hex[:8].upper()
    return [f"Ev{tag}{n:05d}" for n in range(count)]


async def deliver(client: httpx.AsyncClient, d: Delivery) -> int | None:
    """POST one signed delivery; the status, or None when no answer came back."""
    ts = int(time.time()) if d.timestamp is None else d.timestamp
    headers = {"Content-Type": "application/json", **sign_slack_request(d.body, SIGNING_SECRET, ts)}
    if d.retry_num:
        headers["X-Slack-Retry-Num"] = str(d.retry_num)
        headers["X-Slack-Retry-Reason"] = "http_timeout"
    try:
        resp = await client.post(f"{d.url}/slack/events", content=d.body, headers=headers)
    except httpx.TransportError:
        return None
    return resp.status_code


async def deliver_all(
    deliveries: Iterable[Delivery],
    *,
    concurrency: int,
    answers: list[tuple[Delivery, int | None]] | None = None,
    slack_retries: int = 0,
    on_answer: Callable[[], None] | None = None,
) -> list[tuple[Delivery, int | None]]:
    """Send every delivery with at most ``concurrency`` in flight; ``answers`` (shared
    with the caller) receives ``(delivery, final status)``, then ``on_answer()`` runs.

    With ``slack_retries``, a delivery answered with anything but 200 (a 503 when the
    store is out of connections, or no answer) is retried as Slack does: the same body,
    ``X-Slack-Retry-Num`` counting up, a later timestamp (so a new signature)."""
    out = [] if answers is None else answers
    pending = list(deliveries)
    pending.reverse()
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(timeout=15.0, limits=limits) as client:

        async def lane() -> None:
            while pending:
                d = pending.pop()
                status = await deliver(client, d)
                for attempt in range(1, slack_retries + 1):
                    if status == 200:
                        break
                    await asyncio.sleep(0.2 * attempt)
                    base = d.timestamp if d.timestamp is not None else int(time.time())
                    retry = replace(
                        d, retry_num=d.retry_num + attempt, timestamp=base + 10 * attempt
                    )
                    status = await deliver(client, retry)
                out.append((d, status))
                if on_answer is not None:
                    on_answer()

        await asyncio.gather(*(lane() for _ in range(concurrency)))
    return out


def acked(answers: Iterable[tuple[Delivery, int | None]]) -> set[str]:
    return {d.event_id for d, status in answers if status == 200}


# -- what was recorded -------------------------------------------------------------------


@dataclass(frozen=True)
class Run:
    event_id: str
    envelope_id: str
    pid: int
    first: bool


def runs(run_log: Path) -> list[Run]:
    """Every completed handler run, in order."""
    if not run_log.exists():
        return []
    out = []
    for line in run_log.read_text().splitlines():
        event_id, envelope_id, pid, first = line.split()
        out.append(Run(event_id, envelope_id, int(pid), first == "1"))
    return out


def processed(database_url: str) -> set[str]:
    """Event ids whose idempotent effect (the ``ran:<event_id>`` state row) exists."""
    db = Database(database_url)
    try:
        rows = db.run_sync(
            lambda conn: conn.execute(
                select(state_table.c.key).where(state_table.c.workflow == "counting")
            ).all()
        )
    finally:
        db.dispose()
    return {str(r[0]).removeprefix("once:ran:") for r in rows}


@dataclass(frozen=True)
class QueueView:
    inbox: dict[str, str]  # event_id -> envelope_id, for every stored envelope
    counts: dict[str, int]
    recovered: int  # jobs that ran again after their worker died


async def queue_view(database_url: str) -> QueueView:
    """The inbox and the jobs, through the queue API (what ``controlroom jobs`` reads)."""
    queue = open_queue(database_url)
    await queue.open()
    try:
        inbox: dict[str, str] = {}
        for job in await queue.list_jobs(task="dispatch", limit=10_000):
            envelope = await queue.get_envelope(str(job.args["envelope_id"]))
            assert envelope is not None, f"dispatch job {job.id} names a missing envelope"
            assert envelope.dedupe_key not in inbox, f"{envelope.dedupe_key} stored twice"
            inbox[envelope.dedupe_key] = envelope.id
        jobs = await queue.list_jobs(limit=10_000)
        recovered = sum(1 for j in jobs if j.attempts > 0)
        return QueueView(inbox, await queue.counts(), recovered)
    finally:
        await queue.close()


async def job_counts(database_url: str) -> dict[str, int]:
    queue = open_queue(database_url)
    await queue.open()
    try:
        return await queue.counts()
    finally:
        await queue.close()


async def settled(database_url: str, expected: set[str]) -> bool:
    """Every expected event's effect is recorded and no job is waiting or running."""
    if not processed(database_url) >= expected:
        return False
    counts = await job_counts(database_url)
    return counts["queued"] + counts["running"] + counts["failed"] == 0


async def wait_until(
    predicate: Callable[[], Awaitable[bool]], within: float, what: str, tails: Callable[[], str]
) -> None:
    """Poll ``predicate``; a store that refuses a connection for a moment (PostgreSQL
    shared with other tests can run out of connection slots) counts as "not yet"."""
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        try:
            if await predicate():
                return
        except (QueueError, SQLAlchemyError, psycopg.OperationalError):
            pass
        await asyncio.sleep(0.3)
    raise AssertionError(f"{what}: not within {within}s{tails()}")
