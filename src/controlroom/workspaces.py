"""Which Slack workspace a piece of work belongs to, and the token to act there with.

Two modes, chosen by configuration:

- *single workspace*: ``slack.bot_token`` is configured; every envelope acts with it;
- *installable app*: ``slack.client_id`` and ``slack.client_secret`` are configured;
  workspaces install the app through ``/slack/install`` (OAuth v2); tokens are stored
  encrypted (``InstallationStore``) and rotating tokens are refreshed ahead of expiry by
  one worker at a time (``TokenRotator``).

A job whose workspace needs re-authorisation waits (``RetryLater``) until someone
re-installs; a job whose workspace uninstalled the app or revoked its tokens stops with
that reason (``PermanentError``), and ``tokens_revoked``/``app_uninstalled`` events are
honoured at once.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from controlroom.config import Settings
from controlroom.errors import PermanentError, RetryLater
from controlroom.security.audit import AuditLog
from controlroom.security.crypto import Cipher, generate_key, load_cipher, write_key_file
from controlroom.security.installations import InstallationStore
from controlroom.security.oauth import (
    InstallationUnavailable,
    OAuthSettings,
    OAuthStateStore,
    SlackOAuth,
    TokenRotator,
)
from controlroom.store.db import Database

__all__ = ["REAUTH_WAIT", "Workspaces", "ensure_master_key"]

#: how long a job for a workspace that needs re-authorisation waits before looking again
REAUTH_WAIT = 300.0


def ensure_master_key(data_dir: Path) -> Cipher:
    """The master key for tokens at rest; on first start of an embedded install, one is
    generated under the data directory with 0600 rights."""
    try:
        return load_cipher(data_dir)
    except Exception:
        if os.environ.get("CONTROLROOM_MASTER_KEY") or os.environ.get(
            "CONTROLROOM_MASTER_KEY_FILE"
        ):
            raise
        cipher = Cipher.from_key(generate_key())
        write_key_file(Path(data_dir) / "master.key", cipher)
        return cipher


@dataclass(frozen=True)
class Token:
    value: str | None
    team_id: str
    enterprise_id: str


class Workspaces:
    def __init__(
        self,
        settings: Settings,
        db: Database,
        http: httpx.AsyncClient,
        audit: AuditLog,
        *,
        bot_scopes: Iterable[str],
        owner: str,
        clock: Callable[[], float],
    ) -> None:
        self.settings = settings
        s = settings.slack
        self.installable = bool(s.client_id and s.client_secret)
        self.store: InstallationStore | None = None
        self.oauth: SlackOAuth | None = None
        self.rotator: TokenRotator | None = None
        if self.installable:
            assert s.client_secret is not None
            cipher = ensure_master_key(settings.data_dir)
            self.store = InstallationStore(db, cipher, clock=clock)
            public = settings.server.public_url or (
                f"http://{settings.server.host}:{settings.server.port}"
            )
            api = s.api_url if s.api_url.endswith("/") else s.api_url + "/"
            self.oauth = SlackOAuth(
                OAuthSettings(
                    client_id=s.client_id,
                    client_secret=s.client_secret,
                    redirect_uri=public.rstrip("/") + "/slack/oauth_redirect",
                    bot_scopes=tuple(sorted(set(bot_scopes))),
                    authorize_url=_authorize_url(api),
                    api_url=api,
                ),
                http,
                self.store,
                OAuthStateStore(db, clock),
                audit=audit,
                clock=clock,
            )
            self.rotator = TokenRotator(self.oauth, self.store, owner=owner, clock=clock)

    async def token(self, team_id: str, enterprise_id: str = "") -> Token:
        """The bot token to act in a workspace with, or the reason to wait or stop."""
        if self.rotator is None:
            bot = self.settings.slack.bot_token
            return Token(bot.get() if bot else None, team_id, enterprise_id)
        try:
            inst = await self.rotator.fresh(team_id, enterprise_id)
        except InstallationUnavailable as exc:
            if exc.status in ("revoked", "missing", "uninstalled"):
                raise PermanentError(f"workspace {team_id or enterprise_id}: {exc.reason}") from exc
            raise RetryLater(REAUTH_WAIT, f"workspace {team_id}: {exc.reason}") from exc
        return Token(inst.bot_token.get() if inst.bot_token else None, team_id, enterprise_id)

    async def lifecycle(self, event: dict[str, Any], team_id: str, enterprise_id: str) -> str:
        if self.store is None:
            return "ignored"
        return await self.store.apply_lifecycle_event(event, team_id, enterprise_id)


def _authorize_url(api_url: str) -> str:
    """``https://slack.com/api/`` -> ``https://slack.com/oauth/v2/authorize`` (the sandbox
    serves the same paths)."""
    base = api_url.rstrip("/")
    base = base.removesuffix("/api")
    return base + "/oauth/v2/authorize"
