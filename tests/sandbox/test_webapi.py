"""The official slack_sdk clients against the sandbox over real HTTP."""

from __future__ import annotations

import asyncio
import json

import httpx
import pytest
from slack_sdk import WebClient
from slack_sdk.errors import SlackApiError
from slack_sdk.web.async_client import AsyncWebClient

from controlroom.sandbox import RunningSandbox, serve_sandbox

from .conftest import make_sandbox


def bot(run: RunningSandbox) -> AsyncWebClient:
    return AsyncWebClient(token=run.sandbox.bot_token, base_url=run.api_url)


async def error_of(coro: object) -> tuple[str, dict[str, object]]:
    with pytest.raises(SlackApiError) as info:
        await coro  # type: ignore[misc]
    return info.value.response["error"], dict(info.value.response.data)  # type: ignore[arg-type]


async def test_auth_test_identifies_the_bot_and_workspace(running: RunningSandbox) -> None:
    sb = running.sandbox
    resp = await bot(running).auth_test()
    assert resp["team_id"] == sb.team_id
    assert resp["user_id"] == sb.bot_user_id
    assert resp["bot_id"] == sb.bot_id
    assert resp.headers["x-oauth-scopes"].split(",") == list(sb.seed.app.bot_scopes)


async def test_async_client_drives_every_chat_and_conversation_method(
    running: RunningSandbox,
) -> None:
    sb = running.sandbox
    c = bot(running)
    posted = await c.chat_postMessage(
        channel="#support",
        text="Checkout is down",
        blocks=[{"type": "section", "text": {"type": "mrkdwn", "text": "*Checkout* is down"}}],
        metadata={"event_type": "escalation", "event_payload": {"idempotency_key": "k-1"}},
    )
    ts = posted["ts"]
    assert posted["channel"] == sb.channel("support").id
    assert posted["message"]["bot_id"] == sb.bot_id
    reply = await c.chat_postMessage(channel="C0SUPPORT1", text="on it", thread_ts=ts)
    await c.chat_postMessage(channel="C0SUPPORT1", text="fyi", thread_ts=ts, reply_broadcast=True)
    updated = await c.chat_update(channel="C0SUPPORT1", ts=ts, text="Checkout is degraded")
    assert updated["message"]["edited"]["user"] == sb.bot_user_id
    eph = await c.chat_postEphemeral(channel="C0SUPPORT1", user="U0SUPPORT1", text="psst")
    assert sb.state.ephemerals("priya")[0]["ts"] == eph["message_ts"]
    link = await c.chat_getPermalink(channel="C0SUPPORT1", message_ts=reply["ts"])
    assert link["permalink"].endswith(f"?thread_ts={ts}&cid=C0SUPPORT1")
    history = await c.conversations_history(channel="C0SUPPORT1", include_all_metadata=True)
    texts = [m["text"] for m in history["messages"]]
    assert texts == ["fyi", "Checkout is degraded"]  # newest first; plain replies hidden
    assert history["messages"][1]["metadata"]["event_payload"] == {"idempotency_key": "k-1"}
    plain = await c.conversations_history(channel="C0SUPPORT1")
    assert "metadata" not in plain["messages"][1]
    thread = await c.conversations_replies(channel="C0SUPPORT1", ts=ts)
    assert [m["text"] for m in thread["messages"]] == ["Checkout is degraded", "on it", "fyi"]
    assert thread["messages"][0]["reply_count"] == 2
    await c.reactions_add(channel="C0SUPPORT1", timestamp=ts, name="eyes")
    got = await c.reactions_get(channel="C0SUPPORT1", timestamp=ts)
    assert got["message"]["reactions"] == [{"name": "eyes", "users": [sb.bot_user_id], "count": 1}]
    await c.reactions_remove(channel="C0SUPPORT1", timestamp=ts, name="eyes")
    await c.pins_add(channel="C0SUPPORT1", timestamp=ts)
    await c.chat_delete(channel="C0SUPPORT1", ts=reply["ts"])
    assert [m["text"] for m in sb.state.replies("support", ts)] == ["Checkout is degraded", "fyi"]

    created = await c.conversations_create(name="inc-checkout", is_private=False)
    cid = created["channel"]["id"]
    await c.conversations_invite(channel=cid, users="U0SUPPORT1,U0T2LEAD01")
    await c.conversations_setTopic(channel=cid, topic="Checkout outage")
    info = await c.conversations_info(channel=cid, include_num_members=True)
    assert info["channel"]["topic"]["value"] == "Checkout outage"
    assert info["channel"]["num_members"] == 3
    members = await c.conversations_members(channel=cid)
    assert set(members["members"]) == {sb.bot_user_id, "U0SUPPORT1", "U0T2LEAD01"}
    await c.conversations_kick(channel=cid, user="U0SUPPORT1")
    renamed = await c.conversations_rename(channel=cid, name="Inc Checkout 2")
    assert renamed["channel"]["name"] == "inc-checkout-2"
    await c.conversations_archive(channel=cid)
    assert (await error_of(c.chat_postMessage(channel=cid, text="x")))[0] == "is_archived"
    joined = await c.conversations_join(channel="C0GENERAL1")
    assert joined["channel"]["is_member"] is True
    listed = await c.conversations_list(types="public_channel,private_channel")
    names = {ch["name"] for ch in listed["channels"]}
    assert {"support", "releases", "deploys", "proj-aurora", "leadership-digest"} <= names


async def test_users_usergroups_team_and_bots(running: RunningSandbox) -> None:
    sb = running.sandbox
    c = bot(running)
    info = await c.users_info(user="U0T2LEAD01")
    assert info["user"]["profile"]["title"] == "Tier-2 Support Lead"
    found = await c.users_lookupByEmail(email="sofia@northwind.example")
    assert found["user"]["id"] == sb.user("sofia").id
    everyone = await c.users_list()
    assert len(everyone["members"]) == 11  # ten people and the bot
    groups = await c.usergroups_list(include_users=True)
    oncall = next(g for g in groups["usergroups"] if g["handle"] == "tier2-oncall")
    listed = await c.usergroups_users_list(usergroup=oncall["id"])
    assert listed["users"] == oncall["users"]
    team = await c.team_info()
    assert team["team"]["domain"] == "northwind"
    bot_info = await c.bots_info(bot=sb.bot_id)
    assert bot_info["bot"]["user_id"] == sb.bot_user_id


async def test_sync_web_client_works_too(running: RunningSandbox) -> None:
    client = WebClient(token=running.sandbox.bot_token, base_url=running.api_url)

    def work() -> list[str]:
        ts = client.chat_postMessage(channel="C0DEPLOYS1", text="deploy 42 started")["ts"]
        client.reactions_add(channel="C0DEPLOYS1", timestamp=ts, name="rocket")
        history = client.conversations_history(channel="C0DEPLOYS1", limit=1)
        return [m["text"] for m in history["messages"]]

    assert await asyncio.to_thread(work) == ["deploy 42 started"]


@pytest.mark.filterwarnings("ignore:The top-level `text` argument is missing:UserWarning")
@pytest.mark.parametrize(
    ("call", "kwargs", "error"),
    [
        ("chat_postMessage", {"channel": "C0NOPE0000", "text": "x"}, "channel_not_found"),
        ("chat_postMessage", {"channel": "C0GENERAL1"}, "no_text"),
        (
            "chat_update",
            {"channel": "C0SUPPORT1", "ts": "1.000001", "text": "x"},
            "message_not_found",
        ),
        ("chat_delete", {"channel": "C0SUPPORT1", "ts": "1.000001"}, "message_not_found"),
        ("conversations_history", {"channel": "C0GENERAL1"}, "not_in_channel"),
        ("conversations_create", {"name": "support"}, "name_taken"),
        ("conversations_create", {"name": "Bad Name"}, "invalid_name_specials"),
        ("conversations_create", {"name": "---"}, "invalid_name_punctuation"),
        ("conversations_create", {"name": "x" * 81}, "invalid_name_maxlength"),
        (
            "conversations_invite",
            {"channel": "C0SUPPORT1", "users": "U0SUPPORT1"},
            "already_in_channel",
        ),
        ("users_lookupByEmail", {"email": "nobody@northwind.example"}, "users_not_found"),
        ("usergroups_users_list", {"usergroup": "S0NOPE0000"}, "no_such_subteam"),
        ("users_info", {"user": "U0NOPE0000"}, "user_not_found"),
        (
            "views_open",
            {
                "trigger_id": "1.2.3",
                "view": {
                    "type": "modal",
                    "title": {"type": "plain_text", "text": "x"},
                    "blocks": [],
                },
            },
            "invalid_trigger_id",
        ),
        (
            "chat_postMessage",
            {"channel": "C0SUPPORT1", "blocks": [{"type": "nonsense"}]},
            "invalid_blocks",
        ),
    ],
)
async def test_slack_error_codes(
    running: RunningSandbox, call: str, kwargs: dict[str, object], error: str
) -> None:
    code, body = await error_of(getattr(bot(running), call)(**kwargs))
    assert code == error
    assert body["ok"] is False


async def test_already_reacted_and_thread_not_found(running: RunningSandbox) -> None:
    c = bot(running)
    ts = (await c.chat_postMessage(channel="C0SUPPORT1", text="x"))["ts"]
    await c.reactions_add(channel="C0SUPPORT1", timestamp=ts, name="eyes")
    assert (await error_of(c.reactions_add(channel="C0SUPPORT1", timestamp=ts, name="eyes")))[
        0
    ] == "already_reacted"


async def test_token_problems(running: RunningSandbox) -> None:
    sb = running.sandbox
    anonymous = AsyncWebClient(base_url=running.api_url)
    assert (await error_of(anonymous.auth_test()))[0] == "not_authed"
    forged = AsyncWebClient(token="xoxb-1-forged", base_url=running.api_url)
    assert (await error_of(forged.auth_test()))[0] == "invalid_auth"
    sb.state.tokens[sb.bot_token].expires_at = sb.clock() - 1
    assert (await error_of(bot(running).auth_test()))[0] == "token_expired"
    sb.state.tokens[sb.bot_token].revoked = True
    assert (await error_of(bot(running).auth_test()))[0] == "token_revoked"
    app_level = AsyncWebClient(token=sb.app_token, base_url=running.api_url)
    assert (await error_of(app_level.chat_postMessage(channel="C0SUPPORT1", text="x")))[
        0
    ] == "not_allowed_token_type"


async def test_missing_scope_names_needed_and_provided(running: RunningSandbox) -> None:
    sb = running.sandbox
    token = sb.state.issue_token("bot", sb.team_id, sb.bot_user_id, ("channels:read",))
    c = AsyncWebClient(token=token.value, base_url=running.api_url)
    code, body = await error_of(c.chat_postMessage(channel="C0SUPPORT1", text="x"))
    assert (code, body["needed"], body["provided"]) == (
        "missing_scope",
        "chat:write",
        "channels:read",
    )
    code, body = await error_of(c.conversations_list(types="private_channel"))
    assert (code, body["needed"]) == ("missing_scope", "groups:read")


async def test_scope_headers_on_every_response(running: RunningSandbox) -> None:
    async with httpx.AsyncClient(base_url=running.api_url) as http:
        resp = await http.post(
            "users.info",
            data={"user": "U0T2LEAD01"},
            headers={"Authorization": f"Bearer {running.sandbox.bot_token}"},
        )
    assert resp.headers["x-accepted-oauth-scopes"] == "users:read"
    assert "users:read" in resp.headers["x-oauth-scopes"].split(",")


async def test_token_as_form_or_query_param_and_json_requires_header(
    running: RunningSandbox,
) -> None:
    token = running.sandbox.bot_token
    async with httpx.AsyncClient(base_url=running.api_url) as http:
        form = await http.post("auth.test", data={"token": token})
        query = await http.get("auth.test", params={"token": token})
        as_json = await http.post(
            "chat.postMessage", json={"token": token, "channel": "C0SUPPORT1", "text": "x"}
        )
    assert form.json()["ok"] and query.json()["ok"]
    assert as_json.json() == {"ok": False, "error": "not_authed"}


async def test_bad_input_gets_slack_errors_never_500(running: RunningSandbox) -> None:
    headers = {"Authorization": f"Bearer {running.sandbox.bot_token}"}
    async with httpx.AsyncClient(base_url=running.api_url, headers=headers) as http:
        unknown = await http.post("chat.fly", data={})
        broken = await http.post(
            "chat.postMessage", content=b"{nope", headers={"content-type": "application/json"}
        )
        blocks = await http.post("chat.postMessage", data={"channel": "C0SUPPORT1", "blocks": "[{"})
        limit = await http.get(
            "conversations.history", params={"channel": "C0SUPPORT1", "limit": "lots"}
        )
        cursor = await http.get("conversations.list", params={"cursor": "!!"})
        array = await http.post(
            "chat.postMessage", json=[1, 2], headers={"content-type": "application/json"}
        )
    assert unknown.json()["error"] == "unknown_method"
    assert broken.json()["error"] == "invalid_json"
    assert blocks.json()["error"] == "invalid_blocks_format"
    assert limit.json()["error"] == "invalid_arguments"
    assert cursor.json()["error"] == "invalid_cursor"
    assert array.json()["error"] == "invalid_json"
    assert {r.status_code for r in (unknown, broken, blocks, limit, cursor, array)} == {200}


async def test_cursor_pagination_walks_every_page(running: RunningSandbox) -> None:
    c = bot(running)
    for i in range(7):
        await c.chat_postMessage(channel="C0RELEASES", text=f"release note {i}")
    seen: list[str] = []
    cursor = None
    pages = 0
    while True:
        page = await c.conversations_history(channel="C0RELEASES", limit=3, cursor=cursor)
        pages += 1
        seen += [m["text"] for m in page["messages"]]
        cursor = page["response_metadata"]["next_cursor"]
        assert page["has_more"] is bool(cursor)
        if not cursor:
            break
    assert pages == 3
    assert seen == [f"release note {i}" for i in reversed(range(7))]
    users: list[str] = []
    async for page in await c.users_list(limit=4):
        users += [u["id"] for u in page["members"]]
    assert len(users) == len(set(users)) == 11


async def test_calls_are_recorded_without_token_values(running: RunningSandbox) -> None:
    sb = running.sandbox
    await bot(running).chat_postMessage(channel="C0SUPPORT1", text="x", token=sb.bot_token)
    call = sb.state.calls[-1]
    assert (call.method, call.token_kind, call.http_status, call.error) == (
        "chat.postMessage",
        "bot",
        200,
        None,
    )
    assert sb.bot_token not in json.dumps(call.params)


async def test_non_marketplace_cohort_caps_history_at_15() -> None:
    sb = make_sandbox(rate_limits=False, non_marketplace_app=True)
    async with serve_sandbox(sb) as run:
        c = bot(run)
        for i in range(20):
            await c.chat_postMessage(channel="C0DEPLOYS1", text=str(i))
        page = await c.conversations_history(channel="C0DEPLOYS1", limit=500)
    assert len(page["messages"]) == 15


async def test_in_process_with_asgi_transport() -> None:
    sb = make_sandbox(rate_limits=False)
    transport = httpx.ASGITransport(app=sb.app)
    async with httpx.AsyncClient(transport=transport, base_url="http://sandbox") as http:
        resp = await http.post(
            "/api/conversations.history",
            data={"channel": "C0SUPPORT1", "oldest": "yesterday"},
            headers={"Authorization": f"Bearer {sb.bot_token}"},
        )
        huge = await http.post(
            "/api/chat.postMessage",
            content=b"x" * (6 * 1024 * 1024),
            headers={"Authorization": f"Bearer {sb.bot_token}", "content-type": "text/plain"},
        )
    await sb.aclose()
    assert resp.json() == {"ok": False, "error": "invalid_ts_oldest"}
    assert huge.json() == {"ok": False, "error": "request_too_large"}


def test_conversations_for_lists_a_users_channels() -> None:
    sb = make_sandbox()
    names = [c.name for c in sb.state.conversations_for("priya")]
    assert names[:3] == ["general", "random", "support"]
    assert sb.channel("D0PRIYABOT") in sb.state.conversations_for("priya")
    assert all(sb.user("priya").id in c.members for c in sb.state.conversations_for("priya"))


@pytest.mark.parametrize("raw", ["next_ts:abc", "offset:-3", "offset:x", "other:1", "\udcff"])
async def test_forged_cursors_are_invalid_cursor(running: RunningSandbox, raw: str) -> None:
    import base64

    cursor = base64.b64encode(raw.encode("utf-8", "surrogateescape")).decode()
    c = bot(running)
    for call in (
        c.conversations_history(channel="C0SUPPORT1", cursor=cursor),
        c.conversations_list(cursor=cursor),
        c.users_list(cursor=cursor),
    ):
        assert (await error_of(call))[0] == "invalid_cursor"


async def test_refused_calls_still_report_the_tokens_scopes(running: RunningSandbox) -> None:
    sb = running.sandbox
    token = sb.state.issue_token("bot", sb.team_id, sb.bot_user_id, ("channels:read",))
    async with httpx.AsyncClient(base_url=running.api_url) as http:
        resp = await http.post(
            "chat.postMessage",
            data={"channel": "C0SUPPORT1", "text": "x"},
            headers={"Authorization": f"Bearer {token.value}"},
        )
    assert resp.json()["error"] == "missing_scope"
    assert resp.headers["x-oauth-scopes"] == "channels:read"
    assert resp.headers["x-accepted-oauth-scopes"] == "chat:write,chat:write:bot,chat:write:user"
