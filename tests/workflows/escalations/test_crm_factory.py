"""Building the configured CRM connector, with secrets resolved and errors keyed."""

from __future__ import annotations

from pathlib import Path

import pytest

from controlroom.errors import ConfigError
from controlroom.workflows.escalations.crm import (
    CustomerQuery,
    FileCrm,
    HubSpotCrm,
    SalesforceCrm,
    build_crm,
)

from ._fakes import FakeHubSpot, FakeSalesforce, serve


async def test_no_configuration_means_the_shipped_file() -> None:
    crm = build_crm(None)
    assert isinstance(crm, FileCrm)
    assert [a.id for a in await crm.find_accounts(CustomerQuery(names=("Acme",)))] == ["ACC-1001"]


def test_a_file_path_is_read(tmp_path: Path) -> None:
    path = tmp_path / "crm.csv"
    path.write_text("id,name\nA1,Hooli\n", encoding="utf-8")
    crm = build_crm({"kind": "file", "path": str(path)})
    assert isinstance(crm, FileCrm) and [a.name for a in crm.accounts] == ["Hooli"]


async def test_salesforce_is_built_with_secrets_from_references(tmp_path: Path) -> None:
    fake = FakeSalesforce()
    secret_file = tmp_path / "sf-secret"
    secret_file.write_text(fake.client_secret + "\n", encoding="utf-8")
    async with serve(fake.app()) as url:
        crm = build_crm(
            {
                "kind": "salesforce",
                "login_url": url,
                "client_id": fake.client_id,
                "client_secret": f"file:{secret_file}",
                "attempts": 1,
            }
        )
        assert isinstance(crm, SalesforceCrm)
        async with crm:
            assert await crm.get_account("001Dn000000AcmeAAA") is not None
    assert "consumer-secret-123" not in repr(crm.__dict__)


async def test_hubspot_is_built_with_its_token(tmp_path: Path) -> None:
    fake = FakeHubSpot()
    token_file = tmp_path / "hs-token"
    token_file.write_text(fake.token, encoding="utf-8")
    async with serve(fake.app()) as url:
        crm = build_crm({"kind": "hubspot", "base_url": url, "token": f"file:{token_file}"})
        assert isinstance(crm, HubSpotCrm)
        async with crm:
            assert [a.id for a in await crm.find_accounts(CustomerQuery(names=("Globex",)))] == [
                "18003"
            ]


@pytest.mark.parametrize(
    ("raw", "key", "reason"),
    [
        ({"kind": "dynamics"}, "workflows.escalations.crm.kind", "expected file"),
        (
            {"kind": "salesforce", "client_secret": "env:X"},
            "workflows.escalations.crm.client_id",
            "Field required",
        ),
        (
            {"kind": "hubspot", "token": "pat-na1-plain"},
            "workflows.escalations.crm.token",
            "plain-text secret",
        ),
        (
            {"kind": "hubspot", "token": "file:/nonexistent/token"},
            "workflows.escalations.crm.token",
            "cannot read",
        ),
        (
            {"kind": "hubspot", "token": "env:X", "timeout": 0},
            "workflows.escalations.crm.timeout",
            "greater than 0",
        ),
        ({"kind": "file", "path": "/nonexistent/crm.yaml"}, "(file)", "cannot read"),
        (
            {
                "kind": "salesforce",
                "client_id": "x",
                "client_secret": "file:/dev/null/x",
                "tier_field": "Type FROM",
            },
            "workflows.escalations.crm.client_secret",
            "cannot read",
        ),
    ],
)
def test_bad_crm_configuration_names_the_key(raw: dict[str, object], key: str, reason: str) -> None:
    with pytest.raises(ConfigError) as info:
        build_crm(raw)
    assert any(k == key and reason in why for k, _, why in info.value.problems), info.value


def test_an_invalid_field_name_is_a_configuration_error(tmp_path: Path) -> None:
    secret = tmp_path / "s"
    secret.write_text("x", encoding="utf-8")
    with pytest.raises(ConfigError, match="tier_field"):
        build_crm(
            {
                "kind": "salesforce",
                "client_id": "x",
                "client_secret": f"file:{secret}",
                "tier_field": "Type FROM User",
            }
        )
