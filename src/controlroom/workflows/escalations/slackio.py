"""The Slack calls the escalations flow makes, each a small function over ``ctx.slack``
(the slack_sdk ``AsyncWebClient`` method surface, so the rate-gated client fits too).

Slack errors the flow expects (``name_taken``, ``already_in_channel``, ``users_not_found``)
come back as values; anything else is raised so the durable job retries.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from slack_sdk.errors import SlackApiError as SdkSlackApiError

from controlroom.errors import PermanentError
from controlroom.errors import SlackApiError as CrSlackApiError
from controlroom.workflows.escalations.messages import SourceMessage
from controlroom.workflows.escalations.resolve import ChannelInfo

__all__ = [
    "Person",
    "SlackCallError",
    "call",
    "channel_info",
    "fetch_source",
    "find_channel_by_name",
    "parse_permalink",
    "person",
    "slack_error",
]


class SlackCallError(PermanentError):
    """A Slack call failed with an error retrying cannot fix (e.g. ``message_not_found``)."""

    def __init__(self, method: str, error: str) -> None:
        self.method = method
        self.error = error
        super().__init__(f"{method} failed: {error}")


def slack_error(exc: BaseException) -> str | None:
    """The Slack ``error`` code carried by either client's exception, else None."""
    if isinstance(exc, SdkSlackApiError):
        resp = exc.response
        data = getattr(resp, "data", resp)
        if isinstance(data, Mapping):
            return str(data.get("error", "")) or None
        return None
    if isinstance(exc, CrSlackApiError):
        return exc.error
    return None


def _data(resp: Any) -> Mapping[str, Any]:
    data = getattr(resp, "data", resp)
    return data if isinstance(data, Mapping) else {}


async def call(
    slack: Any, method: str, *, expected: Sequence[str] = (), **kwargs: Any
) -> tuple[Mapping[str, Any], str | None]:
    """``(data, None)`` on success; ``({}, error)`` for an ``expected`` error; raises for
    anything else."""
    try:
        resp = await getattr(slack, method)(**kwargs)
    except (SdkSlackApiError, CrSlackApiError) as exc:
        error = slack_error(exc)
        if error is not None and error in expected:
            return {}, error
        raise
    return _data(resp), None


_PERMALINK = re.compile(
    r"/archives/(?P<channel>[CGD][A-Z0-9]{2,})/p(?P<secs>[0-9]{10})(?P<micros>[0-9]{6})"
    r"(?:\?(?P<query>[^\s>|]*))?"
)


def parse_permalink(text: str) -> tuple[str, str] | None:
    """``(channel, ts)`` of the first Slack message permalink in ``text`` (also inside
    ``<...|label>`` markup), else None."""
    m = _PERMALINK.search(text)
    if m is None:
        return None
    return m["channel"], f"{m['secs']}.{m['micros']}"


async def channel_info(slack: Any, channel_id: str) -> tuple[ChannelInfo, str | None]:
    """What resolution needs, and the channel's name (None for DMs or on failure)."""
    data, error = await call(
        slack,
        "conversations_info",
        expected=("channel_not_found", "missing_scope", "not_in_channel"),
        channel=channel_id,
    )
    if error:
        return ChannelInfo(id=channel_id), None
    raw = data.get("channel") or {}
    name = raw.get("name") if isinstance(raw, Mapping) else None
    info = ChannelInfo.from_slack(raw) if isinstance(raw, Mapping) else ChannelInfo(channel_id)
    return info, name if isinstance(name, str) else None


@dataclass(frozen=True)
class Person:
    id: str
    team_id: str = ""
    email: str = ""
    is_bot: bool = False
    deleted: bool = False
    found: bool = True


async def person(slack: Any, user_id: str) -> Person:
    data, error = await call(
        slack, "users_info", expected=("user_not_found", "users_not_found"), user=user_id
    )
    if error:
        return Person(user_id, found=False)
    raw = data.get("user") or {}
    profile = raw.get("profile") or {}
    return Person(
        id=user_id,
        team_id=str(raw.get("team_id") or profile.get("team") or ""),
        email=str(profile.get("email") or ""),
        is_bot=bool(raw.get("is_bot") or raw.get("is_app_user")),
        deleted=bool(raw.get("deleted")),
    )


def _source_from(channel: str, m: Mapping[str, Any], permalink: str) -> SourceMessage:
    files = tuple(
        str(f.get("name") or f.get("title") or "file")
        for f in m.get("files") or ()
        if isinstance(f, Mapping)
    )
    is_bot = (bool(m.get("bot_id")) and not m.get("user")) or m.get("subtype") == "bot_message"
    return SourceMessage(
        channel=channel,
        ts=str(m["ts"]),
        author=str(m.get("user") or m.get("bot_id") or ""),
        text=str(m.get("text") or ""),
        permalink=permalink,
        files=files,
        author_is_bot=is_bot,
    )


async def fetch_source(slack: Any, channel: str, ts: str) -> tuple[SourceMessage, str]:
    """The message at ``(channel, ts)``, top-level or a thread reply, and the ``ts`` of
    its thread root (itself when top-level). Raises ``SlackCallError`` when it is gone."""
    found: Mapping[str, Any] | None = None
    data, error = await call(
        slack,
        "conversations_history",
        expected=("channel_not_found", "not_in_channel"),
        channel=channel,
        latest=ts,
        inclusive=True,
        limit=1,
    )
    if error:
        raise SlackCallError("conversations.history", error)
    for m in data.get("messages") or ():
        if isinstance(m, Mapping) and m.get("ts") == ts:
            found = m
    if found is None:
        data, error = await call(
            slack,
            "conversations_replies",
            expected=("thread_not_found", "message_not_found"),
            channel=channel,
            ts=ts,
            latest=ts,
            oldest=ts,
            inclusive=True,
            limit=1,
        )
        for m in data.get("messages") or ():
            if isinstance(m, Mapping) and m.get("ts") == ts:
                found = m
    if found is None:
        raise SlackCallError("conversations.replies", "message_not_found")
    link, _ = await call(
        slack,
        "chat_getPermalink",
        expected=("message_not_found", "channel_not_found"),
        channel=channel,
        message_ts=ts,
    )
    source = _source_from(channel, found, str(link.get("permalink") or ""))
    root = str(found.get("thread_ts") or ts)
    return source, root


async def find_channel_by_name(slack: Any, name: str) -> Mapping[str, Any] | None:
    """A channel the bot can see (public, or private with the bot in it) by name."""
    cursor = ""
    for _ in range(100):
        kwargs: dict[str, Any] = {"types": "public_channel,private_channel", "limit": 1000}
        if cursor:
            kwargs["cursor"] = cursor
        data, _ = await call(slack, "conversations_list", **kwargs)
        for c in data.get("channels") or ():
            if isinstance(c, Mapping) and c.get("name") == name:
                return c
        cursor = str((data.get("response_metadata") or {}).get("next_cursor") or "")
        if not cursor:
            return None
    return None
