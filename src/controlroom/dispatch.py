"""Routing: which handlers an envelope goes to, and loading the enabled workflows."""

from __future__ import annotations

import importlib
import re
from collections.abc import Iterable, Mapping
from importlib.metadata import entry_points
from typing import Any

from controlroom.envelope import Envelope
from controlroom.errors import ConfigError
from controlroom.workflow import Handler, Route, Workflow

__all__ = ["BUILTIN_WORKFLOWS", "Registry", "load_workflows", "route_matches"]

BUILTIN_WORKFLOWS = {
    "deploys": "controlroom.workflows.deploys.workflow",
    "escalations": "controlroom.workflows.escalations.workflow",
    "digests": "controlroom.workflows.digests.workflow",
}


def _key_matches(key: str | re.Pattern[str], value: object) -> bool:
    if not isinstance(value, str):
        return False
    if isinstance(key, re.Pattern):
        return key.fullmatch(value) is not None
    return key == value


def _event_channel(event: Mapping[str, Any]) -> str:
    if isinstance(event.get("channel"), str):
        return str(event["channel"])
    item = event.get("item")
    if isinstance(item, Mapping) and isinstance(item.get("channel"), str):
        return str(item["channel"])
    return ""


def route_matches(route: Route, envelope: Envelope, provider: str | None = None) -> bool:
    body = envelope.body
    if route.kind != envelope.kind:
        return False
    if route.kind == "event":
        event = body.get("event")
        if not isinstance(event, Mapping) or not _key_matches(route.key, event.get("type")):
            return False
        if route.subtype is not None and event.get("subtype", "") != route.subtype:
            return False
        return not (route.channels is not None and _event_channel(event) not in route.channels)
    if route.kind == "block_actions":
        actions = body.get("actions")
        return isinstance(actions, list) and any(
            isinstance(a, Mapping) and _key_matches(route.key, a.get("action_id")) for a in actions
        )
    if route.kind in ("view_submission", "view_closed"):
        view = body.get("view")
        return isinstance(view, Mapping) and _key_matches(route.key, view.get("callback_id"))
    if route.kind in ("shortcut", "message_action"):
        return _key_matches(route.key, body.get("callback_id"))
    if route.kind == "command":
        return _key_matches(route.key, body.get("command"))
    if route.kind == "options":
        return _key_matches(route.key, body.get("action_id"))
    if route.kind == "webhook":
        if provider is None or not _key_matches(route.key, provider):
            return False
        return route.provider_event is None or route.provider_event == envelope.provider_event
    return False


def matching_action(route: Route, envelope: Envelope) -> Mapping[str, Any] | None:
    for action in envelope.body.get("actions") or ():
        if isinstance(action, Mapping) and _key_matches(route.key, action.get("action_id")):
            return action
    return None


class Registry:
    """The handlers of the enabled workflows, indexed for routing."""

    def __init__(self, workflows: Iterable[Workflow]) -> None:
        self.workflows: dict[str, Workflow] = {}
        self.handlers: dict[str, Handler] = {}
        # Routable handlers by the envelope kind they take (schedules and tasks are run
        # by name, never routed): routing an envelope looks at its kind's handlers only.
        self._by_kind: dict[str, list[Handler]] = {}
        for wf in workflows:
            if wf.name in self.workflows:
                raise ValueError(f"workflow {wf.name!r} is enabled twice")
            self.workflows[wf.name] = wf
            for h in wf.handlers:
                self.handlers[h.qualname] = h
                if h.route.kind not in ("schedule", "task"):
                    self._by_kind.setdefault(h.route.kind, []).append(h)

    def matches(self, envelope: Envelope, provider: str | None = None) -> list[Handler]:
        return [
            h
            for h in self._by_kind.get(envelope.kind, ())
            if route_matches(h.route, envelope, provider)
        ]

    def inline_for(self, envelope: Envelope, provider: str | None = None) -> Handler | None:
        for h in self.matches(envelope, provider):
            if h.inline:
                return h
        return None

    def schedules(self) -> list[Handler]:
        return [h for h in self.handlers.values() if h.route.kind == "schedule"]


def load_workflows(names: Iterable[str]) -> list[Workflow]:
    """Import the enabled workflows: built-ins by name, others from the
    ``controlroom.workflows`` entry-point group, or ``module:attribute`` paths."""
    found: list[Workflow] = []
    eps = {ep.name: ep for ep in entry_points(group="controlroom.workflows")}
    for name in names:
        try:
            if name in BUILTIN_WORKFLOWS:
                obj: Any = importlib.import_module(BUILTIN_WORKFLOWS[name]).workflow
            elif name in eps:
                obj = eps[name].load()
            elif ":" in name:
                mod, _, attr = name.partition(":")
                obj = getattr(importlib.import_module(mod), attr)
            else:
                known = ", ".join(sorted({*BUILTIN_WORKFLOWS, *eps}))
                raise ConfigError(
                    [
                        (
                            "workflows.enabled",
                            "configuration",
                            f"unknown workflow {name!r} (known: {known}; or give module:attribute)",
                        )
                    ]
                )
        except (ImportError, AttributeError) as exc:
            raise ConfigError(
                [("workflows.enabled", "configuration", f"cannot load {name!r}: {exc}")]
            ) from None
        if not isinstance(obj, Workflow):
            raise ConfigError(
                [("workflows.enabled", "configuration", f"{name!r} is not a Workflow")]
            )
        found.append(obj)
    return found
