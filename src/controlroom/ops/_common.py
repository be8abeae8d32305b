"""What every operator command shares: settings, running async work, the database, the
acting operator, and reading times from the command line."""

from __future__ import annotations

import asyncio
import getpass
import os
import re
import tomllib
from collections.abc import AsyncIterator, Coroutine, Mapping
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, TypeVar

import typer

from controlroom.config import Settings, load_settings
from controlroom.errors import ConfigError, ControlRoomError

if TYPE_CHECKING:
    from controlroom.store.db import Database

__all__ = [
    "ConfigOpt",
    "OpsError",
    "actor",
    "fail",
    "format_time",
    "load",
    "open_db",
    "parse_since",
    "peek_data_dir",
    "run",
]

T = TypeVar("T")

ConfigOpt = Annotated[
    Path | None,
    typer.Option(
        "--config", "-c", help="TOML file (default: $CONTROLROOM_CONFIG or ./controlroom.toml)"
    ),
]


class OpsError(ControlRoomError):
    """An operator command cannot do what was asked; the message says why and what to do."""


def fail(message: str, code: int = 1) -> typer.Exit:
    """Print ``error: message`` on stderr and return the Exit to raise."""
    typer.echo(f"error: {message}", err=True)
    return typer.Exit(code)


def load(config: Path | None) -> Settings:
    """The settings, found as every ``controlroom`` command finds them; a configuration
    problem is printed with its key and source and exits with status 2."""
    if config is None:
        env = os.environ.get("CONTROLROOM_CONFIG")
        if env:
            config = Path(env)
        elif Path("controlroom.toml").exists():
            config = Path("controlroom.toml")
    # CONTROLROOM_CONFIG names the file; it is not a setting override.
    environ = {k: v for k, v in os.environ.items() if k != "CONTROLROOM_CONFIG"}
    from controlroom.security.secrets import install_secret_schemes

    install_secret_schemes(peek_data_dir(config, environ), environ=environ)
    try:
        return load_settings(config, environ=environ)
    except ConfigError as exc:
        for key, source, reason in exc.problems:
            typer.echo(f"error: {key} (from {source}): {reason}", err=True)
        raise typer.Exit(2) from None


def peek_data_dir(config: Path | None, environ: Mapping[str, str]) -> Path:
    """The data directory before the settings are loaded (``keystore:`` references in
    the configuration need it): ``CONTROLROOM_DATA_DIR``, else the file's ``data_dir``,
    else the default. A file that cannot be read is left for ``load_settings`` to
    report."""
    if environ.get("CONTROLROOM_DATA_DIR"):
        return Path(environ["CONTROLROOM_DATA_DIR"])
    if config is not None:
        try:
            raw = tomllib.loads(config.read_text(encoding="utf-8"))
        except (OSError, tomllib.TOMLDecodeError):
            raw = {}
        if isinstance(raw.get("data_dir"), str):
            return Path(raw["data_dir"])
    return Path(".controlroom")


def run(coro: Coroutine[Any, Any, T]) -> T:
    """Run ``coro`` to completion; a ControlRoomError becomes ``error: ...`` and exit 1."""
    try:
        return asyncio.run(coro)
    except ControlRoomError as exc:
        raise fail(str(exc)) from None
    except KeyboardInterrupt:
        raise fail("interrupted", 130) from None


@asynccontextmanager
async def open_db(settings: Settings, *, must_exist: bool = True) -> AsyncIterator[Database]:
    """The configured database with every table present. With ``must_exist``, a SQLite
    file that does not exist yet is an error rather than a new empty database."""
    url = settings.effective_database_url
    if must_exist:
        require_database(url)
    from controlroom.store.db import Database
    from controlroom.store.schema import load_all_tables

    load_all_tables()
    db = Database(url)
    try:
        await db.migrate()
        yield db
    finally:
        db.dispose()


def require_database(url: str) -> None:
    """Refuse a SQLite file that does not exist yet (opening it would create an empty
    database, which is never what an operator command meant)."""
    path = _sqlite_path(url)
    if path is not None and not path.exists():
        raise OpsError(
            f"no database at {path}: has Control Room run with this configuration "
            "(data_dir / database_url)?"
        )


def _sqlite_path(url: str) -> Path | None:
    from controlroom.store.db import sqlalchemy_url

    sa_url = sqlalchemy_url(url)
    if not sa_url.startswith("sqlite:///"):
        return None
    path = sa_url.removeprefix("sqlite:///")
    return Path(path) if path and path != ":memory:" else None


def actor() -> str:
    """Who runs the command, for the audit log: ``cli:<login name>``."""
    try:
        return f"cli:{getpass.getuser()}"
    except (OSError, KeyError):
        return "cli:unknown"


_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smhdw])\s*$")
_UNIT = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


def parse_since(text: str, now: float) -> float:
    """``5m``, ``2h``, ``30s``, ``1d``, ``1w`` before ``now``, or an ISO 8601 time
    (``2026-11-30T04:00:00Z``; no zone means UTC) -> a Unix time. Raises
    ``typer.BadParameter`` with the accepted forms."""
    m = _DURATION.match(text)
    if m:
        return now - float(m.group(1)) * _UNIT[m.group(2)]
    try:
        when = datetime.fromisoformat(text.strip().replace("z", "Z"))
    except ValueError:
        raise typer.BadParameter(
            f"{text!r} is neither a duration (30s, 5m, 2h, 1d, 1w) nor an ISO 8601 time "
            "(2026-11-30T04:00:00Z)",
            param_hint="--since",
        ) from None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return when.timestamp()


def format_time(ts: float | None) -> str:
    """A Unix time as ``2026-11-30T04:00:00Z`` (empty for None)."""
    if ts is None:
        return ""
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
