"""The operator commands of ``controlroom`` (manifest, secrets, audit, installs, db), as
Typer sub-apps and commands the main CLI registers:

```python
from controlroom.cli_ops import register

register(app)  # adds: manifest, secrets ..., audit ..., installs ..., db ...
```

The implementations live in ``controlroom.ops``; ``check_scopes_against_slack`` and
``run_scope_check`` extend ``controlroom check``.
"""

from __future__ import annotations

import typer

from controlroom.ops import (
    audit_app,
    check_scopes_against_slack,
    installs_app,
    manifest_command,
    report_scope_check,
    run_scope_check,
    secrets_app,
)
from controlroom.ops.db_cmd import db_app

__all__ = [
    "audit_app",
    "check_scopes_against_slack",
    "installs_app",
    "manifest_command",
    "register",
    "report_scope_check",
    "run_scope_check",
    "secrets_app",
]


def register(app: typer.Typer) -> None:
    """Add ``manifest``, ``secrets``, ``audit``, ``installs`` and ``db`` to ``app``."""
    app.command("manifest")(manifest_command)
    app.add_typer(secrets_app, name="secrets")
    app.add_typer(audit_app, name="audit")
    app.add_typer(installs_app, name="installs")
    app.add_typer(db_app, name="db")
