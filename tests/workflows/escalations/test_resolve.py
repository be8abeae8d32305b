"""Customer resolution: configurable rules, in order, over a CRM connector."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from controlroom.errors import ConfigError
from controlroom.workflows.escalations.crm import (
    Account,
    CrmUnavailable,
    CustomerQuery,
    FileCrm,
)
from controlroom.workflows.escalations.resolve import (
    Ambiguous,
    ChannelInfo,
    Resolved,
    ResolveInput,
    ResolveRules,
    Unknown,
    extract_emails,
    extract_name_candidates,
    resolve_customer,
)

FIXTURES = Path(__file__).parents[2] / "fixtures" / "escalations"
OWN_TEAM = "T0CONTROL"


def conversations_info(**changes: Any) -> dict[str, Any]:
    payload: dict[str, Any] = json.loads((FIXTURES / "conversations.info.json").read_text())
    assert payload["ok"] is True
    payload["channel"].update(changes)
    return payload


RULES = ResolveRules(
    connected_teams={"T0ACME": "ACC-1001"},
    channels={"C0GLOBEX": "ACC-1002"},
    account_id_patterns=(r"\bACC-\d{4}\b",),
    internal_domains=("controlroom.example",),
)
PLAIN = ChannelInfo(id="C0SUPPORT")


class DownCrm:
    """A CRM whose every call fails like an unreachable server."""

    name = "down"

    async def find_accounts(self, query: CustomerQuery) -> list[Account]:
        raise CrmUnavailable("down", "timed out after 5s")

    async def get_account(self, account_id: str) -> Account | None:
        raise CrmUnavailable("down", "timed out after 5s")

    async def aclose(self) -> None:
        return None


async def resolve(
    text: str, *, channel: ChannelInfo = PLAIN, author: str = "", rules: ResolveRules = RULES
) -> Any:
    inp = ResolveInput(text=text, channel=channel, own_team_id=OWN_TEAM, author_email=author)
    return await resolve_customer(inp, rules, FileCrm.default())


def test_channel_info_reads_the_real_conversations_info_shape() -> None:
    plain = ChannelInfo.from_slack(conversations_info()["channel"])
    assert plain == ChannelInfo(id="C012AB3CD", is_ext_shared=False, connected_team_ids=())
    shared = ChannelInfo.from_slack(
        conversations_info(is_ext_shared=True, connected_team_ids=[OWN_TEAM, "T0ACME"])["channel"]
    )
    assert shared.is_ext_shared and shared.connected_team_ids == (OWN_TEAM, "T0ACME")


async def test_a_slack_connect_channel_maps_to_the_customer_team() -> None:
    channel = ChannelInfo("C0SHARED", is_ext_shared=True, connected_team_ids=(OWN_TEAM, "T0ACME"))
    result = await resolve("Globex is also affected", channel=channel)
    assert isinstance(result, Resolved)
    assert (result.account.id, result.rule, result.evidence) == (
        "ACC-1001",
        "channel",
        "Slack Connect team T0ACME",
    )


async def test_a_per_customer_channel_maps_to_its_account() -> None:
    result = await resolve("dashboards down", channel=ChannelInfo("C0GLOBEX"))
    assert isinstance(result, Resolved) and result.account.name == "Globex Corporation"


async def test_an_unmapped_shared_channel_falls_through_to_the_text() -> None:
    channel = ChannelInfo("C0SHARED", is_ext_shared=True, connected_team_ids=(OWN_TEAM, "T0ZZZ"))
    result = await resolve("Initech cannot log in", channel=channel)
    assert isinstance(result, Resolved) and (result.account.id, result.rule) == ("ACC-1003", "name")


async def test_account_ids_in_the_text_are_found_by_pattern() -> None:
    result = await resolve("Ticket for ACC-1004: SSO broken (also see ACC-9999)")
    assert isinstance(result, Resolved)
    assert (result.account.name, result.rule) == ("Umbrella Health", "account_id")


async def test_customer_emails_resolve_by_domain_and_ours_are_ignored() -> None:
    text = (
        "cc <mailto:dana.whitfield@controlroom.example|dana> "
        "and <mailto:ops@eu.globex.example|ops@eu.globex.example>"
    )
    result = await resolve(text)
    assert isinstance(result, Resolved)
    assert (result.account.id, result.rule, result.evidence) == (
        "ACC-1002",
        "email",
        "eu.globex.example",
    )
    assert result.explanation == "email domain eu.globex.example"


async def test_free_mail_addresses_do_not_identify_a_customer() -> None:
    result = await resolve("from someone@gmail.com: it is broken")
    assert isinstance(result, Unknown)


async def test_names_in_the_text_resolve_including_lowercase_mentions() -> None:
    result = await resolve("the acme corp dashboard is down again")
    assert isinstance(result, Resolved) and result.account.id == "ACC-1001"


async def test_the_author_domain_is_the_last_resort() -> None:
    result = await resolve("everything is on fire", author="jo@initech.example")
    assert isinstance(result, Resolved) and (result.account.id, result.rule) == (
        "ACC-1003",
        "author",
    )
    internal = await resolve("everything is on fire", author="agent@controlroom.example")
    assert isinstance(internal, Unknown)


async def test_two_customers_named_is_ambiguous() -> None:
    result = await resolve("Acme and Globex both report errors")
    assert isinstance(result, Ambiguous)
    assert {a.id for a in result.candidates} == {"ACC-1001", "ACC-1002"}
    assert result.rule == "name"


async def test_a_later_rule_can_narrow_an_ambiguous_answer() -> None:
    result = await resolve("Acme and Globex both report errors", author="ops@globex.example")
    assert isinstance(result, Resolved)
    assert (result.account.id, result.rule) == ("ACC-1002", "name+author")
    assert result.explanation == "author's email domain globex.example"


async def test_the_configured_order_decides_which_rule_wins() -> None:
    rules = RULES.model_copy(update={"order": ("author", "name")})
    result = await resolve("Acme is down", author="ops@globex.example", rules=rules)
    assert isinstance(result, Resolved) and result.rule == "author"


async def test_configured_aliases_name_accounts() -> None:
    rules = RULES.model_copy(update={"aliases": {"roadrunner": "ACC-1004"}})
    result = await resolve("Project Roadrunner outage", rules=rules)
    assert isinstance(result, Resolved) and result.account.id == "ACC-1004"


async def test_nothing_to_go_on_is_unknown_with_a_reason() -> None:
    result = await resolve("it is broken")
    assert isinstance(result, Unknown)
    assert result.crm_error is None
    assert (result.reason, result.tried) == ("no account matched (name)", ("name",))
    empty = await resolve("")
    assert isinstance(empty, Unknown)
    assert empty.reason == "nothing in the channel, text or author identifies a customer"


async def test_a_crm_failure_is_unknown_with_the_error_and_the_mapped_hint() -> None:
    inp = ResolveInput(text="x", channel=ChannelInfo("C0GLOBEX"), own_team_id=OWN_TEAM)
    result = await resolve_customer(inp, RULES, DownCrm())
    assert isinstance(result, Unknown)
    assert result.crm_error is not None and result.crm_error.retryable
    assert result.hint_account_id == "ACC-1002"
    assert "CRM unavailable" in result.reason


def test_emails_and_name_candidates_are_extracted_from_slack_markup() -> None:
    assert extract_emails("<mailto:A@B.example|A@B.example> and c@d.example") == [
        "a@b.example",
        "c@d.example",
    ]
    candidates = extract_name_candidates("Hi team, <@U123> says Acme Corp is down. Thanks")
    assert candidates[:3] == ["Acme Corp", "Acme", "Corp"]
    assert "Hi" not in candidates and "Thanks" not in candidates


def test_bad_rules_are_configuration_errors_naming_the_key() -> None:
    with pytest.raises(ConfigError) as info:
        ResolveRules.from_config(
            {
                "order": ["channel", "astrology"],
                "account_id_patterns": ["(unclosed"],
                "internal_domains": ["not a domain"],
            }
        )
    keys = {k for k, _, _ in info.value.problems}
    assert keys == {
        "workflows.escalations.resolve.order",
        "workflows.escalations.resolve.account_id_patterns",
        "workflows.escalations.resolve.internal_domains",
    }
