"""The sandbox's web client over HTTP: pages, fragments, actions, validation, live events."""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest

from controlroom.sandbox import RunningSandbox, Sandbox
from controlroom.sandbox.web import Renderer, Shortcut, web_client
from controlroom.sandbox.web.live import CLOSED, QUEUE_LIMIT, LiveHub, Subscriber

from .conftest import make_sandbox

BLOCKS: list[dict[str, Any]] = [
    {"type": "header", "text": {"type": "plain_text", "text": "Deploy :rocket: finished"}},
    {
        "type": "section",
        "text": {"type": "mrkdwn", "text": "*api* v42 by <@U0RELMGR01>"},
        "fields": [
            {"type": "mrkdwn", "text": "*Env*\nprod"},
            {"type": "plain_text", "text": "<b>not bold</b>"},
        ],
        "accessory": {
            "type": "image",
            "image_url": "https://img.example/api.png",
            "alt_text": "api logo",
        },
    },
    {"type": "divider"},
    {
        "type": "actions",
        "block_id": "acts",
        "elements": [
            {
                "type": "button",
                "action_id": "rollback",
                "style": "danger",
                "value": "v41",
                "text": {"type": "plain_text", "text": "Roll back"},
                "confirm": {
                    "title": {"type": "plain_text", "text": "Sure?"},
                    "text": {"type": "mrkdwn", "text": "Redeploy *v41*"},
                    "confirm": {"type": "plain_text", "text": "Yes"},
                    "deny": {"type": "plain_text", "text": "No"},
                },
            },
            {
                "type": "static_select",
                "action_id": "env",
                "placeholder": {"type": "plain_text", "text": "Env"},
                "options": [
                    {"text": {"type": "plain_text", "text": "prod"}, "value": "prod"},
                    {"text": {"type": "plain_text", "text": "staging"}, "value": "staging"},
                ],
            },
        ],
    },
    {"type": "image", "image_url": "javascript:alert(1)", "alt_text": "chart"},
    {"type": "context", "elements": [{"type": "mrkdwn", "text": "in <#C0DEPLOYS1>"}]},
]


@pytest.fixture
async def sb() -> AsyncIterator[Sandbox]:
    sandbox = make_sandbox(rate_limits=False)
    yield sandbox
    await sandbox.aclose()


@pytest.fixture
async def http(sb: Sandbox) -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=sb.app)
    async with httpx.AsyncClient(transport=transport, base_url="http://sandbox.test") as client:
        client.headers["X-CSRF-Token"] = web_client(sb).csrf_token
        yield client


async def act_as(http: httpx.AsyncClient, user_id: str) -> None:
    response = await http.post("/web/user", json={"user": user_id})
    assert response.status_code == 200
    http.cookies.set("cr_sandbox_user", response.cookies["cr_sandbox_user"])


async def bot_call(http: httpx.AsyncClient, sb: Sandbox, method: str, **params: Any) -> Any:
    response = await http.post(
        f"/api/{method}", json=params, headers={"Authorization": f"Bearer {sb.bot_token}"}
    )
    data = response.json()
    assert data["ok"], data
    return data


def message_html(page: str, ts: str) -> str:
    start = page.index(f'data-ts="{ts}"')
    following = re.compile(r'<div class="msg[ "]').search(page, start)
    return page[start : following.start() if following else len(page)]


# -- rendering -----------------------------------------------------------------------------
async def test_a_channel_renders_block_kit_with_buttons_selects_and_confirm(
    sb: Sandbox, http: httpx.AsyncClient
) -> None:
    posted = await bot_call(
        http, sb, "chat.postMessage", channel="C0DEPLOYS1", text="fallback", blocks=BLOCKS
    )
    await act_as(http, "U0RELMGR01")
    page = (await http.get("/?c=C0DEPLOYS1")).text
    html = message_html(page, posted["ts"])
    assert '<div class="b-header">Deploy <span class="emoji" title=":rocket:">' in html
    assert '<b>api</b> v42 by <span class="mention" data-user="U0RELMGR01">@grace</span>' in html
    assert html.count('class="b-field"') == 2
    assert "&lt;b&gt;not bold&lt;/b&gt;" in html
    assert 'href="https://img.example/api.png"' in html
    assert 'class="btn block-btn danger" data-action-id="rollback"' in html
    assert 'data-value="v41"' in html and "data-confirm" in html
    assert '<template class="confirm-tpl">' in html and "Redeploy <b>v41</b>" in html
    assert '<option value="staging">staging</option>' in html
    assert "javascript:" not in html
    assert '<a class="channel-link" href="/?c=C0DEPLOYS1">#deploys</a>' in html
    assert "fallback" not in html  # blocks replace the notification text
    assert '<span class="badge">APP</span>' in html


async def test_message_text_with_script_renders_as_text(
    sb: Sandbox, http: httpx.AsyncClient
) -> None:
    ts = await sb.act.post_message(
        "priya", "#support", '<script>alert(1)</script> & <https://x.example/?a=1&b=2|a "link">'
    )
    page = (await http.get("/?c=C0SUPPORT1")).text
    html = message_html(page, ts)
    assert "<script>alert" not in page
    assert "&lt;script&gt;alert(1)&lt;/script&gt; &amp;" in html
    assert 'href="https://x.example/?a=1&amp;b=2"' in html
    assert "a &#34;link&#34;</a>" in html


@pytest.mark.parametrize(
    ("text", "html"),
    [
        ("*bold* _it_ ~gone~ `co*de*`", "<b>bold</b> <i>it</i> <s>gone</s> <code>co*de*</code>"),
        ("snake_case_name stays", "snake_case_name stays"),
        ("<@U0SUPPORT1> <!here>", '<span class="mention" data-user="U0SUPPORT1">@priya</span> '
         '<span class="mention broadcast">@here</span>'),
        ("<javascript:alert(1)|click>", "&lt;javascript:alert(1)|click&gt;"),
        ("a &lt;b&gt; &amp; c", "a &lt;b&gt; &amp; c"),
        (":white_check_mark: :not_an_emoji:", '<span class="emoji" title=":white_check_mark:">'
         "\u2705</span> :not_an_emoji:"),
        ("> quoted\nplain", "<blockquote>quoted</blockquote>plain"),
        ("see https://ci.example/run?a=1&amp;b=2.", 'see <a href="https://ci.example/run?a=1&amp;b=2"'
         ' target="_blank" rel="noopener noreferrer">https://ci.example/run?a=1&amp;b=2</a>.'),
        ("```x = *1*```", "<pre>x = *1*</pre>"),
        ("<mailto:a@b.example|mail>", '<a href="mailto:a@b.example" target="_blank" '
         'rel="noopener noreferrer">mail</a>'),
    ],
)  # fmt: skip
def test_mrkdwn_renders_like_slack(text: str, html: str) -> None:
    names = {"U0SUPPORT1": "priya"}
    assert str(Renderer(names.get).mrkdwn(text)) == html


async def test_ephemerals_show_only_to_their_user(sb: Sandbox, http: httpx.AsyncClient) -> None:
    await bot_call(
        http, sb, "chat.postEphemeral", channel="C0SUPPORT1", user="U0T2LEAD01", text="psst"
    )
    await act_as(http, "U0T2LEAD01")
    assert "Only visible to you" in (await http.get("/?c=C0SUPPORT1")).text
    await act_as(http, "U0SUPPORT1")
    assert "psst" not in (await http.get("/web/fragment/messages?c=C0SUPPORT1")).text


async def test_the_sidebar_lists_channels_dms_and_hides_others_private_channels(
    sb: Sandbox, http: httpx.AsyncClient
) -> None:
    await act_as(http, "U0SUPPORT1")
    page = (await http.get("/")).text
    assert 'data-nav="C0SUPPORT1"' in page and 'data-nav="D0PRIYAMAR"' in page
    assert "G0LEADDIGE" not in page
    assert (await http.get("/?c=G0LEADDIGE")).status_code == 404
    await act_as(http, "U0CEO00001")
    assert 'data-nav="G0LEADDIGE"' in (await http.get("/")).text


async def test_the_home_tab_shows_the_published_view(sb: Sandbox, http: httpx.AsyncClient) -> None:
    view = {
        "type": "home",
        "blocks": [{"type": "section", "text": {"type": "mrkdwn", "text": "*Your queue*: 3"}}],
    }
    await bot_call(http, sb, "views.publish", user_id="U0SUPPORT1", view=view)
    await act_as(http, "U0SUPPORT1")
    home = (await http.get("/web/fragment/home")).text
    assert "<b>Your queue</b>: 3" in home
    opened = await http.post("/web/home/open", json={})
    assert opened.json()["ok"] is True


# -- actions -------------------------------------------------------------------------------
async def test_posting_as_a_user_creates_a_message_in_state(
    sb: Sandbox, http: httpx.AsyncClient
) -> None:
    await act_as(http, "U0T2LEAD01")
    response = await http.post(
        "/web/post",
        json={"channel": "C0SUPPORT1", "text": "ping @priya <b> #support https://x.example/#a."},
    )
    assert response.status_code == 200
    message = sb.state.messages("C0SUPPORT1")[-1]
    assert message["ts"] == response.json()["ts"]
    assert message["user"] == "U0T2LEAD01"
    assert message["text"] == (
        "ping <@U0SUPPORT1> &lt;b&gt; <#C0SUPPORT1|support> <https://x.example/#a>."
    )

    reply = await http.post(
        "/web/post",
        json={"channel": "C0SUPPORT1", "text": "in thread", "thread_ts": message["ts"]},
    )
    assert reply.status_code == 200
    thread = (await http.get(f"/web/fragment/thread?c=C0SUPPORT1&ts={message['ts']}")).text
    assert "in thread" in thread and "1 reply" in thread


async def test_reacting_toggles_the_acting_users_reaction(
    sb: Sandbox, http: httpx.AsyncClient
) -> None:
    ts = await sb.act.post_message("priya", "#support", "deploy?")
    await act_as(http, "U0T2LEAD01")
    body = {"channel": "C0SUPPORT1", "ts": ts, "name": ":eyes:"}
    first = await http.post("/web/react", json=body)
    assert first.json()["added"] is True
    assert sb.state.get_message("C0SUPPORT1", ts)["reactions"] == [
        {"name": "eyes", "users": ["U0T2LEAD01"], "count": 1}
    ]
    html = message_html((await http.get("/?c=C0SUPPORT1")).text, ts)
    assert 'class="reaction mine" data-react="eyes"' in html
    second = await http.post("/web/react", json=body)
    assert second.json()["added"] is False
    assert "reactions" not in sb.state.get_message("C0SUPPORT1", ts)


async def test_a_person_edits_and_deletes_only_their_own_messages(
    sb: Sandbox, http: httpx.AsyncClient
) -> None:
    mine = await sb.act.post_message("marcus", "#support", "typo")
    theirs = await sb.act.post_message("priya", "#support", "not yours")
    await act_as(http, "U0T2LEAD01")
    edit = await http.post("/web/edit", json={"channel": "C0SUPPORT1", "ts": mine, "text": "fixed"})
    assert edit.status_code == 200
    assert sb.state.get_message("C0SUPPORT1", mine)["text"] == "fixed"
    assert "(edited)" in message_html((await http.get("/?c=C0SUPPORT1")).text, mine)
    other = await http.post("/web/edit", json={"channel": "C0SUPPORT1", "ts": theirs, "text": "x"})
    assert other.status_code == 403
    gone = await http.post("/web/delete", json={"channel": "C0SUPPORT1", "ts": mine})
    assert gone.status_code == 200
    remaining = [m["ts"] for m in sb.state.messages("C0SUPPORT1")]
    assert theirs in remaining and mine not in remaining


async def test_an_action_without_a_request_url_reports_the_app_did_not_respond(
    sb: Sandbox, http: httpx.AsyncClient
) -> None:
    posted = await bot_call(
        http, sb, "chat.postMessage", channel="C0DEPLOYS1", text="x", blocks=BLOCKS
    )
    await act_as(http, "U0RELMGR01")
    body = {"channel": "C0DEPLOYS1", "ts": posted["ts"], "action_id": "rollback"}
    answer = (await http.post("/web/action", json=body)).json()
    assert answer == {
        "ok": True,
        "delivered": False,
        "status": None,
        "warning": "The app did not respond to the click",
    }
    missing = {**body, "action_id": "nope"}
    assert (await http.post("/web/action", json=missing)).status_code == 400


@pytest.mark.parametrize(
    ("path", "body", "status", "error"),
    [
        ("/web/post", {"channel": "C0SUPPORT1"}, 400, "invalid_arguments"),
        ("/web/post", {"channel": "C0SUPPORT1", "text": "   "}, 400, "no_text"),
        ("/web/post", {"channel": "C0SUPPORT1", "text": "x" * 40_001}, 400, "too_long"),
        ("/web/post", {"channel": "CNOPE", "text": "x"}, 404, "channel_not_found"),
        ("/web/post", {"channel": "G0LEADDIGE", "text": "x"}, 404, "channel_not_found"),
        ("/web/post", {"channel": "C0DEPLOYS1", "text": "x"}, 403, "not_in_channel"),
        ("/web/post", {"channel": 7, "text": "x"}, 400, "invalid_arguments"),
        ("/web/post", {"channel": "C0SUPPORT1", "text": "x", "thread_ts": "1.2"}, 404,
         "message_not_found"),
        ("/web/react", {"channel": "C0SUPPORT1", "ts": "not-a-ts", "name": "eyes"}, 400,
         "invalid_arguments"),
        ("/web/react", {"channel": "C0SUPPORT1", "ts": "1.2", "name": "<b>"}, 400,
         "invalid_name"),
        ("/web/user", {"user": "U0NOBODY99"}, 404, "user_not_found"),
        ("/web/user", {"user": "U0CRBOT001"}, 404, "user_not_found"),
        ("/web/command", {"channel": "C0SUPPORT1", "command": "/nope"}, 400, "invalid_command"),
        ("/web/command", {"channel": "C0SUPPORT1", "command": "deploy"}, 400,
         "invalid_command"),
        ("/web/shortcut", {"callback_id": "nope"}, 404, "unknown_shortcut"),
        ("/web/view/submit", {"view_id": "VNOPE1", "values": []}, 400, "invalid_arguments"),
        ("/web/view/submit", {"view_id": "VNOPE1", "values": {}}, 400, "action_failed"),
        ("/web/view/close", {"view_id": "../x"}, 400, "invalid_arguments"),
    ],
)  # fmt: skip
async def test_bad_input_gets_a_clear_4xx(
    http: httpx.AsyncClient, path: str, body: dict[str, Any], status: int, error: str
) -> None:
    await act_as(http, "U0SUPPORT1")
    response = await http.post(path, json=body)
    assert (response.status_code, response.json()["error"]) == (status, error)
    assert response.json()["detail"]


async def test_posts_need_the_csrf_token_and_a_json_object(http: httpx.AsyncClient) -> None:
    body = {"channel": "C0SUPPORT1", "text": "hi"}
    no_token = await http.post("/web/post", json=body, headers={"X-CSRF-Token": ""})
    assert no_token.status_code == 403
    foreign = await http.post("/web/post", json=body, headers={"Origin": "https://evil.example"})
    assert foreign.status_code == 403
    assert (await http.post("/web/post", content=b"{nope")).status_code == 400
    assert (await http.post("/web/post", content=b"[1]")).status_code == 400
    assert (await http.post("/web/post", content=b"x" * 300_000)).status_code == 413
    assert (await http.get("/web/fragment/nope")).status_code == 404
    assert (await http.get("/web/fragment/thread?c=C0SUPPORT1&ts=x")).status_code == 400
    assert (await http.get("/web/fragment/messages")).status_code == 400


async def test_a_bad_cookie_falls_back_to_the_first_person(http: httpx.AsyncClient) -> None:
    http.cookies.set("cr_sandbox_user", "<script>")
    page = (await http.get("/")).text
    assert re.search(r'data-user="U0SUPPORT1"', page)


# -- live updates --------------------------------------------------------------------------
async def test_the_live_hub_routes_changes_to_the_right_pages(sb: Sandbox) -> None:
    sleeps: list[float] = []

    async def no_sleep(seconds: float) -> None:
        sleeps.append(seconds)
        await asyncio.Event().wait()  # the poll loop parks; poll_once is called directly

    hub = LiveHub(sb, sleep=no_sleep)
    priya = hub.subscribe("U0SUPPORT1", sb.team_id)
    marcus = hub.subscribe("U0T2LEAD01", sb.team_id)
    await sb.act.post_message("priya", "#support", "hello")
    assert priya.queue.get_nowait() == {"kind": "channel", "channel": "C0SUPPORT1"}
    assert marcus.queue.get_nowait() == {"kind": "channel", "channel": "C0SUPPORT1"}
    sb.ops.ephemeral(sb.channel("C0SUPPORT1"), sb.user("marcus"), "psst", None, None)
    assert marcus.queue.get_nowait()["ephemeral"] is True
    assert priya.queue.empty()

    await sb.act.post_message("marcus", "D0PRIYAMAR", "private")
    assert priya.queue.get_nowait() == {"kind": "channel", "channel": "D0PRIYAMAR"}
    assert marcus.queue.get_nowait() == {"kind": "channel", "channel": "D0PRIYAMAR"}
    sofia = hub.subscribe("U0ACCTMGR1", sb.team_id)
    await sb.act.post_message("priya", "D0PRIYAMAR", "still private")
    assert sofia.queue.empty()
    hub.unsubscribe(sofia)
    for sub in (priya, marcus):
        sub.queue.get_nowait()

    sb.channel("C0SUPPORT1").topic = "renamed without a notification"
    assert await hub.poll_once() is True
    assert priya.queue.get_nowait() == {"kind": "sidebar"}
    assert await hub.poll_once() is False
    await asyncio.sleep(0)
    assert sleeps == [0.25]

    hub.unsubscribe(priya)
    hub.unsubscribe(marcus)
    assert hub._poller is None and hub._unlisten is None


async def test_server_sent_events_announce_a_new_message(running: RunningSandbox) -> None:
    sb = running.sandbox
    async with (
        httpx.AsyncClient(base_url=running.url) as client,
        client.stream("GET", "/web/events") as stream,
    ):
        assert stream.headers["content-type"].startswith("text/event-stream")
        lines = stream.aiter_lines()
        assert await anext(lines) == "retry: 1000"
        await sb.act.post_message("priya", "#support", "live!")
        async with asyncio.timeout(5):
            async for line in lines:
                if line.startswith("data: "):
                    assert json.loads(line[6:]) == {"kind": "channel", "channel": "C0SUPPORT1"}
                    break


MODAL: dict[str, Any] = {
    "type": "modal",
    "callback_id": "escalate",
    "title": {"type": "plain_text", "text": "Escalate"},
    "submit": {"type": "plain_text", "text": "Send"},
    "notify_on_close": False,
    "blocks": [
        {
            "type": "input",
            "block_id": "summary",
            "label": {"type": "plain_text", "text": "Summary"},
            "element": {"type": "plain_text_input", "action_id": "text", "multiline": True},
        },
        {
            "type": "input",
            "block_id": "owner",
            "optional": True,
            "label": {"type": "plain_text", "text": "Owner"},
            "element": {"type": "users_select", "action_id": "who"},
        },
        {
            "type": "input",
            "block_id": "sev",
            "label": {"type": "plain_text", "text": "Severity"},
            "element": {
                "type": "static_select",
                "action_id": "pick",
                "options": [{"text": {"type": "plain_text", "text": "SEV1"}, "value": "sev1"}],
            },
        },
    ],
}


async def test_an_open_modal_renders_its_inputs_and_closes(
    sb: Sandbox, http: httpx.AsyncClient
) -> None:
    trigger = sb.interactions.new_trigger("U0SUPPORT1")
    view = sb.interactions.open(sb.team_id, trigger, MODAL)
    await act_as(http, "U0SUPPORT1")
    modal = (await http.get("/web/fragment/modal")).text
    assert f'data-view-id="{view["id"]}"' in modal
    assert '<textarea data-input data-block-id="summary" data-action-id="text"' in modal
    assert '<option value="U0T2LEAD01">Marcus Hale</option>' in modal
    assert '<option value="sev1">SEV1</option>' in modal
    assert "(optional)" in modal
    assert f'data-view-id="{view["id"]}"' in (await http.get("/")).text
    await act_as(http, "U0T2LEAD01")
    assert (await http.get("/web/fragment/modal")).text.strip() == ""
    refused = await http.post("/web/view/close", json={"view_id": view["id"]})
    assert refused.status_code == 400
    await act_as(http, "U0SUPPORT1")
    closed = await http.post("/web/view/close", json={"view_id": view["id"]})
    assert closed.status_code == 200
    assert sb.act.open_views("priya") == []


async def test_selects_and_modal_submissions_reach_the_app(wired: Any) -> None:
    run, receiver = wired
    sb: Sandbox = run.sandbox
    async with httpx.AsyncClient(base_url=run.url) as http:
        http.headers["X-CSRF-Token"] = web_client(sb).csrf_token
        posted = await bot_call(
            http, sb, "chat.postMessage", channel="C0DEPLOYS1", text="x", blocks=BLOCKS
        )
        await act_as(http, "U0RELMGR01")
        body = {"channel": "C0DEPLOYS1", "ts": posted["ts"], "action_id": "env", "value": "staging"}
        answer = await http.post("/web/select", json=body)
        assert answer.json()["delivered"] is True
        payload = (await receiver.wait_for(1))[-1].payload
        assert payload["actions"][0]["selected_option"]["value"] == "staging"

        trigger = sb.interactions.new_trigger("U0RELMGR01")
        view = sb.interactions.open(sb.team_id, trigger, MODAL)
        values = {"summary": {"text": "help"}, "owner": {"who": {"selected_user": None}}}
        values["sev"] = {"pick": "sev1"}
        submitted = await http.post(
            "/web/view/submit", json={"view_id": view["id"], "values": values}
        )
        assert submitted.json() == {
            "ok": True,
            "delivered": True,
            "response_action": None,
            "errors": {},
        }
        state = receiver.received[-1].payload["view"]["state"]["values"]
        assert state["summary"]["text"] == {"type": "plain_text_input", "value": "help"}
        assert state["owner"]["who"] == {"type": "users_select", "selected_user": None}
        assert state["sev"]["pick"]["selected_option"]["value"] == "sev1"
        assert sb.act.open_views("grace") == []


async def test_switching_user_keeps_the_conversation_only_when_visible(
    http: httpx.AsyncClient,
) -> None:
    stay = await http.post("/web/user", json={"user": "U0CEO00001", "channel": "G0LEADDIGE"})
    assert stay.json()["next"] == "/?c=G0LEADDIGE"
    leave = await http.post("/web/user", json={"user": "U0SUPPORT1", "channel": "G0LEADDIGE"})
    assert leave.json()["next"] == "/"
    home = await http.post("/web/user", json={"user": "U0SUPPORT1", "channel": "home"})
    assert home.json()["next"] == "/?c=home"


async def test_shortcuts_declared_for_the_app_appear_in_menus(
    sb: Sandbox, http: httpx.AsyncClient
) -> None:
    manifest_entry = {"name": "New incident", "type": "global", "callback_id": "new_incident"}
    web_client(sb).set_shortcuts([manifest_entry, Shortcut("triage", "Triage"), {"name": "x"}])
    assert [s.callback_id for s in web_client(sb).shortcuts] == ["new_incident", "triage"]
    await sb.act.post_message("priya", "#support", "hello")
    page = (await http.get("/?c=C0SUPPORT1")).text
    assert 'data-global-shortcut="new_incident"' in page
    assert 'data-shortcut="triage"' in page and 'data-shortcut="escalate"' not in page
    answer = await http.post("/web/shortcut", json={"callback_id": "new_incident"})
    assert answer.json()["delivered"] is False


async def test_open_event_streams_end_when_the_sandbox_closes(running: RunningSandbox) -> None:
    sb = running.sandbox
    async with (
        httpx.AsyncClient(base_url=running.url) as client,
        client.stream("GET", "/web/events") as stream,
    ):
        lines = stream.aiter_lines()
        assert await anext(lines) == "retry: 1000"
        await sb.aclose()
        async with asyncio.timeout(5):
            rest = [line async for line in lines]
        assert not any(line.startswith("data:") for line in rest)
    assert web_client(sb).hub.closed and not web_client(sb).hub.subscribers


def test_a_full_queue_keeps_only_a_refresh_or_the_close() -> None:
    sub = Subscriber("U1", "T1")
    for _ in range(QUEUE_LIMIT + 1):
        sub.put({"kind": "channel", "channel": "C1"})
    assert sub.queue.qsize() == 1 and sub.queue.get_nowait() == {"kind": "any"}
    for _ in range(QUEUE_LIMIT):
        sub.put({"kind": "channel", "channel": "C1"})
    sub.put(CLOSED)
    assert sub.queue.get_nowait() is CLOSED


async def test_people_of_a_workspace_without_the_app_see_no_app(http: httpx.AsyncClient) -> None:
    await act_as(http, "U0LABSRES1")
    page = (await http.get("/")).text
    assert 'data-nav="C0LABSGEN1"' in page and 'data-nav="home"' not in page
    assert 'data-nav="C0SUPPORT1"' not in page
    refused = await http.post("/web/home/open", json={})
    assert (refused.status_code, refused.json()["error"]) == (404, "app_not_installed")


async def test_a_thread_reply_can_also_go_to_the_channel(
    sb: Sandbox, http: httpx.AsyncClient
) -> None:
    root = await sb.act.post_message("priya", "#support", "root")
    await act_as(http, "U0T2LEAD01")
    body = {"channel": "C0SUPPORT1", "text": "fixed", "thread_ts": root, "broadcast": True}
    reply = (await http.post("/web/post", json=body)).json()["ts"]
    assert sb.state.get_message("C0SUPPORT1", reply)["subtype"] == "thread_broadcast"
    channel = (await http.get("/web/fragment/messages?c=C0SUPPORT1")).text
    assert "replied to a thread" in message_html(channel, reply)
    via_reply = (await http.get(f"/web/fragment/thread?c=C0SUPPORT1&ts={reply}")).text
    assert f'data-thread-ts="{root}"' in via_reply


async def test_a_person_joins_a_public_channel_before_posting(
    sb: Sandbox, http: httpx.AsyncClient
) -> None:
    await act_as(http, "U0SUPPORT1")
    page = (await http.get("/?c=C0DEPLOYS1")).text
    assert 'data-join="C0DEPLOYS1"' in page and 'id="composer"' not in page
    assert (await http.post("/web/join", json={"channel": "C0DEPLOYS1"})).status_code == 200
    assert "U0SUPPORT1" in sb.channel("C0DEPLOYS1").members
    posted = await http.post("/web/post", json={"channel": "C0DEPLOYS1", "text": "hi"})
    assert posted.status_code == 200
    assert 'id="composer"' in (await http.get("/?c=C0DEPLOYS1")).text


CHOICES_MODAL: dict[str, Any] = {
    "type": "modal",
    "callback_id": "choices",
    "title": {"type": "plain_text", "text": "Choices"},
    "submit": {"type": "plain_text", "text": "Save"},
    "blocks": [
        {
            "type": "input",
            "block_id": "envs",
            "label": {"type": "plain_text", "text": "Environments"},
            "element": {
                "type": "checkboxes",
                "action_id": "pick",
                "options": [
                    {"text": {"type": "plain_text", "text": "prod"}, "value": "prod"},
                    {"text": {"type": "plain_text", "text": "staging"}, "value": "staging"},
                ],
            },
        },
        {
            "type": "input",
            "block_id": "mode",
            "label": {"type": "plain_text", "text": "Mode"},
            "element": {
                "type": "radio_buttons",
                "action_id": "pick",
                "options": [{"text": {"type": "plain_text", "text": "fast"}, "value": "fast"}],
            },
        },
        {
            "type": "input",
            "block_id": "people",
            "label": {"type": "plain_text", "text": "People"},
            "element": {"type": "multi_users_select", "action_id": "who"},
        },
    ],
}


async def test_checkboxes_radios_and_multi_selects_submit_in_slacks_shapes(wired: Any) -> None:
    run, receiver = wired
    sb: Sandbox = run.sandbox
    view = sb.interactions.open(
        sb.team_id, sb.interactions.new_trigger("U0ENG00001"), CHOICES_MODAL
    )
    async with httpx.AsyncClient(base_url=run.url) as http:
        http.headers["X-CSRF-Token"] = web_client(sb).csrf_token
        await act_as(http, "U0ENG00001")
        modal = (await http.get("/web/fragment/modal")).text
        assert 'type="checkbox" name="choice-envs" value="staging"' in modal
        assert 'type="radio" name="choice-mode" value="fast"' in modal
        assert 'data-type="multi_users_select"' in modal and "multiple" in modal
        bad = {"envs": {"pick": ["nope"]}}
        refused = await http.post("/web/view/submit", json={"view_id": view["id"], "values": bad})
        assert refused.status_code == 400
        values = {
            "envs": {"pick": ["prod", "staging"]},
            "mode": {"pick": "fast"},
            "people": {"who": ["U0ENG00002", "U0ENG00003"]},
        }
        answer = await http.post("/web/view/submit", json={"view_id": view["id"], "values": values})
        assert answer.json()["delivered"] is True
    state = (await receiver.wait_for(1))[-1].payload["view"]["state"]["values"]
    assert [o["value"] for o in state["envs"]["pick"]["selected_options"]] == ["prod", "staging"]
    assert state["mode"]["pick"]["selected_option"]["value"] == "fast"
    assert state["people"]["who"] == {
        "type": "multi_users_select",
        "selected_users": ["U0ENG00002", "U0ENG00003"],
    }


async def test_the_apps_messages_tab_opens_the_im_with_the_bot(
    sb: Sandbox, http: httpx.AsyncClient
) -> None:
    await act_as(http, "U0ENG00001")
    page = (await http.get("/?c=app")).text
    dm = sb.state.dm("U0ENG00001", sb.bot_user_id)
    assert f'data-channel="{dm.id}"' in page and 'placeholder="Message Control Room"' in page
    assert (
        await http.post("/web/post", json={"channel": dm.id, "text": "help"})
    ).status_code == 200


async def test_private_channel_links_and_pins_render_for_the_viewer(
    sb: Sandbox, http: httpx.AsyncClient
) -> None:
    ts = await sb.act.post_message("sofia", "#support", "see <#G0LEADDIGE> and <#C0DEPLOYS1>")
    await bot_call(http, sb, "pins.add", channel="C0SUPPORT1", timestamp=ts)
    await act_as(http, "U0SUPPORT1")
    html = message_html((await http.get("/?c=C0SUPPORT1")).text, ts)
    assert "#private-channel" in html and "leadership-digest" not in html
    assert "#deploys" in html and '<div class="pinned-note">Pinned</div>' in html
    await act_as(http, "U0ACCTMGR1")
    assert "#leadership-digest" in (await http.get("/web/fragment/messages?c=C0SUPPORT1")).text


async def test_a_button_in_the_home_tab_is_clicked_as_a_view_action(
    sb: Sandbox, http: httpx.AsyncClient
) -> None:
    button = {
        "type": "button",
        "action_id": "refresh",
        "text": {"type": "plain_text", "text": "Refresh"},
    }
    home = {"type": "home", "blocks": [{"type": "actions", "elements": [button]}]}
    view = (await bot_call(http, sb, "views.publish", user_id="U0SUPPORT1", view=home))["view"]
    await act_as(http, "U0SUPPORT1")
    fragment = (await http.get("/web/fragment/home")).text
    assert f'data-view-id="{view["id"]}"' in fragment and 'data-action-id="refresh"' in fragment
    body = {"view_id": view["id"], "action_id": "refresh"}
    assert (await http.post("/web/action", json=body)).json()["delivered"] is False
    await act_as(http, "U0T2LEAD01")
    assert (await http.post("/web/action", json=body)).status_code == 400
