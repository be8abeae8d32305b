"""``controlroom db``: the schema's migrations by hand.

Every ``up``, ``serve`` and ``worker`` migrates the database when it starts. Before
rolling out a new version's processes, ``db upgrade`` runs the migrations once, so the
new processes find the database at head; ``db current`` and ``db check`` tell where a
database stands (``check`` exits 1 when it is behind or differs from the models)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, TypeVar

import typer

from controlroom.config import Settings
from controlroom.errors import ControlRoomError
from controlroom.ops._common import ConfigOpt, fail, load, require_database

if TYPE_CHECKING:
    from controlroom.store.db import Database

__all__ = ["db_app"]

T = TypeVar("T")

db_app = typer.Typer(
    help="The database schema: run the migrations, show the revision, check it.",
    no_args_is_help=True,
)

_UPGRADE_HINT = "run `controlroom db upgrade`"


@contextmanager
def _database(settings: Settings, *, must_exist: bool) -> Iterator[Database]:
    from controlroom.store.db import Database

    url = settings.effective_database_url
    if must_exist:
        require_database(url)
    db = Database(url)
    try:
        yield db
    finally:
        db.dispose()


def _with_db(config: Path | None, fn: Callable[[Database], T], *, must_exist: bool) -> T:
    """``fn(db)`` on the configured database; our errors and the database's become
    ``error: ...`` and exit 1."""
    from sqlalchemy.exc import SQLAlchemyError

    settings = load(config)
    try:
        with _database(settings, must_exist=must_exist) as db:
            return fn(db)
    except ControlRoomError as exc:
        raise fail(str(exc)) from None
    except SQLAlchemyError as exc:
        reason = getattr(exc, "orig", None) or exc
        raise fail(f"database error: {reason}") from None


def _named(revisions: tuple[str, ...]) -> str:
    return ", ".join(revisions) if revisions else "none"


@db_app.command("upgrade")
def db_upgrade(config: ConfigOpt = None) -> None:
    """Run the migrations up to head, as every process does at start (safe beside running
    processes; a database made before migrations is adopted)."""
    from controlroom.store.db import Database

    result = _with_db(config, Database.migrate_sync, must_exist=False)
    if result.adopted:
        typer.echo(
            f"adopted a database made before migrations: now at {result.head} (head); "
            "its tables and rows were kept"
        )
    elif result.changed:
        typer.echo(f"upgraded the database from {_named(result.before)} to {result.head} (head)")
    else:
        typer.echo(f"the database is already at {result.head} (head)")


@db_app.command("current")
def db_current(config: ConfigOpt = None) -> None:
    """Show the database's revision and whether it is this version's newest (head)."""
    from controlroom.store.migrations import current_revisions, head_revision, unknown_revisions

    def read(db: Database) -> tuple[str, ...]:
        with db.engine.connect() as conn:
            return current_revisions(conn)

    current = _with_db(config, read, must_exist=True)
    head = head_revision()
    if current == (head,):
        typer.echo(f"{head} (head)")
    elif not current:
        typer.echo(f"none: not migrated yet (head is {head}); {_UPGRADE_HINT}")
    elif unknown_revisions(current):
        typer.echo(
            f"{_named(current)}: newer than this version of Control Room knows (its head is "
            f"{head}); a newer version migrated it"
        )
    else:
        typer.echo(f"{_named(current)} (head is {head}); {_UPGRADE_HINT}")


@db_app.command("check")
def db_check(config: ConfigOpt = None) -> None:
    """Check the database is at head and matches the models (exit 1 naming what differs;
    changes nothing)."""
    from controlroom.store.migrations import MigrationError, schema_status

    def check(db: Database) -> None:
        status = schema_status(db)
        if not status.at_head:
            raise MigrationError(
                f"the database is at revision {_named(status.current)}, not at head "
                f"{status.head}; {_UPGRADE_HINT}"
            )
        typer.echo(f"revision: {status.head} (head)")
        if status.differences:
            for line in status.differences:
                typer.echo(f"  {line}")
            count = len(status.differences)
            raise MigrationError(
                f"the database and the models differ ({count} difference"
                f"{'' if count == 1 else 's'} above): a model changed without a migration, "
                "or the database was altered by hand"
            )
        typer.echo("the database matches the models")

    _with_db(config, check, must_exist=True)
