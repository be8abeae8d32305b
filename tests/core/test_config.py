"""Configuration: one TOML file plus environment overrides, validated, secrets redacted."""

from __future__ import annotations

from pathlib import Path

import pytest

from controlroom.config import Secret, load_settings
from controlroom.errors import ConfigError


def write(tmp_path: Path, text: str) -> Path:
    p = tmp_path / "controlroom.toml"
    p.write_text(text)
    return p


def test_defaults_use_an_embedded_sqlite_file_under_the_data_dir() -> None:
    s = load_settings(environ={})
    assert s.effective_database_url == "sqlite:///.controlroom/controlroom.db"
    assert not s.is_distributed


def test_environment_overrides_the_file_and_is_named_as_the_source(tmp_path: Path) -> None:
    path = write(tmp_path, "[server]\nport = 9000\n")
    s = load_settings(path, environ={"CONTROLROOM_SERVER__PORT": "9100"})
    assert s.server.port == 9100
    with pytest.raises(ConfigError) as info:
        load_settings(path, environ={"CONTROLROOM_SERVER__PORT": "99999"})
    [(key, source, reason)] = info.value.problems
    assert (key, source) == ("server.port", "CONTROLROOM_SERVER__PORT")
    assert "65535" in reason


def test_every_problem_is_reported_with_key_and_file(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        '[server]\nport = "x"\n[queue]\nworkers = 0\n[slack]\nsigning_secret = "plain"\n',
    )
    with pytest.raises(ConfigError) as info:
        load_settings(path, environ={})
    keys = {(k, s) for k, s, _ in info.value.problems}
    assert ("slack.signing_secret", str(path)) in keys
    assert ("server.port", str(path)) in keys or ("queue.workers", str(path)) in keys


def test_secrets_resolve_from_env_and_file_and_never_show_in_repr(tmp_path: Path) -> None:
    secret_file = tmp_path / "token"
    secret_file.write_text("xoxb-1-file-secret\n")
    path = write(
        tmp_path,
        f'[slack]\nsigning_secret = "env:SIGNING"\nbot_token = "file:{secret_file}"\n',
    )
    s = load_settings(path, environ={"SIGNING": "s3cr3t-value"})
    assert s.slack.signing_secret is not None and s.slack.bot_token is not None
    assert s.slack.signing_secret.get() == "s3cr3t-value"
    assert s.slack.bot_token.get() == "xoxb-1-file-secret"
    shown = repr(s) + str(s.slack) + repr(s.slack.bot_token)
    assert "s3cr3t-value" not in shown and "xoxb-1-file-secret" not in shown


def test_missing_env_secret_names_the_reference_not_a_value(tmp_path: Path) -> None:
    path = write(tmp_path, '[slack]\nsigning_secret = "env:NOPE_NOT_SET"\n')
    with pytest.raises(ConfigError) as info:
        load_settings(path, environ={})
    [(key, _, reason)] = info.value.problems
    assert key == "slack.signing_secret"
    assert "env:NOPE_NOT_SET" in reason and "not set" in reason


def test_plaintext_secrets_are_refused_unless_allowed_for_development(tmp_path: Path) -> None:
    path = write(tmp_path, 'allow_plaintext_secrets = true\n[slack]\nsigning_secret = "dev"\n')
    s = load_settings(path, environ={})
    assert s.slack.signing_secret == Secret("dev")


def test_unknown_keys_and_bad_toml_are_errors(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_settings(write(tmp_path, "[server\n"), environ={})
    with pytest.raises(ConfigError) as info:
        load_settings(write(tmp_path, "[server]\nprot = 1\n"), environ={})
    assert info.value.problems[0][0] == "server.prot"


def test_postgres_url_selects_the_distributed_mode() -> None:
    s = load_settings(environ={"CONTROLROOM_DATABASE_URL": "postgresql://u@127.0.0.1/db"})
    assert s.is_distributed
    with pytest.raises(ConfigError):
        load_settings(environ={"CONTROLROOM_DATABASE_URL": "mysql://x"})


def test_webhook_sources_take_two_secrets_for_rotation(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        '[hooks.ci]\nprovider = "github"\nsecret = "env:NEW"\nprevious_secret = "env:OLD"\n',
    )
    s = load_settings(path, environ={"NEW": "n", "OLD": "o"})
    hook = s.hooks["ci"]
    assert hook.provider == "github"
    assert hook.secret.get() == "n"
    assert hook.previous_secret is not None and hook.previous_secret.get() == "o"


def test_variables_that_locate_files_are_not_taken_as_settings() -> None:
    s = load_settings(
        environ={"CONTROLROOM_CONFIG": "/etc/controlroom.toml", "CONTROLROOM_MASTER_KEY": "k"}
    )
    assert s.server.port == 8080
