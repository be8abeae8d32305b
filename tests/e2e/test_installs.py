"""An installable hub against the sandbox: a workspace installs the app through OAuth v2,
its events run handlers with its own (encrypted) token, and uninstalling stops its work
at once. Nothing in the database file is a token."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import httpx

from controlroom import Context, Workflow
from controlroom.testing import running_hub

LABS = "T0NWLABS01"


def greeter() -> Workflow:
    wf = Workflow("greeter", scopes=["chat:write", "channels:history"], events=["message"])

    @wf.event("message", subtype="")
    async def greet(ctx: Context) -> None:
        if ctx.event.get("bot_id") or "hello" not in str(ctx.event.get("text", "")):
            return
        await ctx.slack.chat_postMessage(
            channel=ctx.channel_id, thread_ts=ctx.event["ts"], text="hello from Control Room"
        )

    @wf.task()
    async def later(ctx: Context) -> None:
        await ctx.slack.chat_postMessage(channel="C0LABSEXP1", text="this must never be sent")

    return wf


def file_bytes(path: Path) -> bytes:
    conn = sqlite3.connect(path)
    try:
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    finally:
        conn.close()
    return b"".join(p.read_bytes() for p in sorted(path.parent.glob(path.name + "*")))


async def test_install_act_with_the_installed_token_and_uninstall(tmp_path: Path) -> None:
    async with running_hub(tmp_path, workflows=[greeter()], installable=True) as h:
        async with httpx.AsyncClient(timeout=10) as browser:
            start = await browser.get(f"{h.hub_url}/slack/install")
            assert start.status_code == 302
            consent = httpx.URL(start.headers["location"]).copy_merge_params(
                {"as_user": "ines", "decision": "allow"}
            )
            done = await browser.get(consent, follow_redirects=True)
            assert done.status_code == 200, done.text
        store = h.hub.workspaces.store
        assert store is not None
        inst = await store.find(LABS)
        assert inst is not None and inst.bot_user_id == "U0LABSBOT1"

        ts = await h.act.post_message("ines", "C0LABSEXP1", "hello, is anyone there?")
        await h.settle()
        [reply] = [m for m in h.sandbox.state.replies("C0LABSEXP1", ts) if m.get("bot_id")]
        assert reply["text"] == "hello from Control Room"

        # A job for the workspace waits in the queue; the workspace uninstalls the app.
        job = await h.hub.queue.enqueue(
            "run_task", {"handler": "greeter.later", "args": {}, "team_id": LABS}, delay=3600
        )
        assert job is not None
        h.sandbox.oauth.uninstall(LABS)
        await h.settle()
        assert await store.find(LABS) is None
        stopped = await h.hub.queue.get_job(job)
        assert stopped.status == "cancelled"
        # tokens_revoked and app_uninstalled arrive in either order; the first one stops it
        assert stopped.last_error is not None and "lost access to workspace" in stopped.last_error
        trail = [(e.action, e.outcome) for e in await h.hub.audit.tail(50)]
        assert ("slack.app_uninstalled", "deleted") in trail
        assert (await h.hub.audit.verify()).ok

    db = file_bytes(tmp_path / "controlroom.db")
    assert b"xoxb-" not in db and b"xoxe" not in db and b"xoxp-" not in db
