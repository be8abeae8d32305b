"""``controlroom manifest``: print the Slack app manifest for the enabled workflows."""

from __future__ import annotations

import importlib
from enum import StrEnum
from typing import Annotated

import typer

from controlroom.config import Settings
from controlroom.errors import ConfigError
from controlroom.manifest import ManifestOptions, build_manifest, manifest_problems, render_manifest
from controlroom.ops._common import ConfigOpt, fail, load
from controlroom.workflow import Workflow

__all__ = ["ManifestFormat", "enabled_workflows", "manifest_command"]


class ManifestFormat(StrEnum):
    yaml = "yaml"
    json = "json"


def enabled_workflows(settings: Settings) -> list[Workflow]:
    """The workflows the configuration enables; with none named and none configured,
    the built-in workflows that import (as ``controlroom up`` does)."""
    from controlroom.dispatch import BUILTIN_WORKFLOWS, load_workflows

    names = settings.enabled_workflows
    if not names and not settings.workflows:
        found = []
        for name, module in BUILTIN_WORKFLOWS.items():
            try:
                importlib.import_module(module)
            except ImportError:
                continue
            found.append(name)
        names = tuple(found)
    return load_workflows(names)


def manifest_command(
    config: ConfigOpt = None,
    fmt: Annotated[
        ManifestFormat, typer.Option("--format", "-f", help="yaml or json")
    ] = ManifestFormat.yaml,
    socket_mode: Annotated[
        bool | None,
        typer.Option(
            "--socket-mode/--request-urls",
            help="Socket Mode (no Request URLs) or HTTP Request URLs (default: slack.socket_mode)",
        ),
    ] = None,
    url: Annotated[
        str | None,
        typer.Option("--url", help="public base URL of the hub (default: server.public_url)"),
    ] = None,
    name: Annotated[str, typer.Option(help="app name shown in Slack")] = "Control Room",
    token_rotation: Annotated[
        bool, typer.Option("--token-rotation", help="turn on token rotation")
    ] = False,
) -> None:
    """Print the Slack app manifest for the enabled workflows.

    Exactly the bot scopes, events, commands, shortcuts and interactivity they need."""
    settings = load(config)
    try:
        workflows = enabled_workflows(settings)
    except ConfigError as exc:
        for key, source, reason in exc.problems:
            typer.echo(f"error: {key} (from {source}): {reason}", err=True)
        raise typer.Exit(2) from None
    options = ManifestOptions(
        socket_mode=socket_mode, base_url=url, name=name, token_rotation=token_rotation
    )
    try:
        manifest = build_manifest(settings, workflows, options)
    except ValueError as exc:
        raise fail(str(exc), 2) from None
    for problem in manifest_problems(workflows):
        typer.echo(f"warning: {problem}", err=True)
    typer.echo(render_manifest(manifest, fmt.value), nl=False)
