"""Shared pieces of the deploys workflow: its configuration, the runtime built at start,
rendering and updating the living message, and ephemeral answers. The handlers live in
``workflow`` (webhooks, tasks, ``/deploy``) and ``rollback`` (the buttons)."""

from __future__ import annotations

import hashlib
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import httpx
from prometheus_client import Counter
from pydantic import BaseModel, ConfigDict, Field, model_validator
from slack_sdk.errors import SlackApiError as SdkApiError

from controlroom.context import Context
from controlroom.errors import PermanentError, SlackApiError
from controlroom.workflows.deploys.executors import RollbackExecutor
from controlroom.workflows.deploys.ledger import DeployLedger, Deployment
from controlroom.workflows.deploys.messages import SlackMessage, deployment_message
from controlroom.workflows.deploys.sources import DeployRoute

__all__ = [
    "NAME",
    "SLACK_ERRORS",
    "SYSTEM_ACTOR",
    "THREAD_TTL",
    "ApprovalSettings",
    "DeploysConfig",
    "DeploysRuntime",
    "audit_notification",
    "bounded_key",
    "checkpoint",
    "config_of",
    "now_of",
    "post_in_thread",
    "render",
    "runtime_of",
    "slack_error",
    "slack_user_for",
    "tell",
    "update_message",
]

NAME = "deploys"
SYSTEM_ACTOR = "controlroom"
SLACK_ERRORS = (SlackApiError, SdkApiError)
THREAD_TTL = 30 * 86400.0


# -- configuration --------------------------------------------------------------------------


class ApprovalSettings(BaseModel):
    """Second-person approval (when the policy rule says ``approval = "second_person"``)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    expires_after: float = Field(default=3600.0, gt=0, description="seconds")


class DeploysConfig(BaseModel):
    """``[workflows.deploys]``. Executors are validated (and their secrets resolved) at
    start, with the hub's ``allow_plaintext_secrets``."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    routes: tuple[DeployRoute, ...] = ()
    executors: dict[str, dict[str, Any]] = {}
    rollback: dict[str, str] = Field(
        default={}, description='"service/environment" or "service" -> executor name'
    )
    approval: ApprovalSettings = ApprovalSettings()
    default_channel: str = ""
    users: dict[str, str] = Field(default={}, description="email -> Slack user id")
    user_cache_ttl: float = Field(default=86400.0, gt=0)

    @model_validator(mode="after")
    def _executors_exist(self) -> DeploysConfig:
        known = sorted(self.executors)
        for i, route in enumerate(self.routes):
            if route.rollback and route.rollback not in self.executors:
                raise ValueError(
                    f"routes[{i}].rollback names unknown executor {route.rollback!r} "
                    f"(configured: {', '.join(known) or 'none'})"
                )
        for key, name in self.rollback.items():
            if name not in self.executors:
                raise ValueError(
                    f"rollback.{key} names unknown executor {name!r} "
                    f"(configured: {', '.join(known) or 'none'})"
                )
        return self

    def executor_name(self, dep: Deployment) -> str:
        """The route's executor, else ``rollback["service/environment"]``, else
        ``rollback["service"]``; "" when none is configured."""
        return (
            dep.rollback_executor
            or self.rollback.get(f"{dep.service}/{dep.environment}")
            or self.rollback.get(dep.service, "")
        )


@dataclass
class DeploysRuntime:
    """What ``@workflow.startup`` builds once per hub (``hub.services["deploys"]``)."""

    ledger: DeployLedger
    executors: dict[str, RollbackExecutor]
    ignored: Counter
    rollbacks: Counter
    #: test seams: a named point ("after_begin_rollback", "before_send") -> a callable
    #: run there (raise to simulate a worker dying mid-way)
    faults: dict[str, Callable[[], Awaitable[None]]] = field(default_factory=dict)


def runtime_of(ctx: Context) -> DeploysRuntime:
    runtime = ctx.services.get("runtime")
    if not isinstance(runtime, DeploysRuntime):
        raise PermanentError("the deploys workflow was not started (no runtime in services)")
    return runtime


def config_of(ctx: Context) -> DeploysConfig:
    config = ctx.config
    if not isinstance(config, DeploysConfig):
        raise PermanentError("the deploys workflow has no validated configuration")
    return config


async def checkpoint(rt: DeploysRuntime, point: str) -> None:
    fault = rt.faults.get(point)
    if fault is not None:
        await fault()


def now_of(ctx: Context) -> datetime:
    return datetime.fromtimestamp(ctx.hub.clock(), UTC)


def bounded_key(prefix: str, text: str) -> str:
    """A bounded queue / state key."""
    if len(prefix) + len(text) <= 190:
        return prefix + text
    return prefix + hashlib.sha256(text.encode()).hexdigest()


def slack_error(exc: Exception) -> str:
    if isinstance(exc, SlackApiError):
        return exc.error
    response = getattr(exc, "response", None)
    try:
        return str(response["error"]) if response is not None else str(exc)
    except (KeyError, TypeError):
        return str(exc)


# -- the living message ---------------------------------------------------------------------


async def slack_user_for(ctx: Context, email: str) -> str | None:
    """The Slack user with this email: configuration first, then ``users.lookupByEmail``
    cached in the workflow state (misses too, so an unknown author costs one call per
    ``user_cache_ttl``)."""
    config = config_of(ctx)
    email = email.strip().lower()
    if not email or "@" not in email:
        return None
    configured = {k.lower(): v for k, v in config.users.items()}
    if email in configured:
        return configured[email]
    key = bounded_key("user-by-email:", email)
    cached = await ctx.state.get(key)
    if isinstance(cached, str):
        return cached or None
    try:
        resp = await ctx.slack.users_lookupByEmail(email=email)
        user = resp["user"]
        user_id = str(user["id"]) if isinstance(user, Mapping) else ""
    except SLACK_ERRORS as exc:
        if slack_error(exc) != "users_not_found":
            ctx.log.warning("deploys.user_lookup_failed", error=slack_error(exc))
            return None
        user_id = ""
    await ctx.state.set(key, user_id, ttl=config.user_cache_ttl)
    return user_id or None


async def render(ctx: Context, dep: Deployment) -> SlackMessage:
    """The living message for ``dep`` as the ledger knows it now."""
    rt, config = runtime_of(ctx), config_of(ctx)
    target: Deployment | None = None
    if dep.rollback_state is not None and dep.rollback_target_id is not None:
        target = await rt.ledger.get(dep.rollback_target_id)
    elif dep.needs_attention:
        target = await rt.ledger.last_good(dep.service, dep.environment, before=dep)
    lock = await rt.ledger.current_lock(dep.service, dep.environment)
    users: dict[str, str] = {}
    if dep.author_email:
        user_id = await slack_user_for(ctx, dep.author_email)
        if user_id:
            users[dep.author_email] = user_id
    return deployment_message(
        dep,
        target=target,
        lock=lock,
        user_lookup=users.get,
        now=now_of(ctx),
        rollback_available=config.executor_name(dep) in rt.executors,
    )


async def audit_notification(ctx: Context, dep: Deployment, outcome: str, **details: Any) -> None:
    await ctx.audit.record(
        actor=SYSTEM_ACTOR,
        action="deploys.notify",
        target=f"deployment:{dep.id}",
        outcome=outcome,
        envelope_id=ctx.envelope.id if ctx.envelope else None,
        details={
            "service": dep.service,
            "environment": dep.environment,
            "version": dep.version,
            "status": dep.status,
            "rollback_state": dep.rollback_state,
            "channel": dep.channel,
            **details,
        },
    )


async def update_message(ctx: Context, dep: Deployment) -> None:
    """``chat.update`` the living message (if it was posted) with the current state."""
    if dep.message_ts is None:
        return
    message = await render(ctx, dep)
    await ctx.slack.chat_update(
        channel=dep.channel, ts=dep.message_ts, text=message.text, blocks=message.blocks
    )
    await audit_notification(ctx, dep, "updated", ts=dep.message_ts)


async def post_in_thread(
    ctx: Context, dep: Deployment, once_key: str, text: str, *, broadcast: bool = False
) -> None:
    """Post ``text`` in the message's thread unless ``once_key`` says it was posted."""
    if dep.thread_ts is None or await ctx.state.get(once_key):
        return
    await ctx.slack.chat_postMessage(
        channel=dep.channel,
        thread_ts=dep.thread_ts,
        text=text,
        reply_broadcast=broadcast,
        unfurl_links=False,
    )
    await ctx.state.set(once_key, True, ttl=THREAD_TTL)
    await audit_notification(ctx, dep, "thread", broadcast=broadcast)


# -- telling one person ---------------------------------------------------------------------


async def tell(
    ctx: Context,
    text: str,
    *,
    blocks: list[dict[str, Any]] | None = None,
    prefer_response_url: bool = False,
) -> None:
    """An ephemeral answer to whoever acted: ``chat.postEphemeral`` in the channel, or
    the interaction's ``response_url`` (slash commands prefer it: the bot may not be in
    the channel)."""
    user, channel = ctx.user_id, ctx.channel_id
    url = ctx.body.get("response_url")
    message: dict[str, Any] = {"response_type": "ephemeral", "replace_original": False}
    message["text"] = text
    if blocks:
        message["blocks"] = blocks
    if prefer_response_url and isinstance(url, str) and url:
        try:
            await ctx.respond(message)
            return
        except httpx.HTTPError as exc:
            ctx.log.warning("deploys.response_url_failed", error=type(exc).__name__)
    if user and channel:
        try:
            await ctx.slack.chat_postEphemeral(channel=channel, user=user, text=text, blocks=blocks)
            return
        except SLACK_ERRORS as exc:
            ctx.log.info("deploys.ephemeral_failed", error=slack_error(exc))
    if not prefer_response_url and isinstance(url, str) and url:
        try:
            await ctx.respond(message)
        except httpx.HTTPError as exc:
            ctx.log.warning("deploys.response_url_failed", error=type(exc).__name__)
