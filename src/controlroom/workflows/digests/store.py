"""What the digests workflow keeps: raw messages (for a limited time), the items carried
from one digest to the next, and one row per digest period.

Tables (on the shared ``metadata``; SQLite and PostgreSQL):

- ``digest_messages``: one row per message of an opted-in channel, keyed by channel and
  ``ts``. ``status`` says what the row is: ``live`` (its latest text), ``pending`` (a
  reaction arrived before the message: only the reactions are known), ``excluded`` (the
  message carries the no-digest marker: its text is not kept) or ``deleted`` (a
  tombstone: the message was deleted; nothing but its key is kept, so a late event
  cannot bring it back). Events may be handled in any order; ``version`` (the ``ts`` of
  the latest edit, else of the message) decides which text wins. Rows are purged after
  the channel's retention.
- ``digest_open_items``: action items and questions still open after a digest.
- ``digest_runs``: one row per digest and period (UNIQUE), claimed before anything is
  posted; it freezes the rendered messages and records each posted message's ``ts``, so
  a restart resumes instead of posting twice.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal, TypeVar

from sqlalchemy import (
    Boolean,
    Column,
    Float,
    Index,
    Integer,
    String,
    Table,
    Text,
    UniqueConstraint,
    and_,
    delete,
    insert,
    or_,
    select,
    update,
)
from sqlalchemy.engine import Connection
from sqlalchemy.exc import IntegrityError

from controlroom.store.db import Database, metadata
from controlroom.workflows.digests.model import DigestItem, Message

__all__ = [
    "DigestRun",
    "DigestStore",
    "MessageStatus",
    "digest_messages",
    "digest_open_items",
    "digest_runs",
]

T = TypeVar("T")
MessageStatus = Literal["live", "pending", "excluded", "deleted"]
RunState = Literal["claimed", "posting", "posted"]

digest_messages = Table(
    "digest_messages",
    metadata,
    Column("channel", String(32), primary_key=True),
    Column("ts", String(32), primary_key=True),
    Column("ts_num", Float, nullable=False),
    Column("thread_ts", String(32), nullable=True),
    Column("user", String(32), nullable=True),
    Column("bot_id", String(32), nullable=True),
    Column("subtype", String(40), nullable=True),
    Column("text", Text, nullable=False, default=""),
    Column("edited", String(32), nullable=True),
    Column("reactions", Text, nullable=False, default="{}"),
    Column("status", String(16), nullable=False),
    Column("version", Float, nullable=False),
    Column("stored_at", Float, nullable=False),
)
Index("ix_digest_messages_channel_ts_num", digest_messages.c.channel, digest_messages.c.ts_num)

digest_open_items = Table(
    "digest_open_items",
    metadata,
    Column("digest", String(100), primary_key=True),
    Column("key", String(300), primary_key=True),
    Column("kind", String(20), nullable=False),
    Column("channel", String(32), nullable=False),
    Column("item", Text, nullable=False),
    Column("status", String(16), nullable=False),
    Column("period", String(100), nullable=False),
    Column("updated_at", Float, nullable=False),
)

digest_runs = Table(
    "digest_runs",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("digest", String(100), nullable=False),
    Column("period", String(100), nullable=False),
    Column("state", String(16), nullable=False),
    Column("window_start", Float, nullable=True),
    Column("window_end", Float, nullable=False),
    Column("rendered", Text, nullable=True),
    Column("posted_ts", Text, nullable=False, default="[]"),
    Column("complete", Boolean, nullable=True),
    Column("summariser", String(200), nullable=True),
    Column("started_at", Float, nullable=False),
    Column("finished_at", Float, nullable=True),
    UniqueConstraint("digest", "period", name="uq_digest_runs_digest_period"),
)


@dataclass(frozen=True, slots=True)
class DigestRun:
    """One digest period: claimed, then posting (rendering frozen), then posted."""

    id: int
    digest: str
    period: str
    state: RunState
    window_start: float | None
    window_end: float
    rendered: list[dict[str, Any]] | None
    posted_ts: list[str]
    complete: bool | None
    summariser: str | None
    started_at: float
    finished_at: float | None


def _ts_num(ts: str) -> float:
    try:
        return float(ts)
    except ValueError:
        return 0.0


def _reactions_json(reactions: Mapping[str, Iterable[str]]) -> str:
    clean = {name: sorted(set(users)) for name, users in reactions.items() if users}
    return json.dumps(clean, sort_keys=True, separators=(",", ":"))


def reactions_of(data: Mapping[str, Any]) -> dict[str, list[str]]:
    """``[{"name": "+1", "users": [...], "count": 2}]`` (Slack's shape) as name -> users.
    A reaction without a user list counts as one anonymous user."""
    out: dict[str, list[str]] = {}
    for r in data.get("reactions") or []:
        if not isinstance(r, Mapping) or not r.get("name"):
            continue
        users = [str(u) for u in r.get("users") or []] or ["?"]
        out[str(r["name"])] = users
    return out


def _row_message(row: Any) -> Message:
    reactions = json.loads(row.reactions or "{}")
    return Message(
        channel=row.channel,
        ts=row.ts,
        user=row.user,
        text=row.text,
        thread_ts=row.thread_ts,
        edited_ts=row.edited,
        reactions=tuple(sorted(name for name, users in reactions.items() if users)),
        bot_id=row.bot_id,
        subtype=row.subtype,
    )


def _row_run(row: Any) -> DigestRun:
    return DigestRun(
        id=int(row.id),
        digest=row.digest,
        period=row.period,
        state=row.state,
        window_start=row.window_start,
        window_end=row.window_end,
        rendered=json.loads(row.rendered) if row.rendered else None,
        posted_ts=list(json.loads(row.posted_ts or "[]")),
        complete=row.complete,
        summariser=row.summariser,
        started_at=row.started_at,
        finished_at=row.finished_at,
    )


class DigestStore:
    """The digests tables behind async methods (each one transaction)."""

    def __init__(self, db: Database) -> None:
        self.db = db

    async def _run(self, fn: Callable[[Connection], T]) -> T:
        """Run ``fn`` in a transaction; once more if a concurrent insert of the same key
        won the race (the second run sees that row)."""
        try:
            return await self.db.run(fn)
        except IntegrityError:
            return await self.db.run(fn)

    # -- messages -----------------------------------------------------------------------
    def _values(
        self, msg: Message, *, excluded: bool, now: float, reactions: str | None = None
    ) -> dict[str, Any]:
        values: dict[str, Any] = {
            "thread_ts": msg.thread_ts,
            "user": None if excluded else msg.user,
            "bot_id": None if excluded else msg.bot_id,
            "subtype": msg.subtype,
            "text": "" if excluded else msg.text,
            "edited": msg.edited_ts,
            "status": "excluded" if excluded else "live",
            "version": _ts_num(msg.edited_ts or msg.ts),
            "stored_at": now,
        }
        if reactions is not None:
            values["reactions"] = reactions
        return values

    async def save_message(
        self,
        msg: Message,
        *,
        excluded: bool,
        now: float,
        mode: Literal["new", "changed", "authoritative"],
        reactions: Mapping[str, Iterable[str]] | None = None,
    ) -> str:
        """Store a message; return what happened (``inserted``, ``replaced``, ``filled``,
        ``kept``, ``deleted``).

        ``new`` (a ``message`` event) never overwrites a row; ``changed`` (an edit)
        replaces a row whose version is not newer; ``authoritative`` (read from the
        history) replaces any row and its reactions. A tombstone always stays.
        ``excluded`` rows keep no text or author."""
        c = digest_messages.c
        rjson = _reactions_json(reactions) if reactions is not None else None
        values = self._values(msg, excluded=excluded, now=now, reactions=rjson)

        def q(conn: Connection) -> str:
            row = conn.execute(
                select(c.status, c.version).where(c.channel == msg.channel, c.ts == msg.ts)
            ).first()
            if row is None:
                conn.execute(
                    insert(digest_messages).values(
                        channel=msg.channel,
                        ts=msg.ts,
                        ts_num=_ts_num(msg.ts),
                        **{"reactions": "{}", **values},
                    )
                )
                return "inserted"
            if row.status == "deleted":
                return "deleted"
            where = and_(c.channel == msg.channel, c.ts == msg.ts, c.status == row.status)
            if row.status == "pending":
                conn.execute(update(digest_messages).where(where).values(**values))
                return "filled"
            if mode == "new":
                return "kept"
            if mode == "changed" and row.version > values["version"]:
                return "kept"
            conn.execute(update(digest_messages).where(where).values(**values))
            return "replaced"

        return await self._run(q)

    async def delete_message(self, channel: str, ts: str, *, now: float) -> None:
        """Forget a deleted message, keeping a tombstone (no text, author or reactions)."""
        c = digest_messages.c
        tomb = {
            "thread_ts": None,
            "user": None,
            "bot_id": None,
            "subtype": None,
            "text": "",
            "edited": None,
            "reactions": "{}",
            "status": "deleted",
            "version": 1e18,
            "stored_at": now,
        }

        def q(conn: Connection) -> None:
            res = conn.execute(
                update(digest_messages).where(c.channel == channel, c.ts == ts).values(**tomb)
            )
            if res.rowcount == 0:
                conn.execute(
                    insert(digest_messages).values(
                        channel=channel, ts=ts, ts_num=_ts_num(ts), **tomb
                    )
                )

        await self._run(q)

    async def react(
        self, channel: str, ts: str, name: str, user: str, *, add: bool, now: float
    ) -> None:
        """Add or remove one person's reaction. A reaction to a message not stored yet
        makes a ``pending`` row that the message fills in when it arrives."""
        c = digest_messages.c

        def q(conn: Connection) -> bool:
            row = conn.execute(
                select(c.reactions, c.status).where(c.channel == channel, c.ts == ts)
            ).first()
            if row is None:
                if not add:
                    return True
                conn.execute(
                    insert(digest_messages).values(
                        channel=channel,
                        ts=ts,
                        ts_num=_ts_num(ts),
                        text="",
                        reactions=_reactions_json({name: [user]}),
                        status="pending",
                        version=0.0,
                        stored_at=now,
                    )
                )
                return True
            if row.status == "deleted":
                return True
            current: dict[str, list[str]] = json.loads(row.reactions or "{}")
            users = set(current.get(name, []))
            if add:
                users.add(user)
            else:
                users.discard(user)
            current[name] = sorted(users)
            res = conn.execute(
                update(digest_messages)
                .where(c.channel == channel, c.ts == ts, c.reactions == row.reactions)
                .values(reactions=_reactions_json(current))
            )
            return bool(res.rowcount)

        for _ in range(10):  # compare-and-swap: another reaction may land in between
            if await self._run(q):
                return

    async def window(self, channels: Sequence[str], start: float, end: float) -> list[Message]:
        """Live messages of ``channels`` with ``start <= ts < end``, oldest first."""
        if not channels:
            return []
        c = digest_messages.c

        def q(conn: Connection) -> list[Message]:
            rows = conn.execute(
                select(digest_messages)
                .where(
                    c.channel.in_(list(channels)),
                    c.status == "live",
                    c.ts_num >= start,
                    c.ts_num < end,
                )
                .order_by(c.ts_num, c.channel)
            ).all()
            return [_row_message(r) for r in rows]

        return await self.db.run(q)

    async def messages_by_id(self, ids: Iterable[tuple[str, str]]) -> list[Message]:
        """The live messages among ``(channel, ts)`` pairs."""
        pairs = sorted(set(ids))
        if not pairs:
            return []
        c = digest_messages.c

        def q(conn: Connection) -> list[Message]:
            out: list[Message] = []
            for i in range(0, len(pairs), 200):
                chunk = pairs[i : i + 200]
                rows = conn.execute(
                    select(digest_messages).where(
                        c.status == "live",
                        or_(*(and_(c.channel == ch, c.ts == ts) for ch, ts in chunk)),
                    )
                ).all()
                out.extend(_row_message(r) for r in rows)
            return out

        return await self.db.run(q)

    async def thread_replies(self, roots: Iterable[tuple[str, str]]) -> list[Message]:
        """The live replies of the threads rooted at ``(channel, ts)`` pairs."""
        pairs = sorted(set(roots))
        if not pairs:
            return []
        c = digest_messages.c

        def q(conn: Connection) -> list[Message]:
            out: list[Message] = []
            for i in range(0, len(pairs), 200):
                chunk = pairs[i : i + 200]
                rows = conn.execute(
                    select(digest_messages).where(
                        c.status == "live",
                        c.ts != c.thread_ts,
                        or_(*(and_(c.channel == ch, c.thread_ts == ts) for ch, ts in chunk)),
                    )
                ).all()
                out.extend(_row_message(r) for r in rows)
            return out

        return await self.db.run(q)

    async def get_row(self, channel: str, ts: str) -> dict[str, Any] | None:
        """The raw stored row (for tests and tools)."""
        c = digest_messages.c

        def q(conn: Connection) -> dict[str, Any] | None:
            row = conn.execute(
                select(digest_messages).where(c.channel == channel, c.ts == ts)
            ).first()
            return dict(row._mapping) if row is not None else None

        return await self.db.run(q)

    async def count(self, channel: str) -> int:
        """How many rows a channel has (any status)."""
        c = digest_messages.c

        def q(conn: Connection) -> int:
            rows = conn.execute(select(c.ts).where(c.channel == channel).limit(1)).all()
            return len(rows)

        return await self.db.run(q)

    async def stored_ts(
        self, channel: str, start: float, end: float, *, thread_ts: str | None = None
    ) -> set[str]:
        """The ``ts`` of live top-level messages (or of one thread's replies) in a range."""
        c = digest_messages.c

        def q(conn: Connection) -> set[str]:
            cond = [c.channel == channel, c.status == "live", c.ts_num >= start, c.ts_num < end]
            if thread_ts is None:
                cond.append(or_(c.thread_ts.is_(None), c.thread_ts == c.ts))
            else:
                cond.extend([c.thread_ts == thread_ts, c.ts != thread_ts])
            return {r.ts for r in conn.execute(select(c.ts).where(*cond)).all()}

        return await self.db.run(q)

    async def reply_roots(self, channel: str, start: float, end: float) -> list[str]:
        """The roots (before ``start``) of threads with stored replies in the range: the
        history of the range does not list them, their replies are read by thread."""
        c = digest_messages.c

        def q(conn: Connection) -> list[str]:
            rows = conn.execute(
                select(c.thread_ts)
                .where(
                    c.channel == channel,
                    c.status == "live",
                    c.thread_ts.is_not(None),
                    c.thread_ts != c.ts,
                    c.ts_num >= start,
                    c.ts_num < end,
                )
                .distinct()
            ).all()
            return sorted((r.thread_ts for r in rows if _ts_num(r.thread_ts) < start), key=_ts_num)

        return await self.db.run(q)

    async def purge(self, retention: Mapping[str, float], default: float, now: float) -> int:
        """Delete rows older than their channel's retention (seconds); ``default`` for
        channels no digest reads any more. Returns how many rows went."""
        c = digest_messages.c

        def q(conn: Connection) -> int:
            total = 0
            for channel, seconds in retention.items():
                res = conn.execute(
                    delete(digest_messages).where(c.channel == channel, c.ts_num < now - seconds)
                )
                total += res.rowcount or 0
            others = delete(digest_messages).where(c.ts_num < now - default)
            if retention:
                others = others.where(c.channel.not_in(list(retention)))
            total += conn.execute(others).rowcount or 0
            return total

        return await self.db.run(q)

    # -- open items ---------------------------------------------------------------------
    async def open_items(
        self, digest: str, channels: Iterable[str] | None = None
    ) -> list[DigestItem]:
        c = digest_open_items.c

        def q(conn: Connection) -> list[DigestItem]:
            stmt = select(c.item).where(c.digest == digest, c.status == "open")
            if channels is not None:
                stmt = stmt.where(c.channel.in_(list(channels)))
            rows = conn.execute(stmt.order_by(c.updated_at, c.key)).all()
            return [DigestItem.from_json(json.loads(r.item)).with_status("open") for r in rows]

        return await self.db.run(q)

    # -- runs -----------------------------------------------------------------------------
    async def claim(self, digest: str, period: str, window_end: float, now: float) -> DigestRun:
        """The run of ``digest`` for ``period``: created now, or the existing one."""
        c = digest_runs.c

        def q(conn: Connection) -> DigestRun:
            row = conn.execute(
                select(digest_runs).where(c.digest == digest, c.period == period)
            ).first()
            if row is None:
                conn.execute(
                    insert(digest_runs).values(
                        digest=digest,
                        period=period,
                        state="claimed",
                        window_end=window_end,
                        posted_ts="[]",
                        started_at=now,
                    )
                )
                row = conn.execute(
                    select(digest_runs).where(c.digest == digest, c.period == period)
                ).one()
            return _row_run(row)

        return await self._run(q)

    async def get_run(self, digest: str, period: str) -> DigestRun | None:
        c = digest_runs.c

        def q(conn: Connection) -> DigestRun | None:
            row = conn.execute(
                select(digest_runs).where(c.digest == digest, c.period == period)
            ).first()
            return _row_run(row) if row is not None else None

        return await self.db.run(q)

    async def runs(self, digest: str) -> list[DigestRun]:
        c = digest_runs.c

        def q(conn: Connection) -> list[DigestRun]:
            rows = conn.execute(
                select(digest_runs).where(c.digest == digest).order_by(c.window_end, c.id)
            ).all()
            return [_row_run(r) for r in rows]

        return await self.db.run(q)

    async def last_window_end(self, digest: str, before: float) -> float | None:
        """Where the last digest (posting or posted) before ``before`` ended its window."""
        c = digest_runs.c

        def q(conn: Connection) -> float | None:
            row = conn.execute(
                select(c.window_end)
                .where(c.digest == digest, c.state != "claimed", c.window_end < before)
                .order_by(c.window_end.desc())
                .limit(1)
            ).first()
            return float(row.window_end) if row is not None else None

        return await self.db.run(q)

    async def freeze(
        self,
        run: DigestRun,
        *,
        rendered: list[dict[str, Any]],
        window_start: float,
        complete: bool,
        summariser: str,
        items: Sequence[DigestItem],
        now: float,
    ) -> DigestRun:
        """Fix what this run posts and carry its items forward, in one transaction; a
        run already frozen (by an earlier attempt) is returned unchanged."""
        rc, ic = digest_runs.c, digest_open_items.c
        data = json.dumps(rendered, separators=(",", ":"))

        def q(conn: Connection) -> DigestRun:
            res = conn.execute(
                update(digest_runs)
                .where(rc.id == run.id, rc.state == "claimed")
                .values(
                    state="posting",
                    rendered=data,
                    window_start=window_start,
                    complete=complete,
                    summariser=summariser[:200],
                )
            )
            if res.rowcount:
                for item in items:
                    if item.kind == "decision":
                        continue
                    status = "resolved" if item.status == "resolved" else "open"
                    values = {
                        "kind": item.kind,
                        "channel": item.channel,
                        "item": json.dumps(item.to_json(), separators=(",", ":")),
                        "status": status,
                        "updated_at": now,
                    }
                    done = conn.execute(
                        update(digest_open_items)
                        .where(ic.digest == run.digest, ic.key == item.key)
                        .values(**values)
                    )
                    if not done.rowcount:
                        conn.execute(
                            insert(digest_open_items).values(
                                digest=run.digest, key=item.key, period=run.period, **values
                            )
                        )
            return _row_run(conn.execute(select(digest_runs).where(rc.id == run.id)).one())

        return await self.db.run(q)

    async def record_post(self, run_id: int, index: int, ts: str) -> None:
        """Record that message ``index`` of the run was posted with ``ts``."""
        c = digest_runs.c

        def q(conn: Connection) -> None:
            row = conn.execute(select(c.posted_ts).where(c.id == run_id)).one()
            posted = list(json.loads(row.posted_ts or "[]"))
            if index < len(posted):
                return
            if index != len(posted):
                raise ValueError(f"message {index} recorded before message {len(posted)}")
            posted.append(ts)
            conn.execute(
                update(digest_runs)
                .where(c.id == run_id, c.posted_ts == row.posted_ts)
                .values(posted_ts=json.dumps(posted))
            )

        await self.db.run(q)

    async def mark_posted(self, run_id: int, now: float) -> None:
        c = digest_runs.c
        await self.db.run(
            lambda conn: conn.execute(
                update(digest_runs)
                .where(c.id == run_id, c.state == "posting")
                .values(state="posted", finished_at=now)
            )
        )
