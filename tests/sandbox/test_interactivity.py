"""Buttons, selects, shortcuts, slash commands, modals and response_url."""

from __future__ import annotations

import json
from typing import Any
from urllib.parse import parse_qs

import httpx
import pytest
from slack_sdk.errors import SlackApiError
from slack_sdk.web.async_client import AsyncWebClient
from starlette.responses import JSONResponse, PlainTextResponse, Response

from controlroom.sandbox import ActionError, RunningSandbox

from .conftest import FIXTURES, Received, Receiver, fixture_json
from .test_delivery import assert_same_shape

BUTTONS = [
    {"type": "section", "text": {"type": "mrkdwn", "text": "Deploy *api* v42 finished"}},
    {
        "type": "actions",
        "block_id": "deploy-actions",
        "elements": [
            {
                "type": "button",
                "action_id": "rollback",
                "value": "api:v41",
                "style": "danger",
                "text": {"type": "plain_text", "text": "Roll back", "emoji": True},
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
]
MODAL = {
    "type": "modal",
    "callback_id": "escalate",
    "title": {"type": "plain_text", "text": "Escalate"},
    "submit": {"type": "plain_text", "text": "Submit"},
    "close": {"type": "plain_text", "text": "Cancel"},
    "notify_on_close": True,
    "private_metadata": "case-17",
    "blocks": [
        {
            "type": "input",
            "block_id": "summary",
            "label": {"type": "plain_text", "text": "Summary"},
            "element": {"type": "plain_text_input", "action_id": "text"},
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


async def post_buttons(run: RunningSandbox) -> str:
    client = AsyncWebClient(token=run.sandbox.bot_token, base_url=run.api_url)
    resp = await client.chat_postMessage(channel="C0DEPLOYS1", text="deploy done", blocks=BUTTONS)
    await run.sandbox.settle()
    return str(resp["ts"])


def interactive(rec: Receiver) -> list[Received]:
    return [r for r in rec.received if r.body.startswith(b"payload=")]


async def test_block_actions_payload_matches_slack(wired: tuple[RunningSandbox, Receiver]) -> None:
    run, rec = wired
    ts = await post_buttons(run)
    result = await run.sandbox.act.click_button("grace", "#deploys", ts, "rollback")
    assert result.ok and result.status == 200
    (got,) = interactive(rec)
    assert got.verified
    assert got.headers["content-type"] == "application/x-www-form-urlencoded"
    payload = got.payload
    assert_same_shape(fixture_json("events/test_block_actions.body.json"), payload)
    action = payload["actions"][0]
    assert (action["action_id"], action["block_id"], action["value"]) == (
        "rollback",
        "deploy-actions",
        "api:v41",
    )
    assert payload["container"] == {
        "type": "message",
        "message_ts": ts,
        "channel_id": "C0DEPLOYS1",
        "is_ephemeral": False,
    }
    assert payload["user"]["id"] == run.sandbox.user("grace").id


async def test_select_option_sends_selected_option(wired: tuple[RunningSandbox, Receiver]) -> None:
    run, rec = wired
    ts = await post_buttons(run)
    await run.sandbox.act.select_option("grace", "#deploys", ts, "env", "staging")
    action = interactive(rec)[0].payload["actions"][0]
    assert action["type"] == "static_select"
    assert action["selected_option"]["value"] == "staging"
    with pytest.raises(ActionError):
        await run.sandbox.act.select_option("grace", "#deploys", ts, "env", "moon")
    with pytest.raises(ActionError):
        await run.sandbox.act.click_button("grace", "#deploys", ts, "no-such-button")


async def test_response_url_replace_delete_in_channel_and_ephemeral(
    wired: tuple[RunningSandbox, Receiver],
) -> None:
    run, rec = wired
    sb = run.sandbox
    ts = await post_buttons(run)
    await sb.act.click_button("grace", "#deploys", ts, "rollback")
    url = interactive(rec)[0].payload["response_url"]
    assert url.startswith(run.url + "/hooks/actions/")
    async with httpx.AsyncClient() as http:
        replaced = await http.post(url, json={"replace_original": True, "text": "Rolling back…"})
        ephemeral = await http.post(url, json={"text": "only you see this"})
        in_channel = await http.post(
            url, json={"response_type": "in_channel", "text": "Rollback started"}
        )
        deleted = await http.post(url, json={"delete_original": True})
        bogus = await http.post(run.url + "/hooks/actions/T0NORTHWND/1/2", json={"text": "x"})
        garbage = [
            await http.post(url, json=body)
            for body in ({"text": 5}, {"text": "x", "thread_ts": [1]}, {"blocks": "no"}, [1], {})
        ]
        not_json = await http.post(url, content=b"{oops")
    assert [r.json()["ok"] for r in (replaced, ephemeral, in_channel, deleted)] == [True] * 4
    assert bogus.status_code == 404
    assert [g.json()["ok"] for g in garbage] == [False] * 5
    assert not_json.status_code == 400
    texts = [m["text"] for m in sb.state.messages("deploys")]
    assert texts == ["Rollback started"]
    assert sb.state.ephemerals("grace")[-1]["text"] == "only you see this"


async def test_slash_command_is_form_encoded_signed_and_answered(
    wired: tuple[RunningSandbox, Receiver],
) -> None:
    run, rec = wired
    rec.respond = lambda r: JSONResponse({"text": "api is healthy"})
    result = await run.sandbox.act.run_command("grace", "#deploys", "/deploy", "status api")
    (got,) = rec.received
    assert got.verified
    form = got.form
    fixture = (FIXTURES / "events" / "test_slash_command.slash_command_body.txt").read_text()
    assert set(parse_qs(fixture, keep_blank_values=True)) <= set(form)
    assert (form["command"], form["text"]) == ("/deploy", "status api")
    assert result.applied == {"ephemeral": run.sandbox.state.ephemerals("grace")[-1]["ts"]}
    with pytest.raises(ActionError):
        await run.sandbox.act.run_command("grace", "#deploys", "/unknown")


async def test_plain_text_command_reply_becomes_ephemeral(
    wired: tuple[RunningSandbox, Receiver],
) -> None:
    run, rec = wired
    rec.respond = lambda r: PlainTextResponse("working on it")
    await run.sandbox.act.run_command("priya", "#support", "/escalate", "ACME")
    assert run.sandbox.state.ephemerals("priya")[-1]["text"] == "working on it"


async def test_shortcuts_match_real_payloads(wired: tuple[RunningSandbox, Receiver]) -> None:
    run, rec = wired
    ts = await run.sandbox.act.post_message("priya", "#support", "<@U0T2LEAD01> ACME cannot log in")
    await run.sandbox.act.message_shortcut("priya", "#support", ts, "escalate_message")
    await run.sandbox.act.global_shortcut("marcus", "new_incident")
    message_sc, global_sc = (r.payload for r in interactive(rec))
    assert_same_shape(fixture_json("events/test_shortcut.message_shortcut_body.json"), message_sc)
    assert_same_shape(fixture_json("events/test_shortcut.global_shortcut_body.json"), global_sc)
    assert message_sc["message"]["text"] == "<@U0T2LEAD01> ACME cannot log in"


async def open_modal(run: RunningSandbox, rec: Receiver) -> str:
    """Click a button and open MODAL with the trigger_id, as an app would."""
    ts = await post_buttons(run)
    await run.sandbox.act.click_button("grace", "#deploys", ts, "rollback")
    trigger = interactive(rec)[-1].payload["trigger_id"]
    client = AsyncWebClient(token=run.sandbox.bot_token, base_url=run.api_url)
    opened = await client.views_open(trigger_id=trigger, view=MODAL)
    with pytest.raises(SlackApiError) as info:
        await client.views_open(trigger_id=trigger, view=MODAL)
    assert info.value.response["error"] == "exchanged_trigger_id"
    return str(opened["view"]["id"])


async def test_view_submission_payload_and_close(wired: tuple[RunningSandbox, Receiver]) -> None:
    run, rec = wired
    sb = run.sandbox
    view_id = await open_modal(run, rec)
    assert [v["id"] for v in sb.act.open_views("grace")] == [view_id]
    result = await sb.act.submit_view(
        "grace", view_id, {"summary": {"text": "DB down"}, "sev": {"pick": "sev1"}}
    )
    payload = interactive(rec)[-1].payload
    assert_same_shape(fixture_json("events/test_view_submission.body.json"), payload)
    values = payload["view"]["state"]["values"]
    assert values["summary"]["text"] == {"type": "plain_text_input", "value": "DB down"}
    assert values["sev"]["pick"]["selected_option"]["value"] == "sev1"
    assert result.applied == {"response_action": None}
    assert sb.act.open_views("grace") == []


@pytest.mark.parametrize("action", ["errors", "update", "push", "clear"])
async def test_view_submission_honours_response_action(
    wired: tuple[RunningSandbox, Receiver], action: str
) -> None:
    run, rec = wired
    sb = run.sandbox
    view_id = await open_modal(run, rec)
    answers: dict[str, Any] = {
        "errors": {"response_action": "errors", "errors": {"summary": "Too short"}},
        "update": {
            "response_action": "update",
            "view": {**MODAL, "title": {"type": "plain_text", "text": "Updated"}},
        },
        "push": {
            "response_action": "push",
            "view": {**MODAL, "title": {"type": "plain_text", "text": "Step 2"}},
        },
        "clear": {"response_action": "clear"},
    }

    def respond(r: Received) -> Response:
        return JSONResponse(answers[action])

    rec.respond = respond
    result = await sb.act.submit_view("grace", view_id, {"summary": {"text": "x"}})
    stack = sb.act.open_views("grace")
    if action == "errors":
        assert result.applied["errors"] == {"summary": "Too short"}
        assert [v["id"] for v in stack] == [view_id]
    elif action == "update":
        assert stack[0]["title"]["text"] == "Updated"
    elif action == "push":
        assert [v["title"]["text"] for v in stack] == ["Escalate", "Step 2"]
        assert stack[1]["previous_view_id"] == view_id
    else:
        assert stack == []


async def test_close_view_sends_view_closed_when_asked(
    wired: tuple[RunningSandbox, Receiver],
) -> None:
    run, rec = wired
    view_id = await open_modal(run, rec)
    await run.sandbox.act.close_view("grace", view_id)
    payload = interactive(rec)[-1].payload
    assert payload["type"] == "view_closed" and payload["view"]["id"] == view_id


async def test_trigger_id_expires_after_three_seconds(
    wired: tuple[RunningSandbox, Receiver],
) -> None:
    run, _ = wired
    sb = run.sandbox
    trigger = sb.interactions.new_trigger(sb.user("grace").id)
    sb.interactions.triggers[trigger].created -= 3.01
    client = AsyncWebClient(token=sb.bot_token, base_url=run.api_url)
    with pytest.raises(SlackApiError) as info:
        await client.views_open(trigger_id=trigger, view=MODAL)
    assert info.value.response["error"] == "expired_trigger_id"


async def test_views_publish_update_and_app_home(wired: tuple[RunningSandbox, Receiver]) -> None:
    run, rec = wired
    sb = run.sandbox
    client = AsyncWebClient(token=sb.bot_token, base_url=run.api_url)
    home = {
        "type": "home",
        "blocks": [{"type": "section", "text": {"type": "mrkdwn", "text": "Hi"}}],
    }
    published = await client.views_publish(user_id="U0SUPPORT1", view=home)
    again = await client.views_publish(
        user_id="U0SUPPORT1", view=home, hash=published["view"]["hash"]
    )
    assert again["view"]["id"] == published["view"]["id"]
    with pytest.raises(SlackApiError) as info:
        await client.views_publish(user_id="U0SUPPORT1", view=home, hash="stale")
    assert info.value.response["error"] == "hash_conflict"
    updated = await client.views_update(view_id=published["view"]["id"], view=home)
    assert updated["ok"]
    await sb.act.open_app_home("priya")
    await sb.settle()
    event = json.loads(rec.received[-1].body)["event"]
    assert event["type"] == "app_home_opened" and event["view"]["id"] == published["view"]["id"]


async def test_buttons_inside_a_modal_send_view_container(
    wired: tuple[RunningSandbox, Receiver],
) -> None:
    run, rec = wired
    sb = run.sandbox
    view_id = await open_modal(run, rec)
    client = AsyncWebClient(token=sb.bot_token, base_url=run.api_url)
    add = {
        "type": "actions",
        "elements": [
            {
                "type": "button",
                "action_id": "add_row",
                "text": {"type": "plain_text", "text": "Add"},
            }
        ],
    }
    await client.views_update(view_id=view_id, view={**MODAL, "blocks": [*MODAL["blocks"], add]})
    await sb.act.click_view_button("grace", view_id, "add_row")
    payload = interactive(rec)[-1].payload
    assert payload["container"] == {"type": "view", "view_id": view_id}
    assert payload["view"]["id"] == view_id and payload["actions"][0]["action_id"] == "add_row"
    with pytest.raises(ActionError):
        await sb.act.click_view_button("priya", view_id, "add_row")  # not her modal


async def test_on_change_reports_every_world_change(wired: tuple[RunningSandbox, Receiver]) -> None:
    run, _ = wired
    sb = run.sandbox
    seen: list[str] = []
    stop = sb.on_change(lambda team, event: seen.append(f"{team}:{event['type']}"))
    ts = await sb.act.post_message("priya", "#random", "not a bot channel")  # no delivery...
    await sb.act.add_reaction("dan", "#random", ts, "wave")
    stop()
    await sb.act.post_message("priya", "#random", "after unsubscribe")
    assert seen == ["T0NORTHWND:message", "T0NORTHWND:reaction_added"]  # ...but reported
