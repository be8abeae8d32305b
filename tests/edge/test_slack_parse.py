"""Parsing verified Slack bodies into envelopes: every published fixture, the control
messages, Socket Mode payloads and the shapes we refuse."""

from __future__ import annotations

import dataclasses
import json
from urllib.parse import urlencode

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from controlroom.edge.signing import EdgeRejection
from controlroom.edge.slack_parse import SlackControl, parse_slack_body, parse_socket_payload
from controlroom.envelope import Envelope

from .conftest import FIXTURES, fixture_bytes, fixture_json

FORM = "application/x-www-form-urlencoded"
EVENTS = FIXTURES / "slack" / "events"


def as_interactive_form(name: str) -> bytes:
    """Slack posts interactivity as ``payload=<JSON>``, form-encoded."""
    return urlencode({"payload": fixture_bytes(f"slack/events/{name}").decode()}).encode()


def parse(body: bytes, content_type: str = "application/json", **kw: object) -> Envelope:
    parsed = parse_slack_body(body, content_type, clock=lambda: 1234.5, **kw)  # type: ignore[arg-type]
    assert isinstance(parsed, Envelope)
    return parsed


# (fixture, kind, dedupe_key, provider_event)
EVENT_FIXTURES = [
    ("test_app.app_mention_event_body.json", "Ev111", "app_mention"),
    ("test_events.TestEvents.valid_event_body.json", "Ev111", "app_mention"),
    ("test_events.TestEvents.valid_reaction_added_body.json", "Ev111", "reaction_added"),
    ("test_message.message_body.json", "Ev111", "message"),
    ("test_message_bot.bot_message_event_payload.json", "Ev222", "message"),
    ("test_message_thread_broadcast.event_payload.json", "Ev111", "message"),
]
INTERACTIVE_FIXTURES = [
    ("test_block_actions.body.json", "block_actions", "111.222.valid"),
    ("test_shortcut.global_shortcut_body.json", "shortcut", "111.111.xxxxxx"),
    ("test_shortcut.message_shortcut_body.json", "message_action", "111.222.xxx"),
    ("test_view_submission.body.json", "view_submission", "111.222.valid"),
]


def test_every_fixture_is_covered_by_a_parsing_test() -> None:
    covered = {name for name, *_ in EVENT_FIXTURES} | {name for name, *_ in INTERACTIVE_FIXTURES}
    covered |= {"test_slash_command.slash_command_body.txt", "url_verification.json"}
    assert {p.name for p in EVENTS.iterdir()} == covered


@pytest.mark.parametrize(("name", "event_id", "event_type"), EVENT_FIXTURES)
def test_event_callbacks_become_event_envelopes_deduped_on_event_id(
    name: str, event_id: str, event_type: str
) -> None:
    raw = fixture_bytes(f"slack/events/{name}")
    env = parse(raw)
    assert (env.kind, env.source, env.transport) == ("event", "slack", "http")
    assert (env.dedupe_key, env.team_id, env.enterprise_id) == (event_id, "T111", "E111")
    assert env.provider_event == event_type
    assert env.body == json.loads(raw)
    assert env.received_at == 1234.5


@pytest.mark.parametrize(("name", "kind", "trigger_id"), INTERACTIVE_FIXTURES)
def test_interactive_payloads_become_envelopes_deduped_on_trigger_id(
    name: str, kind: str, trigger_id: str
) -> None:
    env = parse(as_interactive_form(name), FORM)
    assert (env.kind, env.dedupe_key, env.team_id, env.enterprise_id) == (
        kind,
        f"{kind}:{trigger_id}",
        "T111",
        "E111",
    )
    assert env.body == fixture_json(f"slack/events/{name}")


def test_slash_command_form_becomes_a_command_envelope_deduped_on_trigger_id() -> None:
    env = parse(fixture_bytes("slack/events/test_slash_command.slash_command_body.txt"), FORM)
    assert (env.kind, env.dedupe_key, env.provider_event) == (
        "command",
        "command:111.111.xxx",
        "/hello-world",
    )
    assert (env.team_id, env.enterprise_id) == ("T111", "E111")
    assert env.body["text"] == "Hi"
    assert env.body["response_url"] == "https://hooks.slack.com/commands/T111/111/xxxxx"


def test_url_verification_is_a_control_message_carrying_the_challenge() -> None:
    parsed = parse_slack_body(
        fixture_bytes("slack/events/url_verification.json"), "application/json"
    )
    assert parsed == SlackControl(
        "url_verification", challenge="3eZbrw1aBm2rZgRNFdxV2595E9CY3gmdALWMmHkvFXO7tYXAYM8P"
    )


def test_app_rate_limited_is_a_control_message() -> None:
    body = {
        "token": "x",
        "type": "app_rate_limited",
        "team_id": "T123456",
        "minute_rate_limited": 1518467820,
        "api_app_id": "A123456",
    }
    parsed = parse_slack_body(json.dumps(body).encode(), "application/json; charset=utf-8")
    assert parsed == SlackControl("app_rate_limited", team_id="T123456")


def test_ssl_check_is_a_control_message() -> None:
    assert parse_slack_body(b"ssl_check=1&token=abc", FORM) == SlackControl("ssl_check")


def test_block_suggestion_becomes_an_options_envelope_with_a_unique_key() -> None:
    payload = {
        "type": "block_suggestion",
        "user": {"id": "U1", "team_id": "T1"},
        "team": {"id": "T1", "domain": "d"},
        "action_id": "pick",
        "block_id": "b",
        "value": "ab",
    }
    raw = urlencode({"payload": json.dumps(payload)}).encode()
    first, second = parse(raw, FORM), parse(raw, FORM)
    assert (first.kind, first.team_id) == ("options", "T1")
    assert first.dedupe_key == first.id != second.dedupe_key


def test_view_closed_becomes_a_view_closed_envelope() -> None:
    payload = {
        "type": "view_closed",
        "team": {"id": "T1"},
        "view": {"id": "V1"},
        "is_cleared": False,
    }
    env = parse(urlencode({"payload": json.dumps(payload)}).encode(), FORM)
    assert (env.kind, env.team_id) == ("view_closed", "T1")


def test_retry_number_is_recorded_on_the_envelope() -> None:
    raw = fixture_bytes("slack/events/test_message.message_body.json")
    assert parse(raw, retry_num=2).retry_num == 2


def test_enterprise_and_team_fall_back_to_the_authorizations() -> None:
    body = fixture_json("slack/events/test_message_bot.bot_message_event_payload.json")
    del body["team_id"], body["enterprise_id"]
    env = parse(json.dumps(body).encode())
    assert (env.team_id, env.enterprise_id) == ("T111", "E111")


BAD_BODIES = [
    (b"{not json", "application/json", 400, "not valid JSON"),
    (b"[1, 2]", "application/json", 400, "JSON object"),
    (b"[" * 100_000, "application/json", 400, "not valid JSON"),
    (b'{"type": "event_callback", "event": {"type": "x"}}', "application/json", 400, "event_id"),
    (b'{"type": "event_callback", "event_id": "Ev1"}', "application/json", 400, "event"),
    (
        b'{"type": "event_callback", "event_id": "", "event": {"type": "x"}}',
        "application/json",
        400,
        "event_id",
    ),
    (b'{"type": "url_verification"}', "application/json", 400, "challenge"),
    (b'{"type": "mystery"}', "application/json", 400, "unsupported Slack payload type 'mystery'"),
    (b'{"type": 7}', "application/json", 400, "unsupported Slack payload type 'int'"),
    (b"{}", "application/json", 400, "unsupported Slack payload type"),
    (b'{"type": []}', "application/json", 400, "unsupported Slack payload type 'list'"),
    (b"payload=%7Bnope", FORM, 400, "payload is not valid JSON"),
    (b"payload=%5B%5D", FORM, 400, "payload must be a JSON object"),
    (b'payload={"type":"interactive_message"}', FORM, 400, "unsupported interactive payload type"),
    (b'payload={"type":"dialog_submission"}', FORM, 400, "unsupported interactive payload type"),
    (b'payload={"type":"block_actions","team":"T1"}', FORM, 400, "invalid block_actions"),
    (b"command=%2Fdeploy", FORM, 400, "invalid slash command"),
    (b"command=deploy&team_id=T1", FORM, 400, "invalid slash command: command"),
    (b"command=%2Fa&command=%2Fb&team_id=T1", FORM, 400, "repeated form field"),
    (b"text=hello", FORM, 400, "neither payload nor command"),
    (b"", FORM, 400, "neither payload nor command"),
    (b"command=%ff%fe&team_id=T1", FORM, 400, "not valid url-encoded UTF-8"),
    (b"a=1&" * 200, FORM, 400, "not valid url-encoded"),
    (b"{}", "text/plain", 415, "unsupported content type text/plain"),
    (b"{}", "", 415, "unsupported content type (none)"),
]


@pytest.mark.parametrize(("raw", "content_type", "status", "reason"), BAD_BODIES)
def test_bodies_we_do_not_accept_get_a_4xx_with_a_reason(
    raw: bytes, content_type: str, status: int, reason: str
) -> None:
    with pytest.raises(EdgeRejection) as info:
        parse_slack_body(raw, content_type)
    assert info.value.status == status
    assert reason in info.value.reason
    assert "\n" not in info.value.reason


def socket_fixture(n: int, kind: str) -> dict[str, object]:
    return fixture_json(
        f"slack/socket-mode/python-slack-sdk__socket_mode_envelopes.{n}.{kind}.json"
    )


def test_socket_events_api_payload_parses_like_http() -> None:
    frame = socket_fixture(1, "events_api")
    env = parse_socket_payload(frame["type"], frame["payload"], retry_num=1)  # type: ignore[arg-type]
    assert isinstance(env, Envelope)
    assert (env.kind, env.transport, env.dedupe_key, env.team_id, env.retry_num) == (
        "event",
        "socket",
        "Ev111",
        "T111",
        1,
    )


def test_socket_slash_command_and_interactive_payloads_parse() -> None:
    frame = socket_fixture(0, "slash_commands")
    cmd = parse_socket_payload(frame["type"], frame["payload"])  # type: ignore[arg-type]
    assert isinstance(cmd, Envelope)
    assert (cmd.kind, cmd.provider_event, cmd.dedupe_key) == (
        "command",
        "/hello-socket-mode",
        "command:111.222.xxx",
    )
    frame = socket_fixture(2, "interactive")
    short = parse_socket_payload(frame["type"], frame["payload"])  # type: ignore[arg-type]
    assert isinstance(short, Envelope)
    assert (short.kind, short.team_id, short.enterprise_id) == ("shortcut", "T111", "")
    # the SDK's fixtures reuse one trigger_id: the kind keeps the two apart
    assert short.dedupe_key == "shortcut:111.222.xxx" != cmd.dedupe_key


@pytest.mark.parametrize(
    ("envelope_type", "payload", "reason"),
    [
        ("events_api", "text", "JSON object"),
        ("hello_world", {}, "unsupported socket mode envelope type"),
        ("interactive", {"type": "unknown"}, "unsupported interactive payload type"),
    ],
)
def test_socket_payloads_we_do_not_accept_are_refused(
    envelope_type: str, payload: object, reason: str
) -> None:
    with pytest.raises(EdgeRejection, match=reason):
        parse_socket_payload(envelope_type, payload)


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=12),
    lambda inner: (
        st.lists(inner, max_size=4)
        | st.dictionaries(
            st.sampled_from(
                [
                    "type",
                    "event",
                    "event_id",
                    "team",
                    "team_id",
                    "trigger_id",
                    "user",
                    "command",
                    "challenge",
                    "enterprise",
                    "authorizations",
                    "id",
                    "x",
                ]
            ),
            inner,
            max_size=6,
        )
    ),
    max_leaves=20,
)


@settings(max_examples=300, deadline=None)
@given(
    raw=st.one_of(st.binary(max_size=300), json_values.map(lambda v: json.dumps(v).encode())),
    content_type=st.sampled_from(["application/json", FORM, "text/plain", ""]),
)
def test_any_body_parses_or_is_refused_with_a_4xx(raw: bytes, content_type: str) -> None:
    try:
        parsed = parse_slack_body(raw, content_type)
    except EdgeRejection as exc:
        assert 400 <= exc.status < 500
        assert "\n" not in exc.reason
    else:
        assert isinstance(parsed, (Envelope, SlackControl))


@settings(max_examples=300, deadline=None)
@given(
    envelope_type=st.sampled_from(["events_api", "interactive", "slash_commands", "hello"]),
    payload=json_values,
)
def test_any_socket_payload_parses_or_is_refused_with_a_4xx(
    envelope_type: str, payload: object
) -> None:
    try:
        parsed = parse_socket_payload(envelope_type, payload)
    except EdgeRejection as exc:
        assert 400 <= exc.status < 500
    else:
        assert isinstance(parsed, (Envelope, SlackControl))


def _body_for_round_trip() -> dict[str, object]:
    body = json.loads(fixture_bytes("slack/events/test_message.message_body.json"))
    body["event"]["text"] = 'quotes " and \\ backslashes, émoji 🚨 and a tab\t'
    return body


@pytest.mark.parametrize(
    "encode",
    [
        pytest.param(lambda text: text.encode("utf-8"), id="utf-8"),
        pytest.param(lambda text: b"\xef\xbb\xbf" + text.encode("utf-8"), id="utf-8 with BOM"),
        pytest.param(lambda text: text.encode("utf-16"), id="utf-16"),
        pytest.param(lambda text: text.encode("utf-32-le"), id="utf-32"),
    ],
)
def test_the_stored_envelope_parses_back_to_the_body_whatever_its_encoding(encode: object) -> None:
    body = _body_for_round_trip()
    raw = encode(json.dumps(body, ensure_ascii=False))  # type: ignore[operator]
    env = parse(raw)
    assert Envelope.from_json(env.to_json()) == env
    assert Envelope.from_json(env.to_json()).body == body


def test_a_utf8_body_is_stored_verbatim_and_other_encodings_are_serialised_again() -> None:
    text = json.dumps(_body_for_round_trip(), ensure_ascii=False, indent=1)
    assert text in parse(text.encode("utf-8")).to_json()
    assert parse(b"\xef\xbb\xbf" + text.encode("utf-8")).body_json is None
    assert parse(text.encode("utf-16")).body_json is None


def test_an_envelope_with_its_raw_body_serialises_every_field_like_one_without() -> None:
    """Guards the hand-built JSON in ``Envelope.to_json``: a field added to the envelope
    must appear in both forms."""
    env = parse(json.dumps(_body_for_round_trip()).encode("utf-8"), retry_num=2)
    assert env.body_json is not None
    without = dataclasses.replace(env, body_json=None)
    assert json.loads(env.to_json()) == json.loads(without.to_json())
