"""The whole spine against the sandbox over real HTTP: a user acts in the sandbox, the
signed event reaches the edge, is committed, dispatched, and a handler answers in Slack."""

from __future__ import annotations

from pathlib import Path

import pytest

from controlroom import Context, Envelope, Workflow
from controlroom.testing import running_hub


def echo_workflow() -> Workflow:
    wf = Workflow("echo", scopes=["chat:write", "reactions:read"], events=["reaction_added"])

    @wf.event("reaction_added")
    async def thank(ctx: Context) -> None:
        item = ctx.event["item"]
        if ctx.event["reaction"] == "pray" and await ctx.state.once(
            f"{item['channel']}:{item['ts']}"
        ):
            await ctx.slack.chat_postMessage(
                channel=item["channel"], thread_ts=item["ts"], text="You're welcome!"
            )

    return wf


@pytest.mark.parametrize("socket_mode", [False, True], ids=["http", "socket-mode"])
async def test_a_reaction_in_the_sandbox_runs_a_handler_that_answers_in_the_thread(
    tmp_path: Path, socket_mode: bool
) -> None:
    async with running_hub(tmp_path, workflows=[echo_workflow()], socket_mode=socket_mode) as h:
        ts = await h.act.post_message("priya", "support", "the checkout page is down for Acme")
        await h.act.add_reaction("dan", "support", ts, "pray")
        await h.act.add_reaction("lena", "support", ts, "pray")
        await h.settle()
        replies = h.sandbox.state.replies("support", ts)
        bot_replies = [r for r in replies if r.get("bot_id")]
        assert [r["text"] for r in bot_replies] == ["You're welcome!"]
        jobs = await h.hub.queue.list_jobs(task="run_handler")
        assert {j.status for j in jobs} == {"succeeded"}
        # every event the sandbox delivered (the message, two reactions, the bot's own
        # reply) was committed once: offering it again is answered as a duplicate
        delivered = {d.event_id for d in h.sandbox.deliveries if d.kind == "event_callback"}
        assert {d.transport for d in h.sandbox.deliveries if d.kind == "event_callback"} == {
            "socket" if socket_mode else "http"
        }
        assert len(delivered) == 4
        for event_id in delivered:
            again = await h.hub.queue.accept(
                Envelope(kind="event", source="slack", body={}, dedupe_key=event_id)
            )
            assert again.duplicate
        # only the two reactions had a handler interested: two dispatch jobs, both done
        dispatched = await h.hub.queue.list_jobs(task="dispatch")
        assert sorted(j.status for j in dispatched) == ["succeeded", "succeeded"]


async def test_the_rate_gate_state_is_visible_to_operators_on_this_machine(
    tmp_path: Path,
) -> None:
    import httpx

    from controlroom.slack import LimitState, format_limits

    async with running_hub(tmp_path, workflows=[echo_workflow()]) as h:
        ts = await h.act.post_message("priya", "support", "the checkout page is down")
        await h.act.add_reaction("dan", "support", ts, "pray")
        await h.settle()
        async with httpx.AsyncClient() as http:
            resp = await http.get(f"{h.hub_url}/admin/slack-limits")
        assert resp.status_code == 200
        states = [LimitState(**row) for row in resp.json()]
        posted = [s for s in states if s.kind == "method" and s.method == "chat.postMessage"]
        assert [s.workspace for s in posted] == [h.sandbox.team_id]
        assert any(s.kind == "channel" and s.channel == "C0SUPPORT1" for s in states)
        assert "chat.postMessage" in format_limits(states)
