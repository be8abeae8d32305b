from __future__ import annotations

import asyncio
import io
import sqlite3
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
import structlog
from starlette.applications import Starlette

from controlroom.config import Secret
from controlroom.errors import SlackApiError, SlackTransientError
from controlroom.security.audit import AuditLog
from controlroom.security.crypto import Cipher, generate_key
from controlroom.security.installations import Installation, InstallationStore
from controlroom.security.oauth import (
    ClientLimiter,
    InstallationUnavailable,
    OAuthSettings,
    OAuthStateStore,
    SlackOAuth,
    TokenRotator,
    installation_from_oauth,
)
from controlroom.security.redaction import Redactor, configure_logging
from controlroom.store.db import Database

from .conftest import serve_asgi
from .fake_slack_oauth import FakeSlackOAuth, Workspace


class Clock:
    def __init__(self) -> None:
        self.now = 1_700_000_000.0

    def __call__(self) -> float:
        return self.now


@dataclass
class Env:
    app_url: str
    fake: FakeSlackOAuth
    oauth: SlackOAuth
    store: InstallationStore
    audit: AuditLog
    clock: Clock
    db_path: Path
    app: Starlette


@pytest.fixture
def fake() -> Iterator[tuple[FakeSlackOAuth, str]]:
    f = FakeSlackOAuth()
    with serve_asgi(f.app()) as url:
        yield f, url


@pytest.fixture
async def env(tmp_path: Path, fake: tuple[FakeSlackOAuth, str]) -> AsyncIterator[Env]:
    fake_slack, fake_url = fake
    clock = Clock()
    db_path = tmp_path / "oauth.db"
    db = Database(f"sqlite:///{db_path}")
    db.create_all()
    app = Starlette()
    app_url = "http://controlroom.test"
    http = httpx.AsyncClient()
    try:
        settings = OAuthSettings(
            client_id=fake_slack.client_id,
            client_secret=Secret(fake_slack.client_secret),
            redirect_uri=f"{app_url}/slack/oauth_redirect",
            bot_scopes=("chat:write", "commands"),
            user_scopes=("search:read",),
            authorize_url=f"{fake_url}/oauth/v2/authorize",
            api_url=f"{fake_url}/api/",
        )
        fake_slack.redirect_uri = settings.redirect_uri
        store = InstallationStore(db, Cipher.from_key(generate_key()), clock=clock)
        audit = AuditLog(db, clock=clock)
        oauth = SlackOAuth(
            settings, http, store, OAuthStateStore(db, clock=clock), audit=audit, clock=clock
        )
        app.router.routes.extend(oauth.routes())
        yield Env(app_url, fake_slack, oauth, store, audit, clock, db_path, app)
    finally:
        await http.aclose()
        db.dispose()


def browser(env: Env, *, follow: bool = True) -> httpx.AsyncClient:
    """A browser: the Control Room host is served in-process (ASGI, same event loop);
    Slack's pages are the fake on a loopback port."""
    return httpx.AsyncClient(
        follow_redirects=follow,
        timeout=10,
        mounts={"http://controlroom.test": httpx.ASGITransport(app=env.app)},
    )


async def test_install_flow_stores_an_encrypted_installation(env: Env) -> None:
    async with browser(env) as b:
        resp = await b.get(f"{env.app_url}/slack/install")
    assert resp.status_code == 200
    assert "installed in T0AAA" in resp.text
    inst = await env.store.find("T0AAA")
    assert inst is not None and inst.active
    assert inst.bot_token is not None and inst.bot_token.get().startswith("xoxe.xoxb-1-T0AAA")
    assert inst.user_token is not None and inst.installer_user_id == "U0INSTALLER"
    assert inst.bot_scopes == ("chat:write", "commands")
    assert inst.bot_token_expires_at == env.clock.now + 43200
    [entry] = await env.audit.tail(5, action="oauth.install")
    assert (entry.actor, entry.outcome, entry.target) == ("U0INSTALLER", "allowed", "T0AAA")
    assert entry.details["missing_scopes"] == []


async def test_install_redirect_sets_a_browser_bound_state(env: Env) -> None:
    async with browser(env, follow=False) as b:
        resp = await b.get(f"{env.app_url}/slack/install", params={"team": "T0AAA"})
    assert resp.status_code == 302
    location = httpx.URL(resp.headers["location"])
    assert location.params["client_id"] == env.fake.client_id
    assert location.params["scope"] == "chat:write,commands"
    assert location.params["redirect_uri"] == env.oauth.settings.redirect_uri
    assert location.params["team"] == "T0AAA"
    assert len(location.params["state"]) >= 40
    cookie = resp.headers["set-cookie"]
    assert "cr_oauth_browser=" in cookie and "HttpOnly" in cookie and "SameSite=lax" in cookie


async def _authorize(b: httpx.AsyncClient, env: Env) -> str:
    """Start an install in browser ``b``; return the redirect URL Slack sends back."""
    start = await b.get(f"{env.app_url}/slack/install")
    slack = await b.get(start.headers["location"])
    return str(slack.headers["location"])


async def test_reusing_a_state_is_refused(env: Env) -> None:
    async with browser(env, follow=False) as b:
        back = await _authorize(b, env)
        cookie = b.cookies.get("cr_oauth_browser")
        assert (await b.get(back)).status_code == 200
        b.cookies.set("cr_oauth_browser", cookie or "")
        again = await b.get(back)
    assert again.status_code == 400
    assert "state already used" in again.text


async def test_state_from_another_browser_is_refused(env: Env) -> None:
    async with browser(env, follow=False) as attacker, browser(env, follow=False) as victim:
        back = await _authorize(attacker, env)
        await victim.get(f"{env.app_url}/slack/install")  # the victim has its own cookie
        resp = await victim.get(back)
    assert resp.status_code == 400
    assert "issued to another browser" in resp.text
    assert await env.store.find("T0AAA") is None
    [entry] = await env.audit.tail(5, action="oauth.install")
    assert entry.outcome == "denied"


async def test_missing_cookie_unknown_and_expired_states_are_refused(env: Env) -> None:
    async with browser(env, follow=False) as b:
        back = await _authorize(b, env)
        b.cookies.clear()
        no_cookie = await b.get(back)
    assert (no_cookie.status_code, "not started from this browser" in no_cookie.text) == (400, True)
    async with browser(env, follow=False) as b:
        back = await _authorize(b, env)
        cookie = b.cookies.get("cr_oauth_browser") or ""
        forged = await b.get(back.split("state=")[0] + "state=forged")
        assert "unknown state" in forged.text
        assert b.cookies.get("cr_oauth_browser") is None  # a refusal ends the attempt
        b.cookies.set("cr_oauth_browser", cookie, domain="controlroom.test", path="/slack")
        env.clock.now += 601
        expired = await b.get(back)
    assert (expired.status_code, "state expired" in expired.text) == (400, True)


async def test_cancelled_install_and_bad_code_are_clear_errors(env: Env) -> None:
    async with browser(env, follow=False) as b:
        cancelled = await b.get(
            f"{env.app_url}/slack/oauth_redirect", params={"error": "access_denied", "state": "x"}
        )
        assert (cancelled.status_code, "access_denied" in cancelled.text) == (400, True)
        back = await _authorize(b, env)
        bad = await b.get(back.replace("code=code-", "code=nope-"))
    assert (bad.status_code, "invalid_code" in bad.text) == (400, True)


async def test_redirect_uri_mismatch_is_refused_by_slack(env: Env) -> None:
    env.fake.redirect_uri = "https://elsewhere.example/slack/oauth_redirect"
    async with browser(env) as b:
        resp = await b.get(f"{env.app_url}/slack/install")
    assert (resp.status_code, "bad_redirect_uri" in resp.text) == (400, True)


async def test_enterprise_org_install_is_stored_under_the_enterprise(env: Env) -> None:
    env.fake.workspace = Workspace("", "", enterprise_id="E0GRID", org_install=True)
    async with browser(env) as b:
        resp = await b.get(f"{env.app_url}/slack/install")
    assert resp.status_code == 200
    inst = await env.store.find("T0ANY", "E0GRID")
    assert inst is not None and inst.is_enterprise_install
    assert inst.bot_token is not None and "E0GRID" in inst.bot_token.get()


async def test_two_workspaces_and_no_token_in_the_database_or_logs(env: Env) -> None:
    stream = io.StringIO()
    redactor = configure_logging("DEBUG", "json", Redactor(), stream=stream)
    try:
        async with browser(env) as b:
            await b.get(f"{env.app_url}/slack/install")
        env.fake.workspace = Workspace("T0BBB", "Beta")
        async with browser(env) as b:
            await b.get(f"{env.app_url}/slack/install")
        insts = await env.store.list_all()
        log = structlog.get_logger("t")
        for inst in insts:
            assert inst.bot_token is not None
            log.info(
                "installed",
                team=inst.team_id,
                token=inst.bot_token.get(),
                text=f"using {inst.bot_token.get()}",
            )
    finally:
        structlog.reset_defaults()
    assert [i.team_id for i in insts] == ["T0AAA", "T0BBB"]
    assert "xox" not in stream.getvalue()
    assert "T0BBB" in stream.getvalue()
    assert len(redactor) == 0
    conn = sqlite3.connect(env.db_path)
    try:
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    finally:
        conn.close()
    blob = b"".join(p.read_bytes() for p in sorted(env.db_path.parent.glob("oauth.db*")))
    assert b"T0BBB" in blob
    assert b"xox" not in blob
    assert env.fake.client_secret.encode() not in blob


def test_installation_from_oauth_rejects_answers_without_token_or_team() -> None:
    with pytest.raises(ValueError, match="access_token"):
        installation_from_oauth({"ok": True, "team": {"id": "T1"}}, 0.0)
    with pytest.raises(ValueError, match="team id"):
        installation_from_oauth({"ok": True, "access_token": "xoxb-1"}, 0.0)


# ------------------------------------------------------------------------ rotation
async def _install(env: Env) -> Installation:
    async with browser(env) as b:
        await b.get(f"{env.app_url}/slack/install")
    inst = await env.store.find("T0AAA")
    assert inst is not None
    return inst


async def test_token_is_not_refreshed_long_before_expiry(env: Env) -> None:
    before = await _install(env)
    rot = TokenRotator(env.oauth, env.store, owner="w1", clock=env.clock)
    after = await rot.fresh("T0AAA")
    assert after.bot_token == before.bot_token
    assert env.fake.refresh_calls == 0


async def test_token_is_refreshed_ahead_of_expiry(env: Env) -> None:
    before = await _install(env)
    env.clock.now += 43200 - 7200
    rot = TokenRotator(env.oauth, env.store, owner="w1", clock=env.clock)
    after = await rot.fresh("T0AAA")
    assert after.bot_token != before.bot_token
    assert after.bot_token_expires_at == env.clock.now + 43200
    assert env.fake.refresh_calls == 1


async def test_exactly_one_worker_refreshes_when_many_race(env: Env) -> None:
    await _install(env)
    env.clock.now += 43200 - 60
    rotators = [
        TokenRotator(env.oauth, env.store, owner=f"w{i}", clock=env.clock) for i in range(6)
    ]
    results = await asyncio.gather(*[r.fresh("T0AAA") for r in rotators])
    assert env.fake.refresh_calls == 1
    assert sum(r.refreshes for r in rotators) == 1
    # Losers either got the still-valid current token or the new one: never an error.
    assert all(r.bot_token is not None for r in results)


async def test_expired_token_losers_wait_for_the_winner(env: Env) -> None:
    await _install(env)
    env.clock.now += 43200 + 1  # already expired
    rotators = [
        TokenRotator(env.oauth, env.store, owner=f"w{i}", clock=env.clock, poll=0.01)
        for i in range(4)
    ]
    results = await asyncio.gather(*[r.fresh("T0AAA") for r in rotators])
    assert env.fake.refresh_calls == 1
    assert {r.bot_token_expires_at for r in results} == {env.clock.now + 43200}


async def test_refused_refresh_token_marks_needs_reauth_and_reinstall_resumes(env: Env) -> None:
    await _install(env)
    env.fake.refresh_tokens = {k: True for k in env.fake.refresh_tokens}  # all used up
    env.clock.now += 43200 - 60
    rot = TokenRotator(env.oauth, env.store, owner="w1", clock=env.clock)
    with pytest.raises(InstallationUnavailable, match="needs_reauth: invalid_refresh_token"):
        await rot.fresh("T0AAA")
    inst = await env.store.find("T0AAA")
    assert inst is not None and inst.status == "needs_reauth"
    with pytest.raises(InstallationUnavailable, match="needs_reauth"):
        await rot.fresh("T0AAA")
    [entry] = await env.audit.tail(1, action="oauth.refresh")
    assert entry.outcome == "needs_reauth"
    await _install(env)
    assert (await rot.fresh("T0AAA")).active


async def test_missing_installation_is_unavailable(env: Env) -> None:
    rot = TokenRotator(env.oauth, env.store, owner="w1", clock=env.clock)
    with pytest.raises(InstallationUnavailable, match="missing"):
        await rot.fresh("T0NONE")


async def test_long_lived_token_is_exchanged_once(env: Env) -> None:
    env.fake.rotation = False
    inst = await _install(env)
    assert inst.bot_token is not None and inst.bot_token_expires_at is None
    env.fake.rotation = True
    migrated = await env.oauth.exchange_long_lived(inst)
    assert migrated.bot_token is not None
    assert migrated.bot_token.get().startswith("xoxe.xoxb-1-")
    assert migrated.bot_refresh_token is not None
    with pytest.raises(SlackApiError, match="token_already_exchanged"):
        await env.oauth.exchange_long_lived(inst)


async def test_racing_uses_of_one_state_let_exactly_one_through(db: Database) -> None:
    states = OAuthStateStore(db)
    state = await states.issue("browser-1")
    results = await asyncio.gather(*[states.consume(state, "browser-1") for _ in range(6)])
    assert results.count(None) == 1
    assert set(results) - {None} == {"state already used"}


async def test_state_store_keeps_only_hashes(db: Database) -> None:
    states = OAuthStateStore(db)
    state = await states.issue("browser-secret-id")
    rows = await db.run(lambda c: c.exec_driver_sql("SELECT * FROM oauth_states").all())
    assert state not in repr(rows)
    assert "browser-secret-id" not in repr(rows)


async def test_a_dead_lease_holder_is_taken_over_after_its_lease_expires(env: Env) -> None:
    await _install(env)
    env.clock.now += 43200 + 1  # expired
    assert await env.store.acquire_rotation_lease("T0AAA", owner="dead", seconds=30)
    slept: list[float] = []

    async def sleep(seconds: float) -> None:
        slept.append(seconds)
        env.clock.now += 10  # time passes while waiting

    rot = TokenRotator(
        env.oauth, env.store, owner="w1", clock=env.clock, sleep=sleep, poll=1.0, wait_timeout=60
    )
    inst = await rot.fresh("T0AAA")
    assert inst.bot_token_expires_at == env.clock.now + 43200
    assert (len(slept), env.fake.refresh_calls) == (3, 1)


async def test_waiting_forever_on_a_live_holder_is_a_transient_error(env: Env) -> None:
    await _install(env)
    env.clock.now += 43200 + 1
    assert await env.store.acquire_rotation_lease("T0AAA", owner="slow", seconds=3600)

    async def sleep(seconds: float) -> None:
        env.clock.now += seconds

    rot = TokenRotator(
        env.oauth, env.store, owner="w1", clock=env.clock, sleep=sleep, poll=1.0, wait_timeout=5
    )
    with pytest.raises(SlackTransientError, match="did not finish"):
        await rot.fresh("T0AAA")


async def test_an_address_over_the_install_limit_is_told_when_to_come_back(env: Env) -> None:
    now = [1000.0]
    env.oauth.limiter = ClientLimiter(limit=3, window=60.0, clock=lambda: now[0])
    other = httpx.AsyncClient(
        transport=httpx.ASGITransport(app=env.app, client=("198.51.100.7", 4000)),
        base_url=env.app_url,
    )
    async with browser(env, follow=False) as b, other:
        codes = [(await b.get(f"{env.app_url}/slack/install")).status_code for _ in range(3)]
        refused = await b.get(f"{env.app_url}/slack/oauth_redirect", params={"code": "c"})
        assert codes == [302, 302, 302]
        assert refused.status_code == 429
        assert refused.headers["retry-after"] == "60"
        assert "Too many installation requests from this address" in refused.text
        assert (await other.get("/slack/install")).status_code == 302
        now[0] += 61
        assert (await b.get(f"{env.app_url}/slack/install")).status_code == 302


def test_the_limiter_forgets_the_oldest_addresses_past_its_bound() -> None:
    limiter = ClientLimiter(limit=1, window=60.0, max_clients=2, clock=lambda: 5.0)
    assert [limiter.retry_after(a) for a in ("a", "b", "c")] == [0.0, 0.0, 0.0]
    assert limiter.retry_after("c") == 60.0
    assert limiter.retry_after("a") == 0.0  # forgotten, so counted afresh
