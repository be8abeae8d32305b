"""Incident room names: a template such as ``incident-{customer}-{yyyy}-{seq:03}``, slugged
to Slack's channel-name rules, with the sequence number from the database.

Slack (``conversations.create``) accepts only lowercase letters, digits, hyphens and
underscores, at most 80 characters, and never fixes a name for you. ``slugify``
transliterates accents (``Café Ünïon`` -> ``cafe-union``), replaces everything else with
hyphens, collapses repeats and trims the ends. When a name is too long, the customer part
is shortened so the year and sequence survive.

The sequence is one counter per (workspace, year), incremented by a single atomic upsert
(``INSERT ... ON CONFLICT DO UPDATE ... RETURNING``) on SQLite and PostgreSQL alike, so
concurrent workers never draw the same number. A clash that still happens (someone made
the channel by hand) is settled by ``next_free_name``, which adds ``-2``, ``-3``...
"""

from __future__ import annotations

import re
import string
import unicodedata
from collections.abc import Awaitable, Callable
from datetime import date, datetime
from typing import Any

from sqlalchemy import Column, Integer, String, Table
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Connection

from controlroom.errors import ConfigError, ControlRoomError
from controlroom.store.db import Database, metadata

__all__ = [
    "DEFAULT_TEMPLATE",
    "ROOM_NAME_MAX",
    "NamingError",
    "SequenceAllocator",
    "allocate_sequence",
    "anext_free_name",
    "escalation_sequences",
    "next_free_name",
    "room_name",
    "slugify",
    "validate_template",
]

ROOM_NAME_MAX = 80
DEFAULT_TEMPLATE = "incident-{customer}-{yyyy}-{seq:03}"
_FIELDS = frozenset({"customer", "yyyy", "yy", "mm", "dd", "seq"})


class NamingError(ControlRoomError):
    """No usable room name (every suffix taken, or a template that cannot fit)."""


escalation_sequences = Table(
    "escalation_sequences",
    metadata,
    Column("workspace", String(64), primary_key=True),
    Column("year", Integer, primary_key=True),
    Column("value", Integer, nullable=False),
)

_TRANSLIT = str.maketrans(
    {
        "ß": "ss",
        "ẞ": "ss",
        "æ": "ae",
        "Æ": "ae",
        "œ": "oe",
        "Œ": "oe",
        "ø": "o",
        "Ø": "o",
        "ł": "l",
        "Ł": "l",
        "đ": "d",
        "Đ": "d",
        "ð": "d",
        "Ð": "d",
        "þ": "th",
        "Þ": "th",
        "\u0131": "i",
        "&": "-and-",
        "'": "",
        "\u2019": "",
    }
)
_DISALLOWED = re.compile(r"[^a-z0-9_-]+")
_SEPARATORS = re.compile(r"[-_]*-[-_]*")
_UNDERSCORES = re.compile(r"_{2,}")


def slugify(text: str, *, fallback: str = "unknown", max_len: int = ROOM_NAME_MAX) -> str:
    """``"Société Générale, S.A."`` -> ``"societe-generale-s-a"``; ``fallback`` when
    nothing usable is left (an empty or non-Latin name)."""
    t = unicodedata.normalize("NFKD", text.translate(_TRANSLIT))
    t = "".join(c for c in t if not unicodedata.combining(c)).lower()
    t = _DISALLOWED.sub("-", t)
    t = _SEPARATORS.sub("-", t)
    t = _UNDERSCORES.sub("_", t).strip("-_")
    t = t[:max_len].rstrip("-_")
    return t or fallback


def validate_template(template: str, *, key: str = "workflows.escalations.room_name") -> None:
    """Raise ``ConfigError`` unless ``template`` uses only known fields and includes
    ``{seq}`` (without it, two incidents in a year would want the same name)."""
    problems: list[tuple[str, str, str]] = []
    try:
        parsed = list(string.Formatter().parse(template))
    except ValueError as exc:
        raise ConfigError([(key, "configuration", f"invalid template: {exc}")]) from None
    names = {f for _, f, _, _ in parsed if f is not None}
    unknown = sorted(n for n in names if n not in _FIELDS)
    if unknown:
        known = ", ".join(sorted(_FIELDS))
        problems.append((key, "configuration", f"unknown field(s) {unknown} (known: {known})"))
    if "seq" not in names:
        problems.append((key, "configuration", "must contain {seq}"))
    if problems:
        raise ConfigError(problems)
    try:
        room_name(template, customer="x", when=date(2000, 1, 1), seq=1)
    except (ValueError, NamingError) as exc:
        raise ConfigError([(key, "configuration", str(exc))]) from None


def _render(template: str, customer: str, when: date, seq: int) -> str:
    values: dict[str, Any] = {
        "customer": customer,
        "yyyy": f"{when.year:04d}",
        "yy": f"{when.year % 100:02d}",
        "mm": f"{when.month:02d}",
        "dd": f"{when.day:02d}",
        "seq": seq,
    }
    return slugify(template.format_map(values), fallback="", max_len=10_000)


def room_name(
    template: str,
    *,
    customer: str,
    when: date | datetime,
    seq: int,
    max_len: int = ROOM_NAME_MAX,
) -> str:
    """The room name for this customer, date and sequence number. The customer part is
    shortened first when the name would exceed ``max_len``."""
    day = when.date() if isinstance(when, datetime) else when
    slug = slugify(customer)
    name = _render(template, slug, day, seq)
    if len(name) > max_len:
        excess = len(name) - max_len
        shorter = slug[: max(0, len(slug) - excess)].rstrip("-_")
        name = _render(template, shorter, day, seq)
    if len(name) > max_len:
        raise NamingError(f"template {template!r} renders longer than {max_len} characters")
    if not name:
        raise NamingError(f"template {template!r} renders an empty name")
    return name


def _candidates(base: str, max_len: int, limit: int) -> list[str]:
    out = [base[:max_len].rstrip("-_")]
    for i in range(2, limit + 1):
        suffix = f"-{i}"
        out.append(base[: max_len - len(suffix)].rstrip("-_") + suffix)
    return out


def next_free_name(
    base: str,
    taken: Callable[[str], bool],
    *,
    max_len: int = ROOM_NAME_MAX,
    limit: int = 50,
) -> str:
    """``base`` if ``taken(base)`` is false, else ``base-2``, ``base-3``... (the base is
    shortened so the suffix fits). Raises ``NamingError`` after ``limit`` candidates."""
    for candidate in _candidates(base, max_len, limit):
        if not taken(candidate):
            return candidate
    raise NamingError(f"no free name for {base!r} after {limit} attempts")


async def anext_free_name(
    base: str,
    taken: Callable[[str], Awaitable[bool]],
    *,
    max_len: int = ROOM_NAME_MAX,
    limit: int = 50,
) -> str:
    """``next_free_name`` with an async ``taken`` (e.g. one that asks Slack)."""
    for candidate in _candidates(base, max_len, limit):
        if not await taken(candidate):
            return candidate
    raise NamingError(f"no free name for {base!r} after {limit} attempts")


def allocate_sequence(conn: Connection, workspace: str, year: int) -> int:
    """Draw the next number (1, 2, ...) for (workspace, year) in one atomic statement;
    usable inside a caller's transaction."""
    table = escalation_sequences
    values = {"workspace": workspace, "year": year, "value": 1}
    if conn.dialect.name == "postgresql":
        pg = postgresql.insert(table).values(**values)
        stmt: Any = pg.on_conflict_do_update(
            index_elements=[table.c.workspace, table.c.year],
            set_={"value": table.c.value + 1},
        ).returning(table.c.value)
    elif conn.dialect.name == "sqlite":
        lite = sqlite.insert(table).values(**values)
        stmt = lite.on_conflict_do_update(
            index_elements=[table.c.workspace, table.c.year],
            set_={"value": table.c.value + 1},
        ).returning(table.c.value)
    else:  # pragma: no cover - only the two supported engines
        raise NamingError(f"unsupported database {conn.dialect.name!r}")
    value = conn.execute(stmt).scalar_one()
    return int(value)


class SequenceAllocator:
    """Per (workspace, year) room numbers from the shared database."""

    def __init__(self, db: Database) -> None:
        self.db = db

    async def next(self, workspace: str, year: int) -> int:
        return await self.db.run(lambda conn: allocate_sequence(conn, workspace, year))
