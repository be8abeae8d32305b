"""Build the configured CRM connector from ``[workflows.escalations.crm]``.

::

    [workflows.escalations.crm]
    kind = "salesforce"                 # "file" (default), "salesforce", "hubspot"
    login_url = "https://acme.my.salesforce.com"
    client_id = "3MVG9..."
    client_secret = "env:SALESFORCE_CLIENT_SECRET"
    timeout = 5.0
    attempts = 3

Secrets are references (``env:``, ``file:``, or any registered scheme), resolved here
once; every problem is reported as a ``ConfigError`` naming the key.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from controlroom.config import Secret, resolve_secret
from controlroom.errors import ConfigError, SecretError
from controlroom.workflows.escalations.crm.base import CrmConnector
from controlroom.workflows.escalations.crm.file import FileCrm
from controlroom.workflows.escalations.crm.http import RetryPolicy
from controlroom.workflows.escalations.crm.hubspot import HubSpotCrm
from controlroom.workflows.escalations.crm.salesforce import SalesforceCrm

__all__ = ["build_crm"]


class _Common(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    timeout: float = Field(default=5.0, gt=0, le=60)
    attempts: int = Field(default=3, ge=1, le=10)
    backoff_base: float = Field(default=0.25, ge=0, le=10)
    backoff_cap: float = Field(default=4.0, ge=0, le=60)


class _File(_Common):
    kind: Literal["file"] = "file"
    path: str = ""


class _Salesforce(_Common):
    kind: Literal["salesforce"]
    login_url: str = Field(default="https://login.salesforce.com", pattern=r"^https?://")
    client_id: str = Field(min_length=1)
    client_secret: str = Field(min_length=1)
    username: str = ""
    password: str = ""
    api_version: str = Field(default="62.0", pattern=r"^\d{2,3}\.\d$")
    tier_field: str = "Type"
    arr_field: str = "AnnualRevenue"
    domain_field: str = "Website"


class _HubSpot(_Common):
    kind: Literal["hubspot"]
    token: str = Field(min_length=1)
    base_url: str = Field(default="https://api.hubapi.com", pattern=r"^https?://")
    portal_id: str = Field(default="", pattern=r"^[0-9]*$")
    tier_property: str = ""
    open_cases_property: str = ""


def build_crm(
    raw: Mapping[str, Any] | None,
    *,
    allow_plain: bool = False,
    key: str = "workflows.escalations.crm",
    **http: Any,
) -> CrmConnector:
    """The connector described by ``raw`` (None or empty: the shipped example file).
    ``http`` passes test seams (``transport``, ``sleep``, ``rand``) to HTTP connectors."""
    data = dict(raw or {})
    kind = data.get("kind", "file")
    if kind not in ("file", "salesforce", "hubspot"):
        raise ConfigError(
            [(f"{key}.kind", "configuration", f"{kind!r}: expected file, salesforce or hubspot")]
        )
    models: dict[str, type[_Common]] = {"file": _File, "salesforce": _Salesforce}
    models["hubspot"] = _HubSpot
    try:
        cfg = models[kind].model_validate(data)
    except ValidationError as exc:
        invalid = [
            (".".join([key, *(str(p) for p in e["loc"])]), "configuration", e["msg"])
            for e in exc.errors()
        ]
        raise ConfigError(invalid) from None
    problems: list[tuple[str, str, str]] = []

    def secret(name: str, reference: str) -> Secret:
        try:
            return resolve_secret(reference, allow_plain=allow_plain)
        except SecretError as exc:
            problems.append((f"{key}.{name}", "configuration", str(exc)))
            return Secret("")

    retry = RetryPolicy(attempts=cfg.attempts, base=cfg.backoff_base, cap=cfg.backoff_cap)
    common = {"timeout": cfg.timeout, "retry": retry, **http}
    connector: CrmConnector
    try:
        if isinstance(cfg, _Salesforce):
            client_secret = secret("client_secret", cfg.client_secret)
            password = secret("password", cfg.password) if cfg.password else None
            if problems:
                raise ConfigError(problems)
            connector = SalesforceCrm(
                login_url=cfg.login_url,
                client_id=cfg.client_id,
                client_secret=client_secret,
                username=cfg.username,
                password=password,
                api_version=cfg.api_version,
                tier_field=cfg.tier_field,
                arr_field=cfg.arr_field,
                domain_field=cfg.domain_field,
                **common,
            )
        elif isinstance(cfg, _HubSpot):
            token = secret("token", cfg.token)
            if problems:
                raise ConfigError(problems)
            connector = HubSpotCrm(
                token=token,
                base_url=cfg.base_url,
                portal_id=cfg.portal_id,
                tier_property=cfg.tier_property,
                open_cases_property=cfg.open_cases_property,
                **common,
            )
        else:
            assert isinstance(cfg, _File)
            connector = FileCrm.from_path(cfg.path) if cfg.path else FileCrm.default()
    except ValueError as exc:
        raise ConfigError([(key, "configuration", str(exc))]) from None
    return connector
