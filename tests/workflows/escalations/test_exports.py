"""The public surface of the escalations package changes only on purpose."""

from __future__ import annotations

import controlroom.workflows.escalations as escalations

EXPECTED = {
    "ACTION_NO_CUSTOMER", "ACTION_PICK_CUSTOMER", "ACTION_RESOLVE", "ACTION_SET_CUSTOMER",
    "DEFAULT_TEMPLATE", "Account", "Ambiguous", "Briefing", "ChannelInfo", "CrmAuthFailed",
    "CrmBadResponse", "CrmConnector", "CrmUnavailable", "CustomerQuery", "Escalation",
    "FileCrm", "HubSpotCrm", "InvalidTransition", "Ledger", "LedgerError", "Message",
    "NamingError", "Resolution", "ResolveInput", "ResolveRules", "Resolved", "RetryPolicy",
    "SalesforceCrm", "SequenceAllocator", "Source", "SourceMessage", "State", "Unknown",
    "already_escalated_message", "anext_free_name", "briefing_message", "build_crm",
    "customer_picker", "next_free_name", "pointer_message", "resolution_summary",
    "resolve_customer", "room_name", "slugify", "validate_template",
}  # fmt: skip


def test_the_exported_names_are_exactly_the_public_api() -> None:
    assert set(escalations.__all__) == EXPECTED
    assert all(hasattr(escalations, name) for name in EXPECTED)


def test_action_ids_are_namespaced_to_the_workflow() -> None:
    assert escalations.ACTION_RESOLVE == "escalations.resolve"
    assert escalations.ACTION_SET_CUSTOMER == "escalations.set_customer"
