"""Live updates for open web clients: an in-process pub/sub fed by the sandbox.

Two sources feed it:

* ``Sandbox.on_change``: every message, edit, delete, reaction, membership change,
  ephemeral and view change, as it happens (no delay);
* a poll, every ``interval`` seconds while someone is listening, of a cheap fingerprint
  of the conversations (names, topics, archive flags, member counts), for the few Web API
  changes that do not notify (rename, archive, setTopic, kick).

Each subscriber gets small *notices* (``{"kind": "channel", "channel": "C..."}``,
``{"kind": "view"}``, ``{"kind": "sidebar"}``, ``{"kind": "any"}``) telling the page what
to re-fetch; the page never receives another user's ephemerals or views.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from ..state import JSON

if TYPE_CHECKING:
    from ..core import Sandbox

log = logging.getLogger("controlroom.sandbox.web")

Sleep = Callable[[float], Awaitable[None]]
QUEUE_LIMIT = 256
#: the notice that ends a stream
CLOSED: JSON = {"kind": "closed"}
_FOREVER = 10 * 365 * 86400.0
_SIDEBAR_EVENTS = {
    "member_joined_channel",
    "member_left_channel",
    "channel_created",
    "channel_rename",
    "channel_archive",
    "channel_unarchive",
    "group_rename",
    "group_archive",
}


@dataclass(eq=False)
class Subscriber:
    user_id: str
    team_id: str
    queue: asyncio.Queue[JSON] = field(default_factory=lambda: asyncio.Queue(QUEUE_LIMIT))

    def put(self, notice: JSON) -> None:
        try:
            self.queue.put_nowait(notice)
        except asyncio.QueueFull:
            # a slow page: drop the backlog and ask it to refresh everything
            while not self.queue.empty():
                self.queue.get_nowait()
            self.queue.put_nowait(notice if notice is CLOSED else {"kind": "any"})


def _channel_of(event: JSON) -> str | None:
    channel = event.get("channel")
    if isinstance(channel, dict):
        channel = channel.get("id")
    if isinstance(channel, str):
        return channel
    item = event.get("item")
    if isinstance(item, dict) and isinstance(item.get("channel"), str):
        return str(item["channel"])
    return None


def notices_for(event: JSON) -> tuple[str | None, list[JSON]]:
    """(only this user, or None for everyone in the team; the notices) for one change."""
    kind = str(event.get("type", ""))
    if kind == "ephemeral":
        message = event.get("message") or {}
        return str(event.get("user", "")), [
            {"kind": "channel", "channel": message.get("channel"), "ephemeral": True}
        ]
    if kind in ("view_opened", "view_updated", "view_closed"):
        view = event.get("view") or {}
        return str(event.get("user", "")), [{"kind": "view", "view_type": view.get("type")}]
    out: list[JSON] = []
    channel = _channel_of(event)
    if channel:
        out.append({"kind": "channel", "channel": channel})
    if kind in _SIDEBAR_EVENTS:
        out.append({"kind": "sidebar"})
    if not out:
        out.append({"kind": "any"})
    return None, out


class LiveHub:
    """Fan sandbox changes out to the open pages, one queue per page."""

    def __init__(self, sb: Sandbox, *, interval: float = 0.25, sleep: Sleep = asyncio.sleep):
        self.sb = sb
        self.interval = interval
        self.sleep = sleep
        self.subscribers: set[Subscriber] = set()
        self._unlisten: Callable[[], None] | None = None
        self._poller: asyncio.Task[None] | None = None
        self._fingerprint: Any = None
        self._watcher: asyncio.Task[None] | None = None
        self.closed = False

    # -- subscriptions -------------------------------------------------------------
    def subscribe(self, user_id: str, team_id: str) -> Subscriber:
        sub = Subscriber(user_id, team_id)
        if self.closed:
            sub.put(CLOSED)
            return sub
        self.subscribers.add(sub)
        if self._watcher is None or self._watcher.done():
            self._watcher = asyncio.get_running_loop().create_task(self._watch())
        if self._unlisten is None:
            self._unlisten = self.sb.on_change(self._on_change)
        if self._poller is None or self._poller.done():
            self._fingerprint = self.fingerprint()
            self._poller = asyncio.get_running_loop().create_task(self._poll())
        return sub

    def unsubscribe(self, sub: Subscriber) -> None:
        self.subscribers.discard(sub)
        if self.subscribers:
            return
        if self._unlisten is not None:
            with contextlib.suppress(ValueError):
                self._unlisten()
            self._unlisten = None
        for task in (self._poller, self._watcher):
            if task is not None:
                task.cancel()
        self._poller = self._watcher = None

    def close(self) -> None:
        """End every open stream (the sandbox is shutting down)."""
        self.closed = True
        for sub in list(self.subscribers):
            sub.put(CLOSED)
            self.unsubscribe(sub)

    async def _watch(self) -> None:
        # Sandbox.hold returns early when the sandbox closes: end the streams then, so
        # an open browser tab never holds up the server's shutdown.
        await self.sb.hold(_FOREVER)
        self.close()

    def publish(self, team_id: str | None, notice: JSON, user_id: str | None = None) -> None:
        """Queue ``notice`` for the team's pages (or one user's); a private conversation's
        notices go only to its members."""
        members: list[str] | None = None
        channel = self.sb.state.channels.get(str(notice.get("channel") or ""))
        if channel is not None and (channel.is_private or channel.is_im or channel.is_mpim):
            members = channel.members
        for sub in list(self.subscribers):
            if team_id is not None and sub.team_id != team_id:
                continue
            if user_id is not None and sub.user_id != user_id:
                continue
            if members is not None and sub.user_id not in members:
                continue
            sub.put(notice)

    # -- sources -------------------------------------------------------------------
    def _on_change(self, team_id: str, event: JSON) -> None:
        only, notices = notices_for(event)
        for notice in notices:
            self.publish(team_id, notice, only)

    def fingerprint(self) -> tuple[Any, ...]:
        """Cheap: one tuple per conversation, no message bodies."""
        return tuple(
            (c.id, c.name, c.is_archived, c.topic, c.purpose, len(c.members))
            for c in self.sb.state.channels.values()
        )

    async def poll_once(self) -> bool:
        """Publish a refresh when the fingerprint moved; True when it did."""
        current = self.fingerprint()
        if current == self._fingerprint:
            return False
        self._fingerprint = current
        self.publish(None, {"kind": "sidebar"})
        self.publish(None, {"kind": "any"})
        return True

    async def _poll(self) -> None:
        while self.subscribers:
            await self.sleep(self.interval)
            try:
                await self.poll_once()
            except Exception:  # a poll must never kill live updates
                log.exception("web client poll failed")
