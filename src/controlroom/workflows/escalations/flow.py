"""The opening flow of an escalation, step by step on the ledger's state machine, and the
later changes to a room (customer chosen, CRM back, resolved, archived).

Each step is one Slack side effect followed by one ledger record, so a job that dies and
runs again does only what is missing. The room name is reserved before the channel is
created; a resumed job that meets ``name_taken`` adopts the channel the bot made.
Every step is audited (``escalations.<step>``, target ``escalation:<id>``).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

from controlroom.workflows.escalations.config import EscalationsConfig
from controlroom.workflows.escalations.crm.base import (
    Account,
    CrmConnector,
    CrmUnavailable,
    strip_legal_suffix,
)
from controlroom.workflows.escalations.ledger import Escalation, Ledger, Source, State
from controlroom.workflows.escalations.messages import (
    Briefing,
    SourceMessage,
    already_escalated_message,
    briefing_message,
    customer_picker,
    pointer_message,
)
from controlroom.workflows.escalations.naming import (
    SequenceAllocator,
    anext_free_name,
    room_name,
)
from controlroom.workflows.escalations.resolve import (
    Ambiguous,
    Resolved,
    ResolveInput,
    Unknown,
    resolve_customer,
)
from controlroom.workflows.escalations.slackio import (
    call,
    channel_info,
    fetch_source,
    find_channel_by_name,
    person,
)

if TYPE_CHECKING:
    from controlroom.context import Context

__all__ = [
    "Customer",
    "Services",
    "audit",
    "invite_account_manager",
    "known_customer",
    "open_escalation",
    "refresh_briefing",
    "resolve_source_customer",
    "send_picker",
    "services",
    "tell_already_escalated",
]

StepHook = Callable[[str], Awaitable[None]]
CrmFactory = Callable[[], CrmConnector]

_INVITE_ERRORS = (
    "already_in_channel",
    "user_not_found",
    "cant_invite",
    "cant_invite_self",
    "user_is_deactivated",
    "user_is_restricted",
    "user_is_ultra_restricted",
    "ura_max_channels",
    "not_allowed_token_type",
)


@dataclass
class Services:
    """What ``@workflow.startup`` builds once per hub (``ctx.services``)."""

    ledger: Ledger
    sequences: SequenceAllocator
    crm: CrmFactory
    #: test seam: awaited after each Slack side effect, before the ledger records it
    after_step: StepHook | None = None
    bot_user_id: str = ""


def services(ctx: Context) -> Services:
    svc = ctx.services.get("flow")
    if not isinstance(svc, Services):
        raise RuntimeError("the escalations workflow did not start (no services)")
    return svc


async def audit(
    ctx: Context,
    action: str,
    escalation_id: int | None,
    *,
    actor: str,
    outcome: str = "ok",
    **details: Any,
) -> None:
    await ctx.audit.record(
        actor=actor or "controlroom",
        action=f"escalations.{action}",
        target=f"escalation:{escalation_id}" if escalation_id else "",
        outcome=outcome,
        envelope_id=ctx.envelope.id if ctx.envelope else None,
        details=details,
    )


async def _bot_user(ctx: Context, svc: Services) -> str:
    if not svc.bot_user_id:
        data, _ = await call(ctx.slack, "auth_test")
        svc.bot_user_id = str(data.get("user_id") or "")
    return svc.bot_user_id


def _now(ctx: Context) -> datetime:
    return datetime.fromtimestamp(ctx.hub.clock(), UTC)


@dataclass
class Customer:
    """What the flow knows about the customer right now."""

    account: Account | None = None
    candidates: tuple[Account, ...] = ()
    crm_down: bool = False
    reason: str = ""
    matched_by: str = ""
    hint_account_id: str | None = None

    @property
    def slug_source(self) -> str:
        return strip_legal_suffix(self.account.name) if self.account else "unknown"


async def resolve_source_customer(
    ctx: Context, cfg: EscalationsConfig, crm: CrmConnector, src: SourceMessage
) -> Customer:
    info, _ = await channel_info(ctx.slack, src.channel)
    author_email = ""
    if src.author and not src.author_is_bot:
        author_email = (await person(ctx.slack, src.author)).email
    inp = ResolveInput(
        text=src.text, channel=info, own_team_id=ctx.team_id, author_email=author_email
    )
    result = await resolve_customer(inp, cfg.resolve, crm)
    if isinstance(result, Resolved):
        return Customer(account=result.account, matched_by=result.explanation)
    if isinstance(result, Ambiguous):
        names = ", ".join(a.name for a in result.candidates[:5])
        return Customer(
            candidates=result.candidates,
            reason=f"Several customers match ({names}); the agent was asked to pick one.",
        )
    assert isinstance(result, Unknown)
    return Customer(
        crm_down=result.crm_error is not None,
        reason=result.reason,
        hint_account_id=result.hint_account_id,
    )


async def known_customer(crm: CrmConnector, esc: Escalation) -> Customer:
    assert esc.account_id is not None
    try:
        account = await crm.get_account(esc.account_id)
    except CrmUnavailable:
        return Customer(crm_down=True, hint_account_id=esc.account_id)
    if account is None:
        return Customer(reason=f"account {esc.account_id} is no longer in the CRM")
    return Customer(account=account, matched_by="recorded earlier")


async def manager_user(ctx: Context, account: Account | None) -> tuple[str | None, str]:
    """The account manager's Slack user id (by CRM email), or ``(None, why not)``."""
    if account is None or not account.owner_email:
        return None, "no account manager in the CRM"
    data, error = await call(
        ctx.slack,
        "users_lookupByEmail",
        expected=("users_not_found", "user_not_found"),
        email=account.owner_email,
    )
    if error:
        return None, "not in this workspace"
    user = data.get("user") or {}
    return (str(user.get("id")) if user.get("id") else None), ""


async def _invite_one(ctx: Context, room: str, user_id: str, failed: dict[str, str]) -> bool:
    _, error = await call(
        ctx.slack, "conversations_invite", expected=_INVITE_ERRORS, channel=room, users=user_id
    )
    if error and error != "already_in_channel":
        failed[user_id] = error
        return False
    return True


async def _invitees(
    ctx: Context,
    cfg: EscalationsConfig,
    esc: Escalation,
    src: SourceMessage,
    customer: Customer,
    failed: dict[str, str],
) -> list[str]:
    wanted = [esc.escalated_by]
    if src.author and not src.author_is_bot and src.author != esc.escalated_by:
        author = await person(ctx.slack, src.author)
        internal = author.found and not author.is_bot and not author.deleted
        if internal and author.team_id in ("", ctx.team_id):
            wanted.append(src.author)
    if cfg.tier2_lead and cfg.lead_is_group:
        data, error = await call(
            ctx.slack,
            "usergroups_users_list",
            expected=("no_such_subteam", "subteam_not_found", "missing_scope"),
            usergroup=cfg.tier2_lead,
        )
        if error:
            failed[cfg.tier2_lead] = error
        wanted.extend(str(u) for u in data.get("users") or () if isinstance(u, str))
    elif cfg.tier2_lead:
        wanted.append(cfg.tier2_lead)
    manager, why = await manager_user(ctx, customer.account)
    if manager:
        wanted.append(manager)
    elif customer.account is not None and customer.account.owner_email:
        failed[customer.account.owner_email] = why
    return list(dict.fromkeys(wanted))


async def _create_room(ctx: Context, svc: Services, esc: Escalation) -> tuple[str, str]:
    """Create the reserved room (or adopt it when a previous attempt created it)."""
    assert esc.room_name is not None
    base = esc.room_name
    name = base
    bot = await _bot_user(ctx, svc)
    tried: set[str] = set()
    for _ in range(20):
        data, error = await call(
            ctx.slack, "conversations_create", expected=("name_taken",), name=name, is_private=True
        )
        if not error:
            channel = data.get("channel") or {}
            return str(channel["id"]), str(channel.get("name") or name)
        existing = await find_channel_by_name(ctx.slack, name)
        if existing is not None and existing.get("is_private") and existing.get("creator") == bot:
            owner = await svc.ledger.by_room(esc.source.workspace, str(existing["id"]))
            if owner is None or owner.id == esc.id:
                await audit(ctx, "room_adopted", esc.id, actor=bot, room=existing["id"], name=name)
                return str(existing["id"]), name
        tried.add(name)

        async def taken(candidate: str) -> bool:
            return (
                candidate in tried or await find_channel_by_name(ctx.slack, candidate) is not None
            )

        name = await anext_free_name(base, taken)
        esc = await svc.ledger.rename(esc.id, name=name)
        await audit(ctx, "room_renamed", esc.id, actor=bot, name=name, clash=base)
    raise RuntimeError(f"no free room name for {base!r}")


def _briefing(
    cfg: EscalationsConfig,
    esc: Escalation,
    src: SourceMessage,
    customer: Customer,
    manager: str | None,
) -> Briefing:
    return Briefing(
        escalation_id=esc.id,
        source=src,
        escalated_by=esc.escalated_by,
        escalated_at=esc.created_at,
        account=customer.account,
        crm_unavailable=customer.crm_down,
        unknown_reason=customer.reason,
        matched_by=customer.matched_by,
        account_manager_user=manager,
        invite_failures=esc.invite_failures,
        archive_after=timedelta(seconds=cfg.archive_after) if cfg.archive_after else None,
        currency=cfg.currency,
    )


async def _hook(svc: Services, step: str) -> None:
    if svc.after_step is not None:
        await svc.after_step(step)


async def open_escalation(
    ctx: Context,
    *,
    channel: str,
    ts: str,
    user: str,
    claimant: str,
    on_behalf: bool = False,
) -> Escalation:
    """Run (or resume) the opening flow for the message at ``(channel, ts)``."""
    svc = services(ctx)
    cfg: EscalationsConfig = ctx.config
    source = Source(ctx.team_id, channel, ts)
    esc, won = await svc.ledger.claim(source, claimant=claimant, escalated_by=user)
    if not won or esc.escalated_by != user:
        await tell_already_escalated(ctx, esc, user)
        return esc
    if esc.finished:
        return esc
    await ctx.state.once(f"told:{esc.id}:{user}")
    if esc.state == State.CLAIMED and esc.room_name is None:
        await audit(ctx, "claimed", esc.id, actor=user, channel=channel, ts=ts)
    crm = svc.crm()
    try:
        src, root = await fetch_source(ctx.slack, channel, ts)
        if on_behalf:
            src = replace(src, author=user, author_is_bot=False)
        if esc.account_id and not esc.crm_pending:
            customer = await known_customer(crm, esc)
            customer.matched_by = str(await ctx.state.get(f"matched:{esc.id}", "") or "")
        else:
            customer = await resolve_source_customer(ctx, cfg, crm, src)
            if customer.matched_by:
                await ctx.state.set(f"matched:{esc.id}", customer.matched_by)
        account_id = customer.account.id if customer.account else customer.hint_account_id
        esc = await svc.ledger.set_customer(
            esc.id,
            account_id=account_id,
            customer_name=customer.account.name if customer.account else None,
            crm_pending=customer.crm_down,
        )
        return await _steps(ctx, svc, cfg, esc, src, root, customer)
    except Exception as exc:
        reason = f"{type(exc).__name__}: {exc}"
        await svc.ledger.record_error(esc.id, reason)
        await audit(ctx, "step_failed", esc.id, actor=user, outcome="error", reason=reason[:300])
        raise
    finally:
        await crm.aclose()


async def _steps(
    ctx: Context,
    svc: Services,
    cfg: EscalationsConfig,
    esc: Escalation,
    src: SourceMessage,
    root: str,
    customer: Customer,
) -> Escalation:
    bot = await _bot_user(ctx, svc)
    if esc.room_name is None:
        now = _now(ctx)
        seq = await svc.sequences.next(esc.source.workspace, now.year)
        name = room_name(cfg.room_name, customer=customer.slug_source, when=now, seq=seq)
        esc = await svc.ledger.reserve_name(esc.id, name=name, seq=seq)
        await audit(ctx, "name_reserved", esc.id, actor=bot, name=esc.room_name, seq=esc.seq)
    if esc.state == State.CLAIMED:
        created, name = await _create_room(ctx, svc, esc)
        await _hook(svc, "channel_created")
        esc = await svc.ledger.record_channel_created(esc.id, channel_id=created, name=name)
        await audit(ctx, "channel_created", esc.id, actor=bot, room=created, name=name)
    if esc.room_channel_id is None:
        raise RuntimeError(f"escalation {esc.id} has no room in state {esc.state}")
    room: str = esc.room_channel_id
    if esc.state == State.CHANNEL_CREATED:
        failed: dict[str, str] = {}
        invited = []
        for uid in await _invitees(ctx, cfg, esc, src, customer, failed):
            if uid != bot and await _invite_one(ctx, room, uid, failed):
                invited.append(uid)
        await _hook(svc, "invited")
        esc = await svc.ledger.record_invited(esc.id, invited=invited, failed=failed)
        await audit(ctx, "invited", esc.id, actor=bot, invited=invited, failed=failed)
    if esc.state == State.INVITED:
        manager, _ = await manager_user(ctx, customer.account)
        msg = briefing_message(_briefing(cfg, esc, src, customer, manager))
        data, _ = await call(
            ctx.slack,
            "chat_postMessage",
            channel=room,
            idempotency_key=f"escalations:briefing:{esc.id}",
            verify_first=ctx.attempt > 0,
            **msg.as_kwargs(),
        )
        await _hook(svc, "briefed")
        esc = await svc.ledger.record_briefed(esc.id, message_ts=str(data["ts"]))
        await audit(ctx, "briefed", esc.id, actor=bot, room=room, ts=esc.briefing_ts)
    if esc.state == State.BRIEFED:
        # pinning is idempotent (already_pinned), so it is repeated on resume, never lost
        _, pin_error = await call(
            ctx.slack,
            "pins_add",
            expected=("already_pinned",),
            channel=room,
            timestamp=esc.briefing_ts,
        )
        if pin_error is None:
            await audit(ctx, "pinned", esc.id, actor=bot, room=room, ts=esc.briefing_ts)
        await _hook(svc, "pinned")
        pointer = pointer_message(room, escalated_by=esc.escalated_by)
        data, _ = await call(
            ctx.slack,
            "chat_postMessage",
            channel=esc.source.channel,
            thread_ts=root,
            idempotency_key=f"escalations:pointer:{esc.id}",
            verify_first=ctx.attempt > 0,
            **pointer.as_kwargs(),
        )
        await _hook(svc, "pointer_posted")
        esc = await svc.ledger.record_pointer_posted(esc.id, message_ts=str(data["ts"]))
        await audit(ctx, "pointer_posted", esc.id, actor=bot, ts=esc.pointer_ts)
    if esc.state == State.POINTER_POSTED:
        await _follow_ups(ctx, cfg, esc, customer, root)
        esc = await svc.ledger.record_done(esc.id)
        await audit(
            ctx,
            "opened",
            esc.id,
            actor=esc.escalated_by,
            room=room,
            name=esc.room_name,
            customer=esc.customer_name,
            crm_pending=esc.crm_pending,
        )
    return esc


async def _follow_ups(
    ctx: Context, cfg: EscalationsConfig, esc: Escalation, customer: Customer, root: str
) -> None:
    """The customer picker for an ambiguous match; the CRM retry when it was down."""
    if customer.candidates:
        await send_picker(ctx, esc, customer.candidates, root)
    if customer.crm_down:
        await ctx.enqueue(
            "crm_retry",
            {"escalation_id": esc.id, "attempt": 1},
            idempotency_key=f"escalations.crm_retry:{esc.id}:1",
            delay=cfg.crm_retry_interval,
        )
        await audit(ctx, "crm_retry_scheduled", esc.id, actor="controlroom", attempt=1)


async def send_picker(
    ctx: Context, esc: Escalation, candidates: Sequence[Account], root: str
) -> None:
    if not await ctx.state.once(f"picker:{esc.id}:{len(candidates)}"):
        return
    msg = customer_picker(esc.id, candidates)
    await call(
        ctx.slack,
        "chat_postEphemeral",
        expected=("user_not_in_channel", "channel_not_found", "not_in_channel"),
        channel=esc.source.channel,
        user=esc.escalated_by,
        thread_ts=root,
        **msg.as_kwargs(),
    )
    await audit(
        ctx, "picker_sent", esc.id, actor="controlroom", candidates=[a.id for a in candidates]
    )


async def tell_already_escalated(ctx: Context, esc: Escalation, user: str) -> None:
    """A thread reply linking the room, once per user (never to the escalating agent)."""
    if user == esc.escalated_by or not await ctx.state.once(f"told:{esc.id}:{user}"):
        return
    _, root = await fetch_source(ctx.slack, esc.source.channel, esc.source.ts)
    msg = already_escalated_message(esc.room_channel_id)
    await call(
        ctx.slack,
        "chat_postMessage",
        channel=esc.source.channel,
        thread_ts=root,
        **msg.as_kwargs(),
    )
    await audit(ctx, "already_escalated", esc.id, actor=user, room=esc.room_channel_id)


# -- later changes to an open room -----------------------------------------------------------


async def invite_account_manager(
    ctx: Context, esc: Escalation, account: Account
) -> tuple[str | None, str]:
    if esc.room_channel_id is None:
        return None, "no room yet"
    manager, why = await manager_user(ctx, account)
    if manager is None:
        return None, why
    failed: dict[str, str] = {}
    if await _invite_one(ctx, esc.room_channel_id, manager, failed):
        return manager, ""
    return None, failed.get(manager, "cannot invite")


async def refresh_briefing(
    ctx: Context,
    esc: Escalation,
    customer: Customer,
    *,
    extra_failures: Mapping[str, str] | None = None,
) -> None:
    """Rewrite the pinned briefing with what is known now."""
    if esc.room_channel_id is None or esc.briefing_ts is None:
        return
    cfg: EscalationsConfig = ctx.config
    src, _ = await fetch_source(ctx.slack, esc.source.channel, esc.source.ts)
    manager, _ = await manager_user(ctx, customer.account)
    if extra_failures:
        esc = replace(esc, invite_failures={**esc.invite_failures, **extra_failures})
    msg = briefing_message(_briefing(cfg, esc, src, customer, manager))
    await call(
        ctx.slack,
        "chat_update",
        channel=esc.room_channel_id,
        ts=esc.briefing_ts,
        **msg.as_kwargs(),
    )
