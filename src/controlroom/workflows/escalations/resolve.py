"""Who is the customer? Configurable rules, tried in order; the first rule that finds
anyone decides, and later rules may only narrow an ambiguous answer down to one.

Rules (``ResolveRules.order``):

- ``channel``: the message's channel is a Slack Connect channel shared with the customer
  (``conversations.info`` says ``is_ext_shared`` and lists ``connected_team_ids``; a team
  id other than ours maps to an account through ``connected_teams``), or a channel mapped
  to an account in ``channels``.
- ``account_id``: account ids in the text, found with the configured regexes.
- ``email``: email addresses in the text -> their domains (ours and free-mail ignored).
- ``name``: customer names in the text (configured aliases, capitalised phrases, and the
  connector's own scan of the text).
- ``author``: the domain of the message author's email (ours and free-mail ignored).

The result is ``Resolved``, ``Ambiguous`` (the agent picks) or ``Unknown`` (the room opens
anyway). A CRM failure is not an exception here: it is ``Unknown`` with ``crm_error`` set,
and ``hint_account_id`` when a mapping already named the account.
"""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import partial
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from controlroom.errors import ConfigError
from controlroom.workflows.escalations.crm.base import (
    Account,
    CrmConnector,
    CrmUnavailable,
    CustomerQuery,
    domain_of,
    normalise_domain,
    normalise_name,
)

__all__ = [
    "FREEMAIL_DOMAINS",
    "RULES",
    "Ambiguous",
    "ChannelInfo",
    "Resolution",
    "ResolveInput",
    "ResolveRules",
    "Resolved",
    "Unknown",
    "extract_emails",
    "extract_name_candidates",
    "resolve_customer",
]

RULES = ("channel", "account_id", "email", "name", "author")
FREEMAIL_DOMAINS = (
    "gmail.com",
    "googlemail.com",
    "outlook.com",
    "hotmail.com",
    "live.com",
    "yahoo.com",
    "icloud.com",
    "me.com",
    "proton.me",
    "protonmail.com",
    "aol.com",
    "gmx.com",
    "gmx.de",
    "web.de",
    "mail.com",
    "yandex.ru",
    "qq.com",
)


class ResolveRules(BaseModel):
    """The ``[workflows.escalations.resolve]`` configuration, validated once."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    order: tuple[str, ...] = RULES
    connected_teams: dict[str, str] = {}
    channels: dict[str, str] = {}
    account_id_patterns: tuple[str, ...] = ()
    internal_domains: tuple[str, ...] = ()
    ignore_domains: tuple[str, ...] = FREEMAIL_DOMAINS
    aliases: dict[str, str] = {}
    max_name_candidates: int = Field(default=12, ge=0, le=50)

    @field_validator("order")
    @classmethod
    def _order(cls, v: tuple[str, ...]) -> tuple[str, ...]:
        unknown = [r for r in v if r not in RULES]
        if unknown:
            raise ValueError(f"unknown rule(s) {unknown}; known: {list(RULES)}")
        if len(set(v)) != len(v):
            raise ValueError("a rule is listed twice")
        return v

    @field_validator("account_id_patterns")
    @classmethod
    def _patterns(cls, v: tuple[str, ...]) -> tuple[str, ...]:
        for p in v:
            try:
                compiled = re.compile(p)
            except re.error as exc:
                raise ValueError(f"pattern {p!r} does not compile: {exc}") from None
            if compiled.groups > 1 and "id" not in compiled.groupindex:
                raise ValueError(f"pattern {p!r}: use one group, or name it (?P<id>...)")
        return v

    @field_validator("internal_domains", "ignore_domains")
    @classmethod
    def _domains(cls, v: tuple[str, ...]) -> tuple[str, ...]:
        out = []
        for d in v:
            n = normalise_domain(d)
            if not n:
                raise ValueError(f"{d!r} is not a domain")
            out.append(n)
        return tuple(out)

    @classmethod
    def from_config(
        cls, raw: Mapping[str, Any], *, key: str = "workflows.escalations.resolve"
    ) -> ResolveRules:
        """Validate configuration; ``ConfigError`` names each bad key."""
        try:
            return cls.model_validate(dict(raw))
        except ValidationError as exc:
            problems = [
                (".".join([key, *(str(p) for p in e["loc"])]), "configuration", e["msg"])
                for e in exc.errors()
            ]
            raise ConfigError(problems) from None

    def is_ours_or_ignored(self, domain: str) -> bool:
        return any(
            domain == d or domain.endswith("." + d)
            for d in (*self.internal_domains, *self.ignore_domains)
        )


@dataclass(frozen=True)
class ChannelInfo:
    """What resolution needs from ``conversations.info``."""

    id: str
    is_ext_shared: bool = False
    connected_team_ids: tuple[str, ...] = ()

    @classmethod
    def from_slack(cls, channel: Mapping[str, Any]) -> ChannelInfo:
        """From the ``channel`` object of a ``conversations.info`` answer."""
        teams = channel.get("connected_team_ids") or channel.get("shared_team_ids") or ()
        return cls(
            id=str(channel.get("id", "")),
            is_ext_shared=bool(channel.get("is_ext_shared", False)),
            connected_team_ids=tuple(str(t) for t in teams if isinstance(t, str)),
        )


@dataclass(frozen=True)
class ResolveInput:
    text: str
    channel: ChannelInfo
    own_team_id: str = ""
    author_email: str = ""


_RULE_LABELS = {
    "channel": "{evidence}",
    "account_id": "account id {evidence}",
    "email": "email domain {evidence}",
    "name": "name in the message ({evidence})",
    "author": "author's email domain {evidence}",
}


@dataclass(frozen=True)
class Resolved:
    account: Account
    rule: str
    evidence: str = ""

    @property
    def explanation(self) -> str:
        """How the customer was found, for the briefing's "Matched by" field."""
        last = self.rule.rsplit("+", 1)[-1]
        return _RULE_LABELS.get(last, "{evidence}").format(evidence=self.evidence or "?")


@dataclass(frozen=True)
class Ambiguous:
    candidates: tuple[Account, ...]
    rule: str
    evidence: str = ""


@dataclass(frozen=True)
class Unknown:
    reason: str
    crm_error: CrmUnavailable | None = None
    hint_account_id: str | None = None
    tried: tuple[str, ...] = field(default_factory=tuple)


Resolution = Resolved | Ambiguous | Unknown

_EMAIL = re.compile(
    r"(?:mailto:)?([A-Za-z0-9._%+\-]{1,64}@[A-Za-z0-9](?:[A-Za-z0-9\-]{0,61}[A-Za-z0-9])?"
    r"(?:\.[A-Za-z0-9](?:[A-Za-z0-9\-]{0,61}[A-Za-z0-9])?)+)"
)
_SLACK_TOKEN = re.compile(r"<[^<>]*>")
_CAPITALISED = re.compile(r"\b[A-Z][\w&'.-]*(?:[ \t]+[A-Z][\w&'.-]*){0,3}")
_STOPWORD_TEXT = """
a an the hi hello hey dear thanks thank please urgent help issue issues problem customer
customers we our us you your they their it its this that is are was i monday tuesday
wednesday thursday friday saturday sunday today tomorrow yesterday january february march
april may june july august september october november december api sso ui ux p1 p2 p3 sev1
sev2 eu us uk fyi asap cc
"""
_STOPWORDS = frozenset(_STOPWORD_TEXT.split())


def extract_emails(text: str) -> list[str]:
    """Email addresses in Slack-formatted or plain text, in order, without repeats."""
    found = [m[1].lower() for m in _EMAIL.finditer(text)]
    return list(dict.fromkeys(found))


def _visible_text(text: str) -> str:
    """Slack markup reduced to what people see: ``<url|label>`` -> label, mentions dropped."""

    def repl(m: re.Match[str]) -> str:
        inner = m[0][1:-1]
        if inner.startswith(("@", "#", "!")):
            return " "
        return inner.split("|", 1)[1] if "|" in inner else inner

    return _SLACK_TOKEN.sub(repl, text)


def extract_name_candidates(text: str, *, limit: int = 12) -> list[str]:
    """Capitalised phrases (one to four words) that may be company names, longest first
    within each phrase: ``"Acme Corp is down"`` -> ``["Acme Corp", "Acme", "Corp"]``."""
    out: list[str] = []
    for m in _CAPITALISED.finditer(_visible_text(text)):
        words = [w.strip(".,'") for w in m[0].split()]
        for size in range(len(words), 0, -1):
            for start in range(len(words) - size + 1):
                phrase = " ".join(words[start : start + size])
                norm = normalise_name(phrase)
                if not norm or norm in _STOPWORDS or phrase in out:
                    continue
                out.append(phrase)
    return out[:limit]


Lookup = Callable[[], Awaitable[list[Account]]]


async def _by_ids(crm: CrmConnector, ids: Sequence[str]) -> list[Account]:
    found: list[Account] = []
    for account_id in dict.fromkeys(ids):
        account = await crm.get_account(account_id)
        if account is not None and account.id not in {a.id for a in found}:
            found.append(account)
    return found


def _account_ids_in(text: str, patterns: Sequence[str]) -> list[str]:
    ids: list[str] = []
    for p in patterns:
        for m in re.finditer(p, text):
            if "id" in m.re.groupindex:
                ids.append(m["id"])
            elif m.re.groups == 1:
                ids.append(m[1])
            else:
                ids.append(m[0])
    return list(dict.fromkeys(i for i in ids if i))


def _plan(
    inp: ResolveInput, rules: ResolveRules, crm: CrmConnector, hints: list[str]
) -> list[tuple[str, str, Lookup]]:
    """(rule, evidence, lookup) for each rule that has something to look up; account ids
    named outright (by a mapping or in the text) are appended to ``hints``."""
    plan: list[tuple[str, str, Lookup]] = []
    for rule in rules.order:
        if rule == "channel":
            ids: list[str] = []
            evidence = ""
            if inp.channel.is_ext_shared:
                teams = [t for t in inp.channel.connected_team_ids if t != inp.own_team_id]
                mapped = [rules.connected_teams[t] for t in teams if t in rules.connected_teams]
                if mapped:
                    ids, evidence = mapped, f"Slack Connect team {teams[0]}"
            if not ids and inp.channel.id in rules.channels:
                ids = [rules.channels[inp.channel.id]]
                evidence = f"channel <#{inp.channel.id}>"
            if ids:
                plan.append((rule, evidence, partial(_by_ids, crm, ids)))
                hints.extend(ids)
        elif rule == "account_id":
            ids = _account_ids_in(inp.text, rules.account_id_patterns)
            if ids:
                plan.append((rule, ", ".join(ids), partial(_by_ids, crm, ids)))
                hints.extend(ids)
        elif rule == "email":
            domains = [d for d in (domain_of(e) for e in extract_emails(inp.text)) if d]
            domains = [d for d in dict.fromkeys(domains) if not rules.is_ours_or_ignored(d)]
            if domains:
                q = CustomerQuery(domains=tuple(domains))
                plan.append((rule, ", ".join(domains), partial(crm.find_accounts, q)))
        elif rule == "name":
            text = _visible_text(inp.text)
            alias_ids = [
                account_id
                for alias, account_id in rules.aliases.items()
                if re.search(rf"(?<!\w){re.escape(alias)}(?!\w)", text, re.IGNORECASE)
            ]
            names = extract_name_candidates(text, limit=rules.max_name_candidates)
            q = CustomerQuery(names=tuple(names), text=text)

            if alias_ids:
                plan.append((rule, "alias", partial(_by_ids, crm, alias_ids)))
            elif not q.empty:
                plan.append((rule, ", ".join(names[:3]) or "text", partial(crm.find_accounts, q)))
        elif rule == "author":
            domain = domain_of(inp.author_email) if inp.author_email else ""
            if domain and not rules.is_ours_or_ignored(domain):
                q = CustomerQuery(domains=(domain,))
                plan.append((rule, domain, partial(crm.find_accounts, q)))
    return plan


async def resolve_customer(inp: ResolveInput, rules: ResolveRules, crm: CrmConnector) -> Resolution:
    """Apply ``rules`` to ``inp`` using ``crm``; never raises for a CRM failure."""
    tried: list[str] = []
    ambiguous: Ambiguous | None = None
    hints: list[str] = []
    for rule, evidence, lookup in _plan(inp, rules, crm, hints):
        tried.append(rule)
        try:
            found = await lookup()
        except CrmUnavailable as exc:
            if ambiguous is not None:
                return ambiguous
            return Unknown(
                f"CRM unavailable while checking {rule}",
                crm_error=exc,
                hint_account_id=hints[0] if hints else None,
                tried=tuple(tried),
            )
        if not found:
            continue
        if ambiguous is None:
            if len(found) == 1:
                return Resolved(found[0], rule, evidence)
            ambiguous = Ambiguous(tuple(found), rule, evidence)
            continue
        narrowed = [a for a in ambiguous.candidates if a.id in {f.id for f in found}]
        if len(narrowed) == 1:
            return Resolved(narrowed[0], f"{ambiguous.rule}+{rule}", evidence)
    if ambiguous is not None:
        return ambiguous
    if not tried:
        return Unknown("nothing in the channel, text or author identifies a customer")
    return Unknown(f"no account matched ({', '.join(tried)})", tried=tuple(tried))
