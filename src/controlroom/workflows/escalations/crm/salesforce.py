"""Salesforce over its REST API: an OAuth 2.0 token from ``/services/oauth2/token``
(client-credentials flow, or username-password for orgs that still allow it), then SOQL
through ``/services/data/vXX.X/query``.

One query answers a whole ``CustomerQuery``::

    SELECT Id, Name, Website, Type, AnnualRevenue, Owner.Name, Owner.Email,
           (SELECT Id FROM Cases WHERE IsClosed = false)
    FROM Account WHERE Id IN (...) OR Website LIKE '%acme.example%' OR Name LIKE 'Acme%'
    LIMIT 50

It fetches broadly (LIKE) and filters precisely with ``account_matches``. Every value is
escaped for SOQL; configured field names are checked to be identifiers. A 401 refreshes
the token once (sessions expire); a second 401 is ``CrmAuthFailed``.
"""

from __future__ import annotations

import asyncio
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
    strip_legal_suffix,
)
from controlroom.workflows.escalations.crm.http import HttpConnector

__all__ = ["SalesforceCrm", "soql_like", "soql_quote"]

_ID = re.compile(r"[a-zA-Z0-9]{15}(?:[a-zA-Z0-9]{3})?")
_FIELD = re.compile(r"[A-Za-z][A-Za-z0-9_]*(?:\.[A-Za-z][A-Za-z0-9_]*)?")
_VERSION = re.compile(r"\d{2,3}\.\d")

_ESCAPES = {
    "\\": "\\\\",
    "'": "\\'",
    '"': '\\"',
    "\n": "\\n",
    "\r": "\\r",
    "\t": "\\t",
    "\b": "\\b",
    "\f": "\\f",
}


def soql_quote(value: str) -> str:
    """A SOQL string literal: ``O'Brien`` -> ``'O\\'Brien'``."""
    return "'" + "".join(_ESCAPES.get(c, c) for c in value) + "'"


def soql_like(value: str, *, prefix: str = "", suffix: str = "") -> str:
    """A LIKE pattern literal whose ``value`` part matches literally (``%`` and ``_``
    escaped); ``prefix``/``suffix`` are wildcards added around it."""
    body = "".join(_ESCAPES.get(c, c) for c in value).replace("%", "\\%").replace("_", "\\_")
    return "'" + prefix + body + suffix + "'"


def _parent_domains(domain: str) -> list[str]:
    labels = domain.split(".")
    return [".".join(labels[i:]) for i in range(len(labels) - 1)]


def _get_path(record: Mapping[str, Any], path: str) -> Any:
    value: Any = record
    for part in path.split("."):
        if not isinstance(value, Mapping):
            return None
        value = value.get(part)
    return value


class SalesforceCrm(HttpConnector):
    name = "salesforce"

    def __init__(
        self,
        *,
        login_url: str,
        client_id: str,
        client_secret: Secret,
        username: str = "",
        password: Secret | None = None,
        api_version: str = "62.0",
        tier_field: str = "Type",
        arr_field: str = "AnnualRevenue",
        domain_field: str = "Website",
        **http: Any,
    ) -> None:
        super().__init__(**http)
        for key, value in (
            ("tier_field", tier_field),
            ("arr_field", arr_field),
            ("domain_field", domain_field),
        ):
            if not _FIELD.fullmatch(value):
                raise ValueError(f"{key} {value!r} is not a Salesforce field name")
        if not _VERSION.fullmatch(api_version):
            raise ValueError(f"api_version {api_version!r} must look like 62.0")
        if bool(username) != (password is not None):
            raise ValueError("username and password go together (password flow)")
        self.login_url = login_url.rstrip("/")
        self.client_id = client_id
        self._client_secret = client_secret
        self.username = username
        self._password = password
        self.api_version = api_version
        self.tier_field = tier_field
        self.arr_field = arr_field
        self.domain_field = domain_field
        self._token: tuple[str, str] | None = None  # (access_token, instance_url)
        self._token_lock = asyncio.Lock()

    # -- OAuth ----------------------------------------------------------------------

    async def _fetch_token(self) -> tuple[str, str]:
        form = {"client_id": self.client_id, "client_secret": self._client_secret.get()}
        if self._password is not None:
            form |= {
                "grant_type": "password",
                "username": self.username,
                "password": self._password.get(),
            }
        else:
            form["grant_type"] = "client_credentials"
        resp = await self.send("POST", f"{self.login_url}/services/oauth2/token", data=form)
        body = self.json_of(resp)
        if resp.status_code != 200:
            error = body.get("error", "?") if isinstance(body, dict) else "?"
            detail = body.get("error_description", "") if isinstance(body, dict) else ""
            raise CrmAuthFailed(
                self.name,
                f"token endpoint refused ({resp.status_code} {error}: {detail})".replace(
                    ": )", ")"
                ),
                status=resp.status_code,
            )
        token = body.get("access_token") if isinstance(body, dict) else None
        instance = body.get("instance_url") if isinstance(body, dict) else None
        if not isinstance(token, str) or not token or not isinstance(instance, str):
            raise CrmBadResponse(self.name, "token response lacks access_token or instance_url")
        if not instance.startswith(("https://", "http://")):
            raise CrmBadResponse(self.name, "token response has an invalid instance_url")
        return token, instance.rstrip("/")

    async def _session(self, *, refresh: bool = False, stale: str | None = None) -> tuple[str, str]:
        async with self._token_lock:
            if self._token is None or (refresh and self._token[0] == stale):
                self._token = await self._fetch_token()
            return self._token

    # -- queries --------------------------------------------------------------------

    def build_soql(self, where: list[str], limit: int) -> str:
        fields = ["Id", "Name", self.domain_field, self.tier_field, self.arr_field]
        fields += ["Owner.Name", "Owner.Email"]
        unique = list(dict.fromkeys(fields))
        return (
            # Values in `where` are escaped with soql_quote/soql_like; fields are checked.
            f"SELECT {', '.join(unique)}, (SELECT Id FROM Cases WHERE IsClosed = false) "  # noqa: S608
            f"FROM Account WHERE {' OR '.join(where)} LIMIT {int(limit)}"
        )

    def where_clauses(self, query: CustomerQuery) -> list[str]:
        where: list[str] = []
        ids = [i for i in query.account_ids if _ID.fullmatch(i)]
        if ids:
            where.append(f"Id IN ({', '.join(soql_quote(i) for i in ids)})")
        domains: list[str] = []
        for d in query.domains:
            n = normalise_domain(d)
            if n:
                domains += [p for p in _parent_domains(n) if p not in domains]
        field = self.domain_field
        where += [f"{field} LIKE {soql_like(d, prefix='%', suffix='%')}" for d in domains]
        names = [n for n in dict.fromkeys(strip_legal_suffix(x) for x in query.names) if n]
        where += [f"Name LIKE {soql_like(n, suffix='%')}" for n in names[:10]]
        return where

    async def query(self, soql: str) -> list[dict[str, Any]]:
        """Run one SOQL query; returns ``records`` (first page; our queries are LIMITed)."""
        token, instance = await self._session()
        for attempt in (1, 2):
            resp = await self.send(
                "GET",
                f"{instance}/services/data/v{self.api_version}/query",
                params={"q": soql},
                headers={"Authorization": f"Bearer {token}", "Accept": "application/json"},
            )
            if resp.status_code == 401 and attempt == 1:
                token, instance = await self._session(refresh=True, stale=token)
                continue
            break
        body = self.json_of(resp)
        if resp.status_code != 200:
            raise self._error(resp.status_code, body)
        if not isinstance(body, dict) or not isinstance(body.get("records"), list):
            raise CrmBadResponse(self.name, "query result lacks a records list", status=200)
        records: list[dict[str, Any]] = []
        for rec in body["records"]:
            if not isinstance(rec, dict):
                raise CrmBadResponse(self.name, "query result has a non-object record")
            records.append(rec)
        return records

    def _error(self, status: int, body: Any) -> CrmUnavailable:
        first = body[0] if isinstance(body, list) and body and isinstance(body[0], dict) else {}
        code = str(first.get("errorCode", "")) or "?"
        if status == 401:
            return CrmAuthFailed(self.name, f"session refused ({code})", status=status)
        if status == 403 and code == "REQUEST_LIMIT_EXCEEDED":
            return CrmUnavailable(self.name, "API request limit exceeded", status=status)
        if status == 403:
            return CrmAuthFailed(self.name, f"forbidden ({code})", status=status)
        return CrmUnavailable(
            self.name, f"query failed with HTTP {status} ({code})", retryable=False, status=status
        )

    def to_account(self, rec: Mapping[str, Any], instance: str) -> Account:
        rid, name = rec.get("Id"), rec.get("Name")
        if not isinstance(rid, str) or not isinstance(name, str):
            raise CrmBadResponse(self.name, "Account record lacks Id or Name")
        website = _get_path(rec, self.domain_field)
        domain = normalise_domain(website) if isinstance(website, str) else ""
        tier = _get_path(rec, self.tier_field)
        arr = _get_path(rec, self.arr_field)
        owner = rec.get("Owner") if isinstance(rec.get("Owner"), Mapping) else {}
        assert isinstance(owner, Mapping)
        cases = rec.get("Cases")
        open_cases = 0  # Salesforce sends null for an empty child relationship
        if isinstance(cases, Mapping) and isinstance(cases.get("totalSize"), int):
            open_cases = int(cases["totalSize"])
        return Account(
            id=rid,
            name=name,
            domains=(domain,) if domain else (),
            tier=str(tier) if tier not in (None, "") else "",
            arr=float(arr) if isinstance(arr, int | float) and not isinstance(arr, bool) else None,
            open_cases=open_cases,
            owner_email=str(owner.get("Email") or "").lower(),
            owner_name=str(owner.get("Name") or ""),
            crm_url=f"{instance}/{rid}",
            source=self.name,
        )

    async def find_accounts(self, query: CustomerQuery) -> list[Account]:
        where = self.where_clauses(query)
        if not where:
            return []
        records = await self.query(self.build_soql(where, min(200, max(query.limit, 1) * 3)))
        _, instance = await self._session()
        accounts = [self.to_account(r, instance) for r in records]
        return [a for a in accounts if account_matches(a, query, scan_text=False)][: query.limit]

    async def get_account(self, account_id: str) -> Account | None:
        if not _ID.fullmatch(account_id):
            return None
        records = await self.query(self.build_soql([f"Id = {soql_quote(account_id)}"], 1))
        if not records:
            return None
        _, instance = await self._session()
        return self.to_account(records[0], instance)
