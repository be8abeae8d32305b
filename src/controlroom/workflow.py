"""The workflow API: a workflow is a named set of handlers plus what it needs from Slack.

```python
from controlroom import Workflow, Context

wf = Workflow("hello", scopes=["chat:write", "reactions:read"], events=["reaction_added"])

@wf.event("reaction_added")
async def on_reaction(ctx: Context) -> None:
    await ctx.slack.chat_postMessage(channel=ctx.event["item"]["channel"], text="Saw it")
```

Handlers are ``async def handler(ctx) -> object``. Durable handlers (the default) run on
workers with retries; *inline* handlers run inside the request with a time budget and
return the response body (a ``response_action`` for a view submission, a slash command
reply).
"""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

if TYPE_CHECKING:
    from controlroom.context import Context
    from controlroom.envelope import Envelope

__all__ = ["Handler", "HandlerFn", "Route", "Workflow"]

HandlerFn = Callable[["Context"], Awaitable[Any]]
RouteKind = Literal[
    "event",
    "block_actions",
    "view_submission",
    "view_closed",
    "shortcut",
    "message_action",
    "command",
    "options",
    "webhook",
    "schedule",
    "task",
]


@dataclass(frozen=True, slots=True)
class Route:
    """What a handler matches. ``key`` is the event type, action_id, callback_id,
    command, provider or schedule name; a compiled pattern matches action ids."""

    kind: RouteKind
    key: str | re.Pattern[str]
    subtype: str | None = None
    channels: frozenset[str] | None = None
    provider_event: str | None = None

    def matches(self, envelope: Envelope) -> bool:
        from controlroom.dispatch import route_matches

        return route_matches(self, envelope)


@dataclass(frozen=True, slots=True)
class Handler:
    workflow: str
    name: str
    route: Route
    fn: HandlerFn
    inline: bool = False
    max_attempts: int | None = None
    cron: str | None = None
    timezone: str = "UTC"

    @property
    def qualname(self) -> str:
        return f"{self.workflow}.{self.name}"


@dataclass
class Workflow:
    """A named group of handlers and the Slack surface they need (for the manifest)."""

    name: str
    description: str = ""
    scopes: Iterable[str] = ()
    events: Iterable[str] = ()
    commands: Mapping[str, str] = field(default_factory=dict)
    shortcuts: Mapping[str, str] = field(default_factory=dict)
    handlers: list[Handler] = field(default_factory=list)
    on_start: list[Callable[[Any], Awaitable[None]]] = field(default_factory=list)
    #: validates ``[workflows.<name>]``: a pydantic model class, or any callable taking the
    #: raw mapping and returning the validated settings (raise ``ConfigError`` or
    #: ``ValueError``); the result is ``ctx.config``
    config_model: Callable[..., Any] | None = None
    #: needs a Slack app to have: used by ``controlroom manifest``
    interactivity: bool = False

    def __post_init__(self) -> None:
        if not re.fullmatch(r"[a-z][a-z0-9_]*", self.name):
            raise ValueError(f"workflow name {self.name!r} must be lowercase snake_case")
        self.scopes = tuple(self.scopes)
        self.events = tuple(self.events)

    def _add(
        self,
        route: Route,
        *,
        inline: bool = False,
        max_attempts: int | None = None,
        name: str | None = None,
        **kw: Any,
    ) -> Callable[[HandlerFn], HandlerFn]:
        def deco(fn: HandlerFn) -> HandlerFn:
            nonlocal name
            name = name or fn.__name__
            if any(h.name == name for h in self.handlers):
                raise ValueError(f"{self.name}.{name} is already a handler")
            self.handlers.append(
                Handler(self.name, name, route, fn, inline=inline, max_attempts=max_attempts, **kw)
            )
            return fn

        return deco

    def event(
        self,
        type: str,
        *,
        subtype: str | None = None,
        channels: Iterable[str] | None = None,
        max_attempts: int | None = None,
    ) -> Callable[[HandlerFn], HandlerFn]:
        """An Events API event; ``subtype`` ``""`` means plain messages only."""
        chans = frozenset(channels) if channels is not None else None
        return self._add(
            Route("event", type, subtype=subtype, channels=chans), max_attempts=max_attempts
        )

    def action(
        self, action_id: str | re.Pattern[str], *, inline: bool = False
    ) -> Callable[[HandlerFn], HandlerFn]:
        """A ``block_actions`` click on an element with this ``action_id`` (or pattern)."""
        return self._add(Route("block_actions", action_id), inline=inline)

    def view(self, callback_id: str, *, inline: bool = False) -> Callable[[HandlerFn], HandlerFn]:
        """A ``view_submission``; inline handlers may return a ``response_action``."""
        return self._add(Route("view_submission", callback_id), inline=inline)

    def view_closed(self, callback_id: str) -> Callable[[HandlerFn], HandlerFn]:
        return self._add(Route("view_closed", callback_id))

    def shortcut(
        self, callback_id: str, *, message: bool = False, inline: bool = False
    ) -> Callable[[HandlerFn], HandlerFn]:
        kind: RouteKind = "message_action" if message else "shortcut"
        return self._add(Route(kind, callback_id), inline=inline)

    def command(self, command: str, *, inline: bool = False) -> Callable[[HandlerFn], HandlerFn]:
        if not command.startswith("/"):
            raise ValueError(f"slash command {command!r} must start with '/'")
        return self._add(Route("command", command), inline=inline)

    def options(self, action_id: str) -> Callable[[HandlerFn], HandlerFn]:
        return self._add(Route("options", action_id), inline=True)

    def webhook(self, provider: str, event: str | None = None) -> Callable[[HandlerFn], HandlerFn]:
        """A verified webhook from a configured source of this ``provider``."""
        return self._add(Route("webhook", provider, provider_event=event))

    def schedule(self, cron: str, *, timezone: str = "UTC") -> Callable[[HandlerFn], HandlerFn]:
        """Run once per cron tick (five fields) in ``timezone``, across all workers."""
        from croniter import croniter

        if not croniter.is_valid(cron):
            raise ValueError(f"invalid cron expression {cron!r}")

        def deco(fn: HandlerFn) -> HandlerFn:
            return self._add(Route("schedule", fn.__name__), cron=cron, timezone=timezone)(fn)

        return deco

    def task(
        self, name: str | None = None, *, max_attempts: int | None = None
    ) -> Callable[[HandlerFn], HandlerFn]:
        """A durable job this workflow enqueues itself with ``ctx.enqueue``."""

        def deco(fn: HandlerFn) -> HandlerFn:
            task = name or fn.__name__
            return self._add(Route("task", task), max_attempts=max_attempts, name=task)(fn)

        return deco

    def startup(self, fn: Callable[[Any], Awaitable[None]]) -> Callable[[Any], Awaitable[None]]:
        """Run once when the hub starts, with the hub: build connectors and keep them in
        ``hub.services[<workflow name>]`` (a dict), which handlers see as
        ``ctx.services``."""
        self.on_start.append(fn)
        return fn
