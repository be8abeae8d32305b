"""CRM connectors: the file connector, and Salesforce and HubSpot against fake servers on
a real loopback port answering with the providers' real payload shapes and errors."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from controlroom.config import Secret
from controlroom.errors import ConfigError
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
    account_matches,
    domain_of,
    normalise_domain,
    normalise_name,
    soql_like,
    soql_quote,
)

from ._fakes import FakeHubSpot, FakeSalesforce, serve


class Sleeps:
    def __init__(self) -> None:
        self.calls: list[float] = []

    async def __call__(self, seconds: float) -> None:
        self.calls.append(seconds)


# -- shared matching ---------------------------------------------------------------------


def test_names_are_compared_without_case_accents_or_legal_suffixes() -> None:
    assert normalise_name("ACME Corp.") == "acme"
    assert normalise_name("Société Générale S.A.") == "societe generale"
    assert normalise_name("Inc") == "inc"


def test_domains_are_normalised_from_urls_and_emails() -> None:
    assert normalise_domain("https://WWW.Acme.example/path?q=1") == "acme.example"
    assert normalise_domain("not a domain") == ""
    assert domain_of("Bob@EU.Acme.example") == "eu.acme.example"
    assert domain_of("no-at-sign") == ""


def test_a_subdomain_matches_its_parent_account_but_not_a_lookalike() -> None:
    acme = Account(id="1", name="Acme", domains=("acme.example",))
    assert account_matches(acme, CustomerQuery(domains=("eu.acme.example",)), scan_text=False)
    assert not account_matches(acme, CustomerQuery(domains=("notacme.example",)), scan_text=False)


# -- FileCrm -----------------------------------------------------------------------------


async def test_the_shipped_accounts_include_the_sandbox_customers() -> None:
    crm = FileCrm.default()
    assert isinstance(crm, CrmConnector)
    names = {a.name for a in crm.accounts}
    assert {"Acme Corporation", "Globex Corporation", "Initech"} <= names
    assert all(a.owner_email.endswith("@northwind.example") for a in crm.accounts)


async def test_file_crm_finds_by_id_domain_alias_and_text() -> None:
    crm = FileCrm.default()
    assert [a.id for a in await crm.find_accounts(CustomerQuery(account_ids=("ACC-1002",)))] == [
        "ACC-1002"
    ]
    by_domain = await crm.find_accounts(CustomerQuery(domains=("support.acme.example",)))
    assert [a.name for a in by_domain] == ["Acme Corporation"]
    by_alias = await crm.find_accounts(CustomerQuery(names=("globex",)))
    assert [a.name for a in by_alias] == ["Globex Corporation"]
    by_text = await crm.find_accounts(CustomerQuery(text="the initech dashboards are down"))
    assert [a.name for a in by_text] == ["Initech"]
    assert await crm.find_accounts(CustomerQuery()) == []
    assert await crm.get_account("ACC-1001") == by_domain[0]
    assert await crm.get_account("nope") is None


async def test_file_crm_ranks_id_matches_before_text_matches_and_honours_limit() -> None:
    crm = FileCrm.default()
    q = CustomerQuery(account_ids=("ACC-1003",), text="acme and globex", limit=2)
    found = await crm.find_accounts(q)
    assert [a.id for a in found] == ["ACC-1003", "ACC-1001"]


async def test_file_crm_reads_csv_with_semicolon_lists(tmp_path: Path) -> None:
    path = tmp_path / "accounts.csv"
    path.write_text(
        "id,name,domains,aliases,tier,arr,open_cases,owner_email\n"
        "A1,Hooli,hooli.example;hooli.test,Hooli XYZ,Gold,1000,,Gavin@ControlRoom.example\n",
        encoding="utf-8",
    )
    crm = FileCrm.from_path(path)
    (account,) = crm.accounts
    assert account.domains == ("hooli.example", "hooli.test")
    assert account.aliases == ("Hooli XYZ",)
    assert account.arr == 1000.0
    assert account.open_cases is None
    assert account.owner_email == "gavin@controlroom.example"


def test_file_crm_reports_every_bad_row_with_its_key(tmp_path: Path) -> None:
    path = tmp_path / "accounts.yaml"
    path.write_text(
        "accounts:\n"
        "  - {id: A1, name: One, arr: lots}\n"
        "  - {id: A1, name: Dup}\n"
        "  - {id: A3, name: Three, owner_email: nobody, domains: ['???']}\n",
        encoding="utf-8",
    )
    with pytest.raises(ConfigError) as info:
        FileCrm.from_path(path)
    keys = {key for key, _, _ in info.value.problems}
    assert keys == {
        "accounts[0].arr",
        "accounts[1].id",
        "accounts[2].owner_email",
        "accounts[2].domains",
    }
    assert all(source == str(path) for _, source, _ in info.value.problems)


def test_file_crm_rejects_a_file_without_an_accounts_list(tmp_path: Path) -> None:
    path = tmp_path / "accounts.yaml"
    path.write_text("customers: []\n", encoding="utf-8")
    with pytest.raises(ConfigError, match="accounts"):
        FileCrm.from_path(path)
    with pytest.raises(ConfigError, match="cannot read"):
        FileCrm.from_path(tmp_path / "missing.yaml")


# -- Salesforce --------------------------------------------------------------------------


def test_soql_literals_escape_quotes_backslashes_and_like_wildcards() -> None:
    assert soql_quote("O'Brien\\x") == "'O\\'Brien\\\\x'"
    assert soql_quote("a\nb") == "'a\\nb'"
    assert soql_like("100%_off", prefix="%", suffix="%") == "'%100\\%\\_off%'"


@pytest.fixture
async def salesforce() -> AsyncIterator[tuple[FakeSalesforce, str]]:
    fake = FakeSalesforce()
    async with serve(fake.app()) as url:
        yield fake, url


def sf_client(url: str, fake: FakeSalesforce, sleep: Sleeps, **kw: object) -> SalesforceCrm:
    params: dict[str, object] = {
        "login_url": url,
        "client_id": fake.client_id,
        "client_secret": Secret(fake.client_secret),
        "sleep": sleep,
        "rand": lambda: 0.5,
        "timeout": 2.0,
    }
    params.update(kw)
    return SalesforceCrm(**params)  # type: ignore[arg-type]


async def test_salesforce_maps_accounts_with_owner_and_open_cases(
    salesforce: tuple[FakeSalesforce, str],
) -> None:
    fake, url = salesforce
    async with sf_client(url, fake, Sleeps()) as crm:
        assert isinstance(crm, SalesforceCrm)
        found = await crm.find_accounts(CustomerQuery(domains=("eu.acme.example",)))
    assert found == [
        Account(
            id="001Dn000000AcmeAAA",
            name="Acme Corporation",
            domains=("acme.example",),
            tier="Customer - Direct",
            arr=1250000.0,
            open_cases=3,
            owner_email="dana.whitfield@controlroom.example",
            owner_name="Dana Whitfield",
            crm_url=f"{url}/001Dn000000AcmeAAA",
            source="salesforce",
        )
    ]
    assert fake.token_requests[0]["grant_type"] == "client_credentials"
    assert "Website LIKE '%acme.example%'" in fake.queries[0]


async def test_salesforce_treats_a_null_cases_relationship_as_zero_open_cases(
    salesforce: tuple[FakeSalesforce, str],
) -> None:
    fake, url = salesforce
    async with sf_client(url, fake, Sleeps()) as crm:
        account = await crm.get_account("001Dn00000AcmeWAAA")
    assert account is not None
    assert (account.open_cases, account.arr, account.domains) == (0, None, ("acmewidgets.example",))


async def test_salesforce_names_with_quotes_and_wildcards_match_literally(
    salesforce: tuple[FakeSalesforce, str],
) -> None:
    fake, url = salesforce
    async with sf_client(url, fake, Sleeps()) as crm:
        found = await crm.find_accounts(CustomerQuery(names=("O'Reilly 100% Labs",)))
        none = await crm.find_accounts(CustomerQuery(names=("x' OR Name LIKE '%",)))
    assert [a.name for a in found] == ["O'Reilly 100% Labs"]
    assert found[0].tier == ""
    assert none == []
    assert "Name LIKE 'O\\'Reilly 100\\% Labs%'" in fake.queries[0]


async def test_salesforce_password_flow_sends_the_user_credentials(
    salesforce: tuple[FakeSalesforce, str],
) -> None:
    fake, url = salesforce
    crm = sf_client(url, fake, Sleeps(), username=fake.username, password=Secret(fake.password))
    async with crm:
        assert await crm.get_account("001Dn000000OreiAAA") is not None
    assert fake.token_requests[0]["grant_type"] == "password"
    assert fake.token_requests[0]["username"] == fake.username


async def test_salesforce_refreshes_an_expired_session_once(
    salesforce: tuple[FakeSalesforce, str],
) -> None:
    fake, url = salesforce
    async with sf_client(url, fake, Sleeps()) as crm:
        assert await crm.get_account("001Dn000000AcmeAAA") is not None
        fake.expire_sessions()
        assert await crm.get_account("001Dn000000AcmeAAA") is not None
    assert fake.issued == 2


async def test_salesforce_sessions_refused_after_a_refresh_are_an_auth_failure(
    salesforce: tuple[FakeSalesforce, str],
) -> None:
    fake, url = salesforce
    fake.reject_sessions = True
    async with sf_client(url, fake, Sleeps()) as crm:
        with pytest.raises(CrmAuthFailed, match=r"session refused \(INVALID_SESSION_ID\)"):
            await crm.get_account("001Dn000000AcmeAAA")
    assert fake.issued == 2


async def test_salesforce_api_limit_is_retryable_later_and_other_4xx_are_not(
    salesforce: tuple[FakeSalesforce, str],
) -> None:
    fake, url = salesforce
    limit = [{"message": "TotalRequests Limit exceeded.", "errorCode": "REQUEST_LIMIT_EXCEEDED"}]
    bad = [
        {"message": "No such column 'Tier__c' on entity 'Account'.", "errorCode": "INVALID_FIELD"}
    ]
    fake.fail = [(403, limit), (400, bad)]
    async with sf_client(url, fake, Sleeps()) as crm:
        with pytest.raises(CrmUnavailable, match="API request limit exceeded") as first:
            await crm.get_account("001Dn000000AcmeAAA")
        with pytest.raises(CrmUnavailable, match=r"HTTP 400 \(INVALID_FIELD\)") as second:
            await crm.get_account("001Dn000000AcmeAAA")
    assert (first.value.retryable, second.value.retryable) == (True, False)
    assert not isinstance(first.value, CrmAuthFailed)


async def test_salesforce_bad_credentials_fail_without_retry_or_leaking_the_secret(
    salesforce: tuple[FakeSalesforce, str],
) -> None:
    fake, url = salesforce
    sleeps = Sleeps()
    async with sf_client(url, fake, sleeps, client_secret=Secret("wrong-secret-xyz")) as crm:
        with pytest.raises(CrmAuthFailed) as info:
            await crm.find_accounts(CustomerQuery(names=("Acme",)))
    assert info.value.retryable is False
    assert "invalid_client" in str(info.value)
    assert "wrong-secret-xyz" not in str(info.value)
    assert sleeps.calls == []


async def test_salesforce_retries_server_errors_with_capped_jittered_backoff(
    salesforce: tuple[FakeSalesforce, str],
) -> None:
    fake, url = salesforce
    fake.fail = [500, 503]
    sleeps = Sleeps()
    async with sf_client(url, fake, sleeps) as crm:
        found = await crm.find_accounts(CustomerQuery(names=("Acme Corporation",)))
    assert [a.name for a in found] == ["Acme Corporation"]
    assert sleeps.calls == [0.125, 0.25]


async def test_salesforce_down_raises_crm_unavailable_after_the_last_attempt(
    salesforce: tuple[FakeSalesforce, str],
) -> None:
    fake, url = salesforce
    fake.fail = [503, 503, 503]
    sleeps = Sleeps()
    crm = sf_client(url, fake, sleeps, retry=RetryPolicy(attempts=3, base=1, cap=1.5))
    async with crm:
        with pytest.raises(CrmUnavailable) as info:
            await crm.find_accounts(CustomerQuery(names=("Acme",)))
    assert (info.value.status, info.value.retryable) == (503, True)
    assert sleeps.calls == [0.5, 0.75]


async def test_salesforce_malformed_answer_is_a_bad_response(
    salesforce: tuple[FakeSalesforce, str],
) -> None:
    fake, url = salesforce
    fake.malformed = True
    async with sf_client(url, fake, Sleeps()) as crm:
        with pytest.raises(CrmBadResponse, match="not JSON"):
            await crm.find_accounts(CustomerQuery(names=("Acme",)))


async def test_salesforce_timeout_is_unavailable(salesforce: tuple[FakeSalesforce, str]) -> None:
    fake, url = salesforce
    fake.hang = True
    sleeps = Sleeps()
    crm = sf_client(url, fake, sleeps, timeout=0.2, retry=RetryPolicy(attempts=2))
    async with crm:
        with pytest.raises(CrmUnavailable, match=r"timed out after 0\.2s"):
            await crm.find_accounts(CustomerQuery(names=("Acme",)))
    assert len(sleeps.calls) == 1


async def test_salesforce_ignores_ids_that_are_not_salesforce_ids(
    salesforce: tuple[FakeSalesforce, str],
) -> None:
    fake, url = salesforce
    async with sf_client(url, fake, Sleeps()) as crm:
        assert await crm.get_account("' OR Id != '") is None
        assert await crm.find_accounts(CustomerQuery(account_ids=("ACC-1",))) == []
        assert await crm.get_account("001Dn000000NoneAAA") is None
    assert len(fake.queries) == 1


def test_salesforce_refuses_field_names_that_are_not_identifiers() -> None:
    with pytest.raises(ValueError, match="tier_field"):
        SalesforceCrm(
            login_url="https://login.example",
            client_id="x",
            client_secret=Secret("y"),
            tier_field="Type FROM User--",
        )


# -- HubSpot -----------------------------------------------------------------------------


@pytest.fixture
async def hubspot() -> AsyncIterator[tuple[FakeHubSpot, str]]:
    fake = FakeHubSpot()
    async with serve(fake.app()) as url:
        yield fake, url


def hs_client(url: str, fake: FakeHubSpot, sleep: Sleeps, **kw: object) -> HubSpotCrm:
    params: dict[str, object] = {
        "token": Secret(fake.token),
        "base_url": url,
        "portal_id": "2424242",
        "tier_property": "tier",
        "open_cases_property": "open_tickets",
        "sleep": sleep,
        "rand": lambda: 0.5,
        "timeout": 2.0,
    }
    params.update(kw)
    return HubSpotCrm(**params)  # type: ignore[arg-type]


async def test_hubspot_search_maps_companies_and_owner_email(
    hubspot: tuple[FakeHubSpot, str],
) -> None:
    fake, url = hubspot
    async with hs_client(url, fake, Sleeps()) as crm:
        found = await crm.find_accounts(CustomerQuery(domains=("status.globex.example",)))
    assert found == [
        Account(
            id="18003",
            name="Globex Corporation",
            domains=("globex.example",),
            tier="Business",
            arr=480000.5,
            open_cases=1,
            owner_email="marco.ruiz@controlroom.example",
            owner_name="Marco Ruiz",
            crm_url="https://app.hubspot.com/contacts/2424242/record/0-2/18003",
            source="hubspot",
        )
    ]
    (search,) = fake.searches
    assert search["filterGroups"] == [
        {
            "filters": [
                {
                    "propertyName": "domain",
                    "operator": "IN",
                    "values": ["status.globex.example", "globex.example"],
                }
            ]
        }
    ]
    assert {"name", "domain", "hs_object_id", "annualrevenue", "hubspot_owner_id"} <= set(
        search["properties"]
    )


async def test_hubspot_name_search_keeps_only_exact_names_and_caches_owners(
    hubspot: tuple[FakeHubSpot, str],
) -> None:
    fake, url = hubspot
    async with hs_client(url, fake, Sleeps()) as crm:
        first = await crm.find_accounts(CustomerQuery(names=("ACME",)))
        second = await crm.find_accounts(CustomerQuery(names=("Acme Corp",)))
    assert [a.id for a in first] == ["18001"]
    assert [a.id for a in second] == ["18001"]
    assert fake.owner_requests == 1


async def test_hubspot_sends_at_most_five_filter_groups(hubspot: tuple[FakeHubSpot, str]) -> None:
    fake, url = hubspot
    names = tuple(f"Company {i}" for i in range(8))
    async with hs_client(url, fake, Sleeps()) as crm:
        await crm.find_accounts(
            CustomerQuery(account_ids=("18001",), domains=("a.example",), names=names)
        )
    assert len(fake.searches[0]["filterGroups"]) == 5


async def test_hubspot_get_account_handles_unknown_and_non_numeric_ids(
    hubspot: tuple[FakeHubSpot, str],
) -> None:
    fake, url = hubspot
    async with hs_client(url, fake, Sleeps(), portal_id="") as crm:
        acme = await crm.get_account("18001")
        widgets = await crm.get_account("18002")
        assert await crm.get_account("99999") is None
        assert await crm.get_account("../owners/1") is None
    assert acme is not None and acme.owner_email == "dana.whitfield@controlroom.example"
    assert acme.crm_url == ""
    assert widgets is not None
    assert (widgets.owner_email, widgets.arr, widgets.tier) == ("", None, "")


async def test_hubspot_without_the_owners_scope_still_returns_the_company(
    hubspot: tuple[FakeHubSpot, str],
) -> None:
    fake, url = hubspot
    fake.owners_forbidden = True
    async with hs_client(url, fake, Sleeps()) as crm:
        account = await crm.get_account("18001")
    assert account is not None
    assert (account.name, account.owner_email, account.arr) == ("Acme Corporation", "", 1250000.0)


async def test_hubspot_rejected_token_is_an_auth_failure(hubspot: tuple[FakeHubSpot, str]) -> None:
    fake, url = hubspot
    async with hs_client(url, fake, Sleeps(), token=Secret("pat-na1-revoked")) as crm:
        with pytest.raises(CrmAuthFailed, match="INVALID_AUTHENTICATION") as info:
            await crm.find_accounts(CustomerQuery(names=("Acme",)))
    assert "pat-na1-revoked" not in str(info.value)


async def test_hubspot_honours_retry_after_on_429(hubspot: tuple[FakeHubSpot, str]) -> None:
    fake, url = hubspot
    fake.fail, fake.retry_after = [429], "1"
    sleeps = Sleeps()
    async with hs_client(url, fake, sleeps) as crm:
        assert len(await crm.find_accounts(CustomerQuery(names=("Globex",)))) == 1
    assert sleeps.calls == [1.0]


async def test_hubspot_long_retry_after_gives_up_at_once(hubspot: tuple[FakeHubSpot, str]) -> None:
    fake, url = hubspot
    fake.fail, fake.retry_after = [429, 429, 429], "60"
    sleeps = Sleeps()
    async with hs_client(url, fake, sleeps) as crm:
        with pytest.raises(CrmUnavailable, match="rate limited for 60s") as info:
            await crm.find_accounts(CustomerQuery(names=("Globex",)))
    assert info.value.retryable is True
    assert sleeps.calls == []


async def test_hubspot_server_errors_exhaust_into_unavailable(
    hubspot: tuple[FakeHubSpot, str],
) -> None:
    fake, url = hubspot
    fake.fail = [500, 502, 504]
    sleeps = Sleeps()
    async with hs_client(url, fake, sleeps) as crm:
        with pytest.raises(CrmUnavailable, match="HTTP 504"):
            await crm.find_accounts(CustomerQuery(names=("Globex",)))
    assert len(fake.requests) == 3
    assert sleeps.calls == [0.125, 0.25]


async def test_hubspot_malformed_and_timeout(hubspot: tuple[FakeHubSpot, str]) -> None:
    fake, url = hubspot
    fake.malformed = True
    async with hs_client(url, fake, Sleeps()) as crm:
        with pytest.raises(CrmBadResponse):
            await crm.find_accounts(CustomerQuery(names=("Globex",)))
    fake.malformed, fake.hang = False, True
    crm = hs_client(url, fake, Sleeps(), timeout=0.2, retry=RetryPolicy(attempts=1))
    async with crm:
        with pytest.raises(CrmUnavailable, match="timed out"):
            await crm.find_accounts(CustomerQuery(names=("Globex",)))


async def test_connection_refused_is_unavailable() -> None:
    crm = HubSpotCrm(
        token=Secret("t"),
        base_url="http://127.0.0.1:9",
        sleep=Sleeps(),
        retry=RetryPolicy(attempts=2),
    )
    async with crm:
        with pytest.raises(CrmUnavailable, match="connection failed"):
            await crm.find_accounts(CustomerQuery(names=("Globex",)))
