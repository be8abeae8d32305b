"""The small pieces under the escalations workflow: permalinks, Slack error codes from
either client, and what the configuration accepts."""

from __future__ import annotations

import pytest
from pydantic import ValidationError
from slack_sdk.errors import SlackApiError as SdkSlackApiError
from slack_sdk.web.slack_response import SlackResponse

from controlroom.errors import ConfigError, SlackApiError, SlackTransientError
from controlroom.workflows.escalations.config import EscalationsConfig
from controlroom.workflows.escalations.slackio import parse_permalink, slack_error


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (
            "https://northwind.slack.com/archives/C0SUPPORT1/p1764474000123456",
            ("C0SUPPORT1", "1764474000.123456"),
        ),
        (
            "<https://northwind.slack.com/archives/C0SUPPORT1/p1764474000123456"
            "?thread_ts=1764473000.000100&cid=C0SUPPORT1|this one> is urgent",
            ("C0SUPPORT1", "1764474000.123456"),
        ),
        (
            "see http://127.0.0.1:8090/archives/G0LEADDIGE/p1700000000000001",
            ("G0LEADDIGE", "1700000000.000001"),
        ),
        ("the checkout is down", None),
        ("https://northwind.slack.com/archives/C0SUPPORT1/p17644740", None),
    ],
)
def test_permalinks_give_the_channel_and_ts(text: str, expected: tuple[str, str] | None) -> None:
    assert parse_permalink(text) == expected


def _sdk_error(error: str) -> SdkSlackApiError:
    response = SlackResponse(
        client=None,
        http_verb="POST",
        api_url="https://slack.com/api/conversations.create",
        req_args={},
        data={"ok": False, "error": error},
        headers={},
        status_code=200,
    )
    return SdkSlackApiError("failed", response)


def test_slack_error_codes_come_from_either_client() -> None:
    assert slack_error(_sdk_error("name_taken")) == "name_taken"
    assert slack_error(SlackApiError("conversations.create", "T1", "name_taken")) == "name_taken"
    transient = SlackTransientError("chat.postMessage", "T1", "internal_error")
    assert slack_error(transient) == "internal_error"
    assert slack_error(RuntimeError("boom")) is None


def test_a_template_without_seq_is_refused() -> None:
    with pytest.raises(ValidationError, match="must contain"):
        EscalationsConfig.model_validate({"room_name": "incident-{customer}-{yyyy}"})


def test_unknown_keys_are_refused() -> None:
    with pytest.raises(ValidationError, match="Extra inputs"):
        EscalationsConfig.model_validate({"reaction": "sos"})


def test_a_crm_section_is_checked_with_its_key() -> None:
    with pytest.raises(ConfigError) as caught:
        EscalationsConfig.model_validate({"crm": {"kind": "zoho"}})
    assert caught.value.problems[0][0] == "workflows.escalations.crm.kind"
