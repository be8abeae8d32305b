"""End to end against the Slack sandbox: install through the OAuth flow as sandbox users
into two workspaces, use the stored tokens, resolve a user group, rotate a token,
revoke and uninstall; then scan the database file and the logs for any token."""

from __future__ import annotations

import io
import sqlite3
import time
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
import structlog
from slack_sdk.errors import SlackApiError
from slack_sdk.web.async_client import AsyncWebClient
from starlette.applications import Starlette

from controlroom.config import Secret
from controlroom.sandbox import RunningSandbox, Sandbox, SandboxConfig, serve_sandbox
from controlroom.security.audit import AuditLog
from controlroom.security.authz import Authorizer, Policy, SlackUsergroupResolver
from controlroom.security.crypto import Cipher, generate_key
from controlroom.security.installations import InstallationStore
from controlroom.security.oauth import OAuthSettings, OAuthStateStore, SlackOAuth, TokenRotator
from controlroom.security.redaction import Redactor, configure_logging
from controlroom.store.db import Database

APP = "http://127.0.0.1:1"  # Control Room, served in-process (the sandbox allows 127.0.0.1)


@pytest.fixture
async def running() -> AsyncIterator[RunningSandbox]:
    sb = Sandbox(SandboxConfig(rate_limits=False, signing_secret="e2e-signing-secret"))
    sb.oauth.rotation = True
    async with serve_sandbox(sb) as run:
        yield run


def _file_bytes(path: Path) -> bytes:
    conn = sqlite3.connect(path)
    try:
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    finally:
        conn.close()
    return b"".join(p.read_bytes() for p in sorted(path.parent.glob(path.name + "*")))


async def _install_as(browser: httpx.AsyncClient, user: str) -> httpx.Response:
    start = await browser.get(f"{APP}/slack/install")
    assert start.status_code == 302
    # The sandbox's consent page: "Continue as <user>", Allow.
    consent = httpx.URL(start.headers["location"]).copy_merge_params(
        {"as_user": user, "decision": "allow"}
    )
    return await browser.get(consent, follow_redirects=True)


async def test_install_two_workspaces_rotate_revoke_and_leave_no_token_behind(
    running: RunningSandbox, tmp_path: Path
) -> None:
    sb = running.sandbox
    logs = io.StringIO()
    redactor = configure_logging("DEBUG", "json", Redactor(), stream=logs)
    redactor.add(sb.client_secret)
    db_path = tmp_path / "e2e.db"
    db = Database(f"sqlite:///{db_path}")
    db.create_all()
    app = Starlette()
    http = httpx.AsyncClient()
    log = structlog.get_logger("e2e")
    try:
        store = InstallationStore(db, Cipher.from_key(generate_key()))
        audit = AuditLog(db, redactor=redactor)
        settings = OAuthSettings(
            client_id=sb.client_id,
            client_secret=Secret(sb.client_secret),
            redirect_uri=f"{APP}/slack/oauth_redirect",
            bot_scopes=("chat:write", "channels:read", "usergroups:read"),
            authorize_url=f"{running.url}/oauth/v2/authorize",
            api_url=running.api_url,
        )
        oauth = SlackOAuth(settings, http, store, OAuthStateStore(db), audit=audit)
        app.router.routes.extend(oauth.routes())
        async with httpx.AsyncClient(
            timeout=10, mounts={APP: httpx.ASGITransport(app=app)}
        ) as browser:
            labs = await _install_as(browser, "ines")
            assert labs.status_code == 200, labs.text
            north = await _install_as(browser, "marcus")
            assert north.status_code == 200, north.text

        insts = {i.team_id: i for i in await store.list_all()}
        assert set(insts) == {"T0NWLABS01", "T0NORTHWND"}
        assert insts["T0NORTHWND"].enterprise_id == "E0NORTHWND"
        assert insts["T0NWLABS01"].installer_user_id == sb.user("ines").id
        for team_id, inst in insts.items():
            assert inst.bot_token is not None
            client = AsyncWebClient(token=inst.bot_token.get(), base_url=running.api_url)
            assert (await client.auth_test())["team_id"] == team_id
            log.info("workspace ready", team=team_id, token=inst.bot_token.get())

        # User groups resolve through usergroups.users.list with the stored token.
        north_token = insts["T0NORTHWND"].bot_token
        assert north_token is not None
        resolver = SlackUsergroupResolver(
            AsyncWebClient(token=north_token.get(), base_url=running.api_url)
        )
        policy = Policy.from_config(
            {"rules": [{"action": "deploys.rollback", "usergroups": ["S0RELEASE1"]}]}
        )
        authz = Authorizer(policy, resolver, audit)
        grace, priya = sb.user("grace").id, sb.user("priya").id
        assert (await authz.check("deploys.rollback", user=grace)).allowed
        assert not (await authz.check("deploys.rollback", user=priya)).allowed

        # Rotation: refresh ahead of expiry; the new token works.
        old = insts["T0NWLABS01"]
        rotator = TokenRotator(oauth, store, owner="w1", clock=lambda: time.time() + 43000)
        new = await rotator.fresh("T0NWLABS01")
        assert new.bot_token is not None and new.bot_token != old.bot_token
        assert rotator.refreshes == 1
        fresh_client = AsyncWebClient(token=new.bot_token.get(), base_url=running.api_url)
        assert (await fresh_client.auth_test())["team_id"] == "T0NWLABS01"

        # Revoke on Slack and locally: the token stops working, the row is gone.
        assert await oauth.revoke("T0NWLABS01", actor=sb.user("ines").id)
        assert await store.find("T0NWLABS01") is None
        with pytest.raises(SlackApiError):
            await fresh_client.auth_test()

        # The workspace uninstalls the app: the event removes the installation at once.
        sb.oauth.uninstall("T0NORTHWND")
        done = await store.apply_lifecycle_event({"type": "app_uninstalled"}, "T0NORTHWND")
        assert done == "deleted"
        assert await store.list_all() == []
        actions = [(e.action, e.outcome) for e in await audit.tail(20)]
        assert actions.count(("oauth.install", "allowed")) == 2
        assert ("installs.revoke", "allowed") in actions
        assert (await audit.verify()).ok
    finally:
        await http.aclose()
        db.dispose()
        structlog.reset_defaults()
    blob = _file_bytes(db_path)
    assert b"T0NWLABS01" in blob
    assert b"xox" not in blob
    assert sb.client_secret.encode() not in blob
    text = logs.getvalue()
    assert "workspace ready" in text
    assert "xox" not in text
    assert sb.client_secret not in text
