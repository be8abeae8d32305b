"""The hub: one runtime object owning the queue, the store, the enabled workflows and the
services handlers reach through ``ctx``. ``controlroom up``, ``serve`` and ``worker`` each
build one; the web edge uses its intake side, workers its execution side.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
import time
from collections.abc import Awaitable, Callable, Iterable
from typing import Any

import httpx
import structlog
from prometheus_client import CollectorRegistry, Counter, Histogram
from pydantic import BaseModel, ValidationError

from controlroom.config import Settings
from controlroom.context import Context
from controlroom.dispatch import Registry, load_workflows, matching_action
from controlroom.envelope import Envelope
from controlroom.errors import ConfigError, PermanentError
from controlroom.queue import open_queue
from controlroom.queue.base import Backoff, JobInfo, JobQueue, PeriodicSpec
from controlroom.store.db import Database
from controlroom.store.state import StateStore
from controlroom.workflow import Handler, Workflow

__all__ = ["Hub"]

log = structlog.get_logger("controlroom.hub")
SlackFactory = Callable[[str], Any]
PURGE_EVERY = 3600.0  # seconds between two purges of the inbox and finished jobs


def _lifecycle_event(envelope: Envelope) -> str:
    if envelope.kind != "event":
        return ""
    event = envelope.body.get("event")
    kind = event.get("type") if isinstance(event, dict) else None
    return kind if kind in ("tokens_revoked", "app_uninstalled") else ""


def _validate_workflow_config(wf: Workflow, raw: dict[str, Any]) -> Any:
    """``[workflows.<name>]`` through the workflow's ``config_model``; every problem is a
    ``ConfigError`` naming the key."""
    if wf.config_model is None:
        return raw
    model: Any = wf.config_model
    try:
        if isinstance(model, type) and issubclass(model, BaseModel):
            return model.model_validate(raw)
        return model(raw)
    except ValidationError as exc:
        raise ConfigError(
            [
                (
                    ".".join(["workflows", wf.name, *(str(p) for p in err["loc"])]),
                    "configuration",
                    err["msg"],
                )
                for err in exc.errors()
            ]
        ) from None
    except ValueError as exc:
        raise ConfigError([(f"workflows.{wf.name}", "configuration", str(exc))]) from None


class _NoSlackToken:
    """``ctx.slack`` where no token is configured: handlers that never call Slack run
    as usual; a call fails permanently, saying what to configure."""

    def __init__(self, team_id: str) -> None:
        self._team = team_id

    def __getattr__(self, name: str) -> Any:
        raise PermanentError(
            f"no Slack token for workspace {self._team or '?'}: configure slack.bot_token, "
            "or slack.client_id/client_secret and install the app"
        )


class _LazyClient:
    """Defers building the Slack client until the first user-group lookup."""

    def __init__(self, hub: Hub, team_id: str) -> None:
        self._hub = hub
        self._team = team_id

    def __getattr__(self, name: str) -> Any:
        return getattr(self._hub.slack_for(self._team), name)


class Hub:
    def __init__(
        self,
        settings: Settings,
        *,
        queue: JobQueue | None = None,
        db: Database | None = None,
        workflows: Iterable[Workflow] | None = None,
        slack_factory: SlackFactory | None = None,
        metrics: CollectorRegistry | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.settings = settings
        self.clock = clock
        url = settings.effective_database_url
        pools = settings.database
        self.db = db or Database(url, pool_size=pools.pool_size, max_overflow=pools.max_overflow)
        q = settings.queue
        pool_options: dict[str, Any] = (
            {"pool_min_size": pools.queue_pool_min, "pool_size": pools.queue_pool_max}
            if settings.is_distributed
            else {}
        )
        self.queue = queue or open_queue(
            url,
            default_max_attempts=q.max_attempts,
            lease_seconds=q.lease_seconds,
            backoff=Backoff(base=q.backoff_base, cap=q.backoff_cap),
            retention_seconds=q.inbox_retention,
            **pool_options,
        )
        wfs = (
            list(workflows) if workflows is not None else load_workflows(settings.enabled_workflows)
        )
        self.registry = Registry(wfs)
        self.metrics = metrics or CollectorRegistry()
        self._handled = Counter(
            "controlroom_handler_runs",
            "Handler runs by handler and outcome",
            ["handler", "outcome"],
            registry=self.metrics,
        )
        self._handler_seconds = Histogram(
            "controlroom_handler_seconds",
            "Handler run time",
            ["handler"],
            registry=self.metrics,
        )
        self._purged = Counter(
            "controlroom_queue_purged",
            "Rows deleted by the queue's retention purge, by table",
            ["table"],
            registry=self.metrics,
        )
        self._purger: asyncio.Task[None] | None = None
        self._slack_factory = slack_factory
        self._slack_clients: dict[str, Any] = {}
        from controlroom.slack import SlackMetrics, SlackOutbound
        from controlroom.slack.gate_pg import gate_for_database

        # Every Web API call passes one gate: in process memory on SQLite, shared by all
        # workers through PostgreSQL in the distributed mode.
        self.gate = gate_for_database(url, pool_max=settings.database.gate_pool_max)
        self.outbound = SlackOutbound(
            self.gate,
            base_url=settings.slack.api_url,
            metrics=SlackMetrics(self.metrics),
            on_auth_error=self._on_auth_error,
        )
        self.http = httpx.AsyncClient(timeout=10.0)
        from controlroom.security.audit import AuditLog
        from controlroom.security.authz import Authorizer, Policy, SlackUsergroupResolver

        self.audit = AuditLog(self.db, clock)
        self.authz = Authorizer(
            Policy.from_config(settings.policy),
            SlackUsergroupResolver(_LazyClient(self, settings.slack.team_id)),
            self.audit,
        )
        from controlroom.security.scopes import needed_scopes
        from controlroom.workspaces import Workspaces

        self.workspaces = Workspaces(
            settings,
            self.db,
            self.http,
            self.audit,
            bot_scopes=needed_scopes(self.registry.workflows.values()),
            owner=f"{os.uname().nodename}:{os.getpid()}",
            clock=clock,
        )
        self.services: dict[str, dict[str, Any]] = {}
        self.workflow_config: dict[str, Any] = {
            name: _validate_workflow_config(wf, settings.workflows.get(name, {}))
            for name, wf in self.registry.workflows.items()
        }

    # -- lifecycle --------------------------------------------------------------
    async def start(self) -> None:
        """Open the store, the queue and the Slack pool, then run the workflows' start-up
        hooks. On failure everything opened so far is closed again."""
        try:
            await self._start()
        except BaseException:
            await self.close()
            raise

    async def _start(self) -> None:
        from controlroom.store.schema import load_all_tables

        load_all_tables()
        await self.db.migrate()
        await self.queue.open()
        await self.outbound.start()
        self.queue.register("dispatch", self.run_dispatch)
        self.queue.register("run_handler", self.run_handler)
        self.queue.register("run_schedule", self.run_schedule)
        self.queue.register("run_task", self.run_task)
        for h in self.registry.schedules():
            assert h.cron is not None
            self.queue.add_periodic(
                PeriodicSpec(
                    name=h.qualname,
                    cron=h.cron,
                    task="run_schedule",
                    timezone=h.timezone,
                    args={"handler": h.qualname},
                )
            )
        for wf in self.registry.workflows.values():
            for fn in wf.on_start:
                await fn(self)
        self._purger = asyncio.create_task(self._purge_periodically())

    async def close(self) -> None:
        if self._purger is not None:
            self._purger.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._purger
            self._purger = None
        await self.queue.close()
        await self.http.aclose()
        await self.outbound.aclose()
        await self.gate.aclose()
        self.db.dispose()

    # -- retention --------------------------------------------------------------
    async def purge_queue(self, older_than: float | None = None) -> tuple[int, int]:
        """Delete envelopes and finished jobs older than ``older_than`` seconds (default
        ``queue.inbox_retention``); envelopes of live and dead-lettered jobs stay.
        Return (envelopes, jobs) deleted; both are logged and counted in /metrics."""
        q = self.settings.queue
        age = q.inbox_retention if older_than is None else older_than
        envelopes = await self.queue.purge_inbox(age, batch=q.inbox_purge_batch)
        jobs = await self.queue.purge_jobs(age, batch=q.inbox_purge_batch)
        self._purged.labels("inbox").inc(envelopes)
        self._purged.labels("jobs").inc(jobs)
        log.info("queue_purged", envelopes=envelopes, jobs=jobs, older_than_seconds=age)
        return envelopes, jobs

    async def _purge_periodically(self) -> None:
        """Purge a few minutes after start (spread across replicas), then hourly. Every
        process may purge: the deletes are idempotent and batched."""
        await asyncio.sleep(random.uniform(60.0, 600.0))
        while True:
            try:
                await self.purge_queue()
            except Exception as exc:
                log.warning("queue_purge_failed", error=repr(exc))
            await asyncio.sleep(PURGE_EVERY)

    # -- services ---------------------------------------------------------------
    def slack_for(self, team_id: str, token: str | None = None) -> Any:
        """The Slack client acting in a workspace with ``token`` (default: the configured
        bot token). Clients are kept per token, so a rotated token gets a fresh one."""
        if token is None and self.settings.slack.bot_token is not None:
            token = self.settings.slack.bot_token.get()
        key = f"{team_id}:{token or ''}"
        client = self._slack_clients.get(key)
        if client is None:
            if self._slack_factory is not None:
                client = self._slack_factory(team_id)
            elif not token:
                client = _NoSlackToken(team_id)
            else:
                client = self.outbound.client(team_id, token)
            self._slack_clients[key] = client
        return client

    async def _on_auth_error(self, workspace: str, error: str) -> str | None:
        """``token_expired``/``invalid_auth``: an installable app refreshes the rotating
        token (one worker at a time) and the call is retried once with the new one."""
        if self.workspaces.rotator is None:
            return None
        inst = await self.workspaces.rotator.fresh(workspace)
        return inst.bot_token.get() if inst.bot_token else None

    async def client_for(self, team_id: str, enterprise_id: str = "") -> Any:
        """The client for a workspace, from its installation when the app is
        installable; raises ``RetryLater`` while it needs re-authorisation and
        ``PermanentError`` once it was uninstalled or revoked."""
        tok = await self.workspaces.token(team_id, enterprise_id)
        return self.slack_for(team_id, tok.value)

    def provider_of(self, envelope: Envelope) -> str | None:
        if envelope.source.startswith("hook:"):
            src = self.settings.hooks.get(envelope.source[5:])
            return src.provider if src else None
        return None

    async def context(
        self,
        handler: Handler,
        *,
        envelope: Envelope | None = None,
        args: dict[str, Any] | None = None,
        job_id: str | None = None,
        attempt: int = 0,
    ) -> Context:
        team = envelope.team_id if envelope else str((args or {}).get("team_id", ""))
        team = team or self.settings.slack.team_id
        enterprise = envelope.enterprise_id if envelope else ""
        action = matching_action(handler.route, envelope) if envelope else None
        return Context(
            workflow=handler.workflow,
            hub=self,
            slack=await self.client_for(team, enterprise),
            state=StateStore(self.db, handler.workflow, clock=self.clock),
            log=log.bind(
                workflow=handler.workflow,
                handler=handler.name,
                envelope_id=envelope.id if envelope else None,
                job_id=job_id,
            ),
            config=self.workflow_config.get(handler.workflow, {}),
            envelope=envelope,
            args=args or {},
            action=action,
            job_id=job_id,
            attempt=attempt,
        )

    async def post_response_url(self, url: str, message: dict[str, Any]) -> None:
        resp = await self.http.post(url, json=message)
        resp.raise_for_status()

    # -- inline (edge) ----------------------------------------------------------
    def inline_for(self, envelope: Envelope) -> Callable[[Envelope], Awaitable[Any]] | None:
        handler = self.registry.inline_for(envelope, self.provider_of(envelope))
        if handler is None:
            return None

        async def run(env: Envelope) -> Any:
            return await self._call(handler, await self.context(handler, envelope=env))

        return run

    def needs_dispatch(self, envelope: Envelope) -> bool:
        """Whether any durable handler matches (routing is pure and in-process)."""
        if _lifecycle_event(envelope):
            return True
        return any(
            not h.inline for h in self.registry.matches(envelope, self.provider_of(envelope))
        )

    # -- job tasks --------------------------------------------------------------
    async def _load(self, envelope_id: str) -> Envelope:
        env = await self.queue.get_envelope(envelope_id)
        if env is None:
            raise PermanentError(f"envelope {envelope_id} is not in the inbox")
        return env

    async def run_dispatch(self, job: JobInfo) -> None:
        env = await self._load(str(job.args["envelope_id"]))
        kind = _lifecycle_event(env)
        if kind:
            await self._honour_lifecycle(env, kind)
            return
        matched = [h for h in self.registry.matches(env, self.provider_of(env)) if not h.inline]
        log.debug(
            "dispatch", envelope_id=env.id, kind=env.kind, handlers=[h.qualname for h in matched]
        )
        for h in matched:
            await self.queue.enqueue(
                "run_handler",
                {"envelope_id": env.id, "handler": h.qualname, "team_id": env.team_id},
                idempotency_key=f"{env.id}:{h.qualname}",
                max_attempts=h.max_attempts,
                envelope_id=env.id,
            )

    def _handler(self, qualname: str) -> Handler:
        h = self.registry.handlers.get(qualname)
        if h is None:
            raise PermanentError(f"no handler {qualname!r} is enabled")
        return h

    async def run_handler(self, job: JobInfo) -> None:
        env = await self._load(str(job.args["envelope_id"]))
        h = self._handler(str(job.args["handler"]))
        await self._call(
            h, await self.context(h, envelope=env, job_id=job.id, attempt=job.attempts)
        )

    async def run_schedule(self, job: JobInfo) -> None:
        h = self._handler(str(job.args["handler"]))
        await self._call(
            h, await self.context(h, args=dict(job.args), job_id=job.id, attempt=job.attempts)
        )

    async def run_task(self, job: JobInfo) -> None:
        h = self._handler(str(job.args["handler"]))
        args = dict(job.args.get("args") or {})
        args.setdefault("team_id", job.args.get("team_id", ""))
        env = await self.queue.get_envelope(job.envelope_id) if job.envelope_id else None
        await self._call(
            h, await self.context(h, envelope=env, args=args, job_id=job.id, attempt=job.attempts)
        )

    async def _honour_lifecycle(self, env: Envelope, kind: str) -> None:
        """``tokens_revoked`` / ``app_uninstalled``: disable or delete the installation at
        once and stop the workspace's queued jobs with the reason."""
        event = dict(env.body.get("event") or {})
        done = await self.workspaces.lifecycle(event, env.team_id, env.enterprise_id)
        cancelled = 0
        if kind == "app_uninstalled" or done in ("deleted", "revoked"):
            cancelled = await self.queue.cancel_jobs(
                where_args={"team_id": env.team_id},
                reason=f"{kind}: the app lost access to workspace {env.team_id}",
            )
        await self.audit.record(
            actor="slack",
            action=f"slack.{kind}",
            target=env.team_id,
            outcome=done,
            envelope_id=env.id,
            details={"cancelled_jobs": cancelled},
        )
        log.warning("workspace_access_lost", team_id=env.team_id, kind=kind, result=done)

    async def _call(self, handler: Handler, ctx: Context) -> Any:
        start = time.perf_counter()
        try:
            result = await handler.fn(ctx)
        except Exception:
            self._handled.labels(handler.qualname, "error").inc()
            ctx.log.exception("handler failed")
            raise
        finally:
            self._handler_seconds.labels(handler.qualname).observe(time.perf_counter() - start)
        self._handled.labels(handler.qualname, "ok").inc()
        return result
