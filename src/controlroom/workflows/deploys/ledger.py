"""The deploy ledger: every deployment, its Slack message, its rollback, and deploy locks.

Tables live on the shared ``controlroom.store.db.metadata`` and run on SQLite and
PostgreSQL alike. Rules the ledger enforces, whatever order events arrive in:

- one row per run (``run_key``); a delivery already seen changes nothing;
- a finished deployment never goes back to queued or running; a later *finished*
  event replaces a finished status only if it finished later;
- at most one rollback starts per deployment (an atomic
  ``UPDATE ... WHERE rollback_state IS NULL``; the caller that changed the row won);
- ``last_good`` is the newest earlier succeeded, not-suspect deployment of the same
  service and environment whose version differs.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal

from sqlalchemy import (
    Boolean,
    Column,
    DateTime,
    Integer,
    String,
    Table,
    Text,
    and_,
    delete,
    select,
    update,
)
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.engine import Connection, RowMapping

from controlroom.store.db import Database, metadata
from controlroom.workflows.deploys.events import TERMINAL, DeployEvent, DeployStatus
from controlroom.workflows.deploys.sources import ResolvedRoute

__all__ = [
    "DeployLedger",
    "DeployLock",
    "Deployment",
    "LockResult",
    "RollbackState",
    "UpsertResult",
    "deliveries_table",
    "deployments_table",
    "locks_table",
]

RollbackState = Literal["rolling_back", "rolled_back", "rollback_failed"]

deployments_table = Table(
    "deploys_deployments",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("run_key", String(400), nullable=False, unique=True),
    Column("provider", String(16), nullable=False),
    Column("repository", String(300), nullable=False, default=""),
    Column("service", String(200), nullable=False, index=True),
    Column("environment", String(200), nullable=False),
    Column("version", String(200), nullable=False, default=""),
    Column("commit_sha", String(64), nullable=False, default=""),
    Column("commit_url", Text, nullable=False, default=""),
    Column("author_name", String(200), nullable=False, default=""),
    Column("author_email", String(320), nullable=False, default=""),
    Column("author_login", String(200), nullable=False, default=""),
    Column("run_url", Text, nullable=False, default=""),
    Column("run_id", String(200), nullable=False, default=""),
    Column("status", String(16), nullable=False),
    Column("last_event", String(100), nullable=False, default=""),
    Column("details", Text, nullable=False, default="{}"),
    Column("started_at", DateTime(timezone=True)),
    Column("finished_at", DateTime(timezone=True)),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("updated_at", DateTime(timezone=True), nullable=False),
    Column("suspect", Boolean, nullable=False, default=False),
    Column("channel", String(100), nullable=False, default=""),
    Column("rollback_executor", String(100), nullable=False, default=""),
    Column("message_ts", String(40)),
    Column("thread_ts", String(40)),
    Column("rollback_state", String(20)),
    Column("rollback_by", String(100)),
    Column("rollback_target_id", Integer),
    Column("rollback_url", Text),
    Column("rollback_detail", Text),
    Column("rollback_started_at", DateTime(timezone=True)),
    Column("rollback_job", String(200)),
    Column("rollback_sent_at", DateTime(timezone=True)),
    Column("rollback_finished_at", DateTime(timezone=True)),
    sqlite_autoincrement=True,  # ids are referenced by buttons: never reuse one
)

deliveries_table = Table(
    "deploys_deliveries",
    metadata,
    Column("delivery_key", String(300), primary_key=True),
    Column("deployment_id", Integer),
    Column("received_at", DateTime(timezone=True), nullable=False),
)

locks_table = Table(
    "deploys_locks",
    metadata,
    Column("service", String(200), primary_key=True),
    Column("environment", String(200), primary_key=True),
    Column("locked_by", String(100), nullable=False),
    Column("reason", Text, nullable=False, default=""),
    Column("locked_at", DateTime(timezone=True), nullable=False),
)

_RANK = {"queued": 0, "in_progress": 1}
_VISIBLE_TEXT = (
    "version",
    "commit_sha",
    "commit_url",
    "author_name",
    "author_email",
    "author_login",
    "run_url",
    "run_id",
)


def _bounded_key(key: str, limit: int) -> str:
    """A unique key that fits ``limit``: long keys keep a prefix and gain a hash."""
    if len(key) <= limit:
        return key
    return key[: limit - 33] + "#" + hashlib.sha256(key.encode()).hexdigest()[:32]


def _fit(table: Table, values: dict[str, Any]) -> dict[str, Any]:
    """Clip strings to their column's length (PostgreSQL enforces it, SQLite does not)."""
    out = dict(values)
    for name, value in values.items():
        length = getattr(table.c[name].type, "length", None)
        if isinstance(value, str) and length is not None and len(value) > length:
            out[name] = value[:length]
    return out


def _aware(value: datetime | None) -> datetime | None:
    """SQLite hands back naive datetimes; everything stored is UTC."""
    if value is None:
        return None
    return value if value.tzinfo else value.replace(tzinfo=UTC)


def _utcnow() -> datetime:
    return datetime.now(UTC)


@dataclass(frozen=True, slots=True)
class Deployment:
    """One deployment as the ledger knows it."""

    id: int
    run_key: str
    provider: str
    service: str
    environment: str
    status: DeployStatus
    created_at: datetime
    updated_at: datetime
    repository: str = ""
    version: str = ""
    commit_sha: str = ""
    commit_url: str = ""
    author_name: str = ""
    author_email: str = ""
    author_login: str = ""
    run_url: str = ""
    run_id: str = ""
    last_event: str = ""
    details: Mapping[str, str] = field(default_factory=dict)
    started_at: datetime | None = None
    finished_at: datetime | None = None
    suspect: bool = False
    channel: str = ""
    rollback_executor: str = ""
    message_ts: str | None = None
    thread_ts: str | None = None
    rollback_state: RollbackState | None = None
    rollback_by: str | None = None
    rollback_target_id: int | None = None
    rollback_url: str | None = None
    rollback_detail: str | None = None
    rollback_started_at: datetime | None = None
    rollback_job: str | None = None
    rollback_sent_at: datetime | None = None
    rollback_finished_at: datetime | None = None

    @property
    def finished(self) -> bool:
        return self.status in TERMINAL

    @property
    def needs_attention(self) -> bool:
        """Failed, or succeeded but marked suspect: a rollback candidate."""
        return self.status == "failed" or self.suspect

    @classmethod
    def from_row(cls, row: RowMapping) -> Deployment:
        data = dict(row)
        for key in (
            "started_at",
            "finished_at",
            "created_at",
            "updated_at",
            "rollback_started_at",
            "rollback_sent_at",
            "rollback_finished_at",
        ):
            data[key] = _aware(data[key])
        data["details"] = json.loads(data["details"] or "{}")
        data["suspect"] = bool(data["suspect"])
        return cls(**data)


@dataclass(frozen=True, slots=True)
class UpsertResult:
    """What one event did: ``created`` (post a message), ``changed`` (update it),
    ``duplicate`` (a delivery already seen; do nothing)."""

    deployment: Deployment | None
    created: bool = False
    changed: bool = False
    duplicate: bool = False
    previous_status: DeployStatus | None = None


@dataclass(frozen=True, slots=True)
class DeployLock:
    service: str
    environment: str
    locked_by: str
    reason: str
    locked_at: datetime


@dataclass(frozen=True, slots=True)
class LockResult:
    """``acquired`` is False when someone else already holds ``lock``."""

    acquired: bool
    lock: DeployLock


def _insert(conn: Connection, table: Table) -> Any:
    return (pg_insert if conn.dialect.name == "postgresql" else sqlite_insert)(table)


def _merge(row: Deployment, event: DeployEvent) -> dict[str, Any]:
    """The column changes ``event`` makes to ``row`` (visible ones only)."""
    changes: dict[str, Any] = {}
    old, new = row.status, event.status
    if new not in TERMINAL and old not in TERMINAL:
        if _RANK[new] > _RANK[old]:
            changes["status"] = new
    elif new in TERMINAL and old not in TERMINAL:
        changes["status"] = new
        if event.finished_at is not None:
            changes["finished_at"] = event.finished_at
    elif (
        # Two different outcomes for one run: the one that finished later wins.
        new in TERMINAL
        and old in TERMINAL
        and new != old
        and event.finished_at
        and row.finished_at
        and event.finished_at > row.finished_at
    ):
        changes["status"] = new
        changes["finished_at"] = event.finished_at
    if old in TERMINAL and new in TERMINAL and row.finished_at is None and event.finished_at:
        changes.setdefault("finished_at", event.finished_at)
    if event.started_at is not None and (
        row.started_at is None or event.started_at < row.started_at
    ):
        changes["started_at"] = event.started_at
    for name in _VISIBLE_TEXT:
        value = getattr(event, name)
        if value and not getattr(row, name):
            changes[name] = value
    return changes


class DeployLedger:
    """Async API over the ledger tables; each call is one transaction in a thread."""

    def __init__(self, db: Database, *, clock: Callable[[], datetime] = _utcnow) -> None:
        self.db = db
        self._clock = clock

    # -- events -------------------------------------------------------------------------

    async def upsert_from_event(self, event: DeployEvent, route: ResolvedRoute) -> UpsertResult:
        """Record ``event`` for the deployment its run belongs to (creating it on the
        first event). Idempotent per delivery id and per run."""
        return await self.db.run(lambda conn: self._upsert(conn, event, route))

    def _upsert(self, conn: Connection, event: DeployEvent, route: ResolvedRoute) -> UpsertResult:
        now = self._clock()
        t = deployments_table
        key = _bounded_key(f"{event.provider}:{event.delivery_id}", 300)
        run_key = _bounded_key(event.run_key, 400)
        seen = conn.execute(
            _insert(conn, deliveries_table)
            .values(delivery_key=key, deployment_id=None, received_at=now)
            .on_conflict_do_nothing(index_elements=["delivery_key"])
            .returning(deliveries_table.c.delivery_key)
        ).first()
        if seen is None:
            existing = self._by_run_key(conn, run_key)
            return UpsertResult(existing, duplicate=True)
        values: dict[str, Any] = {
            "run_key": run_key,
            "provider": event.provider,
            "repository": event.repository,
            "service": route.service,
            "environment": route.environment,
            "status": event.status,
            "last_event": event.event_name[:100],
            "details": json.dumps(dict(event.details), sort_keys=True),
            "started_at": event.started_at,
            "finished_at": event.finished_at if event.finished else None,
            "created_at": now,
            "updated_at": now,
            "suspect": False,
            "channel": route.channel,
            "rollback_executor": route.rollback,
        }
        values.update({name: getattr(event, name) for name in _VISIBLE_TEXT})
        inserted = conn.execute(
            _insert(conn, t)
            .values(**_fit(t, values))
            .on_conflict_do_nothing(index_elements=["run_key"])
            .returning(t.c.id)
        ).first()
        if inserted is not None:
            dep_id = int(inserted[0])
            self._link_delivery(conn, key, dep_id)
            return UpsertResult(self._get(conn, dep_id), created=True, changed=True)
        row = (
            conn.execute(select(t).where(t.c.run_key == run_key).with_for_update()).mappings().one()
        )
        current = Deployment.from_row(row)
        changes = _merge(current, event)
        details = {**current.details, **event.details}
        conn.execute(
            update(t)
            .where(t.c.id == current.id)
            .values(
                **_fit(t, changes),
                details=json.dumps(details, sort_keys=True),
                last_event=event.event_name[:100],
                updated_at=now,
            )
        )
        self._link_delivery(conn, key, current.id)
        return UpsertResult(
            self._get(conn, current.id),
            changed=bool(changes),
            previous_status=current.status,
        )

    @staticmethod
    def _link_delivery(conn: Connection, key: str, dep_id: int) -> None:
        d = deliveries_table
        conn.execute(update(d).where(d.c.delivery_key == key).values(deployment_id=dep_id))

    # -- reads --------------------------------------------------------------------------

    @staticmethod
    def _get(conn: Connection, dep_id: int) -> Deployment | None:
        t = deployments_table
        row = conn.execute(select(t).where(t.c.id == dep_id)).mappings().first()
        return Deployment.from_row(row) if row else None

    @staticmethod
    def _by_run_key(conn: Connection, run_key: str) -> Deployment | None:
        t = deployments_table
        row = conn.execute(select(t).where(t.c.run_key == run_key)).mappings().first()
        return Deployment.from_row(row) if row else None

    async def get(self, deployment_id: int) -> Deployment | None:
        return await self.db.run(lambda conn: self._get(conn, deployment_id))

    async def by_run_key(self, run_key: str) -> Deployment | None:
        key = _bounded_key(run_key, 400)
        return await self.db.run(lambda conn: self._by_run_key(conn, key))

    async def last_good(
        self, service: str, environment: str, *, before: Deployment | None = None
    ) -> Deployment | None:
        """The newest succeeded, not-suspect deployment of ``service`` in ``environment``
        recorded before ``before`` and with a different version (the rollback target)."""
        t = deployments_table
        conds = [
            t.c.service == service,
            t.c.environment == environment,
            t.c.status == "succeeded",
            t.c.suspect.is_(False),
        ]
        if before is not None:
            conds += [t.c.id < before.id, t.c.version != before.version]
        query = select(t).where(and_(*conds)).order_by(t.c.id.desc()).limit(1)

        def work(conn: Connection) -> Deployment | None:
            row = conn.execute(query).mappings().first()
            return Deployment.from_row(row) if row else None

        return await self.db.run(work)

    async def recent(
        self, service: str, limit: int = 10, *, environment: str | None = None
    ) -> list[Deployment]:
        """The newest deployments of ``service`` (optionally one environment), newest first."""
        t = deployments_table
        query = select(t).where(t.c.service == service)
        if environment is not None:
            query = query.where(t.c.environment == environment)
        query = query.order_by(t.c.id.desc()).limit(max(1, min(limit, 100)))

        def work(conn: Connection) -> list[Deployment]:
            return [Deployment.from_row(r) for r in conn.execute(query).mappings()]

        return await self.db.run(work)

    # -- message and marks --------------------------------------------------------------

    async def set_message(
        self, deployment_id: int, *, channel: str, message_ts: str, thread_ts: str | None = None
    ) -> None:
        """Remember where the living message was posted."""
        t = deployments_table
        values = {
            "channel": channel,
            "message_ts": message_ts,
            "thread_ts": thread_ts or message_ts,
        }
        stmt = update(t).where(t.c.id == deployment_id).values(**values)
        await self.db.run(lambda conn: conn.execute(stmt))

    async def mark_suspect(self, deployment_id: int, suspect: bool = True) -> Deployment | None:
        t = deployments_table
        stmt = update(t).where(t.c.id == deployment_id).values(suspect=suspect)

        def work(conn: Connection) -> Deployment | None:
            conn.execute(stmt)
            return self._get(conn, deployment_id)

        return await self.db.run(work)

    # -- rollback -----------------------------------------------------------------------

    async def begin_rollback(
        self, deployment_id: int, *, by: str, target_id: int, job_key: str = ""
    ) -> bool:
        """Move the deployment to ``rolling_back``; True only for the one caller that
        did it (every other concurrent or later caller gets False).

        ``job_key`` names the durable job doing the rollback: when that same job runs
        again (its worker died), it gets True again and may continue; ``claim_send``
        still lets the provider be called at most once."""
        t = deployments_table
        won = (
            update(t)
            .where(t.c.id == deployment_id, t.c.rollback_state.is_(None))
            .values(
                rollback_state="rolling_back",
                rollback_by=by,
                rollback_target_id=target_id,
                rollback_started_at=self._clock(),
                rollback_job=job_key or None,
            )
            .returning(t.c.id)
        )
        resumed = select(t.c.id).where(
            t.c.id == deployment_id,
            t.c.rollback_state == "rolling_back",
            t.c.rollback_job == job_key,
            t.c.rollback_by == by,
            t.c.rollback_target_id == target_id,
        )

        def work(conn: Connection) -> bool:
            if conn.execute(won).first() is not None:
                return True
            return bool(job_key) and conn.execute(resumed).first() is not None

        return await self.db.run(work)

    async def claim_send(self, deployment_id: int, *, job_key: str = "") -> bool:
        """Record, before calling the provider, that the rollback request is being sent;
        True exactly once per deployment. A job that finds it already claimed (it died
        after claiming) must not send again: the outcome is unknown, not retryable."""
        t = deployments_table
        conds = [
            t.c.id == deployment_id,
            t.c.rollback_state == "rolling_back",
            t.c.rollback_sent_at.is_(None),
        ]
        if job_key:
            conds.append(t.c.rollback_job == job_key)
        stmt = update(t).where(*conds).values(rollback_sent_at=self._clock()).returning(t.c.id)
        return await self.db.run(lambda conn: conn.execute(stmt).first() is not None)

    async def finish_rollback(
        self, deployment_id: int, *, ok: bool, url: str = "", detail: str = ""
    ) -> bool:
        """``rolling_back`` -> ``rolled_back`` / ``rollback_failed``; False if the
        deployment was not rolling back (a late or repeated outcome)."""
        t = deployments_table
        stmt = (
            update(t)
            .where(t.c.id == deployment_id, t.c.rollback_state == "rolling_back")
            .values(
                rollback_state="rolled_back" if ok else "rollback_failed",
                rollback_url=url,
                rollback_detail=detail[:2000],
                rollback_finished_at=self._clock(),
            )
            .returning(t.c.id)
        )
        return await self.db.run(lambda conn: conn.execute(stmt).first() is not None)

    # -- locks --------------------------------------------------------------------------

    async def lock(
        self, service: str, environment: str, *, by: str, reason: str = ""
    ) -> LockResult:
        """Lock deploys and rollbacks of ``service`` in ``environment``. If it is already
        locked, the existing lock is returned with ``acquired=False``."""
        service, environment, by = service[:200], environment[:200], by[:100]
        lk = locks_table
        now = self._clock()

        def work(conn: Connection) -> LockResult:
            res = conn.execute(
                _insert(conn, lk)
                .values(
                    service=service,
                    environment=environment,
                    locked_by=by,
                    reason=reason[:500],
                    locked_at=now,
                )
                .on_conflict_do_nothing(index_elements=["service", "environment"])
                .returning(lk.c.service)
            ).first()
            current = self._current_lock(conn, service, environment)
            assert current is not None
            return LockResult(res is not None, current)

        return await self.db.run(work)

    async def unlock(self, service: str, environment: str) -> DeployLock | None:
        """Remove the lock; returns the lock that was removed (None if there was none)."""
        service, environment = service[:200], environment[:200]
        lk = locks_table

        def work(conn: Connection) -> DeployLock | None:
            current = self._current_lock(conn, service, environment)
            if current is not None:
                conn.execute(
                    delete(lk).where(lk.c.service == service, lk.c.environment == environment)
                )
            return current

        return await self.db.run(work)

    async def current_lock(self, service: str, environment: str) -> DeployLock | None:
        service, environment = service[:200], environment[:200]
        return await self.db.run(lambda conn: self._current_lock(conn, service, environment))

    @staticmethod
    def _current_lock(conn: Connection, service: str, environment: str) -> DeployLock | None:
        lk = locks_table
        row = (
            conn.execute(select(lk).where(lk.c.service == service, lk.c.environment == environment))
            .mappings()
            .first()
        )
        if row is None:
            return None
        return DeployLock(
            service=row["service"],
            environment=row["environment"],
            locked_by=row["locked_by"],
            reason=row["reason"],
            locked_at=_aware(row["locked_at"]) or datetime.min.replace(tzinfo=UTC),
        )
