"""Import every module that declares tables on the shared metadata, so that the whole
schema is known before the migrations run or are compared with the models.

A module that adds a table to ``metadata`` belongs in ``TABLE_MODULES``, and its table
in a revision under ``controlroom/store/migrations/versions/``
(``tests/store/test_migrations.py`` fails until both are done)."""

from __future__ import annotations

import importlib

__all__ = ["TABLE_MODULES", "load_all_tables"]

TABLE_MODULES = (
    "controlroom.store.state",
    "controlroom.edge.replay",
    "controlroom.security.audit",
    "controlroom.security.installations",
    "controlroom.security.oauth",
    "controlroom.slack.gate_pg",
    "controlroom.workflows.digests.store",
    "controlroom.workflows.deploys.ledger",
    "controlroom.workflows.escalations.naming",
    "controlroom.workflows.escalations.ledger",
)


def load_all_tables() -> None:
    for name in TABLE_MODULES:
        importlib.import_module(name)
