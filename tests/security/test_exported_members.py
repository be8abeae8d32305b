from __future__ import annotations

import controlroom.security as security


def test_public_surface_is_exactly_the_curated_names() -> None:
    assert sorted(security.__all__) == sorted(
        [
            "REDACTED",
            "AuditEntry",
            "AuditLog",
            "Authorizer",
            "Cipher",
            "Decision",
            "DecryptError",
            "Installation",
            "InstallationStore",
            "Policy",
            "RateLimitedLogger",
            "RedactionFilter",
            "Redactor",
            "Rule",
            "SlackUsergroupResolver",
            "StaticUsergroups",
            "UsergroupResolver",
            "VerifyResult",
            "bind_envelope",
            "configure_logging",
            "generate_key",
            "install_secret_schemes",
            "keystore_delete",
            "keystore_get",
            "keystore_list",
            "keystore_rotate_key",
            "keystore_set",
            "load_cipher",
            "verify_jsonl",
            "InstallationUnavailable",
            "OAuthSettings",
            "OAuthStateStore",
            "SlackOAuth",
            "TokenRotator",
            "rotate_master_key",
            "ScopeCheck",
            "check_scopes",
        ]
    )
    for name in security.__all__:
        assert getattr(security, name) is not None
