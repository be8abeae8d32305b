"""``controlroom check`` against Slack: granted scopes (``x-oauth-scopes`` of
``auth.test``) compared with the enabled workflows' needs, over real HTTP to the
sandbox."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from controlroom import Workflow
from controlroom.config import Secret, Settings, SlackSettings
from controlroom.errors import ConfigError, SlackApiError, SlackTransientError
from controlroom.ops.scopes_check import (
    check_scopes_against_slack,
    granted_scopes,
    report_scope_check,
    run_scope_check,
)
from controlroom.sandbox import RunningSandbox, Sandbox, SandboxConfig, serve_sandbox

from .conftest import sandbox_in_thread


@pytest.fixture
async def running() -> AsyncIterator[RunningSandbox]:
    async with serve_sandbox(Sandbox(SandboxConfig(rate_limits=False)), port=0) as run:
        yield run


def _settings(api_url: str, token: str | None) -> Settings:
    return Settings(
        slack=SlackSettings(
            api_url=api_url, bot_token=Secret(token, "test") if token is not None else None
        )
    )


def _seed_scopes(sb: Sandbox) -> set[str]:
    return set(sb.state.tokens[sb.bot_token].scopes)


async def test_granted_scopes_come_from_the_auth_test_header(running: RunningSandbox) -> None:
    sb = running.sandbox
    header = await granted_scopes(_settings(running.api_url, sb.bot_token))
    assert set(header.split(",")) == _seed_scopes(sb)
    assert any(c.method == "auth.test" for c in sb.state.calls)


async def test_a_missing_scope_is_an_error_naming_the_workflow(running: RunningSandbox) -> None:
    sb = running.sandbox
    needs = [
        Workflow("deploys", scopes=["chat:write", "commands"]),
        Workflow("archiver", scopes=["chat:write", "channels:manage", "files:write"]),
    ]
    check = await check_scopes_against_slack(_settings(running.api_url, sb.bot_token), needs)
    assert not check.ok
    assert check.missing == {"files:write": ("archiver",)}
    assert check.errors() == ["scope files:write is not granted but workflow archiver needs it"]
    assert set(check.extra) == _seed_scopes(sb) - {"chat:write", "commands", "channels:manage"}


async def test_extra_scopes_are_warnings_only(running: RunningSandbox) -> None:
    sb = running.sandbox
    check = await check_scopes_against_slack(
        _settings(running.api_url, sb.bot_token), [Workflow("echo", scopes=["chat:write"])]
    )
    assert check.ok and check.missing == {}
    assert "reactions:read" in check.extra
    assert all("no enabled workflow needs it" in w for w in check.warnings())


async def test_exactly_the_granted_scopes_give_no_warning(running: RunningSandbox) -> None:
    sb = running.sandbox
    everything = Workflow("all", scopes=sorted(_seed_scopes(sb)))
    check = await check_scopes_against_slack(_settings(running.api_url, sb.bot_token), [everything])
    assert check.ok and check.extra == () and check.warnings() == []


async def test_a_token_slack_refuses_is_an_api_error(running: RunningSandbox) -> None:
    with pytest.raises(SlackApiError) as info:
        await check_scopes_against_slack(_settings(running.api_url, "xoxb-0-bogus"), [])
    assert info.value.method == "auth.test" and info.value.error == "invalid_auth"


async def test_no_bot_token_is_a_configuration_error() -> None:
    with pytest.raises(ConfigError) as info:
        await check_scopes_against_slack(_settings("http://127.0.0.1:9/api/", None), [])
    assert info.value.problems[0][0] == "slack.bot_token"


async def test_an_unreachable_slack_is_a_transient_error() -> None:
    with pytest.raises(SlackTransientError):
        await check_scopes_against_slack(_settings("http://127.0.0.1:9/api/", "xoxb-1"), [])


def test_run_scope_check_exit_status_and_messages(capsys: pytest.CaptureFixture[str]) -> None:
    with sandbox_in_thread() as sb:
        settings = _settings(sb.api_url, sb.sandbox.bot_token)
        assert run_scope_check(settings, [Workflow("echo", scopes=["chat:write"])]) == 0
        out = capsys.readouterr()
        assert out.out == "granted scopes cover every enabled workflow\n"
        assert "warning: scope reactions:read is granted but no enabled workflow" in out.err
        assert run_scope_check(settings, [Workflow("x", scopes=["files:write"])]) == 2
        assert "error: scope files:write is not granted but workflow x needs it" in (
            capsys.readouterr().err
        )
        bogus = _settings(sb.api_url, "xoxb-0-bogus")
        assert run_scope_check(bogus, []) == 1
        err = capsys.readouterr().err
        assert "auth.test" in err and "invalid_auth" in err
    assert run_scope_check(Settings(), []) == 1
    assert "error: slack.bot_token" in capsys.readouterr().err


def test_report_scope_check_returns_ok(capsys: pytest.CaptureFixture[str]) -> None:
    from controlroom.security.scopes import check_scopes

    assert report_scope_check(check_scopes([Workflow("a", scopes=["x"])], "x")) is True
    assert report_scope_check(check_scopes([Workflow("a", scopes=["x"])], "")) is False
    assert "error: scope x is not granted" in capsys.readouterr().err
