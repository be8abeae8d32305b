from __future__ import annotations

from controlroom.security.scopes import ScopeCheck, check_scopes, needed_scopes, parse_scopes
from controlroom.workflow import Workflow


def _workflows() -> list[Workflow]:
    return [
        Workflow("deploys", scopes=["chat:write", "commands"]),
        Workflow("escalations", scopes=["chat:write", "usergroups:read"]),
    ]


def test_needed_scopes_lists_the_workflows_behind_each_scope() -> None:
    assert needed_scopes(_workflows()) == {
        "chat:write": ("deploys", "escalations"),
        "commands": ("deploys",),
        "usergroups:read": ("escalations",),
    }


def test_exactly_granted_scopes_pass() -> None:
    check = check_scopes(_workflows(), "chat:write,commands,usergroups:read")
    assert check == ScopeCheck({}, ())
    assert check.ok and check.errors() == [] and check.warnings() == []


def test_missing_scope_is_an_error_naming_the_workflows() -> None:
    check = check_scopes(_workflows(), "commands,usergroups:read")
    assert not check.ok
    assert check.errors() == [
        "scope chat:write is not granted but workflows deploys, escalations need it"
    ]
    single = check_scopes(_workflows(), "chat:write,commands")
    assert single.errors() == [
        "scope usergroups:read is not granted but workflow escalations needs it"
    ]


def test_extra_scope_is_a_warning() -> None:
    check = check_scopes(_workflows(), "chat:write, commands, usergroups:read, admin, files:read")
    assert check.ok
    assert check.extra == ("admin", "files:read")
    assert check.warnings()[0].startswith("scope admin is granted but no enabled workflow")


def test_header_and_mapping_forms_are_accepted() -> None:
    assert parse_scopes(None) == frozenset()
    assert parse_scopes(["a", " b ", ""]) == {"a", "b"}
    check = check_scopes({"chat:write": ["x"]}, ["chat:write"])
    assert check.ok
