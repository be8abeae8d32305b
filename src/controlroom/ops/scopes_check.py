"""``controlroom check`` against Slack: the scopes the bot token was granted (the
``x-oauth-scopes`` header of ``auth.test``) compared with what the enabled workflows
need. A missing scope is an error naming the workflows that need it; an extra one is a
warning (over-scoping widens what a leaked token can do)."""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING

import typer

from controlroom.config import Settings
from controlroom.errors import ConfigError, SlackApiError, SlackTransientError
from controlroom.workflow import Workflow

if TYPE_CHECKING:
    from controlroom.security.scopes import ScopeCheck

__all__ = [
    "check_scopes_against_slack",
    "granted_scopes",
    "report_scope_check",
    "run_scope_check",
]


async def granted_scopes(settings: Settings) -> str:
    """The ``x-oauth-scopes`` header of ``auth.test`` with the configured bot token."""
    from slack_sdk.errors import SlackApiError as SdkApiError
    from slack_sdk.errors import SlackClientError
    from slack_sdk.web.async_client import AsyncWebClient

    token = settings.slack.bot_token
    if token is None:
        raise ConfigError(
            [("slack.bot_token", "configuration", "not set: cannot ask Slack for its scopes")]
        )
    client = AsyncWebClient(token=token.get(), base_url=settings.slack.api_url, timeout=10)
    team = settings.slack.team_id
    try:
        resp = await client.auth_test()
    except SdkApiError as exc:
        error = str(exc.response.get("error", "unknown_error"))
        raise SlackApiError("auth.test", team, error) from None
    except (SlackClientError, OSError, TimeoutError) as exc:
        raise SlackTransientError("auth.test", team, type(exc).__name__) from None
    headers = {str(k).lower(): v for k, v in (resp.headers or {}).items()}
    value = headers.get("x-oauth-scopes", "")
    if isinstance(value, list):
        value = ",".join(str(v) for v in value)
    return str(value)


async def check_scopes_against_slack(
    settings: Settings, workflows: Iterable[Workflow]
) -> ScopeCheck:
    """Ask Slack which scopes the bot token has and compare them with ``workflows``'
    needs. Raises ``ConfigError`` without a bot token, ``SlackApiError`` when Slack
    refuses the token (``invalid_auth``, ``token_revoked``...)."""
    from controlroom.security.scopes import check_scopes

    return check_scopes(list(workflows), await granted_scopes(settings))


def report_scope_check(check: ScopeCheck) -> bool:
    """Print each missing scope as an error and each extra scope as a warning (stderr);
    returns ``check.ok``."""
    for line in check.errors():
        typer.echo(f"error: {line}", err=True)
    for line in check.warnings():
        typer.echo(f"warning: {line}", err=True)
    if check.ok:
        typer.echo("granted scopes cover every enabled workflow")
    return check.ok


def run_scope_check(settings: Settings, workflows: Iterable[Workflow]) -> int:
    """For ``controlroom check``: compare with Slack and print the outcome. Returns an
    exit status: 0 all needed scopes granted (warnings allowed), 2 a scope is missing,
    1 Slack could not be asked (no bot token, refused token, unreachable)."""
    import asyncio

    from controlroom.errors import ControlRoomError

    try:
        check = asyncio.run(check_scopes_against_slack(settings, workflows))
    except ConfigError as exc:
        for key, source, reason in exc.problems:
            typer.echo(f"error: {key} (from {source}): {reason}", err=True)
        return 1
    except ControlRoomError as exc:
        typer.echo(f"error: cannot compare scopes with Slack: {exc}", err=True)
        return 1
    return 0 if report_scope_check(check) else 2
