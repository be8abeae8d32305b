"""``controlroom installs``: list (never a token) and revoke on Slack and locally."""

from __future__ import annotations

import asyncio
import json
import time

import typer
from typer.testing import CliRunner

from controlroom.config import Secret
from controlroom.security.crypto import load_cipher
from controlroom.security.installations import Installation, InstallationStore
from controlroom.store.db import Database

from .conftest import Env, sandbox_in_thread

TOKEN = "xoxb-111-222-notarealtoken"


def _init_key(app: typer.Typer, runner: CliRunner) -> None:
    assert runner.invoke(app, ["secrets", "init-key"]).exit_code == 0


def _save(env: Env, *installs: Installation, needs_reauth: str = "") -> None:
    db = Database(f"sqlite:///{env.db_path}")
    try:
        db.create_all()
        store = InstallationStore(db, load_cipher(env.data_dir))

        async def go() -> None:
            for inst in installs:
                await store.save(inst)
            if needs_reauth:
                await store.mark_needs_reauth(needs_reauth, reason="token refresh failed")

        asyncio.run(go())
    finally:
        db.dispose()


def _audit(app: typer.Typer, runner: CliRunner) -> list[dict[str, object]]:
    out = runner.invoke(app, ["audit", "tail", "--json", "--action", "installs.*"])
    return [json.loads(line) for line in out.stdout.splitlines()]


NORTHWIND = Installation(
    team_id="T0NORTHWND",
    enterprise_id="E0NORTHWND",
    bot_user_id="U0CRBOT001",
    installer_user_id="U0RELMGR01",
    bot_scopes=("chat:write", "commands"),
    bot_token=Secret(TOKEN),
    bot_refresh_token=Secret("xoxe-1-refresh"),
    bot_token_expires_at=time.time() + 3600,
)
ACME = Installation(
    team_id="T0ACME0001",
    bot_user_id="U0ACMEBOT1",
    bot_scopes=("chat:write",),
    bot_token=Secret("xoxb-333-444-acme"),
)


def test_list_shows_each_installation_and_never_a_token(
    env: Env, app: typer.Typer, runner: CliRunner
) -> None:
    env.write_config('[server]\npublic_url = "https://hub.example.com"\n')
    _init_key(app, runner)
    _save(env, NORTHWIND, ACME, needs_reauth="T0ACME0001")
    result = runner.invoke(app, ["installs", "list", "--json"])
    assert result.exit_code == 0, result.output
    rows = [json.loads(line) for line in result.stdout.splitlines()]
    assert [(r["team_id"], r["enterprise_id"], r["status"]) for r in rows] == [
        ("T0ACME0001", "", "needs_reauth"),
        ("T0NORTHWND", "E0NORTHWND", "active"),
    ]
    acme, northwind = rows
    assert acme["reinstall_url"] == "https://hub.example.com/slack/install?team=T0ACME0001"
    assert acme["status_reason"] == "token refresh failed"
    assert northwind["reinstall_url"] == ""
    assert northwind["scopes"] == ["chat:write", "commands"]
    assert northwind["bot_user_id"] == "U0CRBOT001" and northwind["has_bot_token"] is True
    assert abs(northwind["token_expires_at"] - NORTHWIND.bot_token_expires_at) < 1
    table = runner.invoke(app, ["installs", "list"])
    assert table.exit_code == 0
    for text in ("T0NORTHWND", "E0NORTHWND", "U0CRBOT001", "needs_reauth", "does not expire"):
        assert text in table.stdout
    for output in (result.stdout, table.stdout):
        assert "xox" not in output


def test_list_needs_no_master_key(env: Env, app: typer.Typer, runner: CliRunner) -> None:
    _init_key(app, runner)
    _save(env, ACME)
    (env.data_dir / "master.key").unlink()
    result = runner.invoke(app, ["installs", "list", "--json"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["team_id"] == "T0ACME0001"


def test_list_with_no_installations(env: Env, app: typer.Typer, runner: CliRunner) -> None:
    _init_key(app, runner)
    _save(env)
    result = runner.invoke(app, ["installs", "list"])
    assert result.exit_code == 0 and result.stderr == "no installations\n"


def test_revoke_calls_auth_revoke_on_slack_then_deletes_and_audits(
    env: Env, app: typer.Typer, runner: CliRunner
) -> None:
    _init_key(app, runner)
    with sandbox_in_thread() as sb:
        token = sb.sandbox.bot_token
        team = sb.sandbox.team_id
        env.write_config(f'[slack]\napi_url = "{sb.api_url}"\n')
        _save(env, Installation(team_id=team, bot_user_id="U0CRBOT001", bot_token=Secret(token)))
        result = runner.invoke(app, ["installs", "revoke", team, "--yes"])
        assert result.exit_code == 0, result.output
        assert result.stdout == f"revoked and deleted the installation for {team}\n"
        assert sb.sandbox.state.tokens[token].revoked is True
        revokes = [c for c in sb.sandbox.state.calls if c.method == "auth.revoke"]
        assert len(revokes) == 1 and revokes[0].error is None
    listed = runner.invoke(app, ["installs", "list", "--json"])
    assert listed.stdout == ""
    [entry] = _audit(app, runner)
    assert (entry["action"], entry["target"], entry["outcome"]) == (
        "installs.revoke",
        team,
        "allowed",
    )
    assert str(entry["actor"]).startswith("cli:")


def test_revoke_asks_for_confirmation(env: Env, app: typer.Typer, runner: CliRunner) -> None:
    _init_key(app, runner)
    _save(env, ACME)
    result = runner.invoke(app, ["installs", "revoke", "T0ACME0001"], input="n\n")
    assert result.exit_code == 1 and "Aborted" in result.output
    listed = runner.invoke(app, ["installs", "list", "--json"])
    assert json.loads(listed.stdout)["team_id"] == "T0ACME0001"


def test_revoke_of_an_unknown_installation_fails_and_is_audited(
    env: Env, app: typer.Typer, runner: CliRunner
) -> None:
    _init_key(app, runner)
    _save(env, ACME)
    result = runner.invoke(app, ["installs", "revoke", "T0UNKNOWN1", "--yes"])
    assert result.exit_code == 1
    assert result.stderr == (
        "error: no installation for T0UNKNOWN1 (see: controlroom installs list)\n"
    )
    [entry] = _audit(app, runner)
    assert (entry["target"], entry["outcome"]) == ("T0UNKNOWN1", "error")
    org = runner.invoke(app, ["installs", "revoke", "E0NOSUCHORG", "--yes"])
    assert org.exit_code == 1 and "no installation for E0NOSUCHORG" in org.stderr


def test_revoke_of_a_dead_token_deletes_but_slack_unreachable_keeps_the_installation(
    env: Env, app: typer.Typer, runner: CliRunner
) -> None:
    _init_key(app, runner)
    with sandbox_in_thread() as sb:
        env.write_config(f'[slack]\napi_url = "{sb.api_url}"\n')
        # a token Slack does not know is answered invalid_auth: treated as already revoked
        _save(env, ACME)
        gone = runner.invoke(app, ["installs", "revoke", "T0ACME0001", "--yes"])
        assert gone.exit_code == 0, gone.output
    # Slack unreachable: nothing is deleted, the failure is audited
    env.write_config('[slack]\napi_url = "http://127.0.0.1:9/api/"\n')
    _save(env, NORTHWIND)
    result = runner.invoke(app, ["installs", "revoke", "T0NORTHWND", "--yes"])
    assert result.exit_code == 1
    assert "auth.revoke in T0NORTHWND failed: ConnectError" in result.stderr
    listed = runner.invoke(app, ["installs", "list", "--json"])
    assert json.loads(listed.stdout)["team_id"] == "T0NORTHWND"
    assert [(e["target"], e["outcome"]) for e in _audit(app, runner)] == [
        ("T0ACME0001", "allowed"),
        ("T0NORTHWND", "error"),
    ]


def test_revoke_without_the_master_key_fails_clearly(
    env: Env, app: typer.Typer, runner: CliRunner
) -> None:
    _init_key(app, runner)
    _save(env, ACME)
    (env.data_dir / "master.key").unlink()
    result = runner.invoke(app, ["installs", "revoke", "T0ACME0001", "--yes"])
    assert result.exit_code == 1 and "no master key" in result.stderr


def test_naming_a_workspace_never_revokes_its_org_wide_install(
    env: Env, app: typer.Typer, runner: CliRunner
) -> None:
    _init_key(app, runner)
    org = Installation(
        enterprise_id="E0GRIDORG1",
        is_enterprise_install=True,
        bot_user_id="U0ORGBOT01",
        bot_token=Secret("xoxb-org"),
    )
    _save(env, org)
    result = runner.invoke(
        app, ["installs", "revoke", "T0INGRID01", "--enterprise", "E0GRIDORG1", "--yes"]
    )
    assert result.exit_code == 1
    assert "T0INGRID01 has no installation of its own" in result.stderr
    assert "controlroom installs revoke E0GRIDORG1" in result.stderr
    rows = [
        json.loads(x)
        for x in runner.invoke(app, ["installs", "list", "--json"]).stdout.splitlines()
    ]
    assert [(r["team_id"], r["enterprise_id"], r["org_install"]) for r in rows] == [
        ("", "E0GRIDORG1", True)
    ]
    table = runner.invoke(app, ["installs", "list"])
    assert "(org-wide)" in table.stdout


def test_an_org_wide_install_is_revoked_by_its_enterprise_id(
    env: Env, app: typer.Typer, runner: CliRunner
) -> None:
    _init_key(app, runner)
    with sandbox_in_thread() as sb:
        env.write_config(f'[slack]\napi_url = "{sb.api_url}"\n')
        token = sb.sandbox.bot_token
        _save(
            env,
            Installation(
                enterprise_id="E0NORTHWND", is_enterprise_install=True, bot_token=Secret(token)
            ),
            ACME,
        )
        result = runner.invoke(app, ["installs", "revoke", "E0NORTHWND", "--yes"])
        assert result.exit_code == 0, result.output
        assert sb.sandbox.state.tokens[token].revoked is True
    rows = runner.invoke(app, ["installs", "list", "--json"]).stdout.splitlines()
    assert [json.loads(r)["team_id"] for r in rows] == ["T0ACME0001"]
