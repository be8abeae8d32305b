"""What a handler receives: everything through ``ctx``, never through globals.

A context is built per job (or per inline request) and bound to one workspace. It is
immutable: nothing a handler does to it leaks into another handler's run.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from controlroom.envelope import Envelope
    from controlroom.hub import Hub
    from controlroom.security.audit import AuditLog
    from controlroom.security.authz import Authorizer
    from controlroom.store.state import StateStore

__all__ = ["Context"]


@dataclass(frozen=True)
class Context:
    workflow: str
    hub: Hub
    slack: Any
    state: StateStore
    log: Any
    config: Any = field(default_factory=dict)
    envelope: Envelope | None = None
    args: Mapping[str, Any] = field(default_factory=dict)
    action: Mapping[str, Any] | None = None
    job_id: str | None = None
    #: how many earlier runs of this job ended without finishing (a crash, a timeout):
    #: above 0, side effects may already have happened: posts pass ``verify_first``
    attempt: int = 0

    # -- the request ------------------------------------------------------------
    @property
    def body(self) -> Mapping[str, Any]:
        return self.envelope.body if self.envelope else {}

    @property
    def event(self) -> Mapping[str, Any]:
        """The inner Events API event (``body["event"]``), or ``{}``."""
        ev = self.body.get("event")
        return ev if isinstance(ev, Mapping) else {}

    @property
    def team_id(self) -> str:
        return self.envelope.team_id if self.envelope else str(self.args.get("team_id", ""))

    @property
    def user_id(self) -> str:
        """Who acted: the event's user, the clicking user, or the command's user."""
        b = self.body
        if isinstance(b.get("user"), Mapping):
            return str(b["user"].get("id", ""))
        if "user_id" in b:
            return str(b["user_id"])
        return str(self.event.get("user", ""))

    @property
    def channel_id(self) -> str:
        b = self.body
        if isinstance(b.get("channel"), Mapping):
            return str(b["channel"].get("id", ""))
        if "channel_id" in b:
            return str(b["channel_id"])
        ev = self.event
        if "channel" in ev:
            return str(ev["channel"])
        item = ev.get("item")
        return str(item.get("channel", "")) if isinstance(item, Mapping) else ""

    # -- services ---------------------------------------------------------------
    @property
    def audit(self) -> AuditLog:
        """The hash-chained audit log: ``await ctx.audit.record(actor=..., ...)``."""
        return self.hub.audit

    @property
    def authz(self) -> Authorizer:
        """The policy: ``await ctx.authz.check("deploys.rollback", user=..., ...)``."""
        return self.hub.authz

    @property
    def services(self) -> dict[str, Any]:
        """What this workflow's ``@wf.startup`` built (connectors, executors, ledgers)."""
        return self.hub.services.setdefault(self.workflow, {})

    async def enqueue(
        self,
        task: str,
        args: Mapping[str, Any] | None = None,
        *,
        lock_key: str | None = None,
        idempotency_key: str | None = None,
        delay: float = 0.0,
    ) -> str | None:
        """Enqueue a durable task of this workflow (``@wf.task``) by its name."""
        qual = task if "." in task else f"{self.workflow}.{task}"
        payload = {"handler": qual, "args": dict(args or {}), "team_id": self.team_id}
        return await self.hub.queue.enqueue(
            "run_task",
            payload,
            lock_key=lock_key,
            idempotency_key=idempotency_key,
            delay=delay,
            envelope_id=self.envelope.id if self.envelope else None,
        )

    async def respond(self, message: Mapping[str, Any]) -> None:
        """POST to the interaction's ``response_url`` (ephemeral by default)."""
        url = self.body.get("response_url")
        if not isinstance(url, str) or not url:
            raise ValueError("this interaction has no response_url")
        await self.hub.post_response_url(url, dict(message))
