"""The escalations ledger: one row per source message, the exactly-once spine of the flow.

``(workspace, source_channel, source_ts)`` is UNIQUE, so however many reactions, Slack
retries or workers race, one ``claim`` inserts the row and wins; the others read it and
answer with a link to the room. The winning job (identified by its ``claimant`` token,
e.g. the job's idempotency key) can call ``claim`` again after a crash and still wins.

The row then walks a state machine, each step recorded right after the Slack call that
performed it::

    claimed -> channel_created -> invited -> briefed -> pointer_posted -> done
                                                    (briefed..done) -> resolved -> archived

A worker that resumes looks at ``Escalation.next_step`` and does only what is missing.
The one dangerous gap is between ``conversations.create`` succeeding and
``record_channel_created``: so the room name and sequence are reserved first
(``reserve_name``), and a resumed worker creates the *same* name; a ``name_taken`` answer
then means "adopt the channel of that name" (the bot created it), never "make another".

Every step is a single conditional UPDATE (``WHERE state = <previous>``): repeating a step
that is already recorded with the same values is a no-op, anything else raises.
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import (
    JSON,
    Boolean,
    Column,
    DateTime,
    Index,
    Integer,
    String,
    Table,
    Text,
    UniqueConstraint,
    select,
    update,
)
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Connection, RowMapping

from controlroom.errors import ControlRoomError
from controlroom.store.db import Database, metadata

__all__ = [
    "Escalation",
    "InvalidTransition",
    "Ledger",
    "LedgerError",
    "Source",
    "State",
    "escalations",
]


class LedgerError(ControlRoomError):
    """The ledger refused an operation; ``escalation_id`` names the row."""

    def __init__(self, escalation_id: int | None, reason: str) -> None:
        self.escalation_id = escalation_id
        self.reason = reason
        super().__init__(f"escalation {escalation_id}: {reason}")


class InvalidTransition(LedgerError):
    def __init__(self, escalation_id: int, current: str, wanted: str) -> None:
        self.current = current
        self.wanted = wanted
        super().__init__(escalation_id, f"cannot go from {current} to {wanted}")


class State(enum.StrEnum):
    CLAIMED = "claimed"
    CHANNEL_CREATED = "channel_created"
    INVITED = "invited"
    BRIEFED = "briefed"
    POINTER_POSTED = "pointer_posted"
    DONE = "done"
    RESOLVED = "resolved"
    ARCHIVED = "archived"


_ORDER = list(State)
_RESOLVABLE = (State.BRIEFED, State.POINTER_POSTED, State.DONE)
_FINISHED = frozenset({State.DONE, State.RESOLVED, State.ARCHIVED})


escalations = Table(
    "escalations",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("workspace", String(64), nullable=False),
    Column("source_channel", String(64), nullable=False),
    Column("source_ts", String(32), nullable=False),
    Column("claimant", String(255), nullable=False),
    Column("escalated_by", String(64), nullable=False),
    Column("state", String(32), nullable=False),
    Column("account_id", String(120)),
    Column("customer_name", String(200)),
    Column("crm_pending", Boolean, nullable=False, default=False),
    Column("seq", Integer),
    Column("room_name", String(80)),
    Column("room_channel_id", String(64)),
    Column("invited", JSON),
    Column("invite_failures", JSON),
    Column("briefing_ts", String(32)),
    Column("pointer_ts", String(32)),
    Column("resolved_by", String(64)),
    Column("summary_ts", String(32)),
    Column("last_error", Text),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("updated_at", DateTime(timezone=True), nullable=False),
    Column("resolved_at", DateTime(timezone=True)),
    Column("archived_at", DateTime(timezone=True)),
    UniqueConstraint("workspace", "source_channel", "source_ts", name="uq_escalations_source"),
    UniqueConstraint("workspace", "room_channel_id", name="uq_escalations_room"),
    Index("ix_escalations_state", "state"),
)


@dataclass(frozen=True)
class Source:
    """The message that was escalated."""

    workspace: str
    channel: str
    ts: str


def _aware(value: datetime | None) -> datetime | None:
    if value is None:
        return None
    return value if value.tzinfo else value.replace(tzinfo=UTC)


@dataclass(frozen=True)
class Escalation:
    id: int
    source: Source
    claimant: str
    escalated_by: str
    state: State
    created_at: datetime
    updated_at: datetime
    account_id: str | None = None
    customer_name: str | None = None
    crm_pending: bool = False
    seq: int | None = None
    room_name: str | None = None
    room_channel_id: str | None = None
    invited: tuple[str, ...] = ()
    invite_failures: Mapping[str, str] = field(default_factory=dict)
    briefing_ts: str | None = None
    pointer_ts: str | None = None
    resolved_by: str | None = None
    summary_ts: str | None = None
    last_error: str | None = None
    resolved_at: datetime | None = None
    archived_at: datetime | None = None

    @classmethod
    def from_row(cls, row: RowMapping) -> Escalation:
        created, updated = _aware(row["created_at"]), _aware(row["updated_at"])
        assert created is not None and updated is not None
        return cls(
            id=row["id"],
            source=Source(row["workspace"], row["source_channel"], row["source_ts"]),
            claimant=row["claimant"],
            escalated_by=row["escalated_by"],
            state=State(row["state"]),
            created_at=created,
            updated_at=updated,
            account_id=row["account_id"],
            customer_name=row["customer_name"],
            crm_pending=bool(row["crm_pending"]),
            seq=row["seq"],
            room_name=row["room_name"],
            room_channel_id=row["room_channel_id"],
            invited=tuple(row["invited"] or ()),
            invite_failures=dict(row["invite_failures"] or {}),
            briefing_ts=row["briefing_ts"],
            pointer_ts=row["pointer_ts"],
            resolved_by=row["resolved_by"],
            summary_ts=row["summary_ts"],
            last_error=row["last_error"],
            resolved_at=_aware(row["resolved_at"]),
            archived_at=_aware(row["archived_at"]),
        )

    @property
    def finished(self) -> bool:
        """The opening flow is complete (or past it)."""
        return self.state in _FINISHED

    @property
    def next_step(self) -> State | None:
        """The next state of the opening flow to reach, or None when it is complete."""
        if self.finished:
            return None
        return _ORDER[_ORDER.index(self.state) + 1]

    def reached(self, state: State) -> bool:
        return _ORDER.index(self.state) >= _ORDER.index(state)


Clock = Callable[[], datetime]


def _utcnow() -> datetime:
    return datetime.now(UTC)


def _fetch(conn: Connection, *where: Any) -> Escalation | None:
    row = conn.execute(select(escalations).where(*where)).mappings().first()
    return Escalation.from_row(row) if row is not None else None


def _by_source(conn: Connection, source: Source) -> Escalation | None:
    return _fetch(
        conn,
        escalations.c.workspace == source.workspace,
        escalations.c.source_channel == source.channel,
        escalations.c.source_ts == source.ts,
    )


def claim(
    conn: Connection,
    source: Source,
    *,
    claimant: str,
    escalated_by: str,
    now: datetime,
    stale_after: timedelta | None = None,
) -> tuple[Escalation, bool]:
    """Insert the row for ``source`` unless it exists. Wins if it inserted, if the row
    was claimed by the same ``claimant`` (a retry of the winning job), or, with
    ``stale_after``, if the opening flow stalled for that long (the winner died for good)."""
    values = {
        "workspace": source.workspace,
        "source_channel": source.channel,
        "source_ts": source.ts,
        "claimant": claimant,
        "escalated_by": escalated_by,
        "state": State.CLAIMED.value,
        "crm_pending": False,
        "created_at": now,
        "updated_at": now,
    }
    keys = [escalations.c.workspace, escalations.c.source_channel, escalations.c.source_ts]
    stmt: Any
    if conn.dialect.name == "postgresql":
        stmt = postgresql.insert(escalations).values(**values)
    else:
        stmt = sqlite.insert(escalations).values(**values)
    inserted = conn.execute(stmt.on_conflict_do_nothing(index_elements=keys)).rowcount == 1
    existing = _by_source(conn, source)
    if existing is None:  # pragma: no cover - the row was just inserted or already there
        raise LedgerError(None, f"claim of {source} vanished")
    if inserted or existing.claimant == claimant:
        return existing, True
    if (
        stale_after is not None
        and not existing.finished
        and existing.updated_at <= now - stale_after
    ):
        took = conn.execute(
            update(escalations)
            .where(
                escalations.c.id == existing.id,
                escalations.c.claimant == existing.claimant,
                escalations.c.updated_at == existing.updated_at,
            )
            .values(claimant=claimant, updated_at=now)
        ).rowcount
        if took == 1:
            fresh = _fetch(conn, escalations.c.id == existing.id)
            assert fresh is not None
            return fresh, True
    return existing, False


class Ledger:
    """Async access to the escalations table through ``Database.run``."""

    def __init__(self, db: Database, *, clock: Clock = _utcnow) -> None:
        self.db = db
        self.clock = clock

    # -- reading --------------------------------------------------------------------

    async def get(self, escalation_id: int) -> Escalation | None:
        return await self.db.run(lambda c: _fetch(c, escalations.c.id == escalation_id))

    async def by_source(self, source: Source) -> Escalation | None:
        return await self.db.run(lambda c: _by_source(c, source))

    async def by_room(self, workspace: str, channel_id: str) -> Escalation | None:
        return await self.db.run(
            lambda c: _fetch(
                c,
                escalations.c.workspace == workspace,
                escalations.c.room_channel_id == channel_id,
            )
        )

    async def unfinished(self, *, idle_for: timedelta = timedelta(0)) -> list[Escalation]:
        """Opening flows not complete and untouched for ``idle_for`` (for a sweeper)."""
        cutoff = self.clock() - idle_for
        done = [s.value for s in _FINISHED]

        def work(c: Connection) -> list[Escalation]:
            rows = c.execute(
                select(escalations)
                .where(escalations.c.state.not_in(done), escalations.c.updated_at <= cutoff)
                .order_by(escalations.c.id)
            ).mappings()
            return [Escalation.from_row(r) for r in rows]

        return await self.db.run(work)

    async def crm_pending(self) -> list[Escalation]:
        """Rooms whose briefing waits for the CRM to answer."""

        def work(c: Connection) -> list[Escalation]:
            rows = c.execute(
                select(escalations)
                .where(
                    escalations.c.crm_pending.is_(True),
                    escalations.c.state != State.ARCHIVED.value,
                )
                .order_by(escalations.c.id)
            ).mappings()
            return [Escalation.from_row(r) for r in rows]

        return await self.db.run(work)

    async def due_for_archive(self, *, delay: timedelta) -> list[Escalation]:
        """Resolved rooms whose archive delay has passed."""
        cutoff = self.clock() - delay

        def work(c: Connection) -> list[Escalation]:
            rows = c.execute(
                select(escalations)
                .where(
                    escalations.c.state == State.RESOLVED.value,
                    escalations.c.resolved_at <= cutoff,
                )
                .order_by(escalations.c.id)
            ).mappings()
            return [Escalation.from_row(r) for r in rows]

        return await self.db.run(work)

    # -- claiming -------------------------------------------------------------------

    async def claim(
        self,
        source: Source,
        *,
        claimant: str,
        escalated_by: str,
        stale_after: timedelta | None = None,
    ) -> tuple[Escalation, bool]:
        """``(escalation, won)``: see the module docstring."""
        now = self.clock()
        return await self.db.run(
            lambda c: claim(
                c,
                source,
                claimant=claimant,
                escalated_by=escalated_by,
                now=now,
                stale_after=stale_after,
            )
        )

    # -- steps ----------------------------------------------------------------------

    async def _step(
        self,
        escalation_id: int,
        *,
        allowed_from: Sequence[State],
        target: State,
        values: Mapping[str, Any],
        same: Callable[[Escalation], bool],
    ) -> Escalation:
        now = self.clock()

        def work(c: Connection) -> Escalation:
            changed = c.execute(
                update(escalations)
                .where(
                    escalations.c.id == escalation_id,
                    escalations.c.state.in_([s.value for s in allowed_from]),
                )
                .values(state=target.value, updated_at=now, last_error=None, **values)
            ).rowcount
            current = _fetch(c, escalations.c.id == escalation_id)
            if current is None:
                raise LedgerError(escalation_id, "no such escalation")
            if changed != 1 and not (current.reached(target) and same(current)):
                raise InvalidTransition(escalation_id, current.state, target)
            return current

        return await self.db.run(work)

    async def reserve_name(self, escalation_id: int, *, name: str, seq: int) -> Escalation:
        """Remember the room name (and its sequence) before creating the channel. The
        first reservation stays: the returned row's ``room_name`` is the one to use."""
        now = self.clock()

        def work(c: Connection) -> Escalation:
            c.execute(
                update(escalations)
                .where(escalations.c.id == escalation_id, escalations.c.room_name.is_(None))
                .values(room_name=name, seq=seq, updated_at=now)
            )
            current = _fetch(c, escalations.c.id == escalation_id)
            if current is None:
                raise LedgerError(escalation_id, "no such escalation")
            return current

        return await self.db.run(work)

    async def rename(self, escalation_id: int, *, name: str) -> Escalation:
        """Replace the reserved name before the channel exists (after a ``name_taken``
        that was not ours, settled with ``next_free_name``)."""
        now = self.clock()

        def work(c: Connection) -> Escalation:
            changed = c.execute(
                update(escalations)
                .where(
                    escalations.c.id == escalation_id,
                    escalations.c.state == State.CLAIMED.value,
                )
                .values(room_name=name, updated_at=now)
            ).rowcount
            current = _fetch(c, escalations.c.id == escalation_id)
            if current is None:
                raise LedgerError(escalation_id, "no such escalation")
            if changed != 1:
                raise InvalidTransition(escalation_id, current.state, "renamed")
            return current

        return await self.db.run(work)

    async def record_channel_created(
        self, escalation_id: int, *, channel_id: str, name: str
    ) -> Escalation:
        return await self._step(
            escalation_id,
            allowed_from=[State.CLAIMED],
            target=State.CHANNEL_CREATED,
            values={"room_channel_id": channel_id, "room_name": name},
            same=lambda e: e.room_channel_id == channel_id,
        )

    async def record_invited(
        self,
        escalation_id: int,
        *,
        invited: Sequence[str],
        failed: Mapping[str, str] | None = None,
    ) -> Escalation:
        """``invited``: user ids now in the room; ``failed``: user or email -> reason."""
        return await self._step(
            escalation_id,
            allowed_from=[State.CHANNEL_CREATED],
            target=State.INVITED,
            values={"invited": list(invited), "invite_failures": dict(failed or {})},
            same=lambda e: True,
        )

    async def record_briefed(self, escalation_id: int, *, message_ts: str) -> Escalation:
        return await self._step(
            escalation_id,
            allowed_from=[State.INVITED],
            target=State.BRIEFED,
            values={"briefing_ts": message_ts},
            same=lambda e: e.briefing_ts == message_ts,
        )

    async def record_pointer_posted(self, escalation_id: int, *, message_ts: str) -> Escalation:
        return await self._step(
            escalation_id,
            allowed_from=[State.BRIEFED],
            target=State.POINTER_POSTED,
            values={"pointer_ts": message_ts},
            same=lambda e: e.pointer_ts == message_ts,
        )

    async def record_done(self, escalation_id: int) -> Escalation:
        return await self._step(
            escalation_id,
            allowed_from=[State.POINTER_POSTED],
            target=State.DONE,
            values={},
            same=lambda e: True,
        )

    async def record_resolved(
        self, escalation_id: int, *, by: str, summary_ts: str | None = None
    ) -> Escalation:
        """Resolve once; a second click (by anyone) raises ``InvalidTransition`` with
        ``current == "resolved"`` so the caller can say who resolved it."""
        now = self.clock()
        return await self._step(
            escalation_id,
            allowed_from=_RESOLVABLE,
            target=State.RESOLVED,
            values={"resolved_by": by, "resolved_at": now, "summary_ts": summary_ts},
            same=lambda e: False,
        )

    async def record_summary(self, escalation_id: int, *, summary_ts: str) -> Escalation:
        """Remember the summary message posted after resolving."""
        now = self.clock()

        def work(c: Connection) -> Escalation:
            c.execute(
                update(escalations)
                .where(escalations.c.id == escalation_id)
                .values(summary_ts=summary_ts, updated_at=now)
            )
            current = _fetch(c, escalations.c.id == escalation_id)
            if current is None:
                raise LedgerError(escalation_id, "no such escalation")
            return current

        return await self.db.run(work)

    async def record_archived(self, escalation_id: int) -> Escalation:
        now = self.clock()
        return await self._step(
            escalation_id,
            allowed_from=[State.RESOLVED],
            target=State.ARCHIVED,
            values={"archived_at": now},
            same=lambda e: True,
        )

    async def set_customer(
        self,
        escalation_id: int,
        *,
        account_id: str | None,
        customer_name: str | None,
        crm_pending: bool = False,
    ) -> Escalation:
        """Record (or correct) the customer; ``crm_pending`` marks a briefing to update
        when the CRM answers again."""
        now = self.clock()

        def work(c: Connection) -> Escalation:
            c.execute(
                update(escalations)
                .where(escalations.c.id == escalation_id)
                .values(
                    account_id=account_id,
                    customer_name=customer_name,
                    crm_pending=crm_pending,
                    updated_at=now,
                )
            )
            current = _fetch(c, escalations.c.id == escalation_id)
            if current is None:
                raise LedgerError(escalation_id, "no such escalation")
            return current

        return await self.db.run(work)

    async def record_error(self, escalation_id: int, error: str) -> None:
        """Keep the last failure (short, no payloads) for operators; state unchanged."""
        await self.db.run(
            lambda c: c.execute(
                update(escalations)
                .where(escalations.c.id == escalation_id)
                .values(last_error=error[:1000])
            )
        )
