"""The Rollback and Approve buttons, and the durable rollback itself.

A click is never trusted: its value (``"<deployment id>:<target id>"``) must name the
deployment whose living message was clicked, that deployment must still be failed or
suspect with no rollback started, and the target must still be its last good
deployment. Then: the environment must not be locked, the policy must allow
``deploys.rollback`` for the environment and service, and (when the rule says so) a
second authorised person must approve. ``DeployLedger.begin_rollback`` lets exactly one
click start the rollback; the ``run_rollback`` task (lock key ``deploy:<id>``,
idempotency key ``rollback:<id>``) updates the message, calls the executor once
(``claim_send``) and records the outcome. Every step is audited under
``deploys.rollback.*``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from controlroom.context import Context
from controlroom.errors import PermanentError
from controlroom.workflows.deploys.executors import RollbackResult
from controlroom.workflows.deploys.ledger import Deployment
from controlroom.workflows.deploys.messages import (
    decode_rollback_value,
    encode_rollback_value,
    escape,
    lock_refusal_text,
)
from controlroom.workflows.deploys.support import (
    SYSTEM_ACTOR,
    DeploysRuntime,
    checkpoint,
    config_of,
    now_of,
    post_in_thread,
    runtime_of,
    tell,
    update_message,
)

__all__ = [
    "APPROVE_ACTION_ID",
    "approve_clicked",
    "rollback_clicked",
    "run_rollback",
]

APPROVE_ACTION_ID = "deploys.rollback.approve"
ACTION = "deploys.rollback"


@dataclass(frozen=True, slots=True)
class _Checked:
    dep: Deployment
    target: Deployment
    #: this person's rollback of it already started (a retry of a job whose worker
    #: died after ``begin_rollback``): carry on with it
    resuming: bool = False


@dataclass(frozen=True, slots=True)
class _Refused:
    outcome: str  # for the audit log: rejected, already, stale
    reason: str  # for the audit log
    text: str  # for the person who clicked


def _mention(user: str | None) -> str:
    return f"<@{user}>" if user and user.isalnum() else escape(user or "someone")


def _container_ts(ctx: Context) -> str:
    container = ctx.body.get("container")
    if isinstance(container, Mapping):
        return str(container.get("message_ts") or "")
    message = ctx.body.get("message")
    return str(message.get("ts") or "") if isinstance(message, Mapping) else ""


def _value(ctx: Context) -> str:
    value = (ctx.action or {}).get("value")
    return value if isinstance(value, str) else ""


def _attributes(dep: Deployment) -> dict[str, str]:
    return {"environment": dep.environment, "service": dep.service}


async def _audit(
    ctx: Context, actor: str, step: str, outcome: str, target: str, **details: Any
) -> None:
    await ctx.audit.record(
        actor=actor,
        action=f"{ACTION}.{step}",
        target=target,
        outcome=outcome,
        envelope_id=ctx.envelope.id if ctx.envelope else None,
        details={"channel": ctx.channel_id or None, **details},
    )


async def _verify(
    ctx: Context, rt: DeploysRuntime, value: str, *, message_ts: str | None, by: str
) -> _Checked | _Refused:
    """Re-read everything the button claims from the ledger. ``by`` is who would start
    the rollback (the clicker, or the requester being approved)."""
    invalid = ":no_entry: This Rollback button is not valid; nothing was done."
    ref = decode_rollback_value(value)
    if ref is None:
        return _Refused("rejected", "the value is not a rollback reference", invalid)
    dep = await rt.ledger.get(ref.deployment_id)
    if dep is None:
        return _Refused("rejected", f"no deployment {ref.deployment_id}", invalid)
    if message_ts is not None and (dep.message_ts != message_ts or dep.channel != ctx.channel_id):
        return _Refused(
            "rejected", f"deployment {dep.id} is not the one in the clicked message", invalid
        )
    if (
        dep.rollback_state == "rolling_back"
        and dep.rollback_by == by
        and dep.rollback_job == _job_key(dep)
        and dep.rollback_target_id == ref.target_id
    ):
        target = await rt.ledger.get(ref.target_id)
        if target is not None:
            return _Checked(dep, target, resuming=True)
    if dep.rollback_state is not None:
        return _Refused(
            "already",
            f"rollback already {dep.rollback_state.replace('_', ' ')}",
            f":information_source: A rollback of {escape(dep.service)} in "
            f"{escape(dep.environment)} was already started by {_mention(dep.rollback_by)}.",
        )
    target = await rt.ledger.get(ref.target_id)
    if target is None or (target.service, target.environment) != (dep.service, dep.environment):
        return _Refused("rejected", f"target {ref.target_id} does not match", invalid)
    if not dep.needs_attention:
        return _Refused(
            "stale",
            f"deployment {dep.id} is {dep.status}, not failed or suspect",
            f":information_source: {escape(dep.service)} {escape(dep.version)} is not a "
            "failed or suspect deploy any more; nothing was done.",
        )
    current = await rt.ledger.last_good(dep.service, dep.environment, before=dep)
    if current is None or current.id != target.id:
        now = f" (it is now {escape(current.version)})" if current else ""
        return _Refused(
            "stale",
            f"target {target.id} is no longer the last good deployment",
            f":information_source: {escape(target.version)} is no longer the last good "
            f"version of {escape(dep.service)} in {escape(dep.environment)}{now}; "
            "nothing was done.",
        )
    return _Checked(dep, target)


async def _guard(ctx: Context, rt: DeploysRuntime, dep: Deployment, actor: str) -> str | None:
    """A refusal text when the environment is locked or no executor is configured."""
    target = f"deployment:{dep.id}"
    lock = await rt.ledger.current_lock(dep.service, dep.environment)
    if lock is not None:
        await _audit(
            ctx,
            actor,
            "click",
            "refused_locked",
            target,
            locked_by=lock.locked_by,
            reason=lock.reason,
        )
        return lock_refusal_text(lock)
    if config_of(ctx).executor_name(dep) not in rt.executors:
        await _audit(ctx, actor, "click", "refused_unconfigured", target)
        return (
            f":warning: No rollback is configured for {escape(dep.service)} in "
            f"{escape(dep.environment)}; nothing was done."
        )
    return None


async def rollback_clicked(ctx: Context) -> None:
    """``deploys.rollback``: verify, check locks, authorise, approve or start."""
    rt = runtime_of(ctx)
    user, value = ctx.user_id, _value(ctx)
    message_ts = _container_ts(ctx)
    await _audit(ctx, user, "click", "received", f"button:{value[:60]}", message_ts=message_ts)
    checked = await _verify(ctx, rt, value, message_ts=message_ts, by=user)
    if isinstance(checked, _Refused):
        await _audit(
            ctx, user, "click", checked.outcome, f"button:{value[:60]}", reason=checked.reason
        )
        await tell(ctx, checked.text)
        return
    dep, target = checked.dep, checked.target
    if checked.resuming:
        await _start(ctx, rt, dep, target, by=user, approved_by=None, resuming=True)
        return
    refusal = await _guard(ctx, rt, dep, user)
    if refusal is not None:
        await tell(ctx, refusal)
        return
    decision = await ctx.authz.check(
        ACTION,
        user=user,
        channel=ctx.channel_id or None,
        attributes=_attributes(dep),
        envelope_id=ctx.envelope.id if ctx.envelope else None,
        target=f"deployment:{dep.id}",
    )
    if not decision.allowed:
        await tell(
            ctx,
            f":no_entry: You are not allowed to roll back {escape(dep.service)} in "
            f"{escape(dep.environment)}, so nothing was done. Ask a release manager. "
            f"(Policy: {escape(decision.reason)})",
        )
        return
    if decision.needs_approval:
        await _request_approval(ctx, rt, dep, target, user)
        return
    await _start(ctx, rt, dep, target, by=user, approved_by=None)


# -- approval -------------------------------------------------------------------------------


def _job_key(dep: Deployment) -> str:
    return f"rollback:{dep.id}"


def _approval_key(dep: Deployment) -> str:
    return f"approval:{dep.id}"


async def _request_approval(
    ctx: Context, rt: DeploysRuntime, dep: Deployment, target: Deployment, requester: str
) -> None:
    key = _approval_key(dep)
    pending = await ctx.state.get(key)
    if isinstance(pending, Mapping) and pending.get("target_id") == target.id:
        who = str(pending.get("requester", ""))
        text = (
            ":hourglass_flowing_sand: Your rollback is waiting for a second person's approval."
            if who == requester
            else f":hourglass_flowing_sand: {_mention(who)} already asked to roll back; a "
            "second authorised person can press *Approve rollback* in the thread."
        )
        await tell(ctx, text)
        return
    value = encode_rollback_value(dep.id, target.id)
    text = (
        f":raising_hand: {_mention(requester)} asks to roll back *{escape(dep.service)}* in "
        f"*{escape(dep.environment)}* from {escape(dep.version)} to "
        f"*{escape(target.version)}*. A second authorised person must approve."
    )
    blocks: list[dict[str, Any]] = [
        {"type": "section", "text": {"type": "mrkdwn", "text": text}},
        {
            "type": "actions",
            "block_id": "deploys.approval",
            "elements": [
                {
                    "type": "button",
                    "action_id": APPROVE_ACTION_ID,
                    "style": "danger",
                    "text": {"type": "plain_text", "text": "Approve rollback"},
                    "value": value,
                    "confirm": {
                        "title": {"type": "plain_text", "text": "Approve the rollback?"},
                        "text": {
                            "type": "mrkdwn",
                            "text": f"Roll back {escape(dep.service)} in "
                            f"{escape(dep.environment)} to {escape(target.version)}?",
                        },
                        "confirm": {"type": "plain_text", "text": "Approve"},
                        "deny": {"type": "plain_text", "text": "Cancel"},
                    },
                }
            ],
        },
    ]
    resp = await ctx.slack.chat_postMessage(
        channel=dep.channel, thread_ts=dep.thread_ts, text=text, blocks=blocks
    )
    await ctx.state.set(
        key,
        {
            "requester": requester,
            "target_id": target.id,
            "ts": str(resp["ts"]),
            "channel": str(resp["channel"]),
            "requested_at": now_of(ctx).timestamp(),
        },
        ttl=config_of(ctx).approval.expires_after,
    )
    await _audit(
        ctx,
        requester,
        "approval",
        "requested",
        f"deployment:{dep.id}",
        target_version=target.version,
    )
    await tell(
        ctx,
        ":hourglass_flowing_sand: A second authorised person must approve this rollback; "
        "the request is in the deploy message's thread.",
    )


async def approve_clicked(ctx: Context) -> None:
    """``deploys.rollback.approve``: a second person approves a pending rollback."""
    rt = runtime_of(ctx)
    user, value = ctx.user_id, _value(ctx)
    await _audit(ctx, user, "approval_click", "received", f"button:{value[:60]}")
    ref = decode_rollback_value(value)
    pending = await ctx.state.get(f"approval:{ref.deployment_id}") if ref else None
    if (
        ref is None
        or not isinstance(pending, Mapping)
        or pending.get("target_id") != ref.target_id
        or pending.get("ts") != _container_ts(ctx)
        or pending.get("channel") != ctx.channel_id
    ):
        await _audit(
            ctx,
            user,
            "approval_click",
            "rejected",
            f"button:{value[:60]}",
            reason="no pending approval matches this button",
        )
        await tell(ctx, ":no_entry: This approval request is no longer valid; nothing was done.")
        return
    requester = str(pending.get("requester", ""))
    checked = await _verify(ctx, rt, value, message_ts=None, by=requester)
    if isinstance(checked, _Refused):
        await _audit(
            ctx,
            user,
            "approval_click",
            checked.outcome,
            f"button:{value[:60]}",
            reason=checked.reason,
        )
        await tell(ctx, checked.text)
        return
    dep, target = checked.dep, checked.target
    if checked.resuming:
        await _start(ctx, rt, dep, target, by=requester, approved_by=user, resuming=True)
        await _close_approval(ctx, dep, target, pending, requester, user)
        return
    refusal = await _guard(ctx, rt, dep, user)
    if refusal is not None:
        await tell(ctx, refusal)
        return
    decision = await ctx.authz.approve(
        ACTION,
        requester=requester,
        approver=user,
        channel=ctx.channel_id or None,
        attributes=_attributes(dep),
        envelope_id=ctx.envelope.id if ctx.envelope else None,
        target=f"deployment:{dep.id}",
    )
    if not decision.allowed:
        await tell(ctx, f":no_entry: You cannot approve this rollback: {escape(decision.reason)}")
        return
    await _start(ctx, rt, dep, target, by=requester, approved_by=user)
    await _close_approval(ctx, dep, target, pending, requester, user)


async def _close_approval(
    ctx: Context,
    dep: Deployment,
    target: Deployment,
    pending: Mapping[str, Any],
    requester: str,
    user: str,
) -> None:
    text = (
        f":white_check_mark: Rollback of {escape(dep.service)} in {escape(dep.environment)} "
        f"to {escape(target.version)} requested by {_mention(requester)}, approved by "
        f"{_mention(user)}."
    )
    await ctx.slack.chat_update(
        channel=str(pending["channel"]),
        ts=str(pending["ts"]),
        text=text,
        blocks=[{"type": "section", "text": {"type": "mrkdwn", "text": text}}],
    )
    await ctx.state.delete(_approval_key(dep))


# -- starting and running -------------------------------------------------------------------


async def _start(
    ctx: Context,
    rt: DeploysRuntime,
    dep: Deployment,
    target: Deployment,
    *,
    by: str,
    approved_by: str | None,
    resuming: bool = False,
) -> None:
    """At most one rollback per deployment: the click that wins ``begin_rollback``
    enqueues the job (a retry of the same click resumes it)."""
    job_key = _job_key(dep)
    won = await rt.ledger.begin_rollback(dep.id, by=by, target_id=target.id, job_key=job_key)
    actor = approved_by or by
    if not won:
        fresh = await rt.ledger.get(dep.id)
        holder = fresh.rollback_by if fresh else None
        await _audit(ctx, actor, "start", "already", f"deployment:{dep.id}", started_by=holder)
        await tell(
            ctx,
            f":information_source: A rollback of {escape(dep.service)} in "
            f"{escape(dep.environment)} was already started by {_mention(holder)}.",
        )
        return
    await _audit(
        ctx,
        by,
        "start",
        "resumed" if resuming else "started",
        f"deployment:{dep.id}",
        approved_by=approved_by,
        target_version=target.version,
        from_version=dep.version,
    )
    await checkpoint(rt, "after_begin_rollback")
    await ctx.enqueue(
        "run_rollback",
        {"deployment_id": dep.id, "target_id": target.id, "job_key": job_key},
        lock_key=f"deploy:{dep.id}",
        idempotency_key=job_key,
    )


async def run_rollback(ctx: Context) -> None:
    """The durable rollback: "Rolling back… by @user", one provider call, the outcome."""
    rt = runtime_of(ctx)
    dep = await rt.ledger.get(int(ctx.args["deployment_id"]))
    target = await rt.ledger.get(int(ctx.args["target_id"]))
    job_key = str(ctx.args["job_key"])
    if dep is None or target is None:
        raise PermanentError(f"rollback of deployment {ctx.args['deployment_id']}: not found")
    actor = dep.rollback_by or SYSTEM_ACTOR
    subject = f"deployment:{dep.id}"
    if dep.rollback_state == "rolling_back" and dep.rollback_job == job_key:
        await update_message(ctx, dep)
        await checkpoint(rt, "before_send")
        if await rt.ledger.claim_send(dep.id, job_key=job_key):
            result = await _call(ctx, rt, dep, target)
        else:
            # An earlier run of this job claimed the send and stopped before recording
            # the outcome: the request may have gone out, so it is not sent again.
            result = RollbackResult(
                False,
                detail="the outcome is unknown (the worker stopped after sending); check "
                "the CI system before trying again",
            )
        recorded = await rt.ledger.finish_rollback(
            dep.id, ok=result.ok, url=result.url, detail=result.detail
        )
        if recorded:
            outcome = "succeeded" if result.ok else "failed"
            rt.rollbacks.labels(outcome).inc()
            await _audit(
                ctx,
                actor,
                "outcome",
                outcome,
                subject,
                url=result.url,
                detail=result.detail,
                target_version=target.version,
            )
    final = await rt.ledger.get(dep.id)
    assert final is not None
    await update_message(ctx, final)
    await _announce(ctx, final, target)


async def _call(
    ctx: Context, rt: DeploysRuntime, dep: Deployment, target: Deployment
) -> RollbackResult:
    name = config_of(ctx).executor_name(dep)
    executor = rt.executors.get(name)
    actor = dep.rollback_by or SYSTEM_ACTOR
    await _audit(
        ctx,
        actor,
        "call",
        "sent",
        f"deployment:{dep.id}",
        executor=name,
        target_version=target.version,
    )
    if executor is None:
        return RollbackResult(False, detail=f"no rollback executor {name!r} is configured")
    try:
        return await executor.rollback(dep, target)
    except Exception as exc:  # the send was claimed: never retried, recorded as failed
        ctx.log.exception("deploys.rollback_call_failed")
        return RollbackResult(False, detail=f"{type(exc).__name__}: {exc}"[:300])


async def _announce(ctx: Context, dep: Deployment, target: Deployment) -> None:
    """The outcome in the thread, once."""
    if dep.rollback_state == "rolled_back":
        text = (
            f":leftwards_arrow_with_hook: Rolled back {escape(dep.service)} in "
            f"{escape(dep.environment)} to *{escape(target.version)}* "
            f"(started by {_mention(dep.rollback_by)})"
        )
    elif dep.rollback_state == "rollback_failed":
        text = (
            f":rotating_light: *Rollback of {escape(dep.service)} in "
            f"{escape(dep.environment)} to {escape(target.version)} FAILED*: "
            f"{escape(dep.rollback_detail or 'no detail')}"
        )
    else:
        return
    url = dep.rollback_url or ""
    if url.startswith(("https://", "http://")) and not any(c in url for c in "<>| \t\n"):
        text += f" · <{url}|View rollback>"
    await post_in_thread(
        ctx,
        dep,
        f"rollback-outcome:{dep.id}",
        text,
        broadcast=dep.rollback_state == "rollback_failed",
    )
