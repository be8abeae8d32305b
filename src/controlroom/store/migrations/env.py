"""Alembic's environment for Control Room's schema.

Configured in code by :func:`controlroom.store.migrations.alembic_config` (no
``alembic.ini``): the caller hands over an open connection, already inside the
transaction that holds the migration lock, in ``config.attributes["connection"]``.
"""

from __future__ import annotations

from alembic import context

from controlroom.store.migrations import MigrationError, migration_options

if context.is_offline_mode():
    raise MigrationError(
        "offline (--sql) migrations are not supported: the initial revision inspects the "
        "database to adopt tables made before migrations existed"
    )
_connection = context.config.attributes.get("connection")
if _connection is None:
    raise MigrationError(
        "no connection to migrate: use controlroom.store.migrations.alembic_config(conn) "
        "or `controlroom db upgrade`"
    )
context.configure(connection=_connection, **migration_options())
with context.begin_transaction():
    context.run_migrations()
