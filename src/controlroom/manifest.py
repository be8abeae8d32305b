"""The Slack app manifest for the enabled workflows: least privilege by construction.

``build_manifest(settings, workflows)`` returns the manifest as a dict in Slack's
schema (``_metadata``, ``display_information``, ``features``, ``oauth_config``,
``settings``). The bot scopes are exactly the union of the scopes the workflows declare
and the bot events exactly the union of their events, both sorted, so the app asks for
nothing no workflow needs. Slash commands, shortcuts and interactivity come from what
the workflows declare (and from the handlers they register).

In Socket Mode the manifest carries no Request URL (Slack delivers over the socket);
otherwise every URL points at the one endpoint of the edge, ``<base>/slack/events``.
``render_manifest`` writes YAML (pyyaml) or JSON; ``manifest_problems`` lists what
Slack would refuse or what would not work (a slash command without the ``commands``
scope, duplicate commands, names over Slack's length limits).
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, Literal

from controlroom.config import Settings
from controlroom.workflow import Workflow

__all__ = [
    "EVENTS_PATH",
    "OAUTH_REDIRECT_PATH",
    "ManifestOptions",
    "build_manifest",
    "manifest_problems",
    "render_manifest",
]

EVENTS_PATH = "/slack/events"
OAUTH_REDIRECT_PATH = "/slack/oauth_redirect"
_INTERACTIVE_KINDS = frozenset(
    {"block_actions", "view_submission", "view_closed", "shortcut", "message_action", "options"}
)
# Slack's limits (app manifest reference).
_MAX_APP_NAME = 35
_MAX_DESCRIPTION = 140
_MAX_SHORTCUT_NAME = 24
_MAX_SHORTCUT_DESCRIPTION = 150
_MAX_COMMAND = 32


@dataclass(frozen=True)
class ManifestOptions:
    """What the configuration does not say. ``socket_mode`` None means the setting
    ``slack.socket_mode``; ``base_url`` None means ``server.public_url``."""

    socket_mode: bool | None = None
    base_url: str | None = None
    name: str = "Control Room"
    bot_name: str = "controlroom"
    token_rotation: bool = False
    org_deploy: bool = False


def _clip(text: str, limit: int) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1].rstrip() + "…"


def _shortcut_type(wf: Workflow, callback_id: str) -> Literal["message", "global"]:
    for h in wf.handlers:
        if h.route.kind == "message_action" and h.route.key == callback_id:
            return "message"
    return "global"


def _commands(workflows: Iterable[Workflow]) -> list[tuple[str, str, str]]:
    """(command, description, workflow) for declared commands and command handlers."""
    out: list[tuple[str, str, str]] = []
    for wf in workflows:
        declared = dict(wf.commands)
        for h in wf.handlers:
            if h.route.kind == "command" and isinstance(h.route.key, str):
                declared.setdefault(h.route.key, wf.description or f"{wf.name} command")
        out.extend((cmd, desc, wf.name) for cmd, desc in declared.items())
    return out


def _shortcuts(workflows: Iterable[Workflow]) -> list[tuple[str, str, str, str]]:
    """(callback_id, name, type, workflow) for declared shortcuts."""
    return [
        (cid, name, _shortcut_type(wf, cid), wf.name)
        for wf in workflows
        for cid, name in wf.shortcuts.items()
    ]


def _needs_interactivity(workflows: Iterable[Workflow]) -> bool:
    return any(
        wf.interactivity
        or bool(wf.shortcuts)
        or any(h.route.kind in _INTERACTIVE_KINDS for h in wf.handlers)
        for wf in workflows
    )


def manifest_problems(workflows: Iterable[Workflow]) -> list[str]:
    """What would make the manifest invalid or the app not work, one line each."""
    from controlroom.security.scopes import needed_scopes

    wfs = list(workflows)
    problems: list[str] = []
    scopes = needed_scopes(wfs)
    seen: dict[str, str] = {}
    for cmd, _desc, wf_name in _commands(wfs):
        if cmd in seen and seen[cmd] != wf_name:
            problems.append(f"slash command {cmd} is declared by both {seen[cmd]} and {wf_name}")
        seen.setdefault(cmd, wf_name)
        if len(cmd) > _MAX_COMMAND:
            problems.append(f"slash command {cmd} is longer than {_MAX_COMMAND} characters")
        if "commands" not in scopes:
            problems.append(
                f"workflow {wf_name} declares {cmd} but no workflow needs the 'commands' scope"
            )
    seen_cb: dict[str, str] = {}
    for cid, _name, _kind, wf_name in _shortcuts(wfs):
        if cid in seen_cb and seen_cb[cid] != wf_name:
            problems.append(f"shortcut {cid} is declared by both {seen_cb[cid]} and {wf_name}")
        seen_cb.setdefault(cid, wf_name)
        if "commands" not in scopes:
            problems.append(
                f"workflow {wf_name} declares shortcut {cid} but no workflow needs the "
                "'commands' scope"
            )
    return list(dict.fromkeys(problems))


def _base(settings: Settings, options: ManifestOptions) -> str:
    base = options.base_url if options.base_url is not None else settings.server.public_url
    return base.rstrip("/")


def build_manifest(
    settings: Settings,
    workflows: Iterable[Workflow],
    options: ManifestOptions | None = None,
) -> dict[str, Any]:
    """The Slack app manifest (a dict in Slack's schema) for ``workflows``.

    Raises ``ValueError`` when Request URLs are wanted but no base URL is known
    (``--url`` or ``server.public_url``)."""
    from controlroom.security.scopes import needed_scopes

    opts = options or ManifestOptions()
    wfs = list(workflows)
    socket_mode = settings.slack.socket_mode if opts.socket_mode is None else opts.socket_mode
    base = _base(settings, opts)
    if not socket_mode and not base:
        raise ValueError(
            "Request URLs need a public base URL: pass --url https://... or set "
            "server.public_url (or use --socket-mode)"
        )
    if base and not base.startswith(("https://", "http://")):
        raise ValueError(f"base URL {base!r} must start with https:// (or http:// for tests)")
    request_url = "" if socket_mode else base + EVENTS_PATH

    names = ", ".join(wf.name for wf in wfs)
    description = "Run operations from Slack" + (f": {names}" if names else "")
    features: dict[str, Any] = {
        "bot_user": {"display_name": _clip(opts.bot_name, 80), "always_online": True},
    }
    commands: list[dict[str, Any]] = []
    for cmd, desc, _wf in sorted(_commands(wfs)):
        if any(c["command"] == cmd for c in commands):
            continue
        entry: dict[str, Any] = {"command": cmd}
        if request_url:
            entry["url"] = request_url
        entry["description"] = _clip(desc or cmd, 2000)
        entry["should_escape"] = False
        commands.append(entry)
    if commands:
        features["slash_commands"] = commands
    shortcuts: list[dict[str, Any]] = []
    for cid, name, kind, _wf in sorted(_shortcuts(wfs)):
        if any(s["callback_id"] == cid for s in shortcuts):
            continue
        shortcuts.append(
            {
                "name": _clip(name or cid, _MAX_SHORTCUT_NAME),
                "type": kind,
                "callback_id": cid,
                "description": _clip(name or cid, _MAX_SHORTCUT_DESCRIPTION),
            }
        )
    if shortcuts:
        features["shortcuts"] = shortcuts

    oauth: dict[str, Any] = {"scopes": {"bot": list(needed_scopes(wfs))}}
    if base:
        oauth = {"redirect_urls": [base + OAUTH_REDIRECT_PATH], **oauth}

    app_settings: dict[str, Any] = {}
    events = sorted({e for wf in wfs for e in wf.events})
    if events:
        subs: dict[str, Any] = {"bot_events": events}
        if request_url:
            subs = {"request_url": request_url, **subs}
        app_settings["event_subscriptions"] = subs
    interactive = _needs_interactivity(wfs)
    interactivity: dict[str, Any] = {"is_enabled": interactive}
    if interactive and request_url:
        interactivity["request_url"] = request_url
        if any(h.route.kind == "options" for wf in wfs for h in wf.handlers):
            interactivity["message_menu_options_url"] = request_url
    app_settings["interactivity"] = interactivity
    app_settings["org_deploy_enabled"] = opts.org_deploy
    app_settings["socket_mode_enabled"] = socket_mode
    app_settings["token_rotation_enabled"] = opts.token_rotation

    return {
        "_metadata": {"major_version": 1, "minor_version": 1},
        "display_information": {
            "name": _clip(opts.name, _MAX_APP_NAME),
            "description": _clip(description, _MAX_DESCRIPTION),
        },
        "features": features,
        "oauth_config": oauth,
        "settings": app_settings,
    }


def render_manifest(manifest: dict[str, Any], fmt: Literal["yaml", "json"] = "yaml") -> str:
    """The manifest as YAML (keys in Slack's order) or indented JSON."""
    if fmt == "json":
        return json.dumps(manifest, indent=2, ensure_ascii=False) + "\n"
    import yaml

    return yaml.safe_dump(manifest, sort_keys=False, allow_unicode=True, width=100)
