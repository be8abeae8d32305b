"""The OAuth installation store: one row per workspace (or Enterprise Grid org) install,
tokens encrypted at rest.

Bot and user tokens and their refresh tokens are stored only as ``Cipher`` ciphertexts
whose associated data names the row and the field (``installation:<enterprise>:<team>:
bot_token``), so no ``xox`` string reaches the database file and a ciphertext moved to
another row or field fails to decrypt. In memory, tokens are ``Secret`` values (redacted
repr).

Token rotation is done by one worker at a time: ``acquire_rotation_lease`` is an atomic
conditional UPDATE (a lease with an owner and an expiry) that exactly one caller wins;
the lease expires by itself if its holder dies.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Callable, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass, replace
from typing import Any, Literal

from sqlalchemy import (
    Boolean,
    Column,
    Double,
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

from controlroom.config import Secret
from controlroom.security.crypto import Cipher
from controlroom.store.db import Database, metadata

__all__ = ["Installation", "InstallationStore", "installations"]

Status = Literal["active", "needs_reauth", "revoked"]
_TOKEN_FIELDS = ("bot_token", "bot_refresh_token", "user_token", "user_refresh_token")

installations = Table(
    "installations",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("enterprise_id", String(32), nullable=False, default=""),
    Column("team_id", String(32), nullable=False, default=""),
    Column("is_enterprise_install", Boolean, nullable=False, default=False),
    Column("app_id", String(32), nullable=False, default=""),
    Column("bot_id", String(32), nullable=False, default=""),
    Column("bot_user_id", String(32), nullable=False, default=""),
    Column("installer_user_id", String(32), nullable=False, default=""),
    Column("bot_scopes", Text, nullable=False, default=""),
    Column("user_scopes", Text, nullable=False, default=""),
    Column("bot_token", Text, nullable=True),
    Column("bot_refresh_token", Text, nullable=True),
    Column("bot_token_expires_at", Double, nullable=True),
    Column("user_token", Text, nullable=True),
    Column("user_refresh_token", Text, nullable=True),
    Column("user_token_expires_at", Double, nullable=True),
    Column("status", String(16), nullable=False, default="active"),
    Column("status_reason", Text, nullable=False, default=""),
    Column("installed_at", Double, nullable=False),
    Column("updated_at", Double, nullable=False),
    Column("lease_owner", String(128), nullable=True),
    Column("lease_until", Double, nullable=True),
    UniqueConstraint("enterprise_id", "team_id", name="uq_installations_org_team"),
)


@dataclass(frozen=True)
class Installation:
    team_id: str = ""
    enterprise_id: str = ""
    is_enterprise_install: bool = False
    app_id: str = ""
    bot_id: str = ""
    bot_user_id: str = ""
    installer_user_id: str = ""
    bot_scopes: tuple[str, ...] = ()
    user_scopes: tuple[str, ...] = ()
    bot_token: Secret | None = None
    bot_refresh_token: Secret | None = None
    bot_token_expires_at: float | None = None
    user_token: Secret | None = None
    user_refresh_token: Secret | None = None
    user_token_expires_at: float | None = None
    status: Status = "active"
    status_reason: str = ""
    installed_at: float = 0.0
    updated_at: float = 0.0

    @property
    def key(self) -> tuple[str, str]:
        return (self.enterprise_id, "" if self.is_enterprise_install else self.team_id)

    @property
    def active(self) -> bool:
        return self.status == "active"

    def expires_within(self, seconds: float, now: float) -> bool:
        """True when the bot token rotates and expires within ``seconds`` of ``now``."""
        return self.bot_token_expires_at is not None and self.bot_token_expires_at - now <= seconds


def _aad(enterprise_id: str, team_id: str, name: str) -> str:
    return f"installation:{enterprise_id}:{team_id}:{name}"


class InstallationStore:
    """Save, find, disable, delete installations; lease token rotation."""

    def __init__(
        self, db: Database, cipher: Cipher, clock: Callable[[], float] = time.time
    ) -> None:
        self.db = db
        self.cipher = cipher
        self.clock = clock

    # ---------------------------------------------------------------- encoding
    def _encrypt(self, key: tuple[str, str], name: str, value: Secret | None) -> str | None:
        if value is None:
            return None
        return self.cipher.encrypt(value.get(), _aad(key[0], key[1], name))

    def _decode(self, row: Any) -> Installation:
        key = (row.enterprise_id, row.team_id)

        def tok(name: str) -> Secret | None:
            ct = getattr(row, name)
            if ct is None:
                return None
            return Secret(
                self.cipher.decrypt(ct, _aad(key[0], key[1], name)),
                reference=f"installation:{key[0] or '-'}:{key[1] or '-'}:{name}",
            )

        return Installation(
            team_id=row.team_id,
            enterprise_id=row.enterprise_id,
            is_enterprise_install=bool(row.is_enterprise_install),
            app_id=row.app_id,
            bot_id=row.bot_id,
            bot_user_id=row.bot_user_id,
            installer_user_id=row.installer_user_id,
            bot_scopes=tuple(s for s in row.bot_scopes.split(",") if s),
            user_scopes=tuple(s for s in row.user_scopes.split(",") if s),
            bot_token_expires_at=row.bot_token_expires_at,
            user_token_expires_at=row.user_token_expires_at,
            status=row.status,
            status_reason=row.status_reason,
            installed_at=row.installed_at,
            updated_at=row.updated_at,
            bot_token=tok("bot_token"),
            bot_refresh_token=tok("bot_refresh_token"),
            user_token=tok("user_token"),
            user_refresh_token=tok("user_refresh_token"),
        )

    @staticmethod
    def _where(enterprise_id: str, team_id: str) -> Any:
        """The row of (enterprise, team). Slack team ids are unique, so a team id names
        its row whatever the enterprise; an org-wide install is (enterprise, "")."""
        if team_id:
            return installations.c.team_id == team_id
        return and_(installations.c.enterprise_id == enterprise_id, installations.c.team_id == "")

    # ---------------------------------------------------------------- write
    async def save(self, inst: Installation) -> Installation:
        """Insert or replace the installation for its (enterprise, team); a re-install
        makes it active again. Returns it with timestamps set."""
        if not inst.team_id and not inst.enterprise_id:
            raise ValueError("an installation needs a team_id or an enterprise_id")
        if inst.is_enterprise_install and not inst.enterprise_id:
            raise ValueError("an enterprise install needs an enterprise_id")
        key = inst.key
        now = self.clock()
        values: dict[str, Any] = {
            "is_enterprise_install": inst.is_enterprise_install,
            "app_id": inst.app_id,
            "bot_id": inst.bot_id,
            "bot_user_id": inst.bot_user_id,
            "installer_user_id": inst.installer_user_id,
            "bot_scopes": ",".join(inst.bot_scopes),
            "user_scopes": ",".join(inst.user_scopes),
            "bot_token_expires_at": inst.bot_token_expires_at,
            "user_token_expires_at": inst.user_token_expires_at,
            "status": "active",
            "status_reason": "",
            "updated_at": now,
        }
        for name in _TOKEN_FIELDS:
            values[name] = self._encrypt(key, name, getattr(inst, name))

        def work(conn: Connection) -> float:
            existing = conn.execute(
                select(installations.c.installed_at).where(self._where(*key))
            ).first()
            if existing is None:
                conn.execute(
                    insert(installations).values(
                        enterprise_id=key[0], team_id=key[1], installed_at=now, **values
                    )
                )
                return now
            conn.execute(
                update(installations)
                .where(self._where(*key))
                .values(enterprise_id=key[0], **values)
            )
            return float(existing.installed_at)

        installed_at = await self.db.run(work)
        return replace(
            inst,
            team_id=key[1] or inst.team_id,
            status="active",
            status_reason="",
            installed_at=installed_at,
            updated_at=now,
        )

    async def update_tokens(
        self,
        team_id: str,
        enterprise_id: str = "",
        *,
        bot_token: Secret,
        bot_refresh_token: Secret | None,
        bot_token_expires_at: float | None,
    ) -> bool:
        """Store refreshed bot tokens (after a rotation). Returns whether a row changed."""
        where = self._where(enterprise_id or "", team_id or "")

        def work(conn: Connection) -> int:
            row = conn.execute(
                select(installations.c.enterprise_id, installations.c.team_id).where(where)
            ).first()
            if row is None:
                return 0
            key = (row.enterprise_id, row.team_id)
            values = {
                "bot_token": self._encrypt(key, "bot_token", bot_token),
                "bot_refresh_token": self._encrypt(key, "bot_refresh_token", bot_refresh_token),
                "bot_token_expires_at": bot_token_expires_at,
                "updated_at": self.clock(),
            }
            return int(conn.execute(update(installations).where(where).values(**values)).rowcount)

        return bool(await self.db.run(work))

    async def _update(self, key: tuple[str, str], values: dict[str, Any]) -> bool:
        stmt = update(installations).where(self._where(*key)).values(**values)
        return bool(await self.db.run(lambda conn: conn.execute(stmt).rowcount))

    async def mark_needs_reauth(
        self, team_id: str, enterprise_id: str = "", reason: str = ""
    ) -> bool:
        """The tokens cannot be refreshed: jobs for this workspace should wait until a
        re-install (``save``) makes it active again."""
        key = (enterprise_id or "", team_id or "")
        return await self._update(
            key, {"status": "needs_reauth", "status_reason": reason, "updated_at": self.clock()}
        )

    async def revoke_tokens(
        self, team_id: str, enterprise_id: str = "", *, bot: bool, user: bool, reason: str
    ) -> bool:
        """Forget revoked tokens at once. Without its bot token the installation is
        ``revoked`` (its jobs stop with ``reason``)."""
        key = (enterprise_id or "", team_id or "")
        values: dict[str, Any] = {"updated_at": self.clock()}
        if bot:
            values.update(
                bot_token=None,
                bot_refresh_token=None,
                bot_token_expires_at=None,
                status="revoked",
                status_reason=reason,
            )
        if user:
            values.update(user_token=None, user_refresh_token=None, user_token_expires_at=None)
        return await self._update(key, values)

    async def apply_lifecycle_event(
        self, event: Mapping[str, Any], team_id: str, enterprise_id: str = ""
    ) -> str:
        """Honour ``tokens_revoked`` and ``app_uninstalled`` (from an ``event_callback``)
        at once. Returns what was done: ``deleted``, ``revoked``, ``user_token_removed``
        or ``ignored``."""
        kind = event.get("type")
        if kind == "app_uninstalled":
            return "deleted" if await self.delete(team_id, enterprise_id) else "ignored"
        if kind != "tokens_revoked":
            return "ignored"
        tokens = event.get("tokens")
        tokens = tokens if isinstance(tokens, Mapping) else {}
        raw_bot, raw_user = tokens.get("bot"), tokens.get("oauth")
        bot_ids: list[Any] = raw_bot if isinstance(raw_bot, list) else []
        user_ids: list[Any] = raw_user if isinstance(raw_user, list) else []
        inst = await self.find(team_id, enterprise_id)
        if inst is None:
            return "ignored"
        bot = bool(bot_ids) and (not inst.bot_user_id or inst.bot_user_id in bot_ids)
        user = bool(user_ids) and (not inst.installer_user_id or inst.installer_user_id in user_ids)
        if not bot and not user:
            return "ignored"
        await self.revoke_tokens(
            inst.team_id, inst.enterprise_id, bot=bot, user=user, reason="tokens_revoked by Slack"
        )
        return "revoked" if bot else "user_token_removed"

    async def delete(self, team_id: str, enterprise_id: str = "") -> bool:
        key = (enterprise_id or "", team_id or "")
        stmt = delete(installations).where(self._where(*key))
        return bool(await self.db.run(lambda conn: conn.execute(stmt).rowcount))

    # ---------------------------------------------------------------- read
    async def find(
        self, team_id: str | None, enterprise_id: str | None = None
    ) -> Installation | None:
        """The installation for a workspace: its own row, else (Enterprise Grid) the
        org-wide install of its enterprise. Whatever its status; check ``active``."""
        ent, team = enterprise_id or "", team_id or ""

        def work(conn: Connection) -> Any:
            row = conn.execute(select(installations).where(self._where(ent, team))).first()
            if row is None and ent:
                row = conn.execute(
                    select(installations).where(
                        and_(self._where(ent, ""), installations.c.is_enterprise_install.is_(True))
                    )
                ).first()
            return row

        row = await self.db.run(work)
        return None if row is None else self._decode(row)

    async def list_all(self) -> list[Installation]:
        rows = await self.db.run(
            lambda conn: conn.execute(
                select(installations).order_by(
                    installations.c.enterprise_id, installations.c.team_id
                )
            ).all()
        )
        return [self._decode(r) for r in rows]

    # ---------------------------------------------------------------- rotation lease
    async def acquire_rotation_lease(
        self, team_id: str, enterprise_id: str = "", *, owner: str, seconds: float = 30.0
    ) -> bool:
        """Take the rotation lease for this installation if it is free, expired, or
        already ours. Exactly one concurrent caller wins."""
        key = (enterprise_id or "", team_id or "")
        now = self.clock()
        stmt = (
            update(installations)
            .where(self._where(*key))
            .where(
                or_(
                    installations.c.lease_until.is_(None),
                    installations.c.lease_until <= now,
                    installations.c.lease_owner == owner,
                )
            )
            .values(lease_owner=owner, lease_until=now + seconds)
        )
        return bool(await self.db.run(lambda conn: conn.execute(stmt).rowcount))

    async def release_rotation_lease(
        self, team_id: str, enterprise_id: str = "", *, owner: str
    ) -> bool:
        key = (enterprise_id or "", team_id or "")
        stmt = (
            update(installations)
            .where(self._where(*key))
            .where(installations.c.lease_owner == owner)
            .values(lease_owner=None, lease_until=None)
        )
        return bool(await self.db.run(lambda conn: conn.execute(stmt).rowcount))

    @asynccontextmanager
    async def rotation_lease(
        self, team_id: str, enterprise_id: str = "", *, owner: str, seconds: float = 30.0
    ) -> AsyncIterator[bool]:
        """``async with store.rotation_lease(...) as mine: if mine: refresh...``"""
        mine = await self.acquire_rotation_lease(
            team_id, enterprise_id, owner=owner, seconds=seconds
        )
        try:
            yield mine
        finally:
            if mine:
                await self.release_rotation_lease(team_id, enterprise_id, owner=owner)

    # ---------------------------------------------------------------- key rotation
    async def reencrypt_all(self, new: Cipher) -> int:
        """Re-encrypt every stored token with ``new``'s primary key (``self.cipher`` must
        decrypt them). Returns the number of rows rewritten; afterwards this store uses
        ``new``."""
        old = self.cipher

        def work(conn: Connection) -> int:
            n = 0
            for row in conn.execute(select(installations)).all():
                values: dict[str, Any] = {}
                for name in _TOKEN_FIELDS:
                    ct = getattr(row, name)
                    if ct is not None:
                        aad = _aad(row.enterprise_id, row.team_id, name)
                        values[name] = new.encrypt(old.decrypt_bytes(ct, aad), aad)
                if values:
                    conn.execute(
                        update(installations).where(installations.c.id == row.id).values(**values)
                    )
                    n += 1
            return n

        count = await self.db.run(work)
        self.cipher = new
        return count
