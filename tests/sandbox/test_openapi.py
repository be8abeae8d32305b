"""Sandbox responses validate against Slack's published OpenAPI (v2) schemas."""

from __future__ import annotations

import json
from functools import cache
from typing import Any

import jsonschema
import pytest
from slack_sdk.web.async_client import AsyncWebClient

from controlroom.sandbox import RunningSandbox

from .conftest import FIXTURES


@cache
def spec() -> dict[str, Any]:
    return json.loads((FIXTURES / "openapi" / "slack_web_openapi_v2.json").read_text())


# Fields real Slack returns today that postdate the frozen 2020 spec (slack-api-specs
# 1.7.0): removed before validating, everything else must match the spec exactly.
NEWER_FIELDS: dict[str, list[tuple[str, ...]]] = {
    "auth.test": [("enterprise_id",), ("is_enterprise_install",)],
    "chat.postMessage": [("message", "app_id")],
    "chat.update": [("message", "app_id"), ("message", "edited")],
    "conversations.history": [
        ("response_metadata",),
        ("messages", "*", "app_id"),
        ("messages", "*", "edited"),
    ],
    "conversations.replies": [
        ("response_metadata",),
        ("messages", "*", "app_id"),
        ("messages", "*", "edited"),
    ],
}


def strip(body: Any, path: tuple[str, ...]) -> None:
    if not path or body is None:
        return
    head, rest = path[0], path[1:]
    if head == "*" and isinstance(body, list):
        for item in body:
            strip(item, rest)
    elif isinstance(body, dict) and head in body:
        if rest:
            strip(body[head], rest)
        else:
            del body[head]


def check(method: str, body: dict[str, Any]) -> None:
    for newer in NEWER_FIELDS.get(method, []):
        strip(body, newer)
    path = spec()["paths"][f"/{method}"]
    operation = path.get("post") or path.get("get")
    schema = operation["responses"]["200"]["schema"]
    root = {**schema, "definitions": spec()["definitions"]}
    validator = jsonschema.Draft4Validator(root)
    errors = sorted(validator.iter_errors(body), key=lambda e: list(e.absolute_path))
    assert not errors, f"{method}: " + "; ".join(
        f"{'/'.join(map(str, e.absolute_path))}: {e.message[:200]}" for e in errors[:5]
    )


async def test_success_responses_match_the_spec(running: RunningSandbox) -> None:
    sb = running.sandbox
    c = AsyncWebClient(token=sb.bot_token, base_url=running.api_url)
    posted = await c.chat_postMessage(channel="C0SUPPORT1", text="hello")
    ts = posted["ts"]
    responses: dict[str, Any] = {
        "auth.test": await c.auth_test(),
        "chat.postMessage": posted,
        "chat.postEphemeral": await c.chat_postEphemeral(
            channel="C0SUPPORT1", user="U0SUPPORT1", text="x"
        ),
        "chat.getPermalink": await c.chat_getPermalink(channel="C0SUPPORT1", message_ts=ts),
        "chat.update": await c.chat_update(channel="C0SUPPORT1", ts=ts, text="edited"),
        "reactions.add": await c.reactions_add(channel="C0SUPPORT1", timestamp=ts, name="eyes"),
        "pins.add": await c.pins_add(channel="C0SUPPORT1", timestamp=ts),
        "conversations.history": await c.conversations_history(channel="C0SUPPORT1"),
        "conversations.replies": await c.conversations_replies(channel="C0SUPPORT1", ts=ts),
        "conversations.info": await c.conversations_info(channel="C0SUPPORT1"),
        "conversations.list": await c.conversations_list(),
        "conversations.members": await c.conversations_members(channel="C0SUPPORT1"),
        "conversations.create": await c.conversations_create(name="spec-check"),
        "users.info": await c.users_info(user="U0SUPPORT1"),
        "users.lookupByEmail": await c.users_lookupByEmail(email="priya@northwind.example"),
        "usergroups.list": await c.usergroups_list(),
        "usergroups.users.list": await c.usergroups_users_list(usergroup="S0T2ONCALL"),
        "team.info": await c.team_info(),
        "bots.info": await c.bots_info(bot=sb.bot_id),
        "chat.delete": await c.chat_delete(channel="C0SUPPORT1", ts=ts),
    }
    problems = []
    for method, response in responses.items():
        try:
            check(method, dict(response.data))  # type: ignore[arg-type]
        except AssertionError as exc:
            problems.append(str(exc).splitlines()[0])
    assert not problems, "\n".join(problems)


@pytest.mark.parametrize("method", ["chat.postMessage", "conversations.history", "users.info"])
def test_spec_file_has_the_methods_we_check(method: str) -> None:
    assert f"/{method}" in spec()["paths"]


MODAL = {
    "type": "modal",
    "title": {"type": "plain_text", "text": "Spec"},
    "blocks": [{"type": "section", "text": {"type": "mrkdwn", "text": "hello"}}],
}


async def test_more_success_responses_match_the_spec(running: RunningSandbox) -> None:
    sb = running.sandbox
    c = AsyncWebClient(token=sb.bot_token, base_url=running.api_url)
    created = await c.conversations_create(name="spec-more")
    cid = created["channel"]["id"]
    ts = (await c.chat_postMessage(channel=cid, text="x"))["ts"]
    await c.reactions_add(channel=cid, timestamp=ts, name="eyes")
    opened = await c.views_open(trigger_id=sb.interactions.new_trigger("U0SUPPORT1"), view=MODAL)
    responses: dict[str, Any] = {
        "conversations.invite": await c.conversations_invite(channel=cid, users="U0SUPPORT1"),
        "conversations.kick": await c.conversations_kick(channel=cid, user="U0SUPPORT1"),
        "conversations.setTopic": await c.conversations_setTopic(channel=cid, topic="t"),
        "conversations.rename": await c.conversations_rename(channel=cid, name="spec-more-2"),
        "conversations.join": await c.conversations_join(channel="C0GENERAL1"),
        "conversations.open": await c.conversations_open(users="U0SUPPORT1"),
        "reactions.remove": await c.reactions_remove(channel=cid, timestamp=ts, name="eyes"),
        "users.list": await c.users_list(),
        "views.open": opened,
        "views.update": await c.views_update(view_id=opened["view"]["id"], view=MODAL),
        "views.push": await c.views_push(
            trigger_id=sb.interactions.new_trigger("U0SUPPORT1"), view=MODAL
        ),
        "views.publish": await c.views_publish(
            user_id="U0SUPPORT1", view={"type": "home", "blocks": []}
        ),
        "conversations.archive": await c.conversations_archive(channel=cid),
        "auth.revoke": await c.auth_revoke(test=True),
    }
    problems = []
    for method, response in responses.items():
        try:
            check(method, dict(response.data))
        except AssertionError as exc:
            problems.append(str(exc).splitlines()[0])
    assert not problems, "\n".join(problems)
