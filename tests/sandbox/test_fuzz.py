"""Whatever a client sends, the Web API answers with Slack's error shape, never a 500."""

from __future__ import annotations

import asyncio
import json
from functools import cache
from typing import Any

import httpx
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from controlroom.sandbox import Sandbox
from controlroom.sandbox.webapi import REGISTRY

from .conftest import make_sandbox

PARAMS = [
    "channel", "text", "blocks", "ts", "thread_ts", "user", "users", "name", "email",
    "limit", "cursor", "oldest", "latest", "inclusive", "timestamp", "view", "view_id",
    "trigger_id", "hash", "user_id", "usergroup", "metadata", "attachments", "types",
    "topic", "is_private", "code", "client_id", "client_secret", "refresh_token",
    "grant_type", "redirect_uri", "message_ts", "bot", "team", "external_id",
    "include_all_metadata", "reply_broadcast", "markdown_text",
]  # fmt: skip

scalars = st.one_of(
    st.text(max_size=30),
    st.integers(min_value=-(10**12), max_value=10**12),
    st.booleans(),
    st.none(),
    st.sampled_from(["C0SUPPORT1", "U0SUPPORT1", "#support", "1.000001", "[{", "{}", "[]"]),
)
values = st.one_of(
    scalars,
    st.lists(scalars, max_size=3),
    st.dictionaries(st.text(max_size=8), scalars, max_size=3),
)


@cache
def sandbox() -> Sandbox:
    sb = make_sandbox(rate_limits=False)
    return sb


async def send(sb: Sandbox, method: str, params: dict[str, Any], as_json: bool) -> httpx.Response:
    transport = httpx.ASGITransport(app=sb.app)
    headers = {"Authorization": f"Bearer {sb.bot_token}"}
    async with httpx.AsyncClient(transport=transport, base_url="http://sandbox") as http:
        if as_json:
            return await http.post(f"/api/{method}", json=params, headers=headers)
        form = {k: v if isinstance(v, str) else json.dumps(v) for k, v in params.items()}
        return await http.post(f"/api/{method}", data=form, headers=headers)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    # auth.revoke would uninstall the app and turn every later example into not_authed
    method=st.sampled_from(sorted(set(REGISTRY) - {"auth.revoke"})),
    params=st.dictionaries(st.sampled_from(PARAMS), values, max_size=6),
    as_json=st.booleans(),
)
def test_any_input_gets_a_slack_shaped_answer(
    method: str, params: dict[str, Any], as_json: bool
) -> None:
    sb = sandbox()
    resp = asyncio.run(send(sb, method, params, as_json))
    assert resp.status_code in (200, 429)
    body = resp.json()
    assert isinstance(body["ok"], bool)
    if not body["ok"]:
        assert isinstance(body["error"], str) and body["error"] != "internal_error", body
