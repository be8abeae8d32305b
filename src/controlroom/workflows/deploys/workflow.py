"""The deploys workflow: CI webhooks in, one living Slack message per deployment out, a
guarded one-click rollback and ``/deploy`` locks.

Configuration (``[workflows.deploys]``)::

    default_channel = "C0DEPLOYS1"      # for events no route matches (service and
                                        # environment must come from the event)
    [[workflows.deploys.routes]]        # sources.DeployRoute
    match = {provider = "github", repository = "acme/*", event = "workflow_run.*"}
    environment = "production"
    channel = "C0DEPLOYS1"
    rollback = "github-checkout"        # an executor below
    [workflows.deploys.executors.github-checkout]   # executors.ExecutorConfig
    type = "github"
    token = "env:GITHUB_ROLLBACK_TOKEN"
    workflow = "rollback.yml"
    [workflows.deploys.rollback]        # or per service / service/environment
    "checkout/staging" = "github-checkout"
    [workflows.deploys.users]           # email -> Slack user, ahead of users.lookupByEmail
    "ci-bot@example.com" = "U0CIBOT01"
    [workflows.deploys.approval]
    expires_after = 3600                # seconds a pending approval request stays valid

Flow. A verified webhook (``@workflow.webhook``) is normalised and recorded in the
ledger; a ``publish`` task, one per delivery and serialised per deployment by its lock
key ``deploy:<id>``, posts the living message on the deployment's first event and
afterwards updates it in place and adds the event to its thread. Ignored events (not
about a deploy, no route, malformed, duplicates) are counted in
``controlroom_deploys_ignored_total{provider,reason}``.

A Rollback click is verified against the ledger (the button's value is only a
reference: it must name this message's deployment and its current rollback target),
refused while the environment is locked, authorised by ``deploys.rollback`` for the
environment and service, optionally approved by a second authorised person, then
started at most once (``DeployLedger.begin_rollback``) and carried out by the
``run_rollback`` task (lock key ``deploy:<id>``, idempotency key ``rollback:<id>``),
which calls the executor at most once (``DeployLedger.claim_send``). Every step is
audited. ``/deploy lock|unlock|status`` manage locks (authorised as ``deploys.lock``).

Slack scopes: ``chat:write`` (invite the bot to the configured channels),
``users:read`` and ``users:read.email`` (authors as mentions), ``usergroups:read``
(policy rules naming user groups), ``commands``; interactivity on.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime
from typing import Any

from prometheus_client import Counter

from controlroom.context import Context
from controlroom.errors import PermanentError
from controlroom.workflow import Workflow
from controlroom.workflows.deploys import rollback as _rollback
from controlroom.workflows.deploys.events import DeployEvent, MalformedPayload
from controlroom.workflows.deploys.executors import build_executor, load_executor_configs
from controlroom.workflows.deploys.ledger import DeployLedger, DeployLock
from controlroom.workflows.deploys.messages import (
    ROLLBACK_ACTION_ID,
    escape,
    event_thread_text,
    status_list_message,
)
from controlroom.workflows.deploys.rollback import APPROVE_ACTION_ID
from controlroom.workflows.deploys.sources import ResolvedRoute, normalise, resolve_route
from controlroom.workflows.deploys.support import (
    NAME,
    SLACK_ERRORS,
    THREAD_TTL,
    ApprovalSettings,
    DeploysConfig,
    DeploysRuntime,
    audit_notification,
    bounded_key,
    config_of,
    post_in_thread,
    render,
    runtime_of,
    slack_error,
    tell,
    update_message,
)

__all__ = [
    "APPROVE_ACTION_ID",
    "ROLLBACK_ACTION_ID",
    "ApprovalSettings",
    "DeploysConfig",
    "DeploysRuntime",
    "workflow",
]

_CHANNEL_ERRORS = frozenset({"channel_not_found", "not_in_channel", "is_archived"})
_NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.\-/]{0,199}")
USAGE = (
    "*/deploy* commands:\n"
    "• `/deploy lock <service> <environment> [reason]`: refuse rollbacks (and show the "
    "lock on deploy messages) until unlocked\n"
    "• `/deploy unlock <service> <environment>`\n"
    "• `/deploy status <service>`: recent deployments and locks"
)

workflow = Workflow(
    NAME,
    description="Deploy notifications with a one-click, authorised rollback",
    scopes=["chat:write", "commands", "usergroups:read", "users:read", "users:read.email"],
    commands={"/deploy": "Lock, unlock or show the deploys of a service"},
    interactivity=True,
    config_model=DeploysConfig,
)


@workflow.startup
async def start(hub: Any) -> None:
    services: dict[str, Any] = hub.services.setdefault(NAME, {})
    if "runtime" in services:
        return
    config: DeploysConfig = hub.workflow_config[NAME]
    configs = load_executor_configs(
        config.executors, allow_plaintext_secrets=hub.settings.allow_plaintext_secrets
    )
    runtime = DeploysRuntime(
        ledger=DeployLedger(hub.db, clock=lambda: datetime.fromtimestamp(hub.clock(), UTC)),
        executors={name: build_executor(cfg) for name, cfg in configs.items()},
        ignored=Counter(
            "controlroom_deploys_ignored",
            "Webhook events the deploys workflow accepted and ignored",
            ["provider", "reason"],
            registry=hub.metrics,
        ),
        rollbacks=Counter(
            "controlroom_deploys_rollbacks",
            "Rollbacks carried out, by outcome",
            ["outcome"],
            registry=hub.metrics,
        ),
    )
    services.update(runtime=runtime, ledger=runtime.ledger, ignored=runtime.ignored)


# -- webhooks -------------------------------------------------------------------------------


def _delivery_id(ctx: Context) -> str:
    """The provider's delivery id, from the envelope's de-duplication key
    (``hook:<source>:<delivery>``); "" when the edge fell back to a body hash."""
    env = ctx.envelope
    if env is None:
        return ""
    prefix = f"{env.source}:"
    delivery = env.dedupe_key[len(prefix) :] if env.dedupe_key.startswith(prefix) else ""
    return "" if delivery.startswith("sha256:") else delivery


def _default_route(config: DeploysConfig, event: DeployEvent) -> ResolvedRoute | None:
    if not config.default_channel or not event.environment:
        return None
    service = event.service or event.repository.rsplit("/", 1)[-1]
    if not service:
        return None
    return ResolvedRoute(service, event.environment, config.default_channel)


async def _receive(ctx: Context, provider: str) -> None:
    rt, config = runtime_of(ctx), config_of(ctx)
    env = ctx.envelope
    assert env is not None
    try:
        result = normalise(
            provider, ctx.body, event_name=env.provider_event, delivery_id=_delivery_id(ctx)
        )
    except MalformedPayload as exc:
        rt.ignored.labels(provider, "malformed").inc()
        ctx.log.warning("deploys.malformed", provider=provider, field=exc.field, reason=exc.reason)
        return
    event = result.event
    if event is None:
        rt.ignored.labels(provider, "not_a_deploy").inc()
        ctx.log.info("deploys.ignored", provider=provider, reason=result.reason)
        return
    route = resolve_route(config.routes, event) or _default_route(config, event)
    if route is None:
        rt.ignored.labels(provider, "no_route").inc()
        ctx.log.info("deploys.unrouted", provider=provider, repository=event.repository)
        return
    upsert = await rt.ledger.upsert_from_event(event, route)
    dep = upsert.deployment
    if dep is None:
        return
    if upsert.duplicate:
        rt.ignored.labels(provider, "duplicate").inc()
    # Enqueued even for a duplicate: if this handler died after recording the event, its
    # retry still publishes it (the idempotency key makes a second enqueue a no-op).
    delivery_key = bounded_key("", f"{event.provider}:{event.delivery_id}")
    await ctx.enqueue(
        "publish",
        {
            "deployment_id": dep.id,
            "delivery": delivery_key,
            "thread_text": event_thread_text(event),
            "changed": upsert.changed or upsert.created,
            "status": event.status,
            "previous_status": upsert.previous_status or "",
        },
        lock_key=f"deploy:{dep.id}",
        idempotency_key=bounded_key("deploys.publish:", delivery_key),
    )


@workflow.webhook("github")
async def github_webhook(ctx: Context) -> None:
    await _receive(ctx, "github")


@workflow.webhook("gitlab")
async def gitlab_webhook(ctx: Context) -> None:
    await _receive(ctx, "gitlab")


@workflow.webhook("jenkins")
async def jenkins_webhook(ctx: Context) -> None:
    await _receive(ctx, "jenkins")


@workflow.webhook("generic")
async def generic_webhook(ctx: Context) -> None:
    await _receive(ctx, "generic")


@workflow.task()
async def publish(ctx: Context) -> None:
    """Post (first event) or update the living message, and add the event to its thread."""
    rt = runtime_of(ctx)
    dep = await rt.ledger.get(int(ctx.args["deployment_id"]))
    if dep is None:
        raise PermanentError(f"deployment {ctx.args['deployment_id']} is not in the ledger")
    if dep.message_ts is None:
        message = await render(ctx, dep)
        try:
            resp = await ctx.slack.chat_postMessage(
                channel=dep.channel,
                text=message.text,
                blocks=message.blocks,
                unfurl_links=False,
                idempotency_key=f"deploys:message:{dep.id}",
                verify_first=ctx.attempt > 0,
            )
        except SLACK_ERRORS as exc:
            error = slack_error(exc)
            if error in _CHANNEL_ERRORS:
                await audit_notification(ctx, dep, "failed", error=error)
                raise PermanentError(
                    f"cannot post deployment {dep.id} to channel {dep.channel}: {error} "
                    "(invite the bot, or fix workflows.deploys routes / default_channel)"
                ) from None
            raise
        channel, ts = str(resp["channel"]), str(resp["ts"])
        await rt.ledger.set_message(dep.id, channel=channel, message_ts=ts)
        dep = await rt.ledger.get(dep.id)
        assert dep is not None
        await audit_notification(ctx, dep, "posted", ts=ts)
        await ctx.state.set(bounded_key("thread:", str(ctx.args["delivery"])), True, ttl=THREAD_TTL)
        return
    if ctx.args.get("changed"):
        await update_message(ctx, dep)
    text = str(ctx.args.get("thread_text") or "")
    newly_failed = ctx.args.get("status") == "failed" and ctx.args.get("previous_status") not in (
        "failed",
        "",
    )
    if newly_failed and dep.status == "failed":
        text = (
            f":rotating_light: *Deploy of {escape(dep.service)} {escape(dep.version)} to "
            f"{escape(dep.environment)} FAILED*\n{text}"
        )
    if text:
        await post_in_thread(
            ctx,
            dep,
            bounded_key("thread:", str(ctx.args["delivery"])),
            text,
            broadcast=newly_failed and dep.status == "failed",
        )


@workflow.task()
async def refresh(ctx: Context) -> None:
    """Re-render the living message (after a lock changed)."""
    dep = await runtime_of(ctx).ledger.get(int(ctx.args["deployment_id"]))
    if dep is not None:
        await update_message(ctx, dep)


# -- rollback (the handlers live in ``rollback``) ------------------------------------------

rollback_clicked = workflow.action(ROLLBACK_ACTION_ID)(_rollback.rollback_clicked)
approve_clicked = workflow.action(APPROVE_ACTION_ID)(_rollback.approve_clicked)
run_rollback = workflow.task()(_rollback.run_rollback)


# -- /deploy ----------------------------------------------------------------------------------


async def _answer(ctx: Context, text: str, blocks: list[dict[str, Any]] | None = None) -> None:
    await tell(ctx, text, blocks=blocks, prefer_response_url=True)


async def _refresh_latest(ctx: Context, service: str, environment: str) -> None:
    """Show a lock change on the newest message of that service and environment."""
    recent = await runtime_of(ctx).ledger.recent(service, 1, environment=environment)
    if recent and recent[0].message_ts:
        await ctx.enqueue(
            "refresh", {"deployment_id": recent[0].id}, lock_key=f"deploy:{recent[0].id}"
        )


async def _authorise_lock(ctx: Context, service: str, environment: str, verb: str) -> bool:
    decision = await ctx.authz.check(
        "deploys.lock",
        user=ctx.user_id,
        channel=ctx.channel_id or None,
        attributes={"environment": environment, "service": service},
        envelope_id=ctx.envelope.id if ctx.envelope else None,
        target=f"{service}/{environment}",
    )
    if decision.allowed and not decision.needs_approval:
        return True
    why = (
        "locks cannot wait for a second person's approval" if decision.allowed else decision.reason
    )
    await _answer(
        ctx,
        f":no_entry: You are not allowed to {verb} {escape(service)} in "
        f"{escape(environment)}. (Policy: {escape(why)})",
    )
    return False


async def _lock(ctx: Context, service: str, environment: str, reason: str) -> None:
    if not await _authorise_lock(ctx, service, environment, "lock"):
        return
    user = ctx.user_id
    result = await runtime_of(ctx).ledger.lock(service, environment, by=user, reason=reason)
    lock: DeployLock = result.lock
    await ctx.audit.record(
        actor=user,
        action="deploys.lock.acquire",
        target=f"{service}/{environment}",
        outcome="locked" if result.acquired else "already_locked",
        envelope_id=ctx.envelope.id if ctx.envelope else None,
        details={"reason": reason, "locked_by": lock.locked_by, "channel": ctx.channel_id},
    )
    if not result.acquired:
        held = f": {escape(lock.reason)}" if lock.reason else ""
        await _answer(
            ctx,
            f":lock: {escape(service)} in {escape(environment)} is already locked by "
            f"<@{lock.locked_by}>{held}.",
        )
        return
    await _answer(
        ctx,
        f":lock: Locked {escape(service)} in {escape(environment)}"
        + (f": {escape(reason)}" if reason else "")
        + f". Rollbacks are refused until `/deploy unlock {escape(service)} "
        f"{escape(environment)}`.",
    )
    await _refresh_latest(ctx, service, environment)


async def _unlock(ctx: Context, service: str, environment: str) -> None:
    if not await _authorise_lock(ctx, service, environment, "unlock"):
        return
    removed = await runtime_of(ctx).ledger.unlock(service, environment)
    await ctx.audit.record(
        actor=ctx.user_id,
        action="deploys.lock.release",
        target=f"{service}/{environment}",
        outcome="unlocked" if removed else "not_locked",
        envelope_id=ctx.envelope.id if ctx.envelope else None,
        details={
            "was_locked_by": removed.locked_by if removed else None,
            "reason": removed.reason if removed else None,
            "channel": ctx.channel_id,
        },
    )
    if removed is None:
        await _answer(ctx, f"{escape(service)} in {escape(environment)} was not locked.")
        return
    await _answer(ctx, f":unlock: Unlocked {escape(service)} in {escape(environment)}.")
    await _refresh_latest(ctx, service, environment)


async def _status(ctx: Context, service: str) -> None:
    ledger = runtime_of(ctx).ledger
    recent = await ledger.recent(service, 10)
    locks = []
    for environment in sorted({d.environment for d in recent}):
        lock = await ledger.current_lock(service, environment)
        if lock is not None:
            locks.append(lock)
    message = status_list_message(service, recent, locks=locks)
    await _answer(ctx, message.text, message.blocks)


@workflow.command("/deploy")
async def deploy_command(ctx: Context) -> None:
    """``/deploy lock|unlock|status``; every answer is ephemeral."""
    text = str(ctx.body.get("text") or "").strip()
    parts = text.split(maxsplit=3)
    sub = parts[0].lower() if parts else ""
    names = parts[1:3]
    if any(not _NAME_RE.fullmatch(n) for n in names):
        await _answer(ctx, "Service and environment names are letters, digits, `-_./`.")
        return
    if sub == "lock" and len(parts) >= 3:
        await _lock(ctx, parts[1], parts[2], parts[3].strip()[:500] if len(parts) > 3 else "")
    elif sub == "unlock" and len(parts) == 3:
        await _unlock(ctx, parts[1], parts[2])
    elif sub == "status" and len(parts) == 2:
        await _status(ctx, parts[1])
    else:
        await _answer(ctx, USAGE)
