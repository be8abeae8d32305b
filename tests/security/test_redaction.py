from __future__ import annotations

import io
import json
import logging
from collections.abc import Iterator

import pytest
import structlog
from hypothesis import given, settings
from hypothesis import strategies as st

from controlroom.config import Secret
from controlroom.security.redaction import (
    REDACTED,
    RateLimitedLogger,
    RedactionFilter,
    Redactor,
    bind_envelope,
    configure_logging,
)

TOKENS = [
    "xoxb-1234567890-0987654321-AbCdEfGhIjKlMnOpQrStUvWx",
    "xoxp-1234567890-0987654321-1111111111-abcdef0123456789",
    "xoxa-2-1234567890-abcdefabcdef",
    "xoxr-1234567890-abcdefabcdef",
    "xoxe.xoxb-1-MS0yLTEyMzQ1Njc4OTAtMDk4NzY1NDMyMQ",
    "xoxe.xoxp-1-MS0yLTEyMzQ1Njc4OTAtMDk4NzY1NDMyMQ",
    "xoxe-1-My0xLTEyMzQ1Njc4OTAtMDk4NzY1NDMyMS0xMjM0",
    "xapp-1-A0123456789-1234567890123-abcdef0123456789abcdef",
]


@pytest.mark.parametrize("token", TOKENS)
def test_every_slack_token_shape_is_redacted_inside_text(token: str) -> None:
    r = Redactor()
    out = r.redact(f"calling chat.postMessage with {token}, then done")
    assert out == f"calling chat.postMessage with {REDACTED}, then done"


def test_authorization_header_and_bearer_values_are_redacted() -> None:
    r = Redactor()
    assert r.redact("Authorization: Bearer abcdefgh12345") == f"Authorization: {REDACTED}"
    assert r.redact("headers={'authorization': 'Basic dXNlcjpwYXNz'}") == (
        f"headers={{'authorization': '{REDACTED}'}}"
    )
    assert r.redact("sent bearer 0123456789abcdef") == f"sent bearer {REDACTED}"


def test_ordinary_text_is_left_alone() -> None:
    r = Redactor()
    text = "user U123 may not deploys.rollback: authorization denied by policy"
    assert r.redact(text) == text


def test_registered_secret_values_are_redacted_everywhere() -> None:
    r = Redactor()
    r.add("s3cr3t-signing-value")
    r.add(Secret("hunter2", "env:X"))
    assert r.redact("sig=s3cr3t-signing-value;x") == f"sig={REDACTED};x"
    # A short secret is redacted as a whole word only.
    assert r.redact("pw hunter2 and hunter2x") == f"pw {REDACTED} and hunter2x"


def test_event_dict_is_redacted_recursively_including_sensitive_keys() -> None:
    r = Redactor(["topsecretvalue"])
    event = {
        "event": "slack call failed for xoxb-1-2-abc",
        "headers": {"Authorization": "Bearer anything", "Content-Type": "json"},
        "nested": [{"note": "has topsecretvalue inside"}, ("xapp-1-A1-2-ff",)],
        "client_secret": "plain",
        "count": 3,
        "secret": Secret("zzz", "env:Z"),
    }
    out = r(None, "info", event)
    assert out == {
        "event": f"slack call failed for {REDACTED}",
        "headers": {"Authorization": REDACTED, "Content-Type": "json"},
        "nested": [{"note": f"has {REDACTED} inside"}, [REDACTED]],
        "client_secret": REDACTED,
        "count": 3,
        "secret": REDACTED,
    }


def test_add_settings_registers_every_resolved_secret() -> None:
    from controlroom.config import load_settings

    settings = load_settings(
        environ={"CR_SEC_SIGN": "signing-secret-123", "CR_SEC_HOOK": "hook-secret-456"},
        overrides={
            "slack.signing_secret": "env:CR_SEC_SIGN",
            "hooks.gh.provider": "github",
            "hooks.gh.secret": "env:CR_SEC_HOOK",
        },
    )
    r = Redactor()
    assert r.add_settings(settings) == 2
    assert r.redact("a signing-secret-123 b hook-secret-456") == f"a {REDACTED} b {REDACTED}"


def test_logging_filter_redacts_message_args_extra_and_exception() -> None:
    r = Redactor(["my-webhook-secret"])
    stream = io.StringIO()
    logger = logging.getLogger("test.redaction.filter")
    handler = logging.StreamHandler(stream)
    handler.setFormatter(logging.Formatter("%(message)s|%(detail)s"))
    handler.addFilter(RedactionFilter(r))
    logger.addHandler(handler)
    logger.propagate = False
    try:
        try:
            raise ValueError("boom with xoxp-1-2-3-abcdef")
        except ValueError:
            logger.exception(
                "token %s used", "xoxb-9-9-secretish", extra={"detail": "my-webhook-secret"}
            )
    finally:
        logger.removeHandler(handler)
        handler.close()
    text = stream.getvalue()
    assert "xoxb-" not in text
    assert "xoxp-" not in text
    assert "my-webhook-secret" not in text
    assert text.startswith(f"token {REDACTED} used|{REDACTED}\n")
    assert f"ValueError: boom with {REDACTED}" in text


@pytest.fixture
def reset_logging() -> Iterator[None]:
    yield
    structlog.reset_defaults()
    root = logging.getLogger()
    for h in list(root.handlers):
        if h.get_name() == "controlroom":
            root.removeHandler(h)
            h.close()
    root.setLevel(logging.WARNING)


def test_configure_logging_writes_redacted_json_with_envelope_id(reset_logging: None) -> None:
    stream = io.StringIO()
    redactor = configure_logging("INFO", "auto", Redactor(), stream=stream)
    redactor.add("registered-later-secret")
    log = structlog.get_logger("t")
    with bind_envelope("env-42"):
        log.info("posting", token_hint="xoxb-1-2-abcdef", note="registered-later-secret")
        logging.getLogger("lib").warning("stdlib says Authorization: Bearer abcdefghijk")
    log.debug("hidden at INFO")
    lines = [json.loads(line) for line in stream.getvalue().splitlines()]
    assert len(lines) == 2
    first, second = lines
    assert first["event"] == "posting"
    assert first["envelope_id"] == "env-42"
    assert first["token_hint"] == REDACTED
    assert first["note"] == REDACTED
    assert first["level"] == "info"
    assert second["event"] == f"stdlib says Authorization: {REDACTED}"
    assert second["envelope_id"] == "env-42"
    assert second["logger"] == "lib"


def test_configure_logging_redacts_exception_tracebacks(reset_logging: None) -> None:
    stream = io.StringIO()
    configure_logging("INFO", "json", Redactor(), stream=stream)
    log = structlog.get_logger("t")
    try:
        raise RuntimeError("failed with xoxe.xoxb-1-abcdef")
    except RuntimeError:
        log.exception("crash")
    line = json.loads(stream.getvalue())
    assert "xoxe" not in stream.getvalue()
    assert f"RuntimeError: failed with {REDACTED}" in line["exception"]


def test_configure_logging_pretty_output_is_redacted(reset_logging: None) -> None:
    stream = io.StringIO()
    configure_logging("INFO", "pretty", Redactor(), stream=stream)
    structlog.get_logger().info("hello xoxb-1-2-abc")
    assert REDACTED in stream.getvalue()
    assert "xoxb" not in stream.getvalue()


def test_configure_logging_rejects_unknown_level() -> None:
    with pytest.raises(ValueError, match="unknown log level"):
        configure_logging("LOUD", "json", Redactor(), stream=io.StringIO())


class _ListLogger:
    def __init__(self) -> None:
        self.lines: list[tuple[str, dict[str, object]]] = []

    def warning(self, event: str, **kw: object) -> None:
        self.lines.append((event, kw))


def test_rate_limited_logger_logs_n_per_key_per_minute_and_counts_the_rest() -> None:
    now = [1000.0]
    seen: list[tuple[str, bool]] = []
    sink = _ListLogger()
    rl = RateLimitedLogger(
        sink, per_minute=2, clock=lambda: now[0], on_event=lambda k, ok: seen.append((k, ok))
    )
    results = [rl.warning("bad_signature", "signature mismatch", source="slack") for _ in range(5)]
    assert results == [True, True, False, False, False]
    assert rl.warning("replay", "replayed request") is True
    assert rl.counts == {"bad_signature": 5, "replay": 1}
    assert rl.suppressed_total == {"bad_signature": 3}
    now[0] += 60.0
    assert rl.warning("bad_signature", "signature mismatch") is True
    assert sink.lines[-1] == (
        "signature mismatch",
        {"security_event": "bad_signature", "suppressed": 3},
    )
    assert len(sink.lines) == 4
    assert seen.count(("bad_signature", False)) == 3


def test_rate_limited_logger_bounds_the_number_of_keys() -> None:
    sink = _ListLogger()
    rl = RateLimitedLogger(sink, per_minute=1, clock=lambda: 0.0, max_keys=3)
    for i in range(10):
        rl.warning(f"k{i}", "e")
    assert len(rl._windows) == 3


@given(
    token=st.from_regex(r"\A(xox[abpr]|xoxe\.xox[bp]|xoxe|xapp)-[0-9]{1,12}-[A-Za-z0-9]{6,40}\Z"),
    before=st.text(alphabet=" ,;:=()[]{}'\"\n\tabcXYZ", max_size=20),
    after=st.text(alphabet=" ,;:()[]{}'\"\n\t", max_size=20),
)
@settings(max_examples=200, deadline=None)
def test_any_slack_token_embedded_in_text_is_redacted(token: str, before: str, after: str) -> None:
    out = Redactor().redact(before + token + after)
    assert token not in out
    assert REDACTED in out
