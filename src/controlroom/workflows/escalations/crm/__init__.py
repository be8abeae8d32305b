"""CRM connectors behind one interface: ``FileCrm`` (the default), ``SalesforceCrm``,
``HubSpotCrm``. See ``base`` for the protocol and the shared matching rules."""

from __future__ import annotations

from controlroom.workflows.escalations.crm.base import (
    Account,
    CrmAuthFailed,
    CrmBadResponse,
    CrmConnector,
    CrmUnavailable,
    CustomerQuery,
    account_matches,
    domain_of,
    normalise_domain,
    normalise_name,
)
from controlroom.workflows.escalations.crm.factory import build_crm
from controlroom.workflows.escalations.crm.file import FileCrm
from controlroom.workflows.escalations.crm.http import RetryPolicy
from controlroom.workflows.escalations.crm.hubspot import HubSpotCrm
from controlroom.workflows.escalations.crm.salesforce import SalesforceCrm, soql_like, soql_quote

__all__ = [
    "Account",
    "CrmAuthFailed",
    "CrmBadResponse",
    "CrmConnector",
    "CrmUnavailable",
    "CustomerQuery",
    "FileCrm",
    "HubSpotCrm",
    "RetryPolicy",
    "SalesforceCrm",
    "account_matches",
    "build_crm",
    "domain_of",
    "normalise_domain",
    "normalise_name",
    "soql_like",
    "soql_quote",
]
