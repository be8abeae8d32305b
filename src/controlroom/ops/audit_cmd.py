"""``controlroom audit``: prove the hash chain unbroken, read it, export it."""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.console import Console
from rich.table import Table

from controlroom.config import Settings
from controlroom.ops._common import ConfigOpt, fail, format_time, load, open_db, parse_since, run

if TYPE_CHECKING:
    from controlroom.security.audit import AuditEntry, VerifyResult

__all__ = ["audit_app", "export_audit", "tail_audit", "verify_audit", "verify_message"]

audit_app = typer.Typer(help="Verify, read and export the audit log.", no_args_is_help=True)


def verify_message(result: VerifyResult, where: str = "") -> str:
    """``chain of N entries verified`` or ``entry S: reason`` for a failed check."""
    suffix = f" in {where}" if where else ""
    if result.ok:
        return f"chain of {result.count} entr{'y' if result.count == 1 else 'ies'} verified{suffix}"
    return (
        f"audit chain broken{suffix} at entry {result.first_bad_seq}: {result.reason} "
        f"({result.count} entr{'y' if result.count == 1 else 'ies'} before it verified)"
    )


async def verify_audit(settings: Settings) -> VerifyResult:
    from controlroom.security.audit import AuditLog

    async with open_db(settings) as db:
        return await AuditLog(db).verify()


async def tail_audit(
    settings: Settings,
    limit: int,
    *,
    actor: str | None = None,
    action: str | None = None,
    since: float | None = None,
    outcome: str | None = None,
) -> list[AuditEntry]:
    from controlroom.security.audit import AuditLog

    async with open_db(settings) as db:
        return await AuditLog(db).tail(
            limit, actor=actor, action=action, since=since, outcome=outcome
        )


async def export_audit(settings: Settings, file: Path | None) -> tuple[int, str]:
    """Write the chain as JSON lines to ``file`` (stdout for None). Returns the number
    of entries and the last hash (keep it elsewhere to anchor the chain)."""
    from sqlalchemy import select

    from controlroom.security.audit import AuditLog, audit_log

    async with open_db(settings) as db:
        count = await AuditLog(db).export_jsonl(file if file is not None else sys.stdout)
        # the last entry written (seqs run 1..N), even if more were appended since
        query = select(audit_log.c.hash).where(audit_log.c.seq == count)
        last = await db.run(lambda conn: conn.execute(query).scalar())
    return count, str(last or "")


@audit_app.command("verify")
def audit_verify(
    config: ConfigOpt = None,
    file: Annotated[
        Path | None,
        typer.Option("--file", help="verify an exported JSON-lines file instead (offline)"),
    ] = None,
    head: Annotated[
        str | None,
        typer.Option("--head", help="with --file: the last hash you kept at export time"),
    ] = None,
) -> None:
    """Walk the hash chain; exit 0 when unbroken, 1 naming the first bad entry."""
    if file is not None:
        from controlroom.security.audit import verify_jsonl

        try:
            with file.open(encoding="utf-8") as fh:
                result = verify_jsonl(fh)
            last = _last_hash(file) if result.ok and head is not None else ""
        except OSError as exc:
            raise fail(f"cannot read {file}: {exc.strerror}") from None
        except UnicodeDecodeError:
            raise fail(f"{file} is not UTF-8 text (expected JSON lines)") from None
        if result.ok and head is not None and last != head:
            raise fail(
                f"{file} ends with hash {last or '(none)'}, not the kept head {head}: "
                "entries were removed from the end"
            )
        _report(result, str(file))
        return
    if head is not None:
        raise fail("--head applies to --file exports only", 2)
    settings = load(config)
    _report(run(verify_audit(settings)))


def _last_hash(file: Path) -> str:
    last = ""
    with file.open(encoding="utf-8") as fh:
        for line in fh:
            if line.strip():
                last = line
    try:
        value = json.loads(last).get("hash", "") if last else ""
    except (ValueError, AttributeError):
        return ""
    return value if isinstance(value, str) else ""


def _report(result: VerifyResult, where: str = "") -> None:
    message = verify_message(result, where)
    if not result.ok:
        raise fail(message)
    typer.echo(message)


@audit_app.command("tail")
def audit_tail(
    config: ConfigOpt = None,
    limit: Annotated[int, typer.Option(min=1, max=10_000, help="entries to show")] = 20,
    actor: Annotated[str | None, typer.Option(help="only this actor (user id)")] = None,
    action: Annotated[
        str | None, typer.Option(help="only this action; 'admin.*' matches a prefix")
    ] = None,
    since: Annotated[
        str | None, typer.Option(help="5m, 2h, 1d or an ISO time (2026-11-30T04:00:00Z)")
    ] = None,
    outcome: Annotated[str | None, typer.Option(help="allowed, denied, error, ...")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="one JSON object per line")] = False,
) -> None:
    """The last entries, oldest first, with filters."""
    since_ts = parse_since(since, time.time()) if since is not None else None
    settings = load(config)
    entries = run(
        tail_audit(settings, limit, actor=actor, action=action, since=since_ts, outcome=outcome)
    )
    if as_json:
        for entry in entries:
            typer.echo(json.dumps(entry.to_dict(), sort_keys=True, ensure_ascii=False))
        return
    if not entries:
        typer.echo("no matching audit entries", err=True)
        return
    table = Table("seq", "time", "actor", "action", "target", "outcome", "details")
    for e in entries:
        details = json.dumps(e.details, sort_keys=True, ensure_ascii=False)
        table.add_row(
            str(e.seq),
            format_time(e.time),
            e.actor,
            e.action,
            e.target,
            e.outcome,
            details if len(details) <= 80 else details[:79] + "…",
        )
    Console(width=200).print(table)


@audit_app.command("export")
def audit_export(
    file: Annotated[Path, typer.Argument(help="JSON-lines file to write ('-' for stdout)")],
    config: ConfigOpt = None,
) -> None:
    """Write every entry, in order, as one canonical JSON line each (hashes included)."""
    settings = load(config)
    target = None if str(file) == "-" else file
    if target is not None and target.is_dir():
        raise fail(f"{target} is a directory")
    try:
        count, last = run(export_audit(settings, target))
    except OSError as exc:
        raise fail(f"cannot write {file}: {exc.strerror}") from None
    message = f"exported {count} entr{'y' if count == 1 else 'ies'}"
    if target is not None:
        message += f" to {target}"
    if last:
        message += f"; last hash {last} (keep it: audit verify --file FILE --head HASH)"
    typer.echo(message, err=target is None)
