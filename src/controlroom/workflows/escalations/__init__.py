"""Escalations: a reaction opens a private incident room with the right people and the
customer's story.

This package is the domain core, free of Slack I/O: CRM connectors (``crm``), customer
resolution (``resolve``), room naming and numbering (``naming``), the exactly-once ledger
(``ledger``) and the Block Kit messages (``messages``). The handlers that call Slack build
on these: ``workflow`` (the ``Workflow`` the hub loads, its triggers, buttons and tasks),
``flow`` (the opening flow on the ledger's steps), ``slackio`` (the Slack calls) and
``config`` (``[workflows.escalations]``). They are imported by the hub, not from here.
"""

from __future__ import annotations

from controlroom.workflows.escalations.crm import (
    Account,
    CrmAuthFailed,
    CrmBadResponse,
    CrmConnector,
    CrmUnavailable,
    CustomerQuery,
    FileCrm,
    HubSpotCrm,
    RetryPolicy,
    SalesforceCrm,
    build_crm,
)
from controlroom.workflows.escalations.ledger import (
    Escalation,
    InvalidTransition,
    Ledger,
    LedgerError,
    Source,
    State,
)
from controlroom.workflows.escalations.messages import (
    ACTION_NO_CUSTOMER,
    ACTION_PICK_CUSTOMER,
    ACTION_RESOLVE,
    ACTION_SET_CUSTOMER,
    Briefing,
    Message,
    SourceMessage,
    already_escalated_message,
    briefing_message,
    customer_picker,
    pointer_message,
    resolution_summary,
)
from controlroom.workflows.escalations.naming import (
    DEFAULT_TEMPLATE,
    NamingError,
    SequenceAllocator,
    anext_free_name,
    next_free_name,
    room_name,
    slugify,
    validate_template,
)
from controlroom.workflows.escalations.resolve import (
    Ambiguous,
    ChannelInfo,
    Resolution,
    Resolved,
    ResolveInput,
    ResolveRules,
    Unknown,
    resolve_customer,
)

__all__ = [
    "ACTION_NO_CUSTOMER",
    "ACTION_PICK_CUSTOMER",
    "ACTION_RESOLVE",
    "ACTION_SET_CUSTOMER",
    "DEFAULT_TEMPLATE",
    "Account",
    "Ambiguous",
    "Briefing",
    "ChannelInfo",
    "CrmAuthFailed",
    "CrmBadResponse",
    "CrmConnector",
    "CrmUnavailable",
    "CustomerQuery",
    "Escalation",
    "FileCrm",
    "HubSpotCrm",
    "InvalidTransition",
    "Ledger",
    "LedgerError",
    "Message",
    "NamingError",
    "Resolution",
    "ResolveInput",
    "ResolveRules",
    "Resolved",
    "RetryPolicy",
    "SalesforceCrm",
    "SequenceAllocator",
    "Source",
    "SourceMessage",
    "State",
    "Unknown",
    "already_escalated_message",
    "anext_free_name",
    "briefing_message",
    "build_crm",
    "customer_picker",
    "next_free_name",
    "pointer_message",
    "resolution_summary",
    "resolve_customer",
    "room_name",
    "slugify",
    "validate_template",
]
