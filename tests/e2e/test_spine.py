"""The whole spine against the sandbox over real HTTP: a user acts in the sandbox, the
signed event reaches the edge, is committed, dispatched, and a handler answers in Slack."""

from __future__ import annotations

from pathlib import Path

from controlroom import Context, Workflow
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


async def test_a_reaction_in_the_sandbox_runs_a_handler_that_answers_in_the_thread(
    tmp_path: Path,
) -> None:
    async with running_hub(tmp_path, workflows=[echo_workflow()]) as h:
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
        # reply) was committed and dispatched exactly once
        delivered = {d.event_id for d in h.sandbox.deliveries if d.kind == "event_callback"}
        assert len(delivered) == 4
        dispatched = await h.hub.queue.list_jobs(task="dispatch")
        envelopes = [await h.hub.queue.get_envelope(j.args["envelope_id"]) for j in dispatched]
        assert sorted(e.dedupe_key for e in envelopes if e) == sorted(delivered)
