"""The schema's migrations: Alembic, shipped inside the package and configured in code.

Every process brings the database to the newest revision when it starts
(:meth:`controlroom.store.db.Database.migrate`), and ``controlroom db upgrade`` does the
same by hand. Several processes may start at once: the upgrade runs in one transaction
that first takes a lock, so the first starter migrates and the others then find the
database at head. On PostgreSQL the lock is ``pg_advisory_xact_lock`` (the id the old
``create_all`` start-up took, so old and new processes take turns during a roll-out); on
SQLite it is the file's write lock (``BEGIN IMMEDIATE``).

A database made before migrations existed (tables created by ``metadata.create_all``, no
``alembic_version``) is adopted: the initial revision creates only the tables that are
missing and leaves the others, and their rows, as they are.

Adding a table or a column: change the model, then write a revision next to the others
in ``versions/``, by hand or drafted by Alembic against a database at head::

    from alembic import command
    from controlroom.store.db import Database
    from controlroom.store.migrations import alembic_config

    db = Database("sqlite:///draft.db")
    db.migrate_sync()
    with db.engine.connect() as conn:
        command.revision(alembic_config(conn), "what changes", autogenerate=True,
                         rev_id="0002")

``tests/store/test_migrations.py`` fails while the models and the migrations disagree.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterable
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from alembic.util import CommandError
from sqlalchemy import Connection, inspect

from controlroom.errors import ControlRoomError

if TYPE_CHECKING:
    from controlroom.store.db import Database

__all__ = [
    "ADVISORY_LOCK_ID",
    "INITIAL_REVISION",
    "SCRIPT_LOCATION",
    "MigrationError",
    "SchemaStatus",
    "UpgradeResult",
    "alembic_config",
    "current_revisions",
    "head_revision",
    "migration_options",
    "schema_differences",
    "schema_status",
    "unknown_revisions",
    "upgrade",
]

SCRIPT_LOCATION: Final = Path(__file__).resolve().parent
INITIAL_REVISION: Final = "0001"
#: Serialises concurrent starters on PostgreSQL; the id ``create_all`` took before.
ADVISORY_LOCK_ID: Final = 7243001

# stdlib logging, like Alembic's own lines: the processes route it through the redacting
# formatter; operator commands stay quiet (their stdout is for results).
log = logging.getLogger("controlroom.store.migrations")
# Alembic's own lines (plugin set-up, "Context impl SQLiteImpl") say nothing an operator
# needs at every start; its warnings and errors still come through.
logging.getLogger("alembic").setLevel(logging.WARNING)

# Alembic's ``context`` and ``op`` are process-wide proxies: two migrations in threads
# of one process (two hubs started together) must not interleave.
_ALEMBIC = threading.Lock()


class MigrationError(ControlRoomError):
    """The schema cannot be brought to, or checked against, this version's migrations."""


@dataclass(frozen=True)
class UpgradeResult:
    """What an upgrade did: the revisions before, the head after, and whether a database
    made before migrations was adopted."""

    before: tuple[str, ...]
    head: str
    adopted: bool

    @property
    def changed(self) -> bool:
        return self.before != (self.head,)


@dataclass(frozen=True)
class SchemaStatus:
    """Where a database stands: its revisions, this version's head, and how its tables
    differ from the models (empty when they agree)."""

    current: tuple[str, ...]
    head: str
    differences: tuple[str, ...]

    @property
    def at_head(self) -> bool:
        return self.current == (self.head,)

    @property
    def ok(self) -> bool:
        return self.at_head and not self.differences


def alembic_config(connection: Connection | None = None) -> Config:
    """An Alembic configuration for the shipped scripts, built in code; ``connection``
    is the one ``env.py`` migrates (needed by every command that touches a database)."""
    config = Config()
    config.set_main_option("script_location", str(SCRIPT_LOCATION).replace("%", "%%"))
    config.set_main_option("path_separator", "os")
    config.set_main_option("file_template", "v%%(rev)s_%%(slug)s")
    config.attributes["connection"] = connection
    return config


@cache
def _scripts() -> ScriptDirectory:
    return ScriptDirectory.from_config(alembic_config())


def head_revision() -> str:
    """The newest revision this version of Control Room ships."""
    head = _scripts().get_current_head()
    if head is None:  # pragma: no cover - the package ships at least the initial one
        raise MigrationError(f"no migrations found in {SCRIPT_LOCATION}")
    return head


def migration_options() -> dict[str, Any]:
    """How ``env.py`` configures Alembic: the project's metadata, batch mode (so drafted
    revisions alter SQLite tables by rebuilding them and PostgreSQL ones in place), and
    only our tables compared (the job queue keeps its own in the same database)."""
    from controlroom.store.db import metadata
    from controlroom.store.schema import load_all_tables

    load_all_tables()
    return {
        "target_metadata": metadata,
        "render_as_batch": True,
        "compare_type": True,
        "include_name": _only_our_tables,
    }


def _only_our_tables(name: str | None, type_: str, _parents: Any) -> bool:
    from controlroom.store.db import metadata

    return type_ != "table" or name in metadata.tables


def current_revisions(conn: Connection) -> tuple[str, ...]:
    """The revisions recorded in ``alembic_version`` (empty before the first upgrade)."""
    return tuple(sorted(MigrationContext.configure(conn).get_current_heads()))


def upgrade(db: Database) -> UpgradeResult:
    """Bring ``db`` to the newest revision, in one transaction under the migration lock
    (concurrent callers take turns; the later ones find nothing to do)."""
    with _ALEMBIC, db.engine.connect() as conn:
        _lock(conn)
        before = current_revisions(conn)
        head = head_revision()
        _check_known(before)
        adopted = False
        if before != (head,):
            adopted = not before and bool(_our_tables(conn))
            command.upgrade(alembic_config(conn), "heads")
        conn.commit()
    if adopted:
        log.info("schema adopted at revision %s: the tables made before migrations kept", head)
    elif before != (head,):
        log.info("schema upgraded from %s to %s", ", ".join(before) or "none", head)
    return UpgradeResult(before=before, head=head, adopted=adopted)


def schema_status(db: Database) -> SchemaStatus:
    """The database's revisions and how its tables differ from the models (read only)."""
    with db.engine.connect() as conn:
        current = current_revisions(conn)
        differences = tuple(schema_differences(conn))
        conn.rollback()
    return SchemaStatus(current=current, head=head_revision(), differences=differences)


def schema_differences(conn: Connection) -> list[str]:
    """Alembic's comparison of the database with the models, one line per difference,
    for the tables the models declare (missing ones included)."""
    from controlroom.store.db import metadata

    context = MigrationContext.configure(conn, opts=migration_options())
    return [_describe(diff) for diff in _flatten(compare_metadata(context, metadata))]


def _lock(conn: Connection) -> None:
    if conn.dialect.name == "postgresql":
        conn.exec_driver_sql(f"SELECT pg_advisory_xact_lock({ADVISORY_LOCK_ID})")
    elif conn.dialect.name == "sqlite":
        # pysqlite opens no transaction for DDL: take the write lock for the whole run.
        conn.exec_driver_sql("BEGIN IMMEDIATE")


def unknown_revisions(revisions: Iterable[str]) -> tuple[str, ...]:
    """Those of ``revisions`` this version does not ship (a newer version made them)."""
    unknown = []
    for rev in revisions:
        try:
            known = _scripts().get_revision(rev) is not None
        except CommandError:
            known = False
        if not known:
            unknown.append(rev)
    return tuple(unknown)


def _check_known(revisions: tuple[str, ...]) -> None:
    unknown = unknown_revisions(revisions)
    if unknown:
        raise MigrationError(
            f"the database is at revision {', '.join(unknown)}, which this version of "
            f"Control Room does not know (its newest is {head_revision()}): a newer "
            "version has migrated it; run that version"
        )


def _our_tables(conn: Connection) -> set[str]:
    from controlroom.store.db import metadata
    from controlroom.store.schema import load_all_tables

    load_all_tables()
    return set(inspect(conn).get_table_names()) & set(metadata.tables)


def _flatten(diffs: Iterable[Any]) -> Iterable[tuple[Any, ...]]:
    for diff in diffs:
        if isinstance(diff, list):  # column modifications come grouped per column
            yield from diff
        else:
            yield diff


def _describe(diff: tuple[Any, ...]) -> str:
    kind = diff[0]
    if kind in ("add_table", "remove_table"):
        what = "missing from the database" if kind == "add_table" else "not in the models"
        return f"table {diff[1].name}: {what}"
    if kind in ("add_column", "remove_column"):
        what = "missing from the database" if kind == "add_column" else "not in the models"
        return f"column {diff[2]}.{diff[3].name}: {what}"
    if kind in ("add_index", "remove_index"):
        what = "missing from the database" if kind == "add_index" else "not in the models"
        return f"index {diff[1].name} on {diff[1].table.name}: {what}"
    if kind in ("add_constraint", "remove_constraint"):
        what = "missing from the database" if kind == "add_constraint" else "not in the models"
        return f"constraint {diff[1].name or '(unnamed)'} on {diff[1].table.name}: {what}"
    if kind.startswith("modify_"):
        _, _schema, table, column, _info, database, model = diff
        return (
            f"column {table}.{column}: {kind.removeprefix('modify_')} is {database!r} in "
            f"the database, {model!r} in the models"
        )
    return repr(diff)
