"""Operator commands: the app manifest, the keystore, the audit log, installations and
the scope check against Slack. ``controlroom.cli_ops.register(app)`` adds them to the
``controlroom`` Typer app."""

from __future__ import annotations

from controlroom.ops.audit_cmd import audit_app, export_audit, tail_audit, verify_audit
from controlroom.ops.installs_cmd import (
    InstallRow,
    installs_app,
    list_installations,
    revoke_installation,
)
from controlroom.ops.manifest_cmd import enabled_workflows, manifest_command
from controlroom.ops.scopes_check import (
    check_scopes_against_slack,
    granted_scopes,
    report_scope_check,
    run_scope_check,
)
from controlroom.ops.secrets_cmd import rotate_key, secrets_app

__all__ = [
    "InstallRow",
    "audit_app",
    "check_scopes_against_slack",
    "enabled_workflows",
    "export_audit",
    "granted_scopes",
    "installs_app",
    "list_installations",
    "manifest_command",
    "report_scope_check",
    "revoke_installation",
    "rotate_key",
    "run_scope_check",
    "secrets_app",
    "tail_audit",
    "verify_audit",
]
