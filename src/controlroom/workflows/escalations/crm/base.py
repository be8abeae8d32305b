"""The CRM interface: what an escalation needs to know about a customer.

Errors first, then the data types, then the ``CrmConnector`` protocol every connector
(file, Salesforce, HubSpot) implements, then the matching rules they share so that every
connector answers the same ``CustomerQuery`` the same way.

Every failure to reach or understand a CRM is a ``CrmUnavailable``: the caller opens the
incident room anyway, says so in the briefing, and updates it when the CRM answers.
``retryable`` tells whether asking again later can help (a timeout can; a revoked token
cannot until someone fixes the configuration).
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable

from controlroom.errors import ControlRoomError

__all__ = [
    "Account",
    "CrmAuthFailed",
    "CrmBadResponse",
    "CrmConnector",
    "CrmUnavailable",
    "CustomerQuery",
    "account_matches",
    "domain_of",
    "normalise_domain",
    "normalise_name",
    "strip_legal_suffix",
]


class CrmUnavailable(ControlRoomError):
    """The CRM could not answer. ``provider`` names it; ``reason`` says why (never a
    token or a payload); ``retryable`` is False when only a configuration fix helps."""

    def __init__(
        self, provider: str, reason: str, *, retryable: bool = True, status: int | None = None
    ) -> None:
        self.provider = provider
        self.reason = reason
        self.retryable = retryable
        self.status = status
        super().__init__(f"CRM {provider} unavailable: {reason}")


class CrmAuthFailed(CrmUnavailable):
    """The CRM refused our credentials (401/403, or the token endpoint said no)."""

    def __init__(self, provider: str, reason: str, *, status: int | None = None) -> None:
        super().__init__(provider, reason, retryable=False, status=status)


class CrmBadResponse(CrmUnavailable):
    """The CRM answered something we cannot read (not JSON, missing fields)."""

    def __init__(self, provider: str, reason: str, *, status: int | None = None) -> None:
        super().__init__(provider, reason, retryable=True, status=status)


@dataclass(frozen=True)
class Account:
    """One customer account as the briefing shows it. Money is in whole currency units."""

    id: str
    name: str
    domains: tuple[str, ...] = ()
    tier: str = ""
    arr: float | None = None
    open_cases: int | None = None
    owner_email: str = ""
    owner_name: str = ""
    crm_url: str = ""
    aliases: tuple[str, ...] = ()
    source: str = "file"


@dataclass(frozen=True)
class CustomerQuery:
    """Which accounts to look for; an account matches if it matches ANY criterion.

    - ``account_ids``: exact CRM ids.
    - ``domains``: an account matches when one of its domains equals the domain or is a
      parent of it (``eu.acme.example`` matches an account on ``acme.example``).
    - ``names``: candidate customer names; matched case- and accent-insensitively against
      the account name (legal suffixes such as "Inc." ignored) and its aliases.
    - ``text``: free text that connectors able to scan it (the file connector) search
      for whole-word account names and aliases. Remote connectors ignore it.
    """

    account_ids: tuple[str, ...] = ()
    domains: tuple[str, ...] = ()
    names: tuple[str, ...] = ()
    text: str = ""
    limit: int = field(default=20)

    @property
    def empty(self) -> bool:
        return not (self.account_ids or self.domains or self.names or self.text.strip())


@runtime_checkable
class CrmConnector(Protocol):
    """What the escalations workflow asks of a CRM."""

    name: str

    async def find_accounts(self, query: CustomerQuery) -> list[Account]:
        """Accounts matching ``query`` (at most ``query.limit``), best first.
        Raises ``CrmUnavailable``."""
        ...

    async def get_account(self, account_id: str) -> Account | None:
        """The account with this id, or None. Raises ``CrmUnavailable``."""
        ...

    async def aclose(self) -> None:
        """Release connections."""
        ...


_LEGAL_SUFFIXES = frozenset(
    {
        "inc",
        "incorporated",
        "corp",
        "corporation",
        "co",
        "company",
        "ltd",
        "limited",
        "llc",
        "llp",
        "plc",
        "gmbh",
        "ag",
        "sa",
        "sas",
        "sarl",
        "bv",
        "nv",
        "oy",
        "ab",
        "as",
        "kk",
        "pty",
        "srl",
        "spa",
    }
)
_WORD = re.compile(r"[a-z0-9]+")


def fold(text: str) -> str:
    """Lowercase and strip accents: ``"Société"`` -> ``"societe"``."""
    decomposed = unicodedata.normalize("NFKD", text)
    return "".join(c for c in decomposed if not unicodedata.combining(c)).casefold()


def normalise_name(name: str) -> str:
    """A comparable form of a company name: folded words without legal suffixes."""
    words = _WORD.findall(fold(name).replace(".", ""))
    while len(words) > 1 and words[-1] in _LEGAL_SUFFIXES:
        words.pop()
    return " ".join(words)


def strip_legal_suffix(name: str) -> str:
    """``"ACME, Inc."`` -> ``"ACME"``: the name as written, without trailing legal forms."""
    words = name.split()
    while len(words) > 1 and normalise_name(words[-1]) in _LEGAL_SUFFIXES:
        words.pop()
    return " ".join(words).strip(" ,.;")


def normalise_domain(domain: str) -> str:
    """``"https://WWW.Acme.example/path"`` -> ``"acme.example"``; ``""`` if not a domain."""
    d = domain.strip().lower()
    d = re.sub(r"^[a-z][a-z0-9+.-]*://", "", d)
    d = d.split("/", 1)[0].split("?", 1)[0].split("#", 1)[0]
    d = d.rsplit("@", 1)[-1].split(":", 1)[0].strip(".")
    if d.startswith("www."):
        d = d[4:]
    if not re.fullmatch(r"[a-z0-9-]+(\.[a-z0-9-]+)+", d):
        return ""
    return d


def domain_of(email: str) -> str:
    """The normalised domain of an email address, or ``""``."""
    local, at, domain = email.strip().rpartition("@")
    if not at or not local:
        return ""
    return normalise_domain(domain)


def _domain_matches(account_domain: str, wanted: str) -> bool:
    return wanted == account_domain or wanted.endswith("." + account_domain)


def _contains_words(haystack_words: list[str], needle: str) -> bool:
    words = needle.split()
    if not words:
        return False
    n = len(words)
    return any(haystack_words[i : i + n] == words for i in range(len(haystack_words) - n + 1))


def account_matches(account: Account, query: CustomerQuery, *, scan_text: bool) -> bool:
    """The one definition of "matches" that every connector applies (remote connectors
    fetch broadly, then filter with this)."""
    if account.id in query.account_ids:
        return True
    account_domains = [d for d in (normalise_domain(x) for x in account.domains) if d]
    for wanted in query.domains:
        w = normalise_domain(wanted)
        if w and any(_domain_matches(d, w) for d in account_domains):
            return True
    names = {normalise_name(account.name)} | {normalise_name(a) for a in account.aliases}
    names.discard("")
    if any(normalise_name(candidate) in names for candidate in query.names):
        return True
    if scan_text and query.text:
        text_words = _WORD.findall(fold(query.text))
        return any(_contains_words(text_words, n) for n in names)
    return False


def dedupe(accounts: Iterable[Account]) -> list[Account]:
    seen: set[str] = set()
    out: list[Account] = []
    for a in accounts:
        if a.id not in seen:
            seen.add(a.id)
            out.append(a)
    return out
