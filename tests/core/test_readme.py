"""The README's configuration example is a valid configuration: a newcomer who copies it
gets a working file (given the secrets it references)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from controlroom.config import load_settings
from controlroom.hub import Hub

README = Path(__file__).resolve().parents[2] / "README.md"


def readme_toml() -> str:
    blocks = re.findall(r"```toml\n(.*?)```", README.read_text(), flags=re.S)
    assert blocks, "the README has no TOML example"
    return blocks[0]


def test_the_readme_configuration_example_loads_and_starts_a_hub(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from controlroom.security.secrets import keystore_set

    text = readme_toml().replace('data_dir = ".controlroom"', f'data_dir = "{tmp_path}"')
    (tmp_path / "accounts.yaml").write_text(
        (
            Path(__file__).resolve().parents[2]
            / "src/controlroom/workflows/escalations/data/accounts.yaml"
        ).read_text()
    )
    text = text.replace('path = "accounts.yaml"', f'path = "{tmp_path / "accounts.yaml"}"')
    path = tmp_path / "controlroom.toml"
    path.write_text(text)
    env = {
        "SLACK_SIGNING_SECRET": "s" * 32,
        "GITHUB_WEBHOOK_SECRET": "g" * 32,
        "GITHUB_TOKEN": "ghp_example",
    }
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    from controlroom.security.crypto import Cipher, generate_key
    from controlroom.security.secrets import install_secret_schemes

    cipher = Cipher.from_key(generate_key())
    keystore_set(tmp_path, "slack-bot-token", "xoxb-1-example", cipher=cipher)
    install_secret_schemes(tmp_path, cipher=cipher)
    settings = load_settings(path)
    assert settings.slack.bot_token is not None
    assert settings.slack.bot_token.get() == "xoxb-1-example"
    assert settings.enabled_workflows == ("deploys", "escalations", "digests")
    hub = Hub(settings)  # validates every workflow's configuration and the policy
    try:
        assert set(hub.registry.workflows) == {"deploys", "escalations", "digests"}
        assert hub.authz.policy.rules[0].action == "deploys.rollback"
    finally:
        hub.db.dispose()
