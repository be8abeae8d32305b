"""Least privilege: compare the scopes a token was granted with the scopes the enabled
workflows need.

Each workflow declares its scopes (``Workflow(name, scopes=[...])``). At start and on
every install, ``check_scopes`` compares them with the granted ones (the
``x-oauth-scopes`` header of any Web API answer, or the ``scope`` of
``oauth.v2.access``): a missing scope is an error naming the workflows that need it; an
extra scope is a warning, since over-scoping widens the blast radius of a leaked token.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol, cast

__all__ = ["ScopeCheck", "check_scopes", "needed_scopes", "parse_scopes"]


class _HasScopes(Protocol):
    @property
    def name(self) -> str: ...

    @property
    def scopes(self) -> Iterable[str]: ...


def parse_scopes(value: str | Iterable[str] | None) -> frozenset[str]:
    """``"chat:write,commands"`` (header or OAuth answer) or an iterable -> a set."""
    if value is None:
        return frozenset()
    items = value.replace(" ", ",").split(",") if isinstance(value, str) else value
    return frozenset(s.strip() for s in items if s and s.strip())


def needed_scopes(workflows: Iterable[_HasScopes]) -> dict[str, tuple[str, ...]]:
    """scope -> the names of the workflows that need it (sorted)."""
    out: dict[str, set[str]] = {}
    for wf in workflows:
        for scope in parse_scopes(wf.scopes):
            out.setdefault(scope, set()).add(wf.name)
    return {scope: tuple(sorted(names)) for scope, names in sorted(out.items())}


@dataclass(frozen=True)
class ScopeCheck:
    missing: dict[str, tuple[str, ...]] = field(default_factory=dict)
    extra: tuple[str, ...] = ()

    @property
    def ok(self) -> bool:
        return not self.missing

    def errors(self) -> list[str]:
        return [
            f"scope {scope} is not granted but workflow{'s' if len(wfs) > 1 else ''} "
            f"{', '.join(wfs)} need{'' if len(wfs) > 1 else 's'} it"
            for scope, wfs in self.missing.items()
        ]

    def warnings(self) -> list[str]:
        return [
            f"scope {scope} is granted but no enabled workflow needs it "
            "(remove it from the app to narrow what a leaked token can do)"
            for scope in self.extra
        ]


def check_scopes(
    needed: Mapping[str, Iterable[str]] | Iterable[Any],
    granted: str | Iterable[str] | None,
) -> ScopeCheck:
    """Compare ``needed`` (scope -> workflow names, or workflows with ``name`` and
    ``scopes``) with ``granted``."""
    if isinstance(needed, Mapping):
        need = {k: tuple(sorted(v)) for k, v in needed.items()}
    else:
        need = needed_scopes(cast("Iterable[_HasScopes]", needed))
    have = parse_scopes(granted)
    missing = {scope: wfs for scope, wfs in sorted(need.items()) if scope not in have}
    extra = tuple(sorted(have - set(need)))
    return ScopeCheck(missing, extra)
