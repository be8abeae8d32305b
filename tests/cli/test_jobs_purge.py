"""``controlroom jobs purge``: the operator's way to apply the inbox retention now."""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from pathlib import Path

from typer.testing import CliRunner

from controlroom.cli import app
from controlroom.envelope import Envelope
from controlroom.errors import PermanentError
from controlroom.queue import SqliteQueue
from controlroom.queue.base import JobInfo
from tests.queue.conftest import FakeClock

DAY = 86400.0
runner = CliRunner()


@dataclass(frozen=True)
class Seeded:
    quiet: Envelope  # 10 days old, no job: goes
    done: Envelope  # 10 days old, its job succeeded 10 days ago: goes, with its job
    dead: Envelope  # 10 days old, its job is a dead letter: stays
    recent: Envelope  # 2 days old: stays


def _envelope(key: str, received_at: float) -> Envelope:
    return Envelope(
        kind="webhook", source="hook:ci", body={}, dedupe_key=key, received_at=received_at
    )


async def _seed(db: Path) -> Seeded:
    clock = FakeClock(time.time() - 10 * DAY)
    seeded = Seeded(
        quiet=_envelope("quiet", clock.now),
        done=_envelope("done", clock.now),
        dead=_envelope("dead", clock.now),
        recent=_envelope("recent", time.time() - 2 * DAY),
    )
    async with SqliteQueue(db, clock=clock) as q:

        async def dispatch(job: JobInfo) -> None:
            if job.args["envelope_id"] == seeded.dead.id:
                raise PermanentError("no handler could take it")

        q.register("dispatch", dispatch)
        await q.accept(seeded.quiet, dispatch=False)
        await q.accept(seeded.done)
        await q.accept(seeded.dead)
        await q.accept(seeded.recent, dispatch=False)
        while await q.run_one() is not None:
            pass
        assert (await q.counts())["dead"] == 1
    return seeded


async def _stored(db: Path, seeded: Seeded) -> dict[str, bool]:
    async with SqliteQueue(db) as q:
        return {
            name: await q.get_envelope(env.id) is not None for name, env in vars(seeded).items()
        }


def test_jobs_purge_deletes_old_finished_envelopes_and_jobs_and_keeps_dead_letters(
    tmp_path: Path,
) -> None:
    config = tmp_path / "controlroom.toml"
    config.write_text(f'data_dir = "{tmp_path / "data"}"\n')
    db = tmp_path / "data" / "controlroom.db"
    seeded = asyncio.run(_seed(db))

    result = runner.invoke(app, ["jobs", "purge", "--config", str(config)])

    assert result.exit_code == 0, result.output
    assert "purged 2 envelope(s) and 1 finished job(s) older than 7d" in result.output
    assert asyncio.run(_stored(db, seeded)) == {
        "quiet": False,
        "done": False,
        "dead": True,
        "recent": True,
    }
    again = runner.invoke(app, ["jobs", "purge", "--older-than", "1d", "--config", str(config)])
    assert again.exit_code == 0, again.output
    assert "purged 1 envelope(s) and 0 finished job(s) older than 1d" in again.output
    assert asyncio.run(_stored(db, seeded))["recent"] is False


def test_jobs_purge_refuses_an_age_under_a_day_and_a_non_duration(tmp_path: Path) -> None:
    config = tmp_path / "controlroom.toml"
    config.write_text(f'data_dir = "{tmp_path / "data"}"\n')
    env = {"COLUMNS": "200"}
    short = runner.invoke(
        app, ["jobs", "purge", "--older-than", "12h", "--config", str(config)], env=env
    )
    assert short.exit_code == 2
    assert "at least 1d" in short.output and "Slack retries" in short.output
    garbled = runner.invoke(
        app, ["jobs", "purge", "--older-than", "a week", "--config", str(config)], env=env
    )
    assert garbled.exit_code == 2 and "not a duration" in garbled.output
