"""HubSpot CRM v3 with a private-app token (``Authorization: Bearer pat-...``).

Companies are found with ``POST /crm/v3/objects/companies/search``: one filter group per
criterion (groups are ORed; HubSpot allows at most five), then filtered precisely with
``account_matches``. The account manager is the company's ``hubspot_owner_id``, resolved
to an email with ``GET /crm/v3/owners/{id}`` (cached per connector).

HubSpot has no standard "open tickets" or "tier" property on companies; name your own
(e.g. a rollup) with ``open_cases_property`` and ``tier_property``.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from controlroom.config import Secret
from controlroom.workflows.escalations.crm.base import (
    Account,
    CrmAuthFailed,
    CrmBadResponse,
    CrmUnavailable,
    CustomerQuery,
    account_matches,
    normalise_domain,
    normalise_name,
)
from controlroom.workflows.escalations.crm.http import HttpConnector

__all__ = ["HubSpotCrm"]

_NUMERIC = re.compile(r"[0-9]{1,20}")
_PROPERTY = re.compile(r"[a-z][a-z0-9_]{0,99}")
_MAX_GROUPS = 5


def _number(value: Any) -> float | None:
    if value in (None, ""):
        return None
    try:
        return float(value)
    except (TypeError, ValueError):
        return None


class HubSpotCrm(HttpConnector):
    name = "hubspot"

    def __init__(
        self,
        *,
        token: Secret,
        base_url: str = "https://api.hubapi.com",
        portal_id: str = "",
        app_url: str = "https://app.hubspot.com",
        tier_property: str = "",
        open_cases_property: str = "",
        **http: Any,
    ) -> None:
        super().__init__(**http)
        for key, value in (
            ("tier_property", tier_property),
            ("open_cases_property", open_cases_property),
        ):
            if value and not _PROPERTY.fullmatch(value):
                raise ValueError(f"{key} {value!r} is not a HubSpot property name")
        if portal_id and not _NUMERIC.fullmatch(portal_id):
            raise ValueError("portal_id must be numeric")
        self._token = token
        self.base_url = base_url.rstrip("/")
        self.portal_id = portal_id
        self.app_url = app_url.rstrip("/")
        self.tier_property = tier_property
        self.open_cases_property = open_cases_property
        self._owners: dict[str, tuple[str, str]] = {}

    @property
    def properties(self) -> list[str]:
        props = ["name", "domain", "hs_object_id", "annualrevenue", "hubspot_owner_id"]
        props += [p for p in (self.tier_property, self.open_cases_property) if p]
        return props

    def _headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self._token.get()}", "Accept": "application/json"}

    def _error(self, status: int, body: Any) -> CrmUnavailable:
        category = str(body.get("category", "")) if isinstance(body, dict) else ""
        label = category or "?"
        if status in (401, 403):
            return CrmAuthFailed(self.name, f"HTTP {status} ({label})", status=status)
        return CrmUnavailable(self.name, f"HTTP {status} ({label})", retryable=False, status=status)

    def search_body(self, query: CustomerQuery) -> dict[str, Any] | None:
        groups: list[dict[str, Any]] = []
        ids = [i for i in query.account_ids if _NUMERIC.fullmatch(i)]
        if ids:
            groups.append(
                {"filters": [{"propertyName": "hs_object_id", "operator": "IN", "values": ids}]}
            )
        domains: list[str] = []
        for d in query.domains:
            n = normalise_domain(d)
            labels = n.split(".") if n else []
            for i in range(len(labels) - 1):
                parent = ".".join(labels[i:])
                if parent not in domains:
                    domains.append(parent)
        if domains:
            groups.append(
                {"filters": [{"propertyName": "domain", "operator": "IN", "values": domains}]}
            )
        names = [n for n in dict.fromkeys(normalise_name(x) for x in query.names) if n]
        for n in names[: _MAX_GROUPS - len(groups)]:
            groups.append(
                {
                    "filters": [
                        {
                            "propertyName": "name",
                            "operator": "CONTAINS_TOKEN",
                            "value": n.split()[0],
                        }
                    ]
                }
            )
        if not groups:
            return None
        return {
            "filterGroups": groups,
            "properties": self.properties,
            "limit": min(100, max(query.limit, 1) * 3),
        }

    async def _owner(self, owner_id: str) -> tuple[str, str]:
        """(email, name) of a HubSpot owner; ("", "") if unknown."""
        if not _NUMERIC.fullmatch(owner_id):
            return "", ""
        if owner_id in self._owners:
            return self._owners[owner_id]
        resp = await self.send(
            "GET", f"{self.base_url}/crm/v3/owners/{owner_id}", headers=self._headers()
        )
        if resp.status_code in (403, 404):
            # 404: no such owner; 403: the token lacks crm.objects.owners.read. Either
            # way the company data stands; the briefing shows no account manager.
            result = ("", "")
        else:
            body = self.json_of(resp)
            if resp.status_code != 200:
                raise self._error(resp.status_code, body)
            if not isinstance(body, dict):
                raise CrmBadResponse(self.name, "owner response is not an object")
            email = str(body.get("email") or "").lower()
            name = " ".join(str(body.get(k) or "") for k in ("firstName", "lastName")).strip()
            result = (email, name)
        self._owners[owner_id] = result
        return result

    async def to_account(self, obj: Any) -> Account:
        if not isinstance(obj, Mapping) or not isinstance(obj.get("id"), str):
            raise CrmBadResponse(self.name, "company object lacks an id")
        props = obj.get("properties")
        if not isinstance(props, Mapping):
            raise CrmBadResponse(self.name, "company object lacks properties")
        cid = obj["id"]
        domain = normalise_domain(str(props.get("domain") or ""))
        owner_email, owner_name = await self._owner(str(props.get("hubspot_owner_id") or ""))
        cases = _number(props.get(self.open_cases_property)) if self.open_cases_property else None
        tier = str(props.get(self.tier_property) or "") if self.tier_property else ""
        crm_url = f"{self.app_url}/contacts/{self.portal_id}/record/0-2/{cid}"
        return Account(
            id=cid,
            name=str(props.get("name") or f"Company {cid}"),
            domains=(domain,) if domain else (),
            tier=tier,
            arr=_number(props.get("annualrevenue")),
            open_cases=int(cases) if cases is not None else None,
            owner_email=owner_email,
            owner_name=owner_name,
            crm_url=crm_url if self.portal_id else "",
            source=self.name,
        )

    async def find_accounts(self, query: CustomerQuery) -> list[Account]:
        body = self.search_body(query)
        if body is None:
            return []
        resp = await self.send(
            "POST",
            f"{self.base_url}/crm/v3/objects/companies/search",
            json=body,
            headers=self._headers(),
        )
        data = self.json_of(resp)
        if resp.status_code != 200:
            raise self._error(resp.status_code, data)
        if not isinstance(data, dict) or not isinstance(data.get("results"), list):
            raise CrmBadResponse(self.name, "search result lacks a results list", status=200)
        found: list[Account] = []
        for obj in data["results"]:
            account = await self.to_account(obj)
            if account_matches(account, query, scan_text=False):
                found.append(account)
            if len(found) >= query.limit:
                break
        return found

    async def get_account(self, account_id: str) -> Account | None:
        if not _NUMERIC.fullmatch(account_id):
            return None
        resp = await self.send(
            "GET",
            f"{self.base_url}/crm/v3/objects/companies/{account_id}",
            params={"properties": ",".join(self.properties)},
            headers=self._headers(),
        )
        if resp.status_code == 404:
            return None
        data = self.json_of(resp)
        if resp.status_code != 200:
            raise self._error(resp.status_code, data)
        return await self.to_account(data)
