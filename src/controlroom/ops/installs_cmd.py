"""``controlroom installs``: the workspaces Control Room is installed in, and revoking one.

``list`` reads only the non-secret columns of the installation store, so it needs no
master key and can never print a token. ``revoke`` calls ``auth.revoke`` on Slack with
the installation's own tokens, then deletes the installation locally; the outcome, good
or bad, is audited."""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Annotated

import typer
from rich.console import Console
from rich.table import Table

from controlroom.config import Secret, Settings
from controlroom.errors import SlackApiError
from controlroom.ops._common import (
    ConfigOpt,
    OpsError,
    actor,
    format_time,
    load,
    open_db,
    run,
)

if TYPE_CHECKING:
    import httpx

__all__ = ["InstallRow", "installs_app", "list_installations", "revoke_installation"]

installs_app = typer.Typer(help="List and revoke workspace installations.", no_args_is_help=True)


@dataclass(frozen=True)
class InstallRow:
    """What ``installs list`` shows about one installation: no token, ever."""

    team_id: str
    enterprise_id: str
    org_install: bool
    bot_user_id: str
    installer_user_id: str
    scopes: tuple[str, ...]
    status: str
    status_reason: str
    has_bot_token: bool
    has_user_token: bool
    token_expires_at: float | None
    installed_at: float
    reinstall_url: str


async def list_installations(settings: Settings) -> list[InstallRow]:
    from sqlalchemy import select

    from controlroom.security.installations import installations as t

    cols = [
        t.c.team_id,
        t.c.enterprise_id,
        t.c.is_enterprise_install,
        t.c.bot_user_id,
        t.c.installer_user_id,
        t.c.bot_scopes,
        t.c.status,
        t.c.status_reason,
        t.c.bot_token.is_not(None).label("has_bot"),
        t.c.user_token.is_not(None).label("has_user"),
        t.c.bot_token_expires_at,
        t.c.installed_at,
    ]
    query = select(*cols).order_by(t.c.enterprise_id, t.c.team_id)
    async with open_db(settings) as db:
        rows = await db.run(lambda conn: conn.execute(query).all())
    base = settings.server.public_url.rstrip("/")
    out = []
    for r in rows:
        where = r.team_id or r.enterprise_id
        link = f"{base}/slack/install?team={where}" if base and r.status != "active" else ""
        out.append(
            InstallRow(
                team_id=r.team_id,
                enterprise_id=r.enterprise_id,
                org_install=bool(r.is_enterprise_install),
                bot_user_id=r.bot_user_id,
                installer_user_id=r.installer_user_id,
                scopes=tuple(s for s in r.bot_scopes.split(",") if s),
                status=r.status,
                status_reason=r.status_reason,
                has_bot_token=bool(r.has_bot),
                has_user_token=bool(r.has_user),
                token_expires_at=r.bot_token_expires_at,
                installed_at=float(r.installed_at),
                reinstall_url=link,
            )
        )
    return out


def _expiry(row: InstallRow, now: float) -> str:
    if not row.has_bot_token:
        return "no token"
    if row.token_expires_at is None:
        return "does not expire"
    label = format_time(row.token_expires_at)
    return f"{label} (expired)" if row.token_expires_at <= now else label


@installs_app.command("list")
def installs_list(
    config: ConfigOpt = None,
    as_json: Annotated[bool, typer.Option("--json", help="one JSON object per line")] = False,
) -> None:
    """Installations: team, enterprise, bot user, scopes, status, token expiry."""
    settings = load(config)
    rows = run(list_installations(settings))
    if as_json:
        for row in rows:
            typer.echo(json.dumps(asdict(row), sort_keys=True))
        return
    if not rows:
        typer.echo("no installations", err=True)
        return
    now = time.time()
    table = Table("team", "enterprise", "bot user", "scopes", "status", "token expiry")
    for row in rows:
        status = row.status + (f": {row.status_reason}" if row.status_reason else "")
        if row.reinstall_url:
            status += f"\nre-install: {row.reinstall_url}"
        table.add_row(
            row.team_id or "(org-wide)",
            row.enterprise_id or "-",
            row.bot_user_id or "-",
            ", ".join(row.scopes),
            status,
            _expiry(row, now),
        )
    Console(width=200).print(table)


def _split_target(team_id: str, enterprise_id: str | None) -> tuple[str, str]:
    """``TEAM_ID [--enterprise E]``; an ``E...`` id alone names an org-wide install."""
    if enterprise_id is None and team_id.startswith("E"):
        return "", team_id
    return team_id, enterprise_id or ""


async def revoke_installation(
    settings: Settings,
    team_id: str,
    enterprise_id: str = "",
    *,
    who: str | None = None,
    http: httpx.AsyncClient | None = None,
) -> None:
    """Revoke the installation's tokens on Slack (``auth.revoke``, at
    ``settings.slack.api_url``) and delete it locally; audited either way. Raises
    ``OpsError`` when there is no such installation and ``SlackApiError`` when Slack
    refuses (then nothing is deleted)."""
    import httpx

    from controlroom.security.audit import AuditLog
    from controlroom.security.crypto import load_cipher
    from controlroom.security.installations import InstallationStore
    from controlroom.security.oauth import OAuthSettings, OAuthStateStore, SlackOAuth

    who = who or actor()
    where = team_id or enterprise_id
    async with open_db(settings) as db:
        audit = AuditLog(db)
        store = InstallationStore(db, load_cipher(settings.data_dir))
        found = await store.find(team_id, enterprise_id)
        problem = ""
        if found is None:
            problem = (
                f"no installation for {where}"
                + (f" in enterprise {enterprise_id}" if team_id and enterprise_id else "")
                + " (see: controlroom installs list)"
            )
        elif team_id and found.team_id != team_id:
            # find() falls back to the org-wide install: never revoke a whole
            # Enterprise Grid org when one workspace was named.
            problem = (
                f"{team_id} has no installation of its own; it is covered by the org-wide "
                f"installation of {found.enterprise_id} (revoke that with: controlroom "
                f"installs revoke {found.enterprise_id})"
            )
        if problem:
            await audit.record(
                actor=who,
                action="installs.revoke",
                target=where,
                outcome="error",
                details={"enterprise_id": enterprise_id, "error": problem},
            )
            raise OpsError(problem)
        slack = settings.slack
        base = settings.server.public_url.rstrip("/")
        oauth_settings = OAuthSettings(
            client_id=slack.client_id,
            client_secret=slack.client_secret or Secret("", "unset"),
            redirect_uri=f"{base}/slack/oauth_redirect",
            bot_scopes=(),
            api_url=slack.api_url,
        )
        client = http or httpx.AsyncClient(timeout=10.0)
        try:
            oauth = SlackOAuth(oauth_settings, client, store, OAuthStateStore(db), audit=audit)
            try:
                await oauth.revoke(team_id, enterprise_id, actor=who)
            except SlackApiError as exc:
                await audit.record(
                    actor=who,
                    action="installs.revoke",
                    target=where,
                    outcome="error",
                    details={"enterprise_id": enterprise_id, "error": exc.error},
                )
                raise
        finally:
            if http is None:
                await client.aclose()


@installs_app.command("revoke")
def installs_revoke(
    team_id: Annotated[str, typer.Argument(help="workspace id (T...), or E... for org-wide")],
    config: ConfigOpt = None,
    enterprise: Annotated[
        str | None, typer.Option("--enterprise", help="Enterprise Grid org id (E...)")
    ] = None,
    yes: Annotated[bool, typer.Option("--yes", "-y", help="do not ask for confirmation")] = False,
) -> None:
    """Revoke the tokens on Slack (auth.revoke), then delete the installation here."""
    team, ent = _split_target(team_id, enterprise)
    settings = load(config)
    if not yes:
        typer.confirm(
            f"Revoke Control Room's tokens for {team or ent} and delete the installation?",
            abort=True,
        )
    run(revoke_installation(settings, team, ent))
    typer.echo(f"revoked and deleted the installation for {team or ent}")
