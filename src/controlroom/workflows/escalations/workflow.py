"""Escalations wired into the hub: a :rotating_light: reaction (or the "Escalate" message
shortcut, or ``/escalate <permalink or text>``) opens a private incident room with the
agent, the message author, the Tier-2 lead and the customer's account manager, a pinned
briefing with the customer's CRM card, and a pointer in the original thread.

Handlers stay thin: who may escalate what is decided here (allow-listed channels, the
``escalations.open`` policy, one room per message); the opening flow itself is the
durable task ``open_room`` (``flow.open_escalation``), locked per source message.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from typing import Any

from controlroom.context import Context
from controlroom.workflow import Workflow
from controlroom.workflows.escalations.config import EscalationsConfig
from controlroom.workflows.escalations.crm.base import Account, CrmUnavailable, CustomerQuery
from controlroom.workflows.escalations.crm.factory import build_crm
from controlroom.workflows.escalations.flow import (
    Customer,
    Services,
    audit,
    invite_account_manager,
    known_customer,
    open_escalation,
    refresh_briefing,
    resolve_source_customer,
    send_picker,
    services,
    tell_already_escalated,
)
from controlroom.workflows.escalations.ledger import (
    Escalation,
    InvalidTransition,
    Ledger,
    Source,
    State,
)
from controlroom.workflows.escalations.messages import (
    ACTION_NO_CUSTOMER,
    ACTION_PICK_CUSTOMER,
    ACTION_RESOLVE,
    ACTION_SET_CUSTOMER,
    BadActionValue,
    already_escalated_message,
    parse_escalation_value,
    parse_picker_value,
    resolution_summary,
    safe_source_text,
)
from controlroom.workflows.escalations.naming import SequenceAllocator
from controlroom.workflows.escalations.slackio import (
    SlackCallError,
    call,
    channel_info,
    fetch_source,
    parse_permalink,
)

__all__ = ["CALLBACK_ESCALATE", "VIEW_SET_CUSTOMER", "workflow"]

CALLBACK_ESCALATE = "escalations.escalate"
VIEW_SET_CUSTOMER = "escalations.set_customer_view"

workflow = Workflow(
    "escalations",
    description="A reaction opens a private incident room with the customer's story",
    scopes=[
        "reactions:read",
        "channels:history",
        "groups:write",
        "chat:write",
        "pins:write",
        "users:read",
        "users:read.email",
        "usergroups:read",
        "commands",
        "channels:read",
        "groups:read",
    ],
    events=["reaction_added"],
    commands={"/escalate": "Escalate a message (paste its link) or describe the problem"},
    shortcuts={CALLBACK_ESCALATE: "Escalate"},
    interactivity=True,
    config_model=EscalationsConfig,
)


@workflow.startup
async def _start(hub: Any) -> None:
    cfg = hub.workflow_config.get("escalations")
    if not isinstance(cfg, EscalationsConfig):
        cfg = EscalationsConfig()
    allow_plain = bool(hub.settings.allow_plaintext_secrets)
    build_crm(cfg.crm, allow_plain=allow_plain)  # secrets resolve now, or the hub fails

    def crm() -> Any:
        return build_crm(cfg.crm, allow_plain=allow_plain)

    clock = hub.clock
    hub.services.setdefault("escalations", {})["flow"] = Services(
        ledger=Ledger(hub.db, clock=lambda: datetime.fromtimestamp(clock(), UTC)),
        sequences=SequenceAllocator(hub.db),
        crm=crm,
    )


# -- helpers ---------------------------------------------------------------------------------


def _envelope_id(ctx: Context) -> str | None:
    return ctx.envelope.id if ctx.envelope else None


async def _ephemeral(ctx: Context, channel: str, user: str, text: str) -> None:
    await call(
        ctx.slack,
        "chat_postEphemeral",
        expected=("user_not_in_channel", "channel_not_found", "not_in_channel", "is_archived"),
        channel=channel,
        user=user,
        text=text,
    )


async def _tell(ctx: Context, channel: str, user: str, text: str) -> None:
    """Answer the person privately: on the interaction's response_url when there is one."""
    if isinstance(ctx.body.get("response_url"), str) and ctx.body.get("response_url"):
        await ctx.respond({"response_type": "ephemeral", "replace_original": False, "text": text})
    else:
        await _ephemeral(ctx, channel, user, text)


async def request_escalation(
    ctx: Context, *, channel: str, ts: str, user: str, via: str, on_behalf: bool = False
) -> str:
    """Decide whether ``user`` may open a room for ``(channel, ts)`` and enqueue the flow.
    Returns what happened: ``"queued"``, ``"existing"``, ``"pending"``, ``"channel"``,
    ``"denied"``."""
    cfg: EscalationsConfig = ctx.config
    svc = services(ctx)
    source = Source(ctx.team_id, channel, ts)
    existing = await svc.ledger.by_source(source)
    if existing is not None:
        await tell_already_escalated(ctx, existing, user)
        return "existing"
    name: str | None = None
    if channel not in cfg.channels:
        _, name = await channel_info(ctx.slack, channel)
    if not cfg.allows_channel(channel, name):
        if via != "reaction":
            where = ", ".join(c if c.startswith(("C", "G")) else f"#{c}" for c in cfg.channels)
            await _tell(ctx, channel, user, f"Escalations are only opened from {where}.")
        return "channel"
    decision = await ctx.authz.check(
        "escalations.open",
        user=user,
        channel=channel,
        envelope_id=_envelope_id(ctx),
        target=f"message:{channel}:{ts}",
    )
    if not decision.allowed:
        await _tell(
            ctx,
            channel,
            user,
            ":no_entry: You are not allowed to open escalations (policy "
            "`escalations.open`). Ask a support lead to escalate this message.",
        )
        return "denied"
    key = f"escalations.open:{ctx.team_id}:{channel}:{ts}"
    mine = f"requested:{key}:{user}"
    retried = bool(await ctx.state.get(mine))  # this handler already ran once for user
    await ctx.state.set(mine, True, ttl=7 * 86400)
    job = await ctx.enqueue(
        "open_room",
        {"channel": channel, "ts": ts, "user": user, "claimant": key, "on_behalf": on_behalf},
        lock_key=key,
        idempotency_key=key,
    )
    outcome = "ok" if job is not None else "duplicate"
    await audit(
        ctx, "requested", None, actor=user, outcome=outcome, via=via, channel=channel, ts=ts
    )
    if job is not None:
        return "queued"
    esc = await svc.ledger.by_source(source)
    if esc is not None:
        await tell_already_escalated(ctx, esc, user)
    elif not retried and await ctx.state.once(f"pending:{channel}:{ts}:{user}"):
        # another person's request is queued and has not claimed the message yet
        _, root = await fetch_source(ctx.slack, channel, ts)
        msg = already_escalated_message(None)
        await call(
            ctx.slack, "chat_postMessage", channel=channel, thread_ts=root, **msg.as_kwargs()
        )
    return "pending"


# -- triggers --------------------------------------------------------------------------------


@workflow.event("reaction_added")
async def on_reaction(ctx: Context) -> None:
    cfg: EscalationsConfig = ctx.config
    ev = ctx.event
    reaction = str(ev.get("reaction", "")).split("::", 1)[0]
    item = ev.get("item")
    if reaction not in cfg.reactions or not isinstance(item, Mapping):
        return
    if item.get("type") != "message" or not item.get("channel") or not item.get("ts"):
        return
    user = str(ev.get("user", ""))
    if not user:
        return
    await request_escalation(
        ctx, channel=str(item["channel"]), ts=str(item["ts"]), user=user, via="reaction"
    )


@workflow.shortcut(CALLBACK_ESCALATE, message=True)
async def escalate_shortcut(ctx: Context) -> None:
    message = ctx.body.get("message")
    ts = ctx.body.get("message_ts") or (message.get("ts") if isinstance(message, Mapping) else None)
    if not ctx.channel_id or not isinstance(ts, str):
        return
    outcome = await request_escalation(
        ctx, channel=ctx.channel_id, ts=ts, user=ctx.user_id, via="shortcut"
    )
    if outcome == "queued":
        await _tell(ctx, ctx.channel_id, ctx.user_id, "Opening an incident room…")


@workflow.command("/escalate")
async def escalate_command(ctx: Context) -> None:
    text = str(ctx.body.get("text") or "").strip()
    user, here = ctx.user_id, ctx.channel_id
    if not text:
        await ctx.respond(
            {
                "response_type": "ephemeral",
                "text": "Usage: `/escalate <link to a message>` or `/escalate <what is wrong>`",
            }
        )
        return
    target = parse_permalink(text)
    on_behalf = False
    if target is not None:
        try:
            await fetch_source(ctx.slack, *target)
        except SlackCallError:
            await _tell(ctx, here, user, "I cannot find (or cannot read) that message.")
            return
    else:
        cfg: EscalationsConfig = ctx.config
        _, name = await channel_info(ctx.slack, here)
        if not cfg.allows_channel(here, name):
            await _tell(ctx, here, user, "Run `/escalate <text>` in a support channel.")
            return
        # the description becomes the source message, posted once (a retried job finds
        # the ts it posted); the text is made safe so it cannot ping @channel
        posted_key = f"command-post:{ctx.envelope.id if ctx.envelope else ''}"
        posted = await ctx.state.get(posted_key)
        if not isinstance(posted, str):
            safe, _ = safe_source_text(text, limit=3000)
            data, _ = await call(
                ctx.slack, "chat_postMessage", channel=here, text=f"<@{user}> escalated: {safe}"
            )
            posted = str(data["ts"])
            await ctx.state.set(posted_key, posted, ttl=7 * 86400)
        target, on_behalf = (here, posted), True
    outcome = await request_escalation(
        ctx, channel=target[0], ts=target[1], user=user, via="command", on_behalf=on_behalf
    )
    if outcome == "queued":
        await ctx.respond({"response_type": "ephemeral", "text": "Opening an incident room…"})


# -- durable tasks ---------------------------------------------------------------------------


@workflow.task("open_room")
async def open_room(ctx: Context) -> None:
    a = ctx.args
    await open_escalation(
        ctx,
        channel=str(a["channel"]),
        ts=str(a["ts"]),
        user=str(a["user"]),
        claimant=str(a["claimant"]),
        on_behalf=bool(a.get("on_behalf")),
    )


@workflow.schedule("*/5 * * * *")
async def sweep(ctx: Context) -> None:
    """Resume opening flows whose job died for good (e.g. Slack was down for longer
    than the job's retries): the same claimant resumes where the ledger stopped."""
    cfg: EscalationsConfig = ctx.config
    if not cfg.sweep_after:
        return
    svc = services(ctx)
    now = datetime.fromtimestamp(ctx.hub.clock(), UTC)
    tick = int(float(ctx.args.get("tick", ctx.hub.clock())))
    for esc in await svc.ledger.unfinished(idle_for=timedelta(seconds=cfg.sweep_after)):
        if esc.created_at < now - timedelta(days=1):
            continue
        src = esc.source
        key = f"escalations.open:{src.workspace}:{src.channel}:{src.ts}"
        job = await ctx.enqueue(
            "open_room",
            {
                "team_id": src.workspace,
                "channel": src.channel,
                "ts": src.ts,
                "user": esc.escalated_by,
                "claimant": esc.claimant,
            },
            lock_key=key,
            idempotency_key=f"{key}:sweep:{tick}",
        )
        if job is not None:
            await audit(ctx, "resumed", esc.id, actor="controlroom", state=esc.state.value)


async def _escalation(ctx: Context, escalation_id: int) -> Escalation | None:
    esc = await services(ctx).ledger.get(escalation_id)
    if esc is None or esc.source.workspace != ctx.team_id:
        return None
    return esc


@workflow.task("crm_retry")
async def crm_retry(ctx: Context) -> None:
    """Ask the CRM again for a room opened while it was down; update the briefing."""
    cfg: EscalationsConfig = ctx.config
    svc = services(ctx)
    attempt = int(ctx.args.get("attempt", 1))
    esc = await _escalation(ctx, int(ctx.args["escalation_id"]))
    if esc is None or not esc.crm_pending or esc.state == State.ARCHIVED:
        return
    crm = svc.crm()
    try:
        if esc.account_id:
            customer = await known_customer(crm, esc)
        else:
            src, _ = await fetch_source(ctx.slack, esc.source.channel, esc.source.ts)
            customer = await resolve_source_customer(ctx, cfg, crm, src)
    finally:
        await crm.aclose()
    if customer.crm_down:
        again = attempt < cfg.crm_retry_limit
        await audit(
            ctx, "crm_retry", esc.id, actor="controlroom", outcome="unavailable", again=again
        )
        if again:
            await ctx.enqueue(
                "crm_retry",
                {"escalation_id": esc.id, "attempt": attempt + 1},
                idempotency_key=f"escalations.crm_retry:{esc.id}:{attempt + 1}",
                delay=cfg.crm_retry_interval,
            )
        return
    if customer.account is not None:
        await set_account(ctx, esc, customer.account, by="controlroom", how=customer.matched_by)
    else:
        esc = await svc.ledger.set_customer(esc.id, account_id=None, customer_name=None)
        await refresh_briefing(ctx, esc, customer)
        if customer.candidates:
            await send_picker(ctx, esc, customer.candidates, esc.source.ts)
    await audit(ctx, "crm_recovered", esc.id, actor="controlroom", attempt=attempt)


async def set_account(
    ctx: Context, esc: Escalation, account: Account, *, by: str, how: str
) -> Escalation:
    """Record the customer, invite its account manager, rewrite the briefing."""
    esc = await services(ctx).ledger.set_customer(
        esc.id, account_id=account.id, customer_name=account.name, crm_pending=False
    )
    manager, why = await invite_account_manager(ctx, esc, account)
    failures = {account.owner_email: why} if manager is None and account.owner_email else {}
    await refresh_briefing(
        ctx, esc, Customer(account=account, matched_by=how), extra_failures=failures
    )
    await audit(
        ctx, "customer_set", esc.id, actor=by, account=account.id, manager_invited=bool(manager)
    )
    return esc


@workflow.task("apply_customer")
async def apply_customer(ctx: Context) -> None:
    """The customer typed into the "Set customer" modal (found by the submission)."""
    esc = await _escalation(ctx, int(ctx.args["escalation_id"]))
    if esc is None:
        return
    crm = services(ctx).crm()
    try:
        account = await crm.get_account(str(ctx.args["account_id"]))
    finally:
        await crm.aclose()
    if account is not None:
        await set_account(ctx, esc, account, by=str(ctx.args["user"]), how="set by hand")


@workflow.task("archive_room")
async def archive_room(ctx: Context) -> None:
    svc = services(ctx)
    esc = await _escalation(ctx, int(ctx.args["escalation_id"]))
    if esc is None or esc.state != State.RESOLVED or esc.room_channel_id is None:
        return
    await call(
        ctx.slack,
        "conversations_archive",
        expected=("already_archived",),
        channel=esc.room_channel_id,
    )
    esc = await svc.ledger.record_archived(esc.id)
    await audit(ctx, "archived", esc.id, actor="controlroom", room=esc.room_channel_id)


# -- buttons and menus -----------------------------------------------------------------------


async def _in_room(ctx: Context, room: str, user: str) -> bool:
    cursor = ""
    for _ in range(50):
        kwargs: dict[str, Any] = {"channel": room, "limit": 1000}
        if cursor:
            kwargs["cursor"] = cursor
        data, error = await call(
            ctx.slack, "conversations_members", expected=("channel_not_found",), **kwargs
        )
        if error:
            return False
        if user in (data.get("members") or ()):
            return True
        cursor = str((data.get("response_metadata") or {}).get("next_cursor") or "")
        if not cursor:
            return False
    return False


async def _may_change(ctx: Context, esc: Escalation, user: str, action: str) -> bool:
    """The escalating agent and the room's members may change an incident; anyone else
    needs the ``escalations.<action>`` policy (checked and audited)."""
    if user == esc.escalated_by:
        return True
    if esc.room_channel_id and await _in_room(ctx, esc.room_channel_id, user):
        return True
    decision = await ctx.authz.check(
        f"escalations.{action}",
        user=user,
        channel=ctx.channel_id or None,
        envelope_id=_envelope_id(ctx),
        target=f"escalation:{esc.id}",
    )
    return decision.allowed


@workflow.action(ACTION_RESOLVE)
async def resolve_clicked(ctx: Context) -> None:
    cfg: EscalationsConfig = ctx.config
    svc = services(ctx)
    user = ctx.user_id
    try:
        escalation_id = parse_escalation_value(ACTION_RESOLVE, (ctx.action or {}).get("value"))
    except BadActionValue:
        await audit(
            ctx, "resolve_rejected", None, actor=user, outcome="rejected", reason="bad value"
        )
        return
    esc = await _escalation(ctx, escalation_id)
    if esc is None or esc.room_channel_id != ctx.channel_id:
        await audit(ctx, "resolve_rejected", escalation_id, actor=user, outcome="rejected")
        await _tell(ctx, ctx.channel_id, user, "This button does not belong to this room.")
        return
    if not await _may_change(ctx, esc, user, "resolve"):
        await audit(ctx, "resolve_rejected", esc.id, actor=user, outcome="denied")
        await _tell(ctx, ctx.channel_id, user, "Only people in this room can resolve it.")
        return
    try:
        esc = await svc.ledger.record_resolved(esc.id, by=user)
    except InvalidTransition as exc:
        current = await svc.ledger.get(esc.id)
        resuming = (
            current is not None
            and current.state == State.RESOLVED
            and current.resolved_by == user
            and current.summary_ts is None
        )
        if not resuming or current is None:
            await audit(
                ctx, "resolve_rejected", esc.id, actor=user, outcome="rejected", state=exc.current
            )
            who = f" by <@{current.resolved_by}>" if current and current.resolved_by else ""
            await _tell(ctx, ctx.channel_id, user, f"This incident is already resolved{who}.")
            return
        esc = current
    await audit(ctx, "resolved", esc.id, actor=user, room=esc.room_channel_id)
    assert esc.resolved_at is not None and esc.room_channel_id is not None
    delay = timedelta(seconds=cfg.archive_after)
    summary = resolution_summary(
        resolved_by=user,
        resolved_at=esc.resolved_at,
        opened_at=esc.created_at,
        room_channel_id=esc.room_channel_id,
        customer_name=esc.customer_name,
        archive_after=delay,
    )
    _, root = await fetch_source(ctx.slack, esc.source.channel, esc.source.ts)
    data, _ = await call(
        ctx.slack,
        "chat_postMessage",
        channel=esc.source.channel,
        thread_ts=root,
        **summary.as_kwargs(),
    )
    await svc.ledger.record_summary(esc.id, summary_ts=str(data["ts"]))
    await call(ctx.slack, "chat_postMessage", channel=esc.room_channel_id, **summary.as_kwargs())
    await ctx.enqueue(
        "archive_room",
        {"escalation_id": esc.id},
        idempotency_key=f"escalations.archive:{esc.id}",
        delay=cfg.archive_after,
    )
    await audit(ctx, "archive_scheduled", esc.id, actor=user, after_seconds=cfg.archive_after)


@workflow.action(ACTION_PICK_CUSTOMER)
async def customer_picked(ctx: Context) -> None:
    user = ctx.user_id
    option = (ctx.action or {}).get("selected_option") or {}
    try:
        escalation_id, account_id = parse_picker_value(option.get("value"))
    except BadActionValue:
        await audit(ctx, "customer_picked", None, actor=user, outcome="rejected")
        return
    esc = await _escalation(ctx, escalation_id)
    if esc is None or not await _may_change(ctx, esc, user, "set_customer"):
        await audit(ctx, "customer_picked", escalation_id, actor=user, outcome="rejected")
        return
    crm = services(ctx).crm()
    try:
        account = await crm.get_account(account_id)
    except CrmUnavailable:
        await ctx.respond({"replace_original": False, "text": "The CRM is unavailable; try again."})
        return
    finally:
        await crm.aclose()
    if account is None:
        await ctx.respond({"replace_original": False, "text": "That account no longer exists."})
        return
    await set_account(ctx, esc, account, by=user, how="chosen by the agent")
    await ctx.respond({"replace_original": True, "text": f"Customer set to {account.name}."})


@workflow.action(ACTION_NO_CUSTOMER)
async def no_customer(ctx: Context) -> None:
    user = ctx.user_id
    try:
        escalation_id = parse_escalation_value(ACTION_NO_CUSTOMER, (ctx.action or {}).get("value"))
    except BadActionValue:
        return
    await audit(ctx, "customer_none", escalation_id, actor=user)
    await ctx.respond({"delete_original": True})


@workflow.action(ACTION_SET_CUSTOMER, inline=True)
async def set_customer_clicked(ctx: Context) -> dict[str, Any]:
    try:
        escalation_id = parse_escalation_value(ACTION_SET_CUSTOMER, (ctx.action or {}).get("value"))
    except BadActionValue:
        return {}
    trigger = ctx.body.get("trigger_id")
    if not isinstance(trigger, str):
        return {}
    view = {
        "type": "modal",
        "callback_id": VIEW_SET_CUSTOMER,
        "private_metadata": str(escalation_id),
        "title": {"type": "plain_text", "text": "Set customer"},
        "submit": {"type": "plain_text", "text": "Set"},
        "close": {"type": "plain_text", "text": "Cancel"},
        "blocks": [
            {
                "type": "input",
                "block_id": "customer",
                "label": {"type": "plain_text", "text": "Customer name, domain or account id"},
                "element": {"type": "plain_text_input", "action_id": "query", "max_length": 200},
            }
        ],
    }
    await call(
        ctx.slack, "views_open", expected=("expired_trigger_id",), trigger_id=trigger, view=view
    )
    return {}


def _submitted_query(body: Mapping[str, Any]) -> str:
    view = body.get("view") or {}
    values = ((view.get("state") or {}).get("values") or {}).get("customer") or {}
    return str((values.get("query") or {}).get("value") or "").strip()


@workflow.view(VIEW_SET_CUSTOMER, inline=True)
async def set_customer_submitted(ctx: Context) -> dict[str, Any]:
    view = ctx.body.get("view") or {}
    user = ctx.user_id
    try:
        escalation_id = parse_escalation_value(VIEW_SET_CUSTOMER, view.get("private_metadata"))
    except BadActionValue:
        return {"response_action": "errors", "errors": {"customer": "This form has expired."}}
    esc = await _escalation(ctx, escalation_id)
    if esc is None or not await _may_change(ctx, esc, user, "set_customer"):
        await audit(ctx, "customer_set", escalation_id, actor=user, outcome="rejected")
        return {"response_action": "errors", "errors": {"customer": "Not your incident."}}
    query = _submitted_query(ctx.body)
    if not query:
        return {"response_action": "errors", "errors": {"customer": "Type a name or domain."}}
    crm = services(ctx).crm()
    try:
        found = await crm.find_accounts(
            CustomerQuery(account_ids=(query,), domains=(query,), names=(query,), limit=6)
        )
    except CrmUnavailable:
        return {"response_action": "errors", "errors": {"customer": "The CRM is unavailable."}}
    finally:
        await crm.aclose()
    if not found:
        return {"response_action": "errors", "errors": {"customer": f"No account matches {query}."}}
    if len(found) > 1:
        names = ", ".join(a.name for a in found[:5])
        return {"response_action": "errors", "errors": {"customer": f"Several match: {names}."}}
    await ctx.enqueue(
        "apply_customer",
        {"escalation_id": esc.id, "account_id": found[0].id, "user": user},
    )
    return {"response_action": "clear"}
