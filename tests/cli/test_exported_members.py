"""The operator API changes only on purpose."""

from __future__ import annotations

import controlroom.cli_ops
import controlroom.manifest
import controlroom.ops


def test_the_ops_package_exports_exactly_its_api() -> None:
    assert sorted(controlroom.ops.__all__) == [
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
    assert sorted(controlroom.cli_ops.__all__) == [
        "audit_app",
        "check_scopes_against_slack",
        "installs_app",
        "manifest_command",
        "register",
        "report_scope_check",
        "run_scope_check",
        "secrets_app",
    ]
    assert sorted(controlroom.manifest.__all__) == [
        "EVENTS_PATH",
        "ManifestOptions",
        "OAUTH_REDIRECT_PATH",
        "build_manifest",
        "manifest_problems",
        "render_manifest",
    ]
    for module in (controlroom.ops, controlroom.cli_ops, controlroom.manifest):
        for name in module.__all__:
            assert getattr(module, name) is not None
