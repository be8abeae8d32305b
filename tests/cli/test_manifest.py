"""``controlroom manifest``: exactly the scopes and events the enabled workflows need."""

from __future__ import annotations

import importlib
import json
import re

import pytest
import typer
import yaml
from typer.testing import CliRunner

from controlroom import Context, Workflow
from controlroom.config import Settings
from controlroom.dispatch import BUILTIN_WORKFLOWS
from controlroom.manifest import ManifestOptions, build_manifest, manifest_problems, render_manifest

from .conftest import Env

BASE = "https://cr.example.com"


def _workflows() -> list[Workflow]:
    deploys = Workflow(
        "deploys",
        description="Deploy notifications",
        scopes=["commands", "chat:write", "users:read"],
        commands={"/deploy": "Lock or unlock a service"},
        interactivity=True,
    )
    escalations = Workflow(
        "escalations",
        scopes=["reactions:read", "chat:write", "groups:write", "commands"],
        events=["reaction_added", "message.channels"],
        shortcuts={"escalations.escalate": "Escalate", "escalations.new": "New escalation"},
    )

    @escalations.shortcut("escalations.escalate", message=True)
    async def escalate(ctx: Context) -> None:
        return None

    @escalations.shortcut("escalations.new")
    async def new(ctx: Context) -> None:
        return None

    @escalations.command("/escalate")
    async def command(ctx: Context) -> None:
        return None

    digests = Workflow("digests", scopes=["channels:history"], events=["app_mention"])
    return [deploys, escalations, digests]


def test_bot_scopes_and_events_are_exactly_the_sorted_unions_of_the_workflows() -> None:
    manifest = build_manifest(Settings(), _workflows(), ManifestOptions(base_url=BASE))
    assert manifest["oauth_config"]["scopes"] == {
        "bot": [
            "channels:history",
            "chat:write",
            "commands",
            "groups:write",
            "reactions:read",
            "users:read",
        ]
    }
    assert manifest["settings"]["event_subscriptions"] == {
        "request_url": f"{BASE}/slack/events",
        "bot_events": ["app_mention", "message.channels", "reaction_added"],
    }
    only_deploys = build_manifest(Settings(), _workflows()[:1], ManifestOptions(base_url=BASE))
    assert only_deploys["oauth_config"]["scopes"]["bot"] == ["chat:write", "commands", "users:read"]
    assert "event_subscriptions" not in only_deploys["settings"]


def test_request_url_manifest_points_commands_interactivity_and_oauth_at_the_hub() -> None:
    manifest = build_manifest(Settings(), _workflows(), ManifestOptions(base_url=BASE + "/"))
    events_url = f"{BASE}/slack/events"
    assert manifest["features"]["slash_commands"] == [
        {
            "command": "/deploy",
            "url": events_url,
            "description": "Lock or unlock a service",
            "should_escape": False,
        },
        {
            "command": "/escalate",
            "url": events_url,
            "description": "escalations command",
            "should_escape": False,
        },
    ]
    assert manifest["features"]["shortcuts"] == [
        {
            "name": "Escalate",
            "type": "message",
            "callback_id": "escalations.escalate",
            "description": "Escalate",
        },
        {
            "name": "New escalation",
            "type": "global",
            "callback_id": "escalations.new",
            "description": "New escalation",
        },
    ]
    assert manifest["oauth_config"]["redirect_urls"] == [f"{BASE}/slack/oauth_redirect"]
    assert manifest["settings"]["interactivity"] == {"is_enabled": True, "request_url": events_url}
    assert manifest["settings"]["socket_mode_enabled"] is False
    assert manifest["settings"]["token_rotation_enabled"] is False
    assert manifest["display_information"]["name"] == "Control Room"
    assert manifest["features"]["bot_user"] == {
        "display_name": "controlroom",
        "always_online": True,
    }


def test_socket_mode_manifest_has_no_request_urls() -> None:
    manifest = build_manifest(Settings(), _workflows(), ManifestOptions(socket_mode=True))
    text = json.dumps(manifest)
    assert "request_url" not in text and '"url"' not in text
    assert "redirect_urls" not in manifest["oauth_config"]
    assert manifest["settings"]["socket_mode_enabled"] is True
    assert manifest["settings"]["interactivity"] == {"is_enabled": True}
    assert manifest["settings"]["event_subscriptions"]["bot_events"] == [
        "app_mention",
        "message.channels",
        "reaction_added",
    ]
    assert [c["command"] for c in manifest["features"]["slash_commands"]] == [
        "/deploy",
        "/escalate",
    ]


def test_socket_mode_follows_the_settings_unless_overridden() -> None:
    settings = Settings.model_validate({"slack": {"socket_mode": True}})
    assert build_manifest(settings, _workflows())["settings"]["socket_mode_enabled"] is True
    forced = build_manifest(
        settings, _workflows(), ManifestOptions(socket_mode=False, base_url=BASE)
    )
    assert forced["settings"]["socket_mode_enabled"] is False
    assert forced["settings"]["interactivity"]["request_url"] == f"{BASE}/slack/events"


def test_request_urls_without_a_base_url_is_refused() -> None:
    with pytest.raises(ValueError, match="public base URL"):
        build_manifest(Settings(), _workflows(), ManifestOptions(socket_mode=False))
    with pytest.raises(ValueError, match="must start with https://"):
        build_manifest(Settings(), _workflows(), ManifestOptions(base_url="cr.example.com"))


def test_interactivity_is_off_when_no_workflow_needs_it() -> None:
    quiet = Workflow("quiet", scopes=["chat:write"], events=["app_mention"])
    manifest = build_manifest(Settings(), [quiet], ManifestOptions(base_url=BASE))
    assert manifest["settings"]["interactivity"] == {"is_enabled": False}
    assert "slash_commands" not in manifest["features"]
    assert "shortcuts" not in manifest["features"]


def test_problems_name_a_command_without_the_commands_scope_and_duplicates() -> None:
    a = Workflow("a", scopes=["chat:write"], commands={"/go": "go"})
    b = Workflow("b", scopes=["chat:write"], commands={"/go": "go too"})
    problems = manifest_problems([a, b])
    assert "slash command /go is declared by both a and b" in problems
    assert "workflow a declares /go but no workflow needs the 'commands' scope" in problems
    assert manifest_problems(_workflows()) == []


def test_yaml_and_json_renderings_parse_back_to_the_same_manifest() -> None:
    manifest = build_manifest(Settings(), _workflows(), ManifestOptions(base_url=BASE))
    assert yaml.safe_load(render_manifest(manifest, "yaml")) == manifest
    assert json.loads(render_manifest(manifest, "json")) == manifest
    # Slack's key order: metadata, display information, features, oauth, settings
    assert list(yaml.safe_load(render_manifest(manifest, "yaml"))) == [
        "_metadata",
        "display_information",
        "features",
        "oauth_config",
        "settings",
    ]


def test_the_built_in_workflows_that_import_get_exactly_their_scopes_and_events() -> None:
    builtins = []
    for module in BUILTIN_WORKFLOWS.values():
        try:
            builtins.append(importlib.import_module(module).workflow)
        except ImportError:
            continue
    manifest = build_manifest(Settings(), builtins, ManifestOptions(base_url=BASE))
    assert manifest["oauth_config"]["scopes"]["bot"] == sorted(
        {s for wf in builtins for s in wf.scopes}
    )
    events = sorted({e for wf in builtins for e in wf.events})
    assert manifest["settings"].get("event_subscriptions", {}).get("bot_events", []) == events
    assert manifest_problems(builtins) == []


def test_manifest_command_prints_yaml_for_the_configured_workflows(
    env: Env, app: typer.Typer, runner: CliRunner
) -> None:
    env.write_config(
        '[server]\npublic_url = "https://hub.example.com"\n'
        '[workflows]\nenabled = ["tests.cli.test_manifest:DEMO"]\n'
    )
    result = runner.invoke(app, ["manifest"])
    assert result.exit_code == 0, result.output
    manifest = yaml.safe_load(result.stdout)
    assert manifest["oauth_config"]["scopes"]["bot"] == ["chat:write", "reactions:read"]
    assert manifest["settings"]["event_subscriptions"] == {
        "request_url": "https://hub.example.com/slack/events",
        "bot_events": ["reaction_added"],
    }


def test_manifest_command_json_socket_mode_and_url_options(
    env: Env, app: typer.Typer, runner: CliRunner
) -> None:
    env.write_config('[workflows]\nenabled = ["tests.cli.test_manifest:DEMO"]\n')
    socket = runner.invoke(app, ["manifest", "--format", "json", "--socket-mode"])
    assert socket.exit_code == 0, socket.output
    assert json.loads(socket.stdout)["settings"]["socket_mode_enabled"] is True
    assert "request_url" not in socket.stdout
    urls = runner.invoke(app, ["manifest", "-f", "json", "--request-urls", "--url", BASE])
    assert urls.exit_code == 0, urls.output
    assert json.loads(urls.stdout)["settings"]["event_subscriptions"]["request_url"] == (
        f"{BASE}/slack/events"
    )


def test_manifest_command_without_a_url_says_how_to_give_one(
    env: Env, app: typer.Typer, runner: CliRunner
) -> None:
    env.write_config('[workflows]\nenabled = ["tests.cli.test_manifest:DEMO"]\n')
    result = runner.invoke(app, ["manifest", "--request-urls"])
    assert result.exit_code == 2
    assert re.search(r"error: Request URLs need a public base URL: pass --url", result.stderr)
    assert result.stdout == ""


def test_manifest_command_with_an_unknown_workflow_names_the_key(
    env: Env, app: typer.Typer, runner: CliRunner
) -> None:
    env.write_config('[workflows]\nenabled = ["nope"]\n')
    result = runner.invoke(app, ["manifest", "--socket-mode"])
    assert result.exit_code == 2
    assert (
        "error: workflows.enabled" in result.stderr and "unknown workflow 'nope'" in result.stderr
    )


DEMO = Workflow("demo", scopes=["reactions:read", "chat:write"], events=["reaction_added"])
