"""The operator's commands: check and jobs."""

from __future__ import annotations

import asyncio
from pathlib import Path

from typer.testing import CliRunner

from controlroom import Workflow
from controlroom.cli import app
from controlroom.errors import PermanentError
from controlroom.queue import SqliteQueue
from controlroom.queue.base import JobInfo

runner = CliRunner()
demo = Workflow("demo", scopes=["chat:write"])


def config(tmp_path: Path, extra: str = "") -> Path:
    path = tmp_path / "controlroom.toml"
    path.write_text(f'data_dir = "{tmp_path / "data"}"\n{extra}')
    return path


def test_check_accepts_a_valid_file_and_names_the_workflows(tmp_path: Path) -> None:
    path = config(tmp_path, '[workflows]\nenabled = ["tests.core.test_cli:demo"]\n')
    result = runner.invoke(app, ["check", "--config", str(path)])
    assert result.exit_code == 0, result.output
    assert "configuration is valid" in result.output
    assert "workflows: demo" in result.output


def test_check_lists_every_problem_with_key_and_source(tmp_path: Path) -> None:
    path = config(
        tmp_path,
        '[server]\nport = 70000\n[slack]\nsigning_secret = "env:CR_TEST_UNSET_SECRET"\n',
    )
    result = runner.invoke(app, ["check", "--config", str(path)], env={"COLUMNS": "200"})
    assert result.exit_code == 2
    assert "slack.signing_secret" in result.output and "not set" in result.output
    assert str(path) in result.output


def test_check_names_an_unknown_workflow(tmp_path: Path) -> None:
    path = config(tmp_path, '[workflows]\nenabled = ["no_such_workflow"]\n')
    result = runner.invoke(app, ["check", "--config", str(path)], env={"COLUMNS": "200"})
    assert result.exit_code == 2
    assert "unknown workflow 'no_such_workflow'" in result.output


async def _dead_letter(db: Path) -> str:
    q = SqliteQueue(db)
    await q.open()

    async def boom(job: JobInfo) -> None:
        raise PermanentError("the CI server said 404")

    q.register("flaky", boom)
    job_id = await q.enqueue("flaky", {"n": 1})
    assert job_id is not None
    await q.run_one()
    await q.close()
    return job_id


def test_jobs_list_show_and_retry_a_dead_letter(tmp_path: Path) -> None:
    path = config(tmp_path)
    job_id = asyncio.run(_dead_letter(tmp_path / "data" / "controlroom.db"))
    env = {"COLUMNS": "200"}
    listed = runner.invoke(
        app, ["jobs", "list", "--config", str(path), "--status", "dead"], env=env
    )
    assert listed.exit_code == 0, listed.output
    assert job_id[:12] in listed.output and "flaky" in listed.output
    shown = runner.invoke(app, ["jobs", "show", job_id, "--config", str(path)], env=env)
    assert shown.exit_code == 0 and "the CI server said 404" in shown.output
    retried = runner.invoke(app, ["jobs", "retry", job_id, "--config", str(path)])
    assert retried.exit_code == 0 and "queued again" in retried.output
    again = runner.invoke(app, ["jobs", "retry-all", "--config", str(path)])
    assert again.exit_code == 0 and "0 dead job(s) queued again" in again.output
    missing = runner.invoke(app, ["jobs", "show", "nope", "--config", str(path)])
    assert missing.exit_code == 1 and "no job with id 'nope'" in missing.output
