"""``controlroom.cli_ops.register`` adds the operator commands to a Typer app."""

from __future__ import annotations

import typer
from typer.testing import CliRunner

import controlroom.cli
from controlroom.cli_ops import audit_app, installs_app, manifest_command, register, secrets_app


def _names(app: typer.Typer) -> set[str]:
    commands = {
        c.name or (c.callback.__name__ if c.callback else "") for c in app.registered_commands
    }
    groups = {g.name or "" for g in app.registered_groups}
    return commands | groups


def test_register_adds_manifest_secrets_audit_and_installs(
    app: typer.Typer, runner: CliRunner
) -> None:
    assert {"manifest", "secrets", "audit", "installs"} <= _names(app)
    result = runner.invoke(app, ["--help"])
    assert result.exit_code == 0
    for name in ("manifest", "secrets", "audit", "installs"):
        assert name in result.stdout
    for group, subs in {
        "secrets": ("init-key", "set", "get", "list", "delete", "rotate-key"),
        "audit": ("verify", "tail", "export"),
        "installs": ("list", "revoke"),
    }.items():
        sub_help = runner.invoke(app, [group, "--help"])
        assert sub_help.exit_code == 0
        for sub in subs:
            assert sub in sub_help.stdout


def test_register_adds_exactly_the_five_operator_entries() -> None:
    fresh = typer.Typer()
    register(fresh)
    assert _names(fresh) == {"manifest", "secrets", "audit", "installs", "db"}


def test_the_main_cli_has_no_other_command_under_these_names() -> None:
    ours = {"secrets": secrets_app, "audit": audit_app, "installs": installs_app}
    for group in controlroom.cli.app.registered_groups:
        if group.name in ours:
            assert group.typer_instance is ours[group.name]
    for command in controlroom.cli.app.registered_commands:
        if command.name == "manifest":
            assert command.callback is manifest_command
