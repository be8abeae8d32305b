"""Room names: slugged to Slack's channel-name rules, numbered from the database."""

from __future__ import annotations

import asyncio
import re
from datetime import date, datetime

import pytest
from hypothesis import given
from hypothesis import strategies as st

from controlroom.errors import ConfigError
from controlroom.store.db import Database
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

SLACK_NAME = re.compile(r"[a-z0-9_-]{1,80}")


@pytest.mark.parametrize(
    ("raw", "slug"),
    [
        ("Acme Corporation", "acme-corporation"),
        ("Société Générale, S.A.", "societe-generale-s-a"),
        ("Müller & Söhne GmbH", "muller-and-sohne-gmbh"),
        ("Straße Øresund Łódź", "strasse-oresund-lodz"),
        ("  --Foo__Bar--  ", "foo_bar"),
        ("a - _ - b", "a-b"),
        ("O'Reilly", "oreilly"),
        ("ACME_incident", "acme_incident"),
        ("日本電気", "unknown"),
        ("", "unknown"),
        ("!!!", "unknown"),
    ],
)
def test_slugify_follows_slack_channel_name_rules(raw: str, slug: str) -> None:
    assert slugify(raw) == slug


@given(st.text(max_size=300))
def test_any_text_slugs_to_a_valid_channel_name(text: str) -> None:
    slug = slugify(text)
    assert SLACK_NAME.fullmatch(slug)
    assert not slug.startswith(("-", "_")) and not slug.endswith(("-", "_"))
    assert "--" not in slug


def test_room_name_uses_the_default_template() -> None:
    name = room_name(DEFAULT_TEMPLATE, customer="Acme Corporation", when=date(2026, 11, 30), seq=4)
    assert name == "incident-acme-corporation-2026-004"
    assert room_name(DEFAULT_TEMPLATE, customer="", when=date(2026, 1, 1), seq=1000) == (
        "incident-unknown-2026-1000"
    )


def test_room_name_shortens_the_customer_to_keep_year_and_sequence() -> None:
    when = datetime(2026, 11, 30, 3, 47)
    name = room_name(DEFAULT_TEMPLATE, customer="Very Long Customer Name " * 8, when=when, seq=7)
    assert len(name) == 80 or len(name) == 79
    assert name.startswith("incident-very-long-customer-name-")
    assert name.endswith("-2026-007")
    assert SLACK_NAME.fullmatch(name) and "--" not in name


def test_room_name_templates_may_use_date_parts() -> None:
    name = room_name(
        "INC_{yy}{mm}{dd}_{customer}_{seq}", customer="Globex", when=date(2026, 3, 9), seq=12
    )
    assert name == "inc_260309_globex_12"


@pytest.mark.parametrize(
    ("template", "message"),
    [
        ("incident-{client}-{seq}", "unknown field"),
        ("incident-{customer}-{yyyy}", "must contain {seq}"),
        ("incident-{customer", "invalid template"),
        ("x" * 90 + "-{seq}", "longer than 80"),
    ],
)
def test_bad_templates_are_configuration_errors(template: str, message: str) -> None:
    with pytest.raises(ConfigError, match=re.escape(message)) as info:
        validate_template(template)
    assert info.value.problems[0][0] == "workflows.escalations.room_name"


def test_valid_template_passes_validation() -> None:
    validate_template(DEFAULT_TEMPLATE)


def test_next_free_name_adds_a_suffix_on_clash() -> None:
    taken = {"incident-acme-2026-004", "incident-acme-2026-004-2"}
    assert next_free_name("incident-acme-2026-005", taken.__contains__) == "incident-acme-2026-005"
    assert next_free_name("incident-acme-2026-004", taken.__contains__) == (
        "incident-acme-2026-004-3"
    )


def test_next_free_name_keeps_suffixed_names_within_80_characters() -> None:
    base = "a" * 79 + "b"
    name = next_free_name(base, lambda n: n == base)
    assert name == "a" * 78 + "-2"


def test_next_free_name_gives_up_after_the_limit() -> None:
    with pytest.raises(NamingError, match="after 5 attempts"):
        next_free_name("incident", lambda _: True, limit=5)


async def test_async_next_free_name_asks_an_async_predicate() -> None:
    asked: list[str] = []

    async def taken(name: str) -> bool:
        asked.append(name)
        return len(asked) < 3

    assert await anext_free_name("incident-x", taken) == "incident-x-3"
    assert asked == ["incident-x", "incident-x-2", "incident-x-3"]


async def test_sequences_count_per_workspace_and_year(db: Database) -> None:
    seq = SequenceAllocator(db)
    assert [await seq.next("T1", 2026) for _ in range(3)] == [1, 2, 3]
    assert await seq.next("T2", 2026) == 1
    assert await seq.next("T1", 2027) == 1
    assert await seq.next("T1", 2026) == 4


async def test_concurrent_callers_never_draw_the_same_number(db: Database) -> None:
    """Each draw runs on its own connection in its own thread."""
    seq = SequenceAllocator(db)
    numbers = await asyncio.gather(*(seq.next("T1", 2026) for _ in range(60)))
    assert sorted(numbers) == list(range(1, 61))


async def test_two_databases_objects_on_one_store_share_the_counter(db: Database) -> None:
    other = Database(db.url)
    try:
        a, b = SequenceAllocator(db), SequenceAllocator(other)
        drawn = await asyncio.gather(*(x.next("T9", 2026) for x in (a, b) * 10))
        assert sorted(drawn) == list(range(1, 21))
    finally:
        other.dispose()
