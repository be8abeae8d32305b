"""The Slack side of digests: resolving channels, reading history (backfill and
reconcile), building a digest from the store, and posting it exactly once.

Everything goes through ``ctx.slack`` (the ``slack_sdk`` method surface, rate-gated by
the hub) and the ``DigestStore``; handlers in ``workflow`` call these.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import Any

import aiohttp
import httpx
from slack_sdk.errors import SlackApiError as SdkApiError
from slack_sdk.errors import SlackClientError

from controlroom.context import Context
from controlroom.errors import ControlRoomError, PermanentError, SlackApiError
from controlroom.workflows.digests.carry import carry_forward
from controlroom.workflows.digests.config import (
    DigestsConfig,
    DigestSettings,
    is_channel_id,
    previous_tick,
)
from controlroom.workflows.digests.heuristic import HeuristicSummariser
from controlroom.workflows.digests.llm import summarise_with_fallback
from controlroom.workflows.digests.model import (
    Coverage,
    DigestItem,
    DigestResult,
    Message,
    Summariser,
    split_message_id,
)
from controlroom.workflows.digests.render import archive_permalink, render_digest_messages
from controlroom.workflows.digests.settings import build_summariser
from controlroom.workflows.digests.store import DigestRun, DigestStore, reactions_of

__all__ = [
    "DIGEST_EVENT_TYPE",
    "NAME",
    "STORED_SUBTYPES",
    "BuiltDigest",
    "DigestsRuntime",
    "build_digest",
    "channel_policies",
    "checkpoint",
    "config_of",
    "post_run",
    "read_history",
    "resolve_channels",
    "runtime_of",
    "window_start",
]

NAME = "digests"
#: the metadata event type of posted digests (so a re-run finds what was posted)
DIGEST_EVENT_TYPE = "controlroom_digest"
#: message subtypes that are people's (or bots') messages; others are system noise
STORED_SUBTYPES = frozenset({"", "bot_message", "thread_broadcast", "file_share", "me_message"})
SLACK_ERRORS: tuple[type[BaseException], ...] = (
    SdkApiError,
    SlackClientError,
    SlackApiError,
    httpx.HTTPError,
    aiohttp.ClientError,
    asyncio.TimeoutError,
)
PERMALINK_ERRORS: tuple[type[BaseException], ...] = (*SLACK_ERRORS, KeyError)
CHANNEL_LIST_TTL = 300.0


@dataclass
class DigestsRuntime:
    """What ``@workflow.startup`` builds once per hub (``hub.services["digests"]``)."""

    store: DigestStore
    sleep: Callable[[float], Awaitable[None]] = asyncio.sleep
    #: test seams: a named point ("before_post", "posted:<i>" after posting message i and
    #: before recording it, "after_post:<i>") -> a callable run there (raise to simulate
    #: a worker dying mid-way)
    faults: dict[str, Callable[[], Awaitable[None]]] = field(default_factory=dict)
    names: dict[str, str] = field(default_factory=dict)  # channel id -> name
    ids: dict[str, str] = field(default_factory=dict)  # channel name -> id
    listed_at: float | None = None
    workspace_url: str | None = None


def runtime_of(ctx: Context) -> DigestsRuntime:
    runtime = ctx.services.get("runtime")
    if not isinstance(runtime, DigestsRuntime):
        raise PermanentError("the digests workflow was not started (no runtime in services)")
    return runtime


def config_of(ctx: Context) -> DigestsConfig:
    config = ctx.config
    if not isinstance(config, DigestsConfig):
        raise PermanentError("the digests workflow has no validated configuration")
    return config


async def checkpoint(rt: DigestsRuntime, point: str) -> None:
    fault = rt.faults.get(point)
    if fault is not None:
        await fault()


def slack_error(exc: BaseException) -> str:
    response = getattr(exc, "response", None)
    try:
        return str(response["error"]) if response is not None else type(exc).__name__
    except (KeyError, TypeError):
        return type(exc).__name__


# -- channels ---------------------------------------------------------------------------


async def _list_channels(ctx: Context, rt: DigestsRuntime) -> None:
    names: dict[str, str] = {}
    cursor = ""
    for _ in range(100):
        resp = await ctx.slack.conversations_list(
            types="public_channel,private_channel", exclude_archived=True, limit=200, cursor=cursor
        )
        for ch in resp.get("channels") or []:
            if isinstance(ch, Mapping) and ch.get("id") and ch.get("name"):
                names[str(ch["id"])] = str(ch["name"])
        cursor = str((resp.get("response_metadata") or {}).get("next_cursor") or "")
        if not cursor:
            break
    rt.names = names
    rt.ids = {name: cid for cid, name in names.items()}
    rt.listed_at = ctx.hub.clock()


async def resolve_channels(ctx: Context, refs: Sequence[str]) -> dict[str, str | None]:
    """Channel names or ids -> ids (None when a name is unknown). The channel list is
    read once and refreshed at most every five minutes when a name is missing."""
    rt = runtime_of(ctx)
    missing = [r for r in refs if not is_channel_id(r) and r not in rt.ids]
    stale = rt.listed_at is None or ctx.hub.clock() - rt.listed_at > CHANNEL_LIST_TTL
    if (missing and stale) or rt.listed_at is None:
        try:
            await _list_channels(ctx, rt)
        except SLACK_ERRORS as exc:
            ctx.log.warning("digests.channel_list_failed", error=slack_error(exc))
    return {r: (r if is_channel_id(r) else rt.ids.get(r)) for r in refs}


@dataclass(frozen=True, slots=True)
class ChannelPolicy:
    """What applies to one opted-in channel across the digests that read it."""

    markers: tuple[str, ...]
    retention: float

    def excludes(self, text: str) -> bool:
        low = text.lower()
        return any(m.lower() in low for m in self.markers)


async def channel_policies(ctx: Context) -> dict[str, ChannelPolicy]:
    """Opted-in channel id -> its policy (markers of every digest reading it, the
    longest retention)."""
    config = config_of(ctx)
    refs = [c for d in config.digests for c in d.channels]
    ids = await resolve_channels(ctx, list(dict.fromkeys(refs)))
    out: dict[str, ChannelPolicy] = {}
    for d in config.digests:
        for ref in d.channels:
            cid = ids.get(ref)
            if cid is None:
                continue
            prev = out.get(cid)
            markers = tuple(dict.fromkeys([*(prev.markers if prev else ()), d.no_digest_marker]))
            retention = max(prev.retention if prev else 0.0, d.retention_seconds)
            out[cid] = ChannelPolicy(markers, retention)
    return out


# -- reading history -----------------------------------------------------------------------


async def _call(ctx: Context, method: str, **kwargs: Any) -> Any:
    """A read with retries; None when it kept failing."""
    rt, config = runtime_of(ctx), config_of(ctx)
    for attempt in range(config.history_retries + 1):
        try:
            return await getattr(ctx.slack, method)(**kwargs)
        except SLACK_ERRORS as exc:
            ctx.log.warning(
                "digests.history_read_failed",
                method=method,
                channel=kwargs.get("channel"),
                error=slack_error(exc),
                attempt=attempt + 1,
            )
            if attempt < config.history_retries:
                await rt.sleep(config.history_retry_delay * (2**attempt))
    return None


def _is_digest_post(data: Mapping[str, Any]) -> bool:
    meta = data.get("metadata")
    return isinstance(meta, Mapping) and meta.get("event_type") == DIGEST_EVENT_TYPE


async def store_slack_message(
    ctx: Context,
    channel: str,
    data: Mapping[str, Any],
    policy: ChannelPolicy,
    *,
    mode: str,
    with_reactions: bool = False,
) -> str:
    """Store one message from an event or the history, honouring the marker."""
    if _is_digest_post(data) or not data.get("ts"):
        return "ignored"
    if str(data.get("subtype") or "") not in STORED_SUBTYPES:
        return "ignored"
    msg = Message.from_slack(channel, data)
    if msg.channel != channel:
        msg = replace(msg, channel=channel)
    return await runtime_of(ctx).store.save_message(
        msg,
        excluded=policy.excludes(msg.text),
        now=ctx.hub.clock(),
        mode=mode,  # type: ignore[arg-type]
        reactions=reactions_of(data) if with_reactions else None,
    )


async def _pages(ctx: Context, method: str, **kwargs: Any) -> tuple[list[Mapping[str, Any]], bool]:
    """Every message of a paginated read; ``False`` when it could not be read in full."""
    config = config_of(ctx)
    out: list[Mapping[str, Any]] = []
    cursor = ""
    for _ in range(config.max_history_pages):
        resp = await _call(ctx, method, limit=config.history_page_size, cursor=cursor, **kwargs)
        if resp is None:
            return out, False
        out.extend(m for m in resp.get("messages") or [] if isinstance(m, Mapping))
        cursor = str((resp.get("response_metadata") or {}).get("next_cursor") or "")
        if not cursor:
            return out, True
    ctx.log.warning("digests.history_too_long", method=method, channel=kwargs.get("channel"))
    return out, False


async def read_history(
    ctx: Context, channel: str, start: float, end: float, policy: ChannelPolicy
) -> bool:
    """Store every message of ``channel`` with ``start <= ts < end`` (thread replies
    too) as Slack has it now; forget stored ones Slack no longer has. Returns whether
    the history was read completely."""
    rt = runtime_of(ctx)
    began = ctx.hub.clock()
    oldest, latest = f"{start:.6f}", f"{end:.6f}"
    top, complete = await _pages(
        ctx, "conversations_history", channel=channel, oldest=oldest, latest=latest, inclusive=True
    )
    seen: set[str] = set()
    threads: list[str] = []
    for m in top:
        ts = str(m.get("ts") or "")
        if not ts or not start <= float(ts) < end:
            continue
        seen.add(ts)
        await store_slack_message(
            ctx, channel, m, policy, mode="authoritative", with_reactions=True
        )
        if int(m.get("reply_count") or 0) > 0:
            threads.append(ts)
    # Stored messages Slack no longer returns were deleted while we were not listening;
    # only those older than this read (a newer one may simply have missed the pages).
    cutoff = min(end, began - config_of(ctx).clock_skew)
    if complete:
        for ts in await rt.store.stored_ts(channel, start, cutoff) - seen:
            await rt.store.delete_message(channel, ts, now=ctx.hub.clock())
    # Threads started before the window with replies in it: the history of the window
    # does not list their roots; read those we know of from stored replies.
    threads.extend(r for r in await rt.store.reply_roots(channel, start, end) if r not in threads)
    for root in threads:
        replies, whole = await _pages(
            ctx, "conversations_replies", channel=channel, ts=root, oldest=oldest, latest=latest
        )
        complete = complete and whole
        seen_replies: set[str] = set()
        for m in replies:
            ts = str(m.get("ts") or "")
            if not ts or ts == root or not start <= float(ts) < end:
                continue
            seen_replies.add(ts)
            await store_slack_message(
                ctx, channel, m, policy, mode="authoritative", with_reactions=True
            )
        if whole:
            gone = await rt.store.stored_ts(channel, start, cutoff, thread_ts=root) - seen_replies
            for ts in gone:
                await rt.store.delete_message(channel, ts, now=ctx.hub.clock())
    return complete


# -- building a digest ---------------------------------------------------------------------


async def window_start(ctx: Context, d: DigestSettings, end: datetime) -> float:
    """Since the last digest; the first one since the previous cron tick; a fixed
    ``window_hours`` when configured. Never further back than the retention."""
    end_ts = end.timestamp()
    if d.window_hours is not None:
        start = end_ts - d.window_hours * 3600.0
    else:
        last = await runtime_of(ctx).store.last_window_end(d.name, before=end_ts)
        start = last if last is not None else previous_tick(d.cron, end).timestamp()
    return max(start, end_ts - d.retention_seconds)


@dataclass(frozen=True, slots=True)
class BuiltDigest:
    """One digest: a result per channel (items with their carried status), rendered."""

    results: tuple[DigestResult, ...]
    rendered: list[dict[str, Any]]

    @property
    def items(self) -> list[DigestItem]:
        return [i for r in self.results for i in r.items]

    @property
    def complete(self) -> bool:
        return all(r.coverage.complete for r in self.results)

    @property
    def messages_read(self) -> int:
        return sum(r.coverage.messages_read for r in self.results)

    @property
    def summariser(self) -> str:
        return ", ".join(dict.fromkeys(r.summariser for r in self.results)) or "heuristic"


async def _workspace_url(ctx: Context, rt: DigestsRuntime) -> str:
    if rt.workspace_url is None:
        try:
            resp = await ctx.slack.auth_test()
            rt.workspace_url = str(resp.get("url") or "https://slack.com").rstrip("/")
        except SLACK_ERRORS:
            return "https://slack.com"
    return rt.workspace_url


async def _permalinks(ctx: Context, results: Sequence[DigestResult]) -> Callable[[str, str], str]:
    """Links to source messages: chat.getPermalink (what Slack itself links to), else
    archive links built from the workspace URL."""
    rt, config = runtime_of(ctx), config_of(ctx)
    archive = archive_permalink(config.workspace_url or await _workspace_url(ctx, rt))
    links: dict[tuple[str, str], str] = {}
    if not config.workspace_url:
        wanted = dict.fromkeys(
            split_message_id(s) for r in results for i in r.items for s in i.source_ids
        )
        for channel, ts in wanted:
            try:
                resp = await ctx.slack.chat_getPermalink(channel=channel, message_ts=ts)
                links[(channel, ts)] = str(resp["permalink"])
            except PERMALINK_ERRORS as exc:
                ctx.log.info("digests.permalink_failed", channel=channel, error=slack_error(exc))

    def permalink(channel: str, ts: str) -> str:
        return links.get((channel, ts)) or archive(channel, ts)

    return permalink


async def build_digest(
    ctx: Context,
    d: DigestSettings,
    channels: Sequence[str],
    start: float,
    end: float,
    *,
    title: str,
    missing: Sequence[str] = (),
) -> BuiltDigest:
    """Read, summarise, carry forward and render one digest of ``channels`` (ids) over
    ``[start, end)``. A configured channel that could not be found (``missing``) and
    any history read that failed make the digest say its history is incomplete."""
    rt, config = runtime_of(ctx), config_of(ctx)
    policies = await channel_policies(ctx)
    notes: list[str] = []
    read_ok = set(channels)
    if config.reconcile:
        for channel in channels:
            policy = policies.get(channel) or ChannelPolicy((d.no_digest_marker,), 0.0)
            if not await read_history(ctx, channel, start, end, policy):
                read_ok.discard(channel)
    tz = d.tz
    fallback = HeuristicSummariser(tz, no_digest_marker=d.no_digest_marker)
    try:
        primary = build_summariser(
            d.summariser_settings(),
            tz=tz,
            http=ctx.hub.http,
            allow_plaintext_secrets=ctx.hub.settings.allow_plaintext_secrets,
            key_path=f"workflows.digests.digests.{d.name}.summariser",
        )
    except ControlRoomError as exc:
        ctx.log.warning("digests.summariser_unavailable", digest=d.name, error=str(exc))
        primary = fallback
        notes.append(f"{d.summariser.kind} summariser unavailable (configuration), heuristic used")
    if missing:
        notes.append("channel(s) not found: " + ", ".join(missing))
    results: list[DigestResult] = []
    for channel in channels:
        results.append(
            await _channel_result(
                ctx,
                d,
                channel,
                start,
                end,
                primary,
                fallback,
                complete=not missing and channel in read_ok,
                notes=notes,
            )
        )
    if not results:
        results.append(
            DigestResult(
                items=(),
                coverage=Coverage(
                    start=datetime.fromtimestamp(start, UTC),
                    end=datetime.fromtimestamp(end, UTC),
                    complete=False,
                ),
                summariser=primary.name,
                notes=tuple(notes),
            )
        )
    await resolve_channels(ctx, [])
    permalink = await _permalinks(ctx, results)
    rendered = render_digest_messages(
        results,
        permalink=permalink,
        tz=tz,
        title=title,
        channel_names=rt.names,
        user_names=await _user_names(ctx, results),
        mention_owners=d.mention_owners,
        max_blocks=d.max_blocks,
    )
    return BuiltDigest(
        results=tuple(results),
        rendered=[{"text": m.text, "blocks": m.blocks} for m in rendered],
    )


_MENTION = re.compile(r"<@([UW][A-Z0-9]+)(?:\|[^>]*)?>")


async def _user_names(ctx: Context, results: list[DigestResult]) -> dict[str, str]:
    """Display names of the people items mention, so quoted text reads "@dan", not an id
    (``users.info``, cached a day in the workflow state; unknown ids stay as they are)."""
    ids: set[str] = set()
    for result in results:
        for item in result.items:
            ids.update(_MENTION.findall(item.text))
            if item.owner:
                ids.add(item.owner)
    names: dict[str, str] = {}
    for uid in sorted(ids):
        cached = await ctx.state.get(f"user-name:{uid}")
        if isinstance(cached, str):
            names[uid] = cached
            continue
        try:
            user = (await ctx.slack.users_info(user=uid))["user"]
        except Exception as exc:  # a name is a nicety: the id is shown instead
            ctx.log.info("digests.user_name_unavailable", user=uid, error=type(exc).__name__)
            continue
        profile = user.get("profile") or {}
        name = str(profile.get("display_name") or user.get("name") or user.get("real_name") or "")
        if name:
            names[uid] = name
            await ctx.state.set(f"user-name:{uid}", name, ttl=86400)
    return names


async def _channel_result(
    ctx: Context,
    d: DigestSettings,
    channel: str,
    start: float,
    end: float,
    primary: Summariser,
    fallback: HeuristicSummariser,
    *,
    complete: bool,
    notes: Sequence[str] = (),
) -> DigestResult:
    """Summarise one channel's window and carry its open items forward."""
    rt = runtime_of(ctx)
    messages = await rt.store.window([channel], start, end)
    result = await summarise_with_fallback(primary, messages, fallback=fallback)
    for note in notes:
        result = result.with_note(note)
    cov = result.coverage
    result = replace(
        result,
        coverage=replace(
            cov,
            channels=(channel,),
            complete=cov.complete and complete,
            start=cov.start or datetime.fromtimestamp(start, UTC),
            end=cov.end or datetime.fromtimestamp(end, UTC),
        ),
    )
    # Open items from earlier digests are resolved by what happened to their sources
    # since (a ✅ reaction, an answer in the thread), inside this window or not.
    previous = await rt.store.open_items(d.name, [channel])
    old_sources = await rt.store.messages_by_id(
        split_message_id(s) for i in previous for s in i.source_ids
    )
    old_replies = await rt.store.thread_replies((m.channel, m.root_ts) for m in old_sources)
    carried = carry_forward(previous, result.items, [*old_sources, *old_replies, *messages])
    return replace(result, items=carried.items)


# -- posting exactly once -----------------------------------------------------------------


async def _find_posted(ctx: Context, channel: str, key: str, since: float) -> str | None:
    """The ts of a message in ``channel`` carrying ``key`` in its metadata, if any."""
    cursor = ""
    for _ in range(20):
        resp = await ctx.slack.conversations_history(
            channel=channel,
            oldest=f"{since:.6f}",
            include_all_metadata=True,
            limit=200,
            cursor=cursor,
        )
        for m in resp.get("messages") or []:
            meta = m.get("metadata") if isinstance(m, Mapping) else None
            if isinstance(meta, Mapping) and meta.get("event_type") == DIGEST_EVENT_TYPE:
                payload = meta.get("event_payload")
                if isinstance(payload, Mapping) and payload.get("key") == key:
                    return str(m["ts"])
        cursor = str((resp.get("response_metadata") or {}).get("next_cursor") or "")
        if not cursor:
            return None
    return None


async def post_run(ctx: Context, run: DigestRun, target: str, *, resumed: bool) -> list[str]:
    """Post the frozen messages of ``run`` in order, each at most once: a message whose
    ts is recorded is skipped; on a resumed run a message posted but not recorded (the
    worker died in between) is found by its metadata key instead of posted again."""
    rt = runtime_of(ctx)
    assert run.rendered is not None
    posted = list(run.posted_ts)
    for i, message in enumerate(run.rendered):
        if i < len(posted):
            continue
        key = f"digest:{run.digest}:{run.period}:{i}"
        ts = await _find_posted(ctx, target, key, run.started_at - 300.0) if resumed else None
        if ts is None:
            resp = await ctx.slack.chat_postMessage(
                channel=target,
                text=message["text"],
                blocks=message["blocks"],
                link_names=False,
                unfurl_links=False,
                unfurl_media=False,
                metadata={
                    "event_type": DIGEST_EVENT_TYPE,
                    "event_payload": {
                        "key": key,
                        "digest": run.digest,
                        "period": run.period,
                        "part": i + 1,
                        "parts": len(run.rendered),
                    },
                },
            )
            ts = str(resp["ts"])
            await checkpoint(rt, f"posted:{i}")
        await rt.store.record_post(run.id, i, ts)
        posted.append(ts)
        await checkpoint(rt, f"after_post:{i}")
    await rt.store.mark_posted(run.id, ctx.hub.clock())
    return posted
