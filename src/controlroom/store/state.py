"""Per-workflow key/value state with idempotency keys, on the shared database."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from typing import Any

from sqlalchemy import Column, Float, String, Table, Text, delete, insert, select, update
from sqlalchemy.engine import Connection
from sqlalchemy.exc import IntegrityError

from controlroom.store.db import Database, metadata

__all__ = ["StateStore", "state_table"]

state_table = Table(
    "workflow_state",
    metadata,
    Column("workflow", String(100), primary_key=True),
    Column("key", String(500), primary_key=True),
    Column("value", Text, nullable=False),
    Column("updated_at", Float, nullable=False),
    Column("expires_at", Float, nullable=True),
)


class StateStore:
    """State scoped to one workflow. Values are JSON."""

    def __init__(
        self, db: Database, workflow: str, *, clock: Callable[[], float] = time.time
    ) -> None:
        self._db = db
        self._wf = workflow
        self._clock = clock

    async def get(self, key: str, default: Any = None) -> Any:
        now = self._clock()

        def q(conn: Connection) -> Any:
            row = conn.execute(
                select(state_table.c.value, state_table.c.expires_at).where(
                    state_table.c.workflow == self._wf, state_table.c.key == key
                )
            ).first()
            if row is None or (row.expires_at is not None and row.expires_at <= now):
                return default
            return json.loads(row.value)

        return await self._db.run(q)

    async def set(self, key: str, value: Any, *, ttl: float | None = None) -> None:
        now = self._clock()
        data = json.dumps(value)
        expires = now + ttl if ttl else None

        def q(conn: Connection) -> None:
            res = conn.execute(
                update(state_table)
                .where(state_table.c.workflow == self._wf, state_table.c.key == key)
                .values(value=data, updated_at=now, expires_at=expires)
            )
            if res.rowcount == 0:
                conn.execute(
                    insert(state_table).values(
                        workflow=self._wf, key=key, value=data, updated_at=now, expires_at=expires
                    )
                )

        await self._db.run(q)

    async def delete(self, key: str) -> None:
        await self._db.run(
            lambda conn: conn.execute(
                delete(state_table).where(
                    state_table.c.workflow == self._wf, state_table.c.key == key
                )
            )
        )

    async def once(self, key: str, *, ttl: float | None = None) -> bool:
        """Claim an idempotency key: True the first time, False ever after (until ttl)."""
        now = self._clock()
        full = f"once:{key}"
        expires = now + ttl if ttl else None

        def q(conn: Connection) -> bool:
            conn.execute(
                delete(state_table).where(
                    state_table.c.workflow == self._wf,
                    state_table.c.key == full,
                    state_table.c.expires_at.is_not(None),
                    state_table.c.expires_at <= now,
                )
            )
            try:
                with conn.begin_nested():
                    conn.execute(
                        insert(state_table).values(
                            workflow=self._wf,
                            key=full,
                            value="true",
                            updated_at=now,
                            expires_at=expires,
                        )
                    )
            except IntegrityError:
                return False
            return True

        return await self._db.run(q)
