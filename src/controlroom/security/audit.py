"""An append-only, hash-chained audit log in the database.

Every entry carries the SHA-256 of the previous one (``prev_hash``) and its own hash,
computed over a canonical JSON of all its fields (``seq``, ``time``, ``actor``,
``action``, ``target``, ``outcome``, ``envelope_id``, ``details``, ``prev_hash``). Changing
any field of any row, removing a row, or cutting the end of the log (the ``audit_head``
row records the last seq and hash) is found by ``verify``, which names the first bad
entry.

Appends are serialised so concurrent writers (threads, processes, replicas) keep one
chain: on SQLite the append runs in a ``BEGIN IMMEDIATE`` transaction (one writer at a
time, others wait on the busy timeout); on PostgreSQL it takes a transaction-scoped
advisory lock (``pg_advisory_xact_lock``). Details are redacted before they are stored.

What this proves: nobody changed the log without also rewriting every later hash and
the head. An attacker with write access to the database can still rewrite the whole
chain; export it regularly (``export_jsonl``) and keep the last hash elsewhere to
anchor it.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import IO, Any

from sqlalchemy import (
    BigInteger,
    Column,
    Double,
    Index,
    Integer,
    String,
    Table,
    Text,
    func,
    insert,
    select,
    text,
    update,
)
from sqlalchemy.engine import Connection

from controlroom.security.redaction import Redactor
from controlroom.store.db import Database, metadata

__all__ = [
    "GENESIS_HASH",
    "AuditEntry",
    "AuditLog",
    "VerifyResult",
    "audit_head",
    "audit_log",
    "verify_jsonl",
]

GENESIS_HASH = "0" * 64
# A fixed 63-bit key for pg_advisory_xact_lock ("controlroom.audit").
_PG_LOCK_KEY = int.from_bytes(hashlib.sha256(b"controlroom.audit").digest()[:8], "big") >> 1

audit_log = Table(
    "audit_log",
    metadata,
    Column(
        "seq", BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=False
    ),
    Column("time", Double, nullable=False),
    Column("actor", String(255), nullable=False),
    Column("action", String(255), nullable=False),
    Column("target", String(1024), nullable=False),
    Column("outcome", String(64), nullable=False),
    Column("envelope_id", String(255), nullable=True),
    Column("details", Text, nullable=False),
    Column("prev_hash", String(64), nullable=False),
    Column("hash", String(64), nullable=False, unique=True),
)
Index("ix_audit_log_actor_seq", audit_log.c.actor, audit_log.c.seq)
Index("ix_audit_log_action_seq", audit_log.c.action, audit_log.c.seq)
Index("ix_audit_log_time", audit_log.c.time)

audit_head = Table(
    "audit_head",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=False),
    Column("seq", BigInteger, nullable=False),
    Column("hash", String(64), nullable=False),
)


MAX_DETAILS = 16_384


def _finite(value: Any) -> Any:
    """JSON has no NaN or infinity: write them as strings."""
    if isinstance(value, float) and (value != value or value in (float("inf"), float("-inf"))):
        return str(value)
    if isinstance(value, dict):
        return {str(k): _finite(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_finite(v) for v in value]
    return value


def canonical_json(obj: Any) -> str:
    return json.dumps(
        obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False
    )


@dataclass(frozen=True)
class AuditEntry:
    seq: int
    time: float
    actor: str
    action: str
    target: str
    outcome: str
    envelope_id: str | None
    details: dict[str, Any] = field(default_factory=dict)
    prev_hash: str = GENESIS_HASH
    hash: str = ""

    def hashed_fields(self) -> dict[str, Any]:
        d = asdict(self)
        d.pop("hash")
        return d

    def compute_hash(self) -> str:
        return hashlib.sha256(canonical_json(self.hashed_fields()).encode()).hexdigest()

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class VerifyResult:
    ok: bool
    count: int
    first_bad_seq: int | None = None
    reason: str = ""


def _row_entry(row: Any) -> AuditEntry:
    try:
        details = json.loads(row.details)
    except ValueError:
        details = {"__unparseable__": row.details}
    return AuditEntry(
        seq=int(row.seq),
        time=float(row.time),
        actor=row.actor,
        action=row.action,
        target=row.target,
        outcome=row.outcome,
        envelope_id=row.envelope_id,
        details=details if isinstance(details, dict) else {"__value__": details},
        prev_hash=row.prev_hash,
        hash=row.hash,
    )


class AuditLog:
    """Append, verify, read and export the audit chain."""

    def __init__(
        self,
        db: Database,
        clock: Callable[[], float] = time.time,
        *,
        redactor: Redactor | None = None,
    ) -> None:
        self.db = db
        self.clock = clock
        self.redactor = redactor or Redactor()

    # ---------------------------------------------------------------- append
    async def record(
        self,
        *,
        actor: str,
        action: str,
        target: str = "",
        outcome: str,
        envelope_id: str | None = None,
        details: Mapping[str, Any] | None = None,
    ) -> AuditEntry:
        """Append one entry and return it (with its seq and hash)."""
        r = self.redactor
        clean = _finite(r.redact_value(dict(details or {})))
        if len(canonical_json(clean)) > MAX_DETAILS:
            clean = {"truncated": True, "keys": sorted(str(k) for k in clean)[:50]}
        fields = {
            "actor": r.redact(actor)[:255],
            "action": r.redact(action)[:255],
            "target": r.redact(target)[:1024],
            "outcome": r.redact(outcome)[:64],
            "envelope_id": r.redact(envelope_id)[:255] if envelope_id is not None else None,
            "details": json.loads(canonical_json(clean)),
        }
        return await self.db.run(lambda conn: self._append(conn, fields))

    def _lock(self, conn: Connection) -> None:
        if self.db.is_sqlite:
            # Nothing has run on this connection yet, so the driver has not begun a
            # transaction: take the write lock up front.
            conn.exec_driver_sql("BEGIN IMMEDIATE")
        else:
            conn.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": _PG_LOCK_KEY})

    def _append(self, conn: Connection, fields: dict[str, Any]) -> AuditEntry:
        self._lock(conn)
        head = conn.execute(
            select(audit_head.c.seq, audit_head.c.hash).where(audit_head.c.id == 1)
        ).first()
        if head is None:
            last = conn.execute(
                select(audit_log.c.seq, audit_log.c.hash).order_by(audit_log.c.seq.desc()).limit(1)
            ).first()
            seq, prev = (int(last.seq), last.hash) if last is not None else (0, GENESIS_HASH)
        else:
            seq, prev = int(head.seq), head.hash
        entry = AuditEntry(seq=seq + 1, time=float(self.clock()), prev_hash=prev, **fields)
        entry = AuditEntry(**{**entry.hashed_fields(), "hash": entry.compute_hash()})
        conn.execute(
            insert(audit_log).values(
                **{**entry.to_dict(), "details": canonical_json(entry.details)}
            )
        )
        if head is None:
            conn.execute(insert(audit_head).values(id=1, seq=entry.seq, hash=entry.hash))
        else:
            conn.execute(
                update(audit_head)
                .where(audit_head.c.id == 1)
                .values(seq=entry.seq, hash=entry.hash)
            )
        return entry

    # ---------------------------------------------------------------- verify
    async def verify(self) -> VerifyResult:
        """Walk the chain from the first entry; stop at the first bad one."""
        return await self.db.run(self._verify)

    def _verify(self, conn: Connection) -> VerifyResult:
        rows = conn.execution_options(yield_per=1000).execute(
            select(audit_log).order_by(audit_log.c.seq)
        )
        try:
            bad = self._walk(rows)
        finally:
            rows.close()
        if isinstance(bad, VerifyResult):
            return bad
        count, prev = bad
        head = conn.execute(
            select(audit_head.c.seq, audit_head.c.hash).where(audit_head.c.id == 1)
        ).first()
        head_seq, head_hash = (int(head.seq), head.hash) if head else (0, GENESIS_HASH)
        if head_seq != count or head_hash != prev:
            return VerifyResult(
                False,
                count,
                count + 1,
                f"the log ends at entry {count} but its head records entry {head_seq}: "
                "entries were removed from the end or the head was altered",
            )
        return VerifyResult(True, count)

    @staticmethod
    def _walk(rows: Any) -> VerifyResult | tuple[int, str]:
        expected, prev, count = 1, GENESIS_HASH, 0
        for row in rows:
            entry = _row_entry(row)
            if entry.seq != expected:
                return VerifyResult(
                    False,
                    count,
                    expected,
                    f"entry {expected} is missing (next entry is {entry.seq})",
                )
            if entry.prev_hash != prev:
                return VerifyResult(
                    False,
                    count,
                    entry.seq,
                    f"entry {entry.seq} does not chain to entry {entry.seq - 1}",
                )
            if entry.compute_hash() != entry.hash:
                return VerifyResult(
                    False, count, entry.seq, f"entry {entry.seq} was altered (hash does not match)"
                )
            prev, expected, count = entry.hash, expected + 1, count + 1
        return count, prev

    # ---------------------------------------------------------------- read
    async def tail(
        self,
        limit: int = 20,
        *,
        actor: str | None = None,
        action: str | None = None,
        since: float | None = None,
        outcome: str | None = None,
    ) -> list[AuditEntry]:
        """The last ``limit`` matching entries, oldest first. ``action`` ending in
        ``*`` matches a prefix (``admin.*``)."""
        q = select(audit_log)
        if actor is not None:
            q = q.where(audit_log.c.actor == actor)
        if action is not None:
            if action.endswith("*"):
                prefix = action[:-1].replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
                q = q.where(audit_log.c.action.like(prefix + "%", escape="\\"))
            else:
                q = q.where(audit_log.c.action == action)
        if since is not None:
            q = q.where(audit_log.c.time >= since)
        if outcome is not None:
            q = q.where(audit_log.c.outcome == outcome)
        q = q.order_by(audit_log.c.seq.desc()).limit(max(0, limit))
        rows = await self.db.run(lambda conn: conn.execute(q).all())
        return [_row_entry(r) for r in reversed(rows)]

    async def count(self) -> int:
        return int(
            await self.db.run(
                lambda conn: conn.execute(select(func.count()).select_from(audit_log)).scalar_one()
            )
        )

    async def export_jsonl(self, file: IO[str] | Path) -> int:
        """Write every entry as one canonical JSON line (with its hash), in order.
        Returns the number of entries written."""

        def work(conn: Connection, out: IO[str]) -> int:
            n = 0
            rows = conn.execution_options(yield_per=1000).execute(
                select(audit_log).order_by(audit_log.c.seq)
            )
            try:
                for row in rows:
                    out.write(canonical_json(_row_entry(row).to_dict()) + "\n")
                    n += 1
            finally:
                rows.close()
            return n

        if isinstance(file, Path):
            with file.open("w", encoding="utf-8") as fh:
                return await self.db.run(lambda conn: work(conn, fh))
        return await self.db.run(lambda conn: work(conn, file))


def verify_jsonl(lines: IO[str]) -> VerifyResult:
    """Verify an exported chain offline (no database needed)."""
    expected, prev, count = 1, GENESIS_HASH, 0
    for line in lines:
        if not line.strip():
            continue
        try:
            entry = AuditEntry(**json.loads(line))
        except (ValueError, TypeError):
            return VerifyResult(False, count, expected, f"line {count + 1} is not an entry")
        if entry.seq != expected:
            return VerifyResult(False, count, expected, f"entry {expected} is missing")
        if entry.prev_hash != prev or entry.compute_hash() != entry.hash:
            return VerifyResult(False, count, entry.seq, f"entry {entry.seq} was altered")
        prev, expected, count = entry.hash, expected + 1, count + 1
    return VerifyResult(True, count)
