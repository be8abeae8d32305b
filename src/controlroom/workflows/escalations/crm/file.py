"""The default CRM: accounts listed in a YAML or CSV file the operator maintains.

YAML::

    accounts:
      - id: ACC-1001
        name: Acme Corporation
        aliases: [Acme]
        domains: [acme.example]
        tier: Enterprise
        arr: 1250000
        open_cases: 3
        owner_email: dana.whitfield@controlroom.example
        crm_url: https://crm.controlroom.example/accounts/ACC-1001

CSV: a header row with the same column names; ``domains`` and ``aliases`` hold several
values separated by ``;``. The file is read and validated once, when the connector is
built; every problem is reported with its row and key.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Iterable, Sequence
from importlib import resources
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from controlroom.errors import ConfigError
from controlroom.workflows.escalations.crm.base import (
    Account,
    CustomerQuery,
    account_matches,
    normalise_domain,
    normalise_name,
)

__all__ = ["FileCrm"]


class _Row(BaseModel):
    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)

    id: str = Field(min_length=1, max_length=120)
    name: str = Field(min_length=1, max_length=200)
    aliases: list[str] = []
    domains: list[str] = []
    tier: str = ""
    arr: float | None = Field(default=None, ge=0)
    open_cases: int | None = Field(default=None, ge=0)
    owner_email: str = ""
    owner_name: str = ""
    crm_url: str = ""

    @field_validator("aliases", "domains", mode="before")
    @classmethod
    def _split(cls, v: Any) -> Any:
        if isinstance(v, str):
            return [p.strip() for p in v.replace(",", ";").split(";") if p.strip()]
        return v

    @field_validator("domains")
    @classmethod
    def _domains(cls, v: list[str]) -> list[str]:
        out = []
        for d in v:
            n = normalise_domain(d)
            if not n:
                raise ValueError(f"{d!r} is not a domain")
            out.append(n)
        return out

    @field_validator("owner_email")
    @classmethod
    def _email(cls, v: str) -> str:
        if v and (v.count("@") != 1 or not normalise_domain(v.split("@")[1])):
            raise ValueError(f"{v!r} is not an email address")
        return v.lower()

    @field_validator("arr", "open_cases", mode="before")
    @classmethod
    def _blank_is_none(cls, v: Any) -> Any:
        return None if isinstance(v, str) and not v.strip() else v

    @field_validator("crm_url")
    @classmethod
    def _url(cls, v: str) -> str:
        if v and not v.startswith(("https://", "http://")):
            raise ValueError("must be an http(s) URL")
        return v


def _parse(rows: Iterable[Any], source: str) -> list[Account]:
    problems: list[tuple[str, str, str]] = []
    accounts: list[Account] = []
    seen: set[str] = set()
    for i, raw in enumerate(rows):
        if not isinstance(raw, dict):
            problems.append((f"accounts[{i}]", source, "must be a mapping"))
            continue
        raw_id = str(raw.get("id", "")).strip()
        if raw_id and raw_id in seen:
            problems.append((f"accounts[{i}].id", source, f"duplicate id {raw_id!r}"))
            continue
        seen.add(raw_id)
        try:
            row = _Row.model_validate(raw)
        except ValidationError as exc:
            for err in exc.errors():
                loc = ".".join(str(p) for p in err["loc"])
                problems.append((f"accounts[{i}].{loc}", source, err["msg"]))
            continue
        accounts.append(
            Account(
                id=row.id,
                name=row.name,
                domains=tuple(row.domains),
                tier=row.tier,
                arr=row.arr,
                open_cases=row.open_cases,
                owner_email=row.owner_email,
                owner_name=row.owner_name,
                crm_url=row.crm_url,
                aliases=tuple(row.aliases),
                source="file",
            )
        )
    if problems:
        raise ConfigError(problems)
    return accounts


def _rank(account: Account, query: CustomerQuery) -> int:
    if account.id in query.account_ids:
        return 0
    if account_matches(account, CustomerQuery(domains=query.domains), scan_text=False):
        return 1
    if account_matches(account, CustomerQuery(names=query.names), scan_text=False):
        return 2
    return 3


class FileCrm:
    """Accounts from a file, kept in memory. ``FileCrm.default()`` is the example data
    shipped with the package (the sandbox workspace's customers)."""

    name = "file"

    def __init__(self, accounts: Sequence[Account], *, source: str = "memory") -> None:
        self.source = source
        self._accounts = list(accounts)
        self._by_id = {a.id: a for a in self._accounts}

    @classmethod
    def from_text(cls, text: str, *, fmt: str, source: str = "memory") -> FileCrm:
        """Parse ``fmt`` ("yaml" or "csv") text; raises ``ConfigError`` listing problems."""
        if fmt == "yaml":
            try:
                doc = yaml.safe_load(text)
            except yaml.YAMLError as exc:
                raise ConfigError([("(file)", source, f"not valid YAML: {exc}")]) from None
            if not isinstance(doc, dict) or not isinstance(doc.get("accounts"), list):
                raise ConfigError([("accounts", source, "expected a top-level 'accounts' list")])
            rows: list[Any] = doc["accounts"]
        elif fmt == "csv":
            reader = csv.DictReader(io.StringIO(text))
            if not reader.fieldnames or "id" not in reader.fieldnames:
                raise ConfigError([("(header)", source, "expected a header row with 'id'")])
            rows = [{k: v for k, v in r.items() if k is not None} for r in reader]
        else:
            raise ConfigError([("format", source, f"unknown format {fmt!r} (yaml or csv)")])
        return cls(_parse(rows, source), source=source)

    @classmethod
    def from_path(cls, path: str | Path) -> FileCrm:
        p = Path(path)
        fmt = "csv" if p.suffix.lower() == ".csv" else "yaml"
        try:
            text = p.read_text(encoding="utf-8")
        except OSError as exc:
            raise ConfigError([("(file)", str(p), f"cannot read: {exc.strerror}")]) from None
        return cls.from_text(text, fmt=fmt, source=str(p))

    @classmethod
    def default(cls) -> FileCrm:
        """The example accounts shipped in ``escalations/data/accounts.yaml``."""
        ref = resources.files("controlroom.workflows.escalations").joinpath("data/accounts.yaml")
        return cls.from_text(ref.read_text(encoding="utf-8"), fmt="yaml", source="accounts.yaml")

    @property
    def accounts(self) -> list[Account]:
        return list(self._accounts)

    async def find_accounts(self, query: CustomerQuery) -> list[Account]:
        if query.empty:
            return []
        found = [a for a in self._accounts if account_matches(a, query, scan_text=True)]
        found.sort(key=lambda a: _rank(a, query))
        return found[: query.limit]

    async def get_account(self, account_id: str) -> Account | None:
        return self._by_id.get(account_id)

    async def aclose(self) -> None:
        return None

    def names_index(self) -> dict[str, str]:
        """Normalised name or alias -> account id (for diagnostics and tests)."""
        out: dict[str, str] = {}
        for a in self._accounts:
            for n in (a.name, *a.aliases):
                out[normalise_name(n)] = a.id
        return out
