"""The trust layer: redaction of secrets in logs, encryption at rest, secret reference
schemes, the hash-chained audit log, policy-based authorisation and the encrypted
installation store with OAuth installs and token rotation. See DESIGN.md, "Security model"."""

from __future__ import annotations

from controlroom.security.audit import AuditEntry, AuditLog, VerifyResult, verify_jsonl
from controlroom.security.authz import (
    Authorizer,
    Decision,
    Policy,
    Rule,
    SlackUsergroupResolver,
    StaticUsergroups,
    UsergroupResolver,
)
from controlroom.security.crypto import Cipher, DecryptError, generate_key, load_cipher
from controlroom.security.installations import Installation, InstallationStore
from controlroom.security.oauth import (
    InstallationUnavailable,
    OAuthSettings,
    OAuthStateStore,
    SlackOAuth,
    TokenRotator,
)
from controlroom.security.redaction import (
    REDACTED,
    RateLimitedLogger,
    RedactionFilter,
    Redactor,
    bind_envelope,
    configure_logging,
)
from controlroom.security.scopes import ScopeCheck, check_scopes
from controlroom.security.secrets import (
    install_secret_schemes,
    keystore_delete,
    keystore_get,
    keystore_list,
    keystore_rotate_key,
    keystore_set,
    rotate_master_key,
)

__all__ = [
    "REDACTED",
    "AuditEntry",
    "AuditLog",
    "Authorizer",
    "Cipher",
    "Decision",
    "DecryptError",
    "Installation",
    "InstallationStore",
    "InstallationUnavailable",
    "OAuthSettings",
    "OAuthStateStore",
    "Policy",
    "RateLimitedLogger",
    "RedactionFilter",
    "Redactor",
    "Rule",
    "ScopeCheck",
    "SlackOAuth",
    "SlackUsergroupResolver",
    "StaticUsergroups",
    "TokenRotator",
    "UsergroupResolver",
    "VerifyResult",
    "bind_envelope",
    "check_scopes",
    "configure_logging",
    "generate_key",
    "install_secret_schemes",
    "keystore_delete",
    "keystore_get",
    "keystore_list",
    "keystore_rotate_key",
    "keystore_set",
    "load_cipher",
    "rotate_master_key",
    "verify_jsonl",
]
