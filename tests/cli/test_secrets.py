"""``controlroom secrets``: the encrypted keystore from the command line."""

from __future__ import annotations

import asyncio
import json
import sqlite3
import stat

import pytest
import typer
from typer.testing import CliRunner

from controlroom.config import Secret, load_settings
from controlroom.security.audit import AuditLog
from controlroom.security.crypto import Cipher, generate_key, load_cipher
from controlroom.security.installations import Installation, InstallationStore
from controlroom.security.secrets import install_secret_schemes, keystore_get
from controlroom.store.db import Database

from .conftest import Env


def _init(app: typer.Typer, runner: CliRunner) -> None:
    result = runner.invoke(app, ["secrets", "init-key"])
    assert result.exit_code == 0, result.output


def _audit_actions(env: Env) -> list[tuple[str, str, str]]:
    with sqlite3.connect(env.db_path) as conn:
        rows = conn.execute("SELECT action, target, details FROM audit_log ORDER BY seq").fetchall()
    return [(a, t, d) for a, t, d in rows]


def test_init_key_writes_a_0600_key_file_once(
    env: Env, app: typer.Typer, runner: CliRunner
) -> None:
    _init(app, runner)
    key_file = env.data_dir / "master.key"
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    assert load_cipher(env.data_dir).key_ids  # a readable key ring
    again = runner.invoke(app, ["secrets", "init-key"])
    assert again.exit_code == 1
    assert "already exists" in again.stderr and "rotate-key" in again.stderr


def test_set_from_stdin_then_get_list_and_delete(
    env: Env, app: typer.Typer, runner: CliRunner
) -> None:
    _init(app, runner)
    stored = runner.invoke(
        app, ["secrets", "set", "slack-signing", "--value-stdin"], input="s3cr3t-value\n"
    )
    assert stored.exit_code == 0, stored.output
    assert stored.stdout == "stored keystore:slack-signing\n"
    assert "s3cr3t-value" not in (env.data_dir / "keystore.json").read_text()
    got = runner.invoke(app, ["secrets", "get", "slack-signing"])
    assert got.exit_code == 0 and got.stdout == "s3cr3t-value\n"
    replaced = runner.invoke(app, ["secrets", "set", "slack-signing", "--value-stdin"], input="v2")
    assert replaced.stdout == "replaced keystore:slack-signing\n"
    runner.invoke(app, ["secrets", "set", "github-hook", "--value-stdin"], input="gh")
    listed = runner.invoke(app, ["secrets", "list"])
    assert listed.exit_code == 0 and listed.stdout == "github-hook\nslack-signing\n"
    deleted = runner.invoke(app, ["secrets", "delete", "github-hook"])
    assert deleted.exit_code == 0 and deleted.stdout == "deleted keystore:github-hook\n"
    assert runner.invoke(app, ["secrets", "list"]).stdout == "slack-signing\n"
    # every change and read is audited, by name only
    actions = _audit_actions(env)
    assert [(a, t) for a, t, _ in actions] == [
        ("secrets.set", "keystore:slack-signing"),
        ("secrets.get", "keystore:slack-signing"),
        ("secrets.set", "keystore:slack-signing"),
        ("secrets.set", "keystore:github-hook"),
        ("secrets.delete", "keystore:github-hook"),
    ]
    assert json.loads(actions[2][2]) == {"replaced": True}
    assert not any("s3cr3t" in d or "v2" in d for _, _, d in actions)


def test_set_prompts_for_a_hidden_confirmed_value(
    env: Env, app: typer.Typer, runner: CliRunner
) -> None:
    _init(app, runner)
    result = runner.invoke(app, ["secrets", "set", "api"], input="hunter22\nhunter22\n")
    assert result.exit_code == 0, result.output
    assert "hunter22" not in result.stdout  # hidden input is not echoed
    assert keystore_get(env.data_dir, "api") == "hunter22"


def test_set_refuses_an_empty_value(env: Env, app: typer.Typer, runner: CliRunner) -> None:
    _init(app, runner)
    result = runner.invoke(app, ["secrets", "set", "api", "--value-stdin"], input="\n")
    assert result.exit_code == 1
    assert result.stderr == "error: refusing to store an empty value\n"


def test_the_value_cannot_be_given_on_the_command_line(
    env: Env, app: typer.Typer, runner: CliRunner
) -> None:
    _init(app, runner)
    result = runner.invoke(app, ["secrets", "set", "api", "hunter22"])
    assert result.exit_code == 2  # usage error: no such argument
    assert not (env.data_dir / "keystore.json").exists()


def test_without_a_master_key_each_command_says_how_to_make_one(
    env: Env, app: typer.Typer, runner: CliRunner
) -> None:
    result = runner.invoke(app, ["secrets", "set", "api", "--value-stdin"], input="x")
    assert result.exit_code == 1
    assert "no master key: set CONTROLROOM_MASTER_KEY or create" in result.stderr
    assert "controlroom secrets init-key" in result.stderr
    rotate = runner.invoke(app, ["secrets", "rotate-key"])
    assert rotate.exit_code == 1 and "no master key" in rotate.stderr


def test_get_and_delete_of_an_unknown_name_fail_clearly(
    env: Env, app: typer.Typer, runner: CliRunner
) -> None:
    _init(app, runner)
    got = runner.invoke(app, ["secrets", "get", "missing"])
    assert got.exit_code == 1 and "keystore:missing" in got.stderr and "no such entry" in got.stderr
    gone = runner.invoke(app, ["secrets", "delete", "missing"])
    assert gone.exit_code == 1 and gone.stderr == "error: no entry keystore:missing\n"
    bad = runner.invoke(app, ["secrets", "get", "../etc/passwd"])
    assert bad.exit_code == 1 and "invalid name" in bad.stderr


def test_get_with_the_wrong_master_key_fails_without_printing_anything(
    env: Env, app: typer.Typer, runner: CliRunner, monkeypatch: pytest.MonkeyPatch
) -> None:
    _init(app, runner)
    runner.invoke(app, ["secrets", "set", "api", "--value-stdin"], input="hunter22")
    monkeypatch.setenv("CONTROLROOM_MASTER_KEY", generate_key())
    result = runner.invoke(app, ["secrets", "get", "api"])
    assert result.exit_code == 1 and result.stdout == ""
    assert "not in the key ring" in result.stderr


def test_tty_warning_only_when_the_value_goes_to_a_terminal() -> None:
    from controlroom.ops.secrets_cmd import tty_warning

    assert tty_warning(False) is None
    warning = tty_warning(True)
    assert warning is not None and warning.startswith("warning: the secret is shown")


def test_rotate_key_reencrypts_the_keystore_and_installation_tokens(
    env: Env, app: typer.Typer, runner: CliRunner
) -> None:
    _init(app, runner)
    runner.invoke(app, ["secrets", "set", "api", "--value-stdin"], input="hunter22")
    old = load_cipher(env.data_dir)
    db = Database(f"sqlite:///{env.db_path}")
    try:
        db.create_all()
        store = InstallationStore(db, old)
        asyncio.run(
            store.save(
                Installation(
                    team_id="T0NORTHWND", bot_user_id="U0BOT", bot_token=Secret("xoxb-1-abc")
                )
            )
        )
    finally:
        db.dispose()
    result = runner.invoke(app, ["secrets", "rotate-key"])
    assert result.exit_code == 0, result.output
    new = load_cipher(env.data_dir)
    assert new.primary_id != old.primary_id and old.primary_id in new.key_ids
    assert result.stdout.splitlines() == [
        f"new primary key {new.primary_id}: re-encrypted 1 keystore entry and 1 installation",
        f"key ring written to {env.data_dir / 'master.key'} (mode 0600; old keys kept)",
    ]
    keystore = json.loads((env.data_dir / "keystore.json").read_text())
    assert keystore["entries"]["api"].split(":")[1] == new.primary_id
    with sqlite3.connect(env.db_path) as conn:
        (token_ct,) = conn.execute("SELECT bot_token FROM installations").fetchone()
    assert token_ct.split(":")[1] == new.primary_id
    # and both still decrypt with the new key alone
    only_new = new.without_old_keys()
    assert keystore_get(env.data_dir, "api", cipher=only_new) == "hunter22"
    db = Database(f"sqlite:///{env.db_path}")
    try:
        found = asyncio.run(InstallationStore(db, only_new).find("T0NORTHWND"))
    finally:
        db.dispose()
    assert found is not None and found.bot_token == Secret("xoxb-1-abc")
    actions = _audit_actions(env)
    assert actions[-1][0] == "secrets.rotate_key"
    assert json.loads(actions[-1][2]) == {
        "installations": 1,
        "keystore_entries": 1,
        "primary_key_id": new.primary_id,
    }


def test_rotate_key_from_the_environment_writes_the_new_ring_to_a_file(
    env: Env, app: typer.Typer, runner: CliRunner, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CONTROLROOM_MASTER_KEY", generate_key())
    runner.invoke(app, ["secrets", "set", "api", "--value-stdin"], input="hunter22")
    result = runner.invoke(app, ["secrets", "rotate-key"])
    assert result.exit_code == 0, result.output
    pending = env.data_dir / "master.key.rotated"
    assert f"set it to the contents of {pending}" in result.stdout
    assert stat.S_IMODE(pending.stat().st_mode) == 0o600
    monkeypatch.setenv("CONTROLROOM_MASTER_KEY", pending.read_text())
    assert runner.invoke(app, ["secrets", "get", "api"]).stdout == "hunter22\n"


def test_a_keystore_reference_in_the_configuration_resolves(
    env: Env, app: typer.Typer, runner: CliRunner
) -> None:
    _init(app, runner)
    runner.invoke(app, ["secrets", "set", "bot", "--value-stdin"], input="xoxb-from-keystore")
    install_secret_schemes(env.data_dir)
    env.write_config('[slack]\nbot_token = "keystore:bot"\n')
    settings = load_settings(env.config, environ={})
    assert settings.slack.bot_token == Secret("xoxb-from-keystore")
    # and the commands load such a configuration themselves
    assert runner.invoke(app, ["secrets", "list"]).stdout == "bot\n"


def test_the_audit_of_a_secret_command_chains_with_the_rest(
    env: Env, app: typer.Typer, runner: CliRunner
) -> None:
    _init(app, runner)
    runner.invoke(app, ["secrets", "set", "api", "--value-stdin"], input="hunter22")
    db = Database(f"sqlite:///{env.db_path}")
    try:
        result = asyncio.run(AuditLog(db).verify())
    finally:
        db.dispose()
    assert result.ok and result.count == 1


def test_rotated_cipher_helper_keeps_old_keys() -> None:
    c = Cipher.from_key(generate_key())
    assert c.rotated().key_ids[1] == c.primary_id


@pytest.mark.slow
def test_get_on_a_terminal_warns_on_stderr(env: Env, app: typer.Typer, runner: CliRunner) -> None:
    import os
    import pty
    import subprocess
    import sys
    from pathlib import Path

    _init(app, runner)
    runner.invoke(app, ["secrets", "set", "api", "--value-stdin"], input="hunter22")
    primary, replica = pty.openpty()
    try:
        proc = subprocess.run(
            [
                sys.executable,
                "-c",
                "from tests.cli.conftest import build_app; build_app()()",
                "secrets",
                "get",
                "api",
            ],
            cwd=Path(__file__).parents[2],
            stdout=replica,
            stderr=subprocess.PIPE,
            env={**os.environ, "CONTROLROOM_CONFIG": str(env.config)},
            timeout=60,
            check=False,
        )
        os.close(replica)
        replica = -1
        shown = b""
        while True:
            try:
                chunk = os.read(primary, 4096)
            except OSError:
                break
            if not chunk:
                break
            shown += chunk
    finally:
        os.close(primary)
        if replica != -1:
            os.close(replica)
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr.decode().startswith("warning: the secret is shown on your terminal")
    assert shown.decode().strip() == "hunter22"
