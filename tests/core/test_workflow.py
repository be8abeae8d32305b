"""The workflow API and routing of envelopes to handlers."""

from __future__ import annotations

import re

import pytest

from controlroom.context import Context
from controlroom.dispatch import Registry, load_workflows
from controlroom.envelope import Envelope
from controlroom.errors import ConfigError
from controlroom.workflow import Workflow


async def noop(ctx: Context) -> None:
    return None


def event_env(event: dict[str, object]) -> Envelope:
    return Envelope(kind="event", source="slack", body={"event": event}, dedupe_key="Ev1")


def make() -> Workflow:
    wf = Workflow("demo", scopes=["chat:write"], events=["reaction_added", "message"])

    @wf.event("reaction_added", channels=["C1"])
    async def on_reaction(ctx: Context) -> None: ...

    @wf.event("message", subtype="")
    async def on_plain_message(ctx: Context) -> None: ...

    @wf.action(re.compile(r"deploys\.rollback(:.*)?"))
    async def on_rollback(ctx: Context) -> None: ...

    @wf.view("escalate_modal", inline=True)
    async def on_submit(ctx: Context) -> dict[str, str]:
        return {"response_action": "clear"}

    @wf.command("/deploy")
    async def on_deploy(ctx: Context) -> None: ...

    @wf.webhook("github", "workflow_run")
    async def on_run(ctx: Context) -> None: ...

    @wf.schedule("0 9 * * 1-5", timezone="Europe/Paris")
    async def morning(ctx: Context) -> None: ...

    return wf


def names(handlers: list) -> list[str]:  # type: ignore[type-arg]
    return [h.name for h in handlers]


def test_events_match_on_type_subtype_and_channel() -> None:
    reg = Registry([make()])
    assert names(reg.matches(event_env({"type": "reaction_added", "item": {"channel": "C1"}}))) == [
        "on_reaction"
    ]
    assert reg.matches(event_env({"type": "reaction_added", "item": {"channel": "C2"}})) == []
    assert names(reg.matches(event_env({"type": "message", "channel": "C9"}))) == [
        "on_plain_message"
    ]
    assert reg.matches(event_env({"type": "message", "subtype": "message_changed"})) == []


def test_actions_match_by_pattern_and_views_commands_by_name() -> None:
    reg = Registry([make()])
    click = Envelope(
        kind="block_actions",
        source="slack",
        body={"actions": [{"action_id": "deploys.rollback:42"}]},
        dedupe_key="t1",
    )
    assert names(reg.matches(click)) == ["on_rollback"]
    submit = Envelope(
        kind="view_submission",
        source="slack",
        body={"view": {"callback_id": "escalate_modal"}},
        dedupe_key="t2",
    )
    inline = reg.inline_for(submit)
    assert inline is not None and inline.name == "on_submit"
    cmd = Envelope(kind="command", source="slack", body={"command": "/deploy"}, dedupe_key="t3")
    assert names(reg.matches(cmd)) == ["on_deploy"]
    assert reg.inline_for(cmd) is None


def test_webhooks_match_on_provider_and_event() -> None:
    reg = Registry([make()])
    env = Envelope(
        kind="webhook", source="hook:ci", body={}, dedupe_key="d1", provider_event="workflow_run"
    )
    assert names(reg.matches(env, "github")) == ["on_run"]
    assert reg.matches(env, "gitlab") == []
    other = Envelope(
        kind="webhook", source="hook:ci", body={}, dedupe_key="d2", provider_event="push"
    )
    assert reg.matches(other, "github") == []


def test_schedules_are_listed_with_their_cron_and_zone() -> None:
    [h] = Registry([make()]).schedules()
    assert (h.cron, h.timezone, h.qualname) == ("0 9 * * 1-5", "Europe/Paris", "demo.morning")


def test_bad_declarations_fail_at_definition() -> None:
    with pytest.raises(ValueError, match="snake_case"):
        Workflow("Bad Name")
    wf = Workflow("ok")
    with pytest.raises(ValueError, match="must start with '/'"):
        wf.command("deploy")
    with pytest.raises(ValueError, match="invalid cron"):
        wf.schedule("every day")
    wf.task()(noop)
    with pytest.raises(ValueError, match="already a handler"):
        wf.task()(noop)


def test_unknown_workflow_names_are_a_config_error() -> None:
    with pytest.raises(ConfigError, match="unknown workflow 'nope'"):
        load_workflows(["nope"])
    with pytest.raises(ConfigError, match="is not a Workflow"):
        load_workflows(["controlroom.workflow:Workflow"])


def test_a_task_is_registered_under_the_name_it_is_enqueued_by() -> None:
    wf = Workflow("named")
    wf.task("open_room")(noop)
    assert [h.qualname for h in wf.handlers] == ["named.open_room"]
