"""Block Kit for the living deploy message, its thread lines and ``/deploy status``.

Everything here is pure: the caller loads the deployment, its rollback target, the lock
and resolves Slack users (``user_lookup`` maps an email to a user id, e.g. a dict filled
from ``users.lookupByEmail``), then posts or updates what these functions return.

The Rollback button's ``value`` is only a reference (``"<deployment id>:<target id>"``);
the click handler must re-read the ledger, re-check the target and authorise the user.
Slack's limits are respected: header 150 characters, button text 75, value 2000,
confirm title 100 and text 300, section text 3000, field 2000.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from controlroom.workflows.deploys.events import DeployEvent
from controlroom.workflows.deploys.ledger import DeployLock, Deployment

__all__ = [
    "ROLLBACK_ACTION_ID",
    "RollbackRef",
    "SlackMessage",
    "UserLookup",
    "decode_rollback_value",
    "deployment_message",
    "encode_rollback_value",
    "event_thread_text",
    "format_duration",
    "lock_refusal_text",
    "status_list_message",
]

ROLLBACK_ACTION_ID = "deploys.rollback"
UserLookup = Callable[[str], str | None]

HEADER_MAX = 150
BUTTON_TEXT_MAX = 75
VALUE_MAX = 2000
CONFIRM_TITLE_MAX = 100
CONFIRM_TEXT_MAX = 300
SECTION_MAX = 3000
FIELD_MAX = 2000

_STATUS_LOOK: dict[str, tuple[str, str]] = {
    "queued": (":hourglass_flowing_sand:", "Deploy queued"),
    "in_progress": (":rocket:", "Deploying"),
    "succeeded": (":white_check_mark:", "Deployed"),
    "failed": (":rotating_light:", "Deploy FAILED"),
    "cancelled": (":no_entry_sign:", "Deploy cancelled"),
    "unstable": (":warning:", "Deployed, unstable"),
}
_ROLLBACK_LOOK: dict[str, tuple[str, str]] = {
    "rolling_back": (":rewind:", "Rolling back"),
    "rolled_back": (":leftwards_arrow_with_hook:", "Rolled back"),
    "rollback_failed": (":rotating_light:", "ROLLBACK FAILED"),
}


@dataclass(frozen=True, slots=True)
class SlackMessage:
    """``text`` is the notification / accessibility fallback; ``blocks`` the layout."""

    text: str
    blocks: list[dict[str, Any]]


@dataclass(frozen=True, slots=True)
class RollbackRef:
    deployment_id: int
    target_id: int


def encode_rollback_value(deployment_id: int, target_id: int) -> str:
    return f"{deployment_id}:{target_id}"


def decode_rollback_value(value: object) -> RollbackRef | None:
    """The reference in a Rollback button's value; None if it is not one of ours."""
    if not isinstance(value, str) or len(value) > 41:
        return None
    left, sep, right = value.partition(":")
    if not sep or not left.isdigit() or not right.isdigit():
        return None
    return RollbackRef(int(left), int(right))


# -- text helpers -------------------------------------------------------------------------


def _clip(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def escape(text: str) -> str:
    """Escape the three characters Slack's mrkdwn treats as control characters."""
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def _safe_url(url: str | None) -> str:
    if not url or not url.startswith(("https://", "http://")):
        return ""
    if any(c in url for c in "<>| \t\n\r"):
        return ""
    return url


def _link(url: str | None, label: str) -> str:
    safe = _safe_url(url)
    label = escape(label).replace("|", "¦")
    return f"<{safe}|{label}>" if safe else label


def _mention(user_id: str | None) -> str:
    if user_id and user_id.isalnum() and user_id[0] in "UW":
        return f"<@{user_id}>"
    return escape(user_id or "someone")


def _author(dep: Deployment, lookup: UserLookup | None) -> tuple[str, str]:
    """(mrkdwn, plain) for the author: a Slack mention when the email maps."""
    plain = dep.author_name or dep.author_login or dep.author_email
    if lookup is not None and dep.author_email:
        user_id = lookup(dep.author_email)
        if user_id:
            return _mention(user_id), plain or user_id
    return (escape(plain) if plain else "unknown"), plain


def format_duration(seconds: float) -> str:
    seconds = max(0, int(seconds))
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    if hours:
        return f"{hours}h {minutes:02d}m"
    if minutes:
        return f"{minutes}m {secs:02d}s"
    return f"{secs}s"


def _duration(dep: Deployment, now: datetime) -> str:
    if dep.started_at is None:
        return ""
    if dep.finished_at is not None:
        return format_duration((dep.finished_at - dep.started_at).total_seconds())
    if dep.finished:
        return ""
    return "running for " + format_duration((now - dep.started_at).total_seconds())


def _look(dep: Deployment) -> tuple[str, str]:
    if dep.rollback_state in _ROLLBACK_LOOK:
        return _ROLLBACK_LOOK[dep.rollback_state]
    if dep.status == "succeeded" and dep.suspect:
        return ":warning:", "Deployed, marked SUSPECT"
    return _STATUS_LOOK[dep.status]


# -- the living message -------------------------------------------------------------------


def deployment_message(
    dep: Deployment,
    *,
    target: Deployment | None = None,
    lock: DeployLock | None = None,
    user_lookup: UserLookup | None = None,
    now: datetime | None = None,
    rollback_available: bool = True,
) -> SlackMessage:
    """The message for ``dep``. ``target`` is its rollback target (``last_good``, or the
    deployment ``rollback_target_id`` names once a rollback started); ``lock`` the
    environment's current lock. ``rollback_available`` False (no rollback executor is
    configured for the deployment) names the target without offering the button."""
    now = now or datetime.now(UTC)
    emoji, words = _look(dep)
    version = dep.version or dep.commit_sha[:7] or "unknown version"
    if dep.rollback_state is not None:
        to = f" to {target.version}" if target else ""
        subject = f"{dep.service} in {dep.environment}{to}"
    else:
        subject = f"{dep.service} {version} in {dep.environment}"
    author_md, author_plain = _author(dep, user_lookup)
    blocks: list[dict[str, Any]] = [
        {
            "type": "header",
            "text": {
                "type": "plain_text",
                "text": _clip(f"{emoji} {words}: {subject}", HEADER_MAX),
                "emoji": True,
            },
        }
    ]
    fields = [
        f"*Service*\n{escape(dep.service)}",
        f"*Environment*\n{escape(dep.environment)}",
        f"*Version*\n{_link(dep.commit_url, version)}",
        f"*Author*\n{author_md}",
    ]
    duration = _duration(dep, now)
    if duration:
        fields.append(f"*Duration*\n{duration}")
    if _safe_url(dep.run_url):
        fields.append(f"*Run*\n{_link(dep.run_url, 'View run')}")
    blocks.append(
        {
            "type": "section",
            "block_id": "deploys.summary",
            "fields": [{"type": "mrkdwn", "text": _clip(f, FIELD_MAX)} for f in fields],
        }
    )
    if dep.status == "failed" and dep.rollback_state is None:
        reasons = [
            f"{label}: {escape(dep.details[key])}"
            for key, label in (
                ("failed_steps", "failed step"),
                ("failed_jobs", "failed jobs"),
                ("failure_reason", "reason"),
            )
            if dep.details.get(key)
        ]
        line = ":rotating_light: *This deploy failed.*" + (
            " " + "; ".join(reasons) if reasons else ""
        )
        blocks.append(_section(line, "deploys.failure"))
    if dep.needs_attention and target is None and dep.rollback_state is None:
        blocks.append(
            _context(
                f":information_source: No earlier good deploy of {escape(dep.service)} in "
                f"{escape(dep.environment)} is recorded, so no rollback is offered."
            )
        )
    if lock is not None:
        blocks.append(_section(_lock_banner(lock), "deploys.lock"))
    if dep.rollback_state is not None:
        blocks.append(_section(_rollback_line(dep, target), "deploys.rollback_state"))
    elif dep.needs_attention and target is not None and rollback_available:
        blocks.append(_rollback_actions(dep, target))
    elif dep.needs_attention and target is not None:
        blocks.append(
            _context(
                f":information_source: The last good version is {escape(target.version)}; no "
                f"rollback is configured for {escape(dep.service)} in {escape(dep.environment)}."
            )
        )
    context = [f"{escape(dep.provider)}", f"deployment #{dep.id}"]
    if dep.last_event:
        context.insert(1, escape(dep.last_event))
    blocks.append(_context(" · ".join(context)))
    offered = target if rollback_available or dep.rollback_state is not None else None
    return SlackMessage(
        text=_fallback(dep, words, version, author_plain, offered, lock), blocks=blocks
    )


def _context(text: str) -> dict[str, Any]:
    return {"type": "context", "elements": [{"type": "mrkdwn", "text": _clip(text, SECTION_MAX)}]}


def _when(moment: datetime) -> str:
    """A timestamp every reader sees in their own time zone (Slack date formatting)."""
    fallback = f"{moment.astimezone(UTC):%Y-%m-%d %H:%M} UTC"
    return f"<!date^{int(moment.timestamp())}^{{date_short_pretty}} {{time}}|{fallback}>"


def _section(text: str, block_id: str) -> dict[str, Any]:
    return {
        "type": "section",
        "block_id": block_id,
        "text": {"type": "mrkdwn", "text": _clip(text, SECTION_MAX)},
    }


def _lock_banner(lock: DeployLock) -> str:
    reason = f": {escape(lock.reason)}" if lock.reason else ""
    return (
        f":lock: *{escape(lock.environment)} is locked* for {escape(lock.service)} by "
        f"{_mention(lock.locked_by)}{reason}. Deploys and rollbacks are refused until "
        f"`/deploy unlock {escape(lock.service)} {escape(lock.environment)}`."
    )


def _rollback_line(dep: Deployment, target: Deployment | None) -> str:
    to = f" to *{escape(target.version)}*" if target else ""
    by = _mention(dep.rollback_by)
    if dep.rollback_state == "rolling_back":
        return f":hourglass_flowing_sand: Rolling back{to}… by {by}"
    link = f" · {_link(dep.rollback_url, 'View rollback')}" if _safe_url(dep.rollback_url) else ""
    if dep.rollback_state == "rolled_back":
        return f":leftwards_arrow_with_hook: Rolled back{to} by {by}{link}"
    detail = f": {escape(dep.rollback_detail)}" if dep.rollback_detail else ""
    return f":x: *Rollback{to} failed*{detail} (started by {by}){link}"


def _rollback_actions(dep: Deployment, target: Deployment) -> dict[str, Any]:
    value = encode_rollback_value(dep.id, target.id)
    assert len(value) <= VALUE_MAX
    confirm_text = (
        f"Roll back *{escape(dep.service)}* in *{escape(dep.environment)}* "
        f"from {escape(dep.version)} to *{escape(target.version)}*?"
    )
    return {
        "type": "actions",
        "block_id": "deploys.actions",
        "elements": [
            {
                "type": "button",
                "action_id": ROLLBACK_ACTION_ID,
                "style": "danger",
                "text": {
                    "type": "plain_text",
                    "text": _clip(f"Rollback to {target.version}", BUTTON_TEXT_MAX),
                    "emoji": True,
                },
                "value": value,
                "confirm": {
                    "title": {
                        "type": "plain_text",
                        "text": _clip(
                            f"Roll back {dep.service} in {dep.environment}?", CONFIRM_TITLE_MAX
                        ),
                    },
                    "text": {"type": "mrkdwn", "text": _clip(confirm_text, CONFIRM_TEXT_MAX)},
                    "confirm": {"type": "plain_text", "text": "Roll back"},
                    "deny": {"type": "plain_text", "text": "Cancel"},
                    "style": "danger",
                },
            }
        ],
    }


def _fallback(
    dep: Deployment,
    words: str,
    version: str,
    author: str,
    target: Deployment | None,
    lock: DeployLock | None,
) -> str:
    if dep.rollback_state is not None:
        to = f" to {target.version}" if target else ""
        text = f"{words}: {dep.service} in {dep.environment}{to}"
        if dep.rollback_state == "rollback_failed" and dep.rollback_detail:
            text += f" ({dep.rollback_detail})"
    else:
        text = f"{words}: {dep.service} {version} in {dep.environment}"
        if author:
            text += f" by {author}"
        if dep.needs_attention and target is not None:
            text += f". Rollback to {target.version} available"
    if lock is not None:
        text += f". {dep.environment} is locked"
    return _clip(escape(text), 3000)


# -- thread lines, refusals, status -------------------------------------------------------


def event_thread_text(event: DeployEvent) -> str:
    """One line for the message's thread describing a provider event."""
    parts = [f"`{escape(event.event_name)}` → *{event.status.replace('_', ' ')}*"]
    extras = [f"{escape(k)}: {escape(v)}" for k, v in sorted(event.details.items()) if v]
    if extras:
        parts.append("(" + "; ".join(extras) + ")")
    if _safe_url(event.run_url):
        parts.append(_link(event.run_url, "run"))
    return _clip(" ".join(parts), SECTION_MAX)


def lock_refusal_text(lock: DeployLock, action: str = "Rollback") -> str:
    """The ephemeral answer when a locked environment refuses ``action``."""
    reason = f": {escape(lock.reason)}" if lock.reason else ""
    return (
        f":lock: {escape(action)} refused: {escape(lock.service)} in "
        f"{escape(lock.environment)} is locked by {_mention(lock.locked_by)}{reason}."
    )


def status_list_message(
    service: str,
    deployments: Sequence[Deployment],
    *,
    locks: Sequence[DeployLock] = (),
) -> SlackMessage:
    """``/deploy status <service>``: the recent deployments, newest first."""
    blocks: list[dict[str, Any]] = [
        {
            "type": "header",
            "text": {
                "type": "plain_text",
                "text": _clip(f"Recent deploys of {service}", HEADER_MAX),
            },
        }
    ]
    for lock in locks:
        blocks.append(_section(_lock_banner(lock), f"deploys.lock.{len(blocks)}"))
    if not deployments:
        blocks.append(
            _section(f"No deployments of {escape(service)} recorded yet.", "deploys.none")
        )
        return SlackMessage(f"No deployments of {service} recorded yet", blocks)
    lines = []
    for dep in deployments:
        emoji, words = _look(dep)
        when = dep.finished_at or dep.started_at or dep.created_at
        lines.append(
            f"{emoji} *{escape(dep.environment)}* {_link(dep.commit_url, dep.version)} "
            f"{words.lower()} · {_when(when)}"
            + (f" · {_link(dep.run_url, 'run')}" if _safe_url(dep.run_url) else "")
        )
    blocks.append(_section("\n".join(lines), "deploys.list"))
    latest = deployments[0]
    text = f"{len(deployments)} recent deploys of {service}; latest {latest.version} in "
    text += f"{latest.environment}: {_look(latest)[1].lower()}"
    return SlackMessage(escape(text), blocks)
