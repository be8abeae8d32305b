"""The digests workflow: read opted-in channels, post digests on schedule, preview on
demand.

Ingest. ``message`` events (thread replies included; ``message_changed`` replaces,
``message_deleted`` deletes) and ``reaction_added``/``reaction_removed`` of opted-in
channels go to the ``DigestStore``; a message containing a digest's no-digest marker is
never stored (only a keyless placeholder, so a late event cannot store it). On start
the history of opted-in channels with nothing stored is read (``backfill``); before
each digest the window's history is read again (``reconcile``) to catch missed events.
When the history cannot be read in full, the digest says so (fail closed). A daily
``purge`` removes messages past their retention.

Schedule. Schedules are static, so one ``due_digests`` schedule runs every minute and
enqueues ``post_digest`` for each digest whose cron tick (in its own time zone) has
come, with idempotency key ``digest:<name>:<period>`` and lock key ``digest:<name>``.
``post_digest`` claims the period's row (UNIQUE: one digest per period), summarises,
carries items forward, renders, freezes the messages, then posts them in order,
recording each ``ts``: a restart resumes where it stopped without doubling a message.

``/digest now [channel]``: a preview for the caller only (ephemeral), of a channel the
caller is a member of; audited.

Slack scopes: ``channels:history``, ``groups:history``, ``channels:read``,
``groups:read``, ``chat:write``, ``commands``, ``reactions:read``.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

import httpx

from controlroom.context import Context
from controlroom.errors import PermanentError
from controlroom.workflow import Workflow
from controlroom.workflows.digests.config import (
    DigestsConfig,
    DigestSettings,
    channel_ref,
    due_periods,
)
from controlroom.workflows.digests.runner import (
    DIGEST_EVENT_TYPE,
    NAME,
    SLACK_ERRORS,
    DigestsRuntime,
    build_digest,
    channel_policies,
    checkpoint,
    config_of,
    post_run,
    read_history,
    resolve_channels,
    runtime_of,
    slack_error,
    store_slack_message,
    window_start,
)
from controlroom.workflows.digests.store import DigestStore

__all__ = [
    "DIGEST_EVENT_TYPE",
    "DigestSettings",
    "DigestsConfig",
    "DigestsRuntime",
    "enqueue_due",
    "workflow",
]

SYSTEM_ACTOR = "controlroom"
MAX_PREVIEW_WINDOW = 24 * 3600.0
MAX_PREVIEW_PARTS = 5
USAGE = (
    "*/digest* commands:\n"
    "• `/digest now`: a preview of this channel's digest, for you only\n"
    "• `/digest now #channel`: the same for another channel you are a member of"
)

workflow = Workflow(
    NAME,
    description="Digests of decisions, action items and open questions, on schedule",
    scopes=[
        "channels:history",
        "groups:history",
        "channels:read",
        "groups:read",
        "chat:write",
        "commands",
        "reactions:read",
    ],
    events=["message.channels", "message.groups", "reaction_added", "reaction_removed"],
    commands={"/digest": "Preview the digest of a channel (only you see it)"},
    config_model=DigestsConfig,
)


@workflow.startup
async def start(hub: Any) -> None:
    services: dict[str, Any] = hub.services.setdefault(NAME, {})
    if "runtime" not in services:
        services["runtime"] = DigestsRuntime(store=DigestStore(hub.db))
        services["store"] = services["runtime"].store
    config: DigestsConfig = hub.workflow_config[NAME]
    if config.backfill_on_start and config.digests:
        await hub.queue.enqueue(
            "run_task",
            {
                "handler": f"{NAME}.backfill",
                "args": {"only_empty": True},
                "team_id": hub.settings.slack.team_id,
            },
            lock_key="digests:backfill",
            idempotency_key=f"digests:backfill-on-start:{int(hub.clock() // 600)}",
        )


def _now(ctx: Context) -> float:
    return float(ctx.hub.clock())


def _envelope_id(ctx: Context) -> str | None:
    return ctx.envelope.id if ctx.envelope else None


# -- ingest ---------------------------------------------------------------------------------


@workflow.event("message")
async def on_message(ctx: Context) -> None:
    """Store, replace or delete a message of an opted-in channel."""
    event = ctx.event
    channel = str(event.get("channel") or "")
    policy = (await channel_policies(ctx)).get(channel)
    if policy is None:
        return
    store = runtime_of(ctx).store
    subtype = str(event.get("subtype") or "")
    if subtype == "message_deleted":
        ts = event.get("deleted_ts") or (event.get("previous_message") or {}).get("ts")
        if ts:
            await store.delete_message(channel, str(ts), now=_now(ctx))
        return
    if subtype == "message_changed":
        message = event.get("message")
        if isinstance(message, Mapping):
            await store_slack_message(ctx, channel, message, policy, mode="changed")
        return
    await store_slack_message(ctx, channel, event, policy, mode="new")


async def _reaction(ctx: Context, *, add: bool) -> None:
    event = ctx.event
    item = event.get("item")
    if not isinstance(item, Mapping) or item.get("type") != "message":
        return
    channel, ts = str(item.get("channel") or ""), str(item.get("ts") or "")
    name, user = str(event.get("reaction") or ""), str(event.get("user") or "")
    if not (channel and ts and name and user):
        return
    if channel not in await channel_policies(ctx):
        return
    await runtime_of(ctx).store.react(channel, ts, name, user, add=add, now=_now(ctx))


@workflow.event("reaction_added")
async def on_reaction_added(ctx: Context) -> None:
    await _reaction(ctx, add=True)


@workflow.event("reaction_removed")
async def on_reaction_removed(ctx: Context) -> None:
    await _reaction(ctx, add=False)


@workflow.task()
async def backfill(ctx: Context) -> None:
    """Read the history of opted-in channels (all, the ``channels`` given, or with
    ``only_empty`` those with nothing stored) back to their retention."""
    rt = runtime_of(ctx)
    policies = await channel_policies(ctx)
    wanted = ctx.args.get("channels")
    now = _now(ctx)
    for channel, policy in sorted(policies.items()):
        if isinstance(wanted, list) and channel not in wanted:
            continue
        if ctx.args.get("only_empty") and await rt.store.count(channel):
            continue
        complete = await read_history(ctx, channel, now - policy.retention, now + 1.0, policy)
        ctx.log.info("digests.backfilled", channel=channel, complete=complete)


@workflow.schedule("17 3 * * *")
async def purge(ctx: Context) -> None:
    """Delete stored messages past their channel's retention (daily)."""
    config = config_of(ctx)
    policies = await channel_policies(ctx)
    default = min((d.retention_seconds for d in config.digests), default=14 * 86400.0)
    removed = await runtime_of(ctx).store.purge(
        {c: p.retention for c, p in policies.items()}, default, _now(ctx)
    )
    ctx.log.info("digests.purged", removed=removed)


# -- schedule and post -----------------------------------------------------------------------


async def enqueue_due(hub: Any, now: datetime) -> list[str]:
    """Enqueue ``post_digest`` for every digest due at ``now``; returns the
    ``digest:<name>:<period>`` keys newly enqueued (a period is enqueued once)."""
    config: DigestsConfig = hub.workflow_config[NAME]
    keys: list[str] = []
    for d, tick in due_periods(config, now):
        period = tick.isoformat()
        key = f"digest:{d.name}:{period}"
        job = await hub.queue.enqueue(
            "run_task",
            {
                "handler": f"{NAME}.post_digest",
                "args": {"digest": d.name, "period": period},
                "team_id": hub.settings.slack.team_id,
            },
            lock_key=f"digest:{d.name}",
            idempotency_key=key,
        )
        if job is not None:
            keys.append(key)
    return keys


@workflow.schedule("* * * * *")
async def due_digests(ctx: Context) -> None:
    """Every minute: enqueue the digests whose cron tick has come."""
    await enqueue_due(ctx.hub, datetime.fromtimestamp(_now(ctx), UTC))


async def _target_of(ctx: Context, d: DigestSettings) -> str:
    target = (await resolve_channels(ctx, [d.target]))[d.target]
    if target is None:
        raise PermanentError(f"digest {d.name}: target channel {d.target!r} not found")
    return target


@workflow.task()
async def post_digest(ctx: Context) -> None:
    """Claim the period, build and freeze the digest once, post it exactly once."""
    rt, config = runtime_of(ctx), config_of(ctx)
    d = config.digest(str(ctx.args.get("digest", "")))
    if d is None:
        raise PermanentError(f"no digest named {ctx.args.get('digest')!r} is configured")
    period = str(ctx.args["period"])
    try:
        end = datetime.fromisoformat(period)
    except ValueError:
        raise PermanentError(f"bad digest period {period!r}") from None
    run = await rt.store.claim(d.name, period, end.timestamp(), _now(ctx))
    if run.state == "posted":
        return
    resumed = run.state == "posting"
    target = await _target_of(ctx, d)
    if run.state == "claimed":
        refs = await resolve_channels(ctx, d.channels)
        channels = [c for c in refs.values() if c is not None]
        unknown = [r for r, c in refs.items() if c is None]
        if unknown:
            ctx.log.warning("digests.unknown_channels", digest=d.name, channels=unknown)
        start = await window_start(ctx, d, end)
        built = await build_digest(
            ctx,
            d,
            channels,
            start,
            end.timestamp(),
            title=d.title or f"Digest: {d.name}",
            missing=unknown,
        )
        run = await rt.store.freeze(
            run,
            rendered=built.rendered,
            window_start=start,
            complete=built.complete,
            summariser=built.summariser,
            items=built.items,
            now=_now(ctx),
        )
        await ctx.audit.record(
            actor=SYSTEM_ACTOR,
            action="digests.build",
            target=f"digest:{d.name}",
            outcome="complete" if built.complete else "incomplete",
            envelope_id=_envelope_id(ctx),
            details={
                "period": period,
                "messages_read": built.messages_read,
                "items": len(built.items),
                "summariser": built.summariser,
                "parts": len(built.rendered),
            },
        )
    await checkpoint(rt, "before_post")
    posted = await post_run(ctx, run, target, resumed=resumed)
    await ctx.audit.record(
        actor=SYSTEM_ACTOR,
        action="digests.post",
        target=f"digest:{d.name}",
        outcome="posted",
        envelope_id=_envelope_id(ctx),
        details={"period": period, "channel": target, "ts": posted, "resumed": resumed},
    )


# -- /digest now ----------------------------------------------------------------------------


@workflow.command("/digest", inline=True)
async def digest_ack(ctx: Context) -> dict[str, Any]:
    """Answer at once (the preview follows from ``digest_command``)."""
    parts = str(ctx.body.get("text") or "").split()
    if not parts or parts[0].lower() != "now" or len(parts) > 2:
        return {"response_type": "ephemeral", "text": USAGE}
    return {"response_type": "ephemeral", "text": "Working on it\u2026"}


async def _tell(ctx: Context, text: str, blocks: list[dict[str, Any]] | None = None) -> None:
    """An ephemeral answer to the caller: the response_url, else chat.postEphemeral."""
    message: dict[str, Any] = {"response_type": "ephemeral", "replace_original": False}
    message["text"] = text
    if blocks:
        message["blocks"] = blocks
    if isinstance(ctx.body.get("response_url"), str):
        try:
            await ctx.respond(message)
            return
        except httpx.HTTPError as exc:
            ctx.log.warning("digests.response_url_failed", error=type(exc).__name__)
    await ctx.slack.chat_postEphemeral(
        channel=ctx.channel_id, user=ctx.user_id, text=text, blocks=blocks
    )


async def _is_member(ctx: Context, channel: str, user: str) -> bool:
    cursor = ""
    for _ in range(100):
        try:
            resp = await ctx.slack.conversations_members(channel=channel, limit=1000, cursor=cursor)
        except SLACK_ERRORS as exc:
            ctx.log.info("digests.members_failed", channel=channel, error=slack_error(exc))
            return False
        if user in (resp.get("members") or []):
            return True
        cursor = str((resp.get("response_metadata") or {}).get("next_cursor") or "")
        if not cursor:
            return False
    return False


async def _audit_preview(ctx: Context, channel: str, outcome: str, **details: Any) -> None:
    await ctx.audit.record(
        actor=ctx.user_id,
        action="digests.preview",
        target=f"channel:{channel}",
        outcome=outcome,
        envelope_id=_envelope_id(ctx),
        details={"from_channel": ctx.channel_id, **details},
    )


@workflow.command("/digest")
async def digest_command(ctx: Context) -> None:
    """``/digest now [channel]``: the digest so far, shown to the caller only."""
    parts = str(ctx.body.get("text") or "").split()
    if not parts or parts[0].lower() != "now" or len(parts) > 2:
        return  # the inline answer showed the usage
    user = ctx.user_id
    try:
        ref = channel_ref(parts[1]) if len(parts) == 2 else ctx.channel_id
    except ValueError:
        await _tell(ctx, "That is not a channel. Try `/digest now #channel`.")
        return
    channel = (await resolve_channels(ctx, [ref]))[ref]
    config = config_of(ctx)
    policies = await channel_policies(ctx)
    if channel is None or channel not in policies:
        await _audit_preview(ctx, channel or ref, "not_opted_in")
        await _tell(ctx, "That channel is not read by any digest.")
        return
    if channel != ctx.channel_id and not await _is_member(ctx, channel, user):
        await _audit_preview(ctx, channel, "denied", reason="not a member")
        await _tell(ctx, "You can only preview the digest of a channel you are a member of.")
        return
    ids = await resolve_channels(ctx, [c for d in config.digests for c in d.channels])
    d = next(d for d in config.digests if any(ids.get(c) == channel for c in d.channels))
    now = _now(ctx)
    last = await runtime_of(ctx).store.last_window_end(d.name, before=now)
    start = max(last if last is not None else now - MAX_PREVIEW_WINDOW, now - d.retention_seconds)
    built = await build_digest(ctx, d, [channel], start, now, title=f"Preview: {d.name}")
    await _audit_preview(
        ctx,
        channel,
        "previewed",
        digest=d.name,
        items=len(built.items),
        complete=built.complete,
    )
    messages: list[dict[str, Any]] = built.rendered
    if len(messages) > MAX_PREVIEW_PARTS:  # a response_url takes five messages
        shown = MAX_PREVIEW_PARTS - 1
        messages = [
            *messages[:shown],
            {"text": f"The preview has {len(built.rendered)} parts; the first {shown} are shown."},
        ]
    for message in messages:
        await _tell(ctx, message["text"], message.get("blocks"))
