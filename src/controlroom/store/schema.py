"""Import every module that declares tables on the shared metadata, so that
``Database.create_all()`` creates them all before any request arrives."""

from __future__ import annotations

import importlib

__all__ = ["TABLE_MODULES", "load_all_tables"]

TABLE_MODULES = (
    "controlroom.store.state",
    "controlroom.edge.replay",
    "controlroom.security.audit",
    "controlroom.security.installations",
)


def load_all_tables() -> None:
    for name in TABLE_MODULES:
        importlib.import_module(name)
