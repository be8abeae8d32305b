"""A person uses the sandbox's web client in Chromium, and the app sees what Slack sends."""

from __future__ import annotations

import re

import pytest
from playwright.async_api import expect

from .conftest import World

pytestmark = pytest.mark.browser

DEPLOY_BLOCKS = [
    {"type": "header", "text": {"type": "plain_text", "text": ":rocket: Deploy finished"}},
    {
        "type": "section",
        "text": {"type": "mrkdwn", "text": "*api* `v42` is live in *production*"},
        "fields": [
            {"type": "mrkdwn", "text": "*Service*\napi"},
            {"type": "mrkdwn", "text": "*Version*\nv42"},
        ],
        "accessory": {
            "type": "button",
            "action_id": "open_logs",
            "text": {"type": "plain_text", "text": "Logs"},
            "url": "https://ci.example/logs/42",
        },
    },
    {"type": "divider"},
    {
        "type": "actions",
        "block_id": "deploy-actions",
        "elements": [
            {
                "type": "button",
                "action_id": "rollback",
                "style": "danger",
                "value": "api:v41",
                "text": {"type": "plain_text", "text": "Roll back"},
                "confirm": {
                    "title": {"type": "plain_text", "text": "Roll back api?"},
                    "text": {"type": "mrkdwn", "text": "This redeploys *v41* to production."},
                    "confirm": {"type": "plain_text", "text": "Roll back"},
                    "deny": {"type": "plain_text", "text": "Keep v42"},
                    "style": "danger",
                },
            },
            {
                "type": "button",
                "action_id": "ack",
                "style": "primary",
                "value": "ok",
                "text": {"type": "plain_text", "text": "Looks good"},
            },
        ],
    },
    {
        "type": "context",
        "elements": [{"type": "mrkdwn", "text": "Deployed by <@U0RELMGR01> :white_check_mark:"}],
    },
]


async def act_as(world: World, name: str, screenshot: str | None = None) -> None:
    page = world.page
    await page.click("#switcher-btn")
    if screenshot:
        await world.screenshot(screenshot)
    await page.click(f".switcher-user:has-text('{name}')")
    await expect(page.locator("#me-name")).to_have_text(name)


async def test_a_person_switches_user_posts_reacts_and_replies_in_a_thread(world: World) -> None:
    page = world.page
    await page.goto(f"{world.url}/?c=C0SUPPORT1")
    await act_as(world, "Marcus Hale", screenshot="user-switcher")
    assert "Marcus Hale" in await page.locator(".switcher").inner_text()

    await page.fill(
        "#composer textarea", "Checkout is *down* for @priya's customer :rotating_light:"
    )
    await page.press("#composer textarea", "Enter")
    message = page.locator("#messages .msg", has_text="Checkout is down")
    await expect(message.locator("b")).to_have_text("down")
    await expect(message.locator(".mention")).to_have_text("@priya")
    stored = world.sb.state.messages("C0SUPPORT1")[-1]
    assert stored["user"] == "U0T2LEAD01"
    assert "<@U0SUPPORT1>" in stored["text"]

    await message.hover()
    await message.locator(".hover-menu [data-picker]").click()
    await expect(page.locator("#picker")).to_be_visible()
    await world.screenshot("reaction-picker")
    await page.click("#picker [data-pick='eyes']")
    await expect(message.locator(".reaction.mine[data-react='eyes'] .count")).to_have_text("1")
    assert world.sb.state.messages("C0SUPPORT1")[-1]["reactions"][0]["users"] == ["U0T2LEAD01"]

    await message.hover()
    await message.locator(".hover-menu [data-thread]").click()
    await page.fill("#thread-composer textarea", "On it, paging Tier-2")
    await page.press("#thread-composer textarea", "Enter")
    await expect(page.locator("#thread .msg", has_text="On it, paging Tier-2")).to_be_visible()
    await expect(message.locator(".replies-count")).to_have_text("1 reply")
    await world.screenshot("thread")

    await world.sb.settle()
    events = [s.data["event"] for s in world.app.of("event_callback")]
    assert [e["type"] for e in events] == ["message", "reaction_added", "message"]
    assert events[2]["thread_ts"] == stored["ts"]
    assert all(s.verified for s in world.app.seen)


async def test_a_button_with_a_confirm_dialog_sends_block_actions_to_the_app(
    world: World,
) -> None:
    page = world.page
    resp = await world.bot().chat_postMessage(
        channel="C0DEPLOYS1", text="Deploy finished", blocks=DEPLOY_BLOCKS
    )
    await page.goto(f"{world.url}/?c=C0DEPLOYS1")
    await act_as(world, "Grace Thompson")
    message = page.locator(f".msg[data-ts='{resp['ts']}']")
    await expect(message.locator(".b-header")).to_have_text("🚀 Deploy finished")
    await expect(message.locator(".b-field")).to_have_count(2)
    await world.screenshot("block-kit")

    await message.locator("button.block-btn.danger").click()
    dialog = page.locator("#dialog .dialog")
    await expect(dialog.locator(".dialog-title")).to_have_text("Roll back api?")
    await world.screenshot("confirm-dialog")
    await dialog.locator("[data-dialog='deny']").click()
    await expect(page.locator("#dialog")).to_be_hidden()
    assert world.app.of("block_actions") == []

    await message.locator("button.block-btn.danger").click()
    async with page.expect_response("**/web/action") as answer:
        await page.locator("#dialog [data-dialog='confirm']").click()
    assert (await (await answer.value).json())["delivered"] is True
    click = world.app.of("block_actions")[0]
    assert click.verified
    assert click.data["user"]["id"] == "U0RELMGR01"
    assert click.data["actions"][0]["action_id"] == "rollback"
    assert click.data["actions"][0]["value"] == "api:v41"
    assert click.data["container"]["message_ts"] == resp["ts"]


async def test_a_slash_command_gets_an_ephemeral_reply_and_a_modal_validates(
    world: World,
) -> None:
    page = world.page
    before = len(world.sb.state.messages("C0DEPLOYS1"))
    await page.goto(f"{world.url}/?c=C0DEPLOYS1")
    await act_as(world, "Lena Fischer")
    await page.fill("#composer textarea", "/deploy status api")
    await page.press("#composer textarea", "Enter")
    ephemeral = page.locator("#messages .msg.ephemeral")
    await expect(ephemeral.locator(".only-you")).to_contain_text("Only visible to you")
    await expect(ephemeral.locator(".msg-text b")).to_have_text("api")
    command = world.app.of("command")[0]
    assert len(world.sb.state.messages("C0DEPLOYS1")) == before
    assert (command.data["command"], command.data["text"]) == ("/deploy", "status api")
    assert command.data["user_id"] == "U0ENG00002"
    await world.screenshot("ephemeral")

    await page.fill("#composer textarea", "/escalate")
    await page.press("#composer textarea", "Enter")
    modal = page.locator("#modal .modal")
    await expect(modal.locator("#modal-title")).to_have_text("Escalate to Tier-2")
    await modal.locator("#in-summary").fill("slow")
    await modal.locator("#in-severity").select_option("sev1")
    await modal.locator("button[type=submit]").click()
    await expect(modal.locator("[data-error-for='summary']")).to_have_text(
        "Please write at least 10 characters"
    )
    await world.screenshot("modal-error")
    assert world.app.submissions == 1

    await modal.locator("#in-summary").fill("Checkout fails for every EU customer")
    await modal.locator("button[type=submit]").click()
    await expect(page.locator("#modal")).to_have_count(0)
    submitted = world.app.of("view_submission")[-1].data["view"]["state"]["values"]
    assert submitted["summary"]["text"]["value"] == "Checkout fails for every EU customer"
    assert submitted["severity"]["pick"]["selected_option"]["value"] == "sev1"
    assert world.sb.act.open_views("lena") == []


async def test_a_message_posted_through_the_web_api_appears_without_reload(
    world: World,
) -> None:
    page = world.page
    act = world.sb.act
    first = await act.post_message(
        "priya", "#support", "Morning! Acme reports checkout errors since 09:12 :warning:"
    )
    second = await act.post_message("priya", "#support", "Ticket: <https://crm.example/t/8|#8>")
    await act.add_reaction("marcus", "#support", first, "eyes")
    await act.add_reaction("lena", "#support", first, "+1")
    await act.add_reaction("priya", "#support", first, "+1")
    ask = await act.post_message(
        "marcus", "#support", "Looking. <@U0ENG00001> can you check the `payments` logs?"
    )
    await act.post_message("dan", "#support", "On it :rocket:", thread_ts=ask)
    await act.post_message("lena", "#support", "Error rate back to normal", thread_ts=ask)
    await world.bot().chat_postMessage(channel="C0SUPPORT1", text="deploy", blocks=DEPLOY_BLOCKS)
    await page.goto(f"{world.url}/?c=C0SUPPORT1")
    await expect(page.locator("body.live")).to_have_count(1)
    await expect(page.locator(f".msg[data-ts='{second}']")).to_have_class(re.compile("compact"))
    replies = page.locator(f".msg[data-ts='{ask}'] .replies-count")
    await expect(replies).to_have_text("2 replies")
    await world.screenshot("channel")
    await world.bot().chat_postMessage(
        channel="C0SUPPORT1", text="New ticket from *Acme*: <https://crm.example/t/9|#9>"
    )
    message = page.locator("#messages .msg", has_text="New ticket from")
    await expect(message.locator("a")).to_have_attribute("href", "https://crm.example/t/9")
    await expect(message.locator(".badge")).to_have_text("APP")
    await world.screenshot("live-update")


async def test_a_person_edits_runs_a_message_shortcut_deletes_and_opens_app_home(
    world: World,
) -> None:
    page = world.page
    await page.goto(f"{world.url}/?c=C0SUPPORT1")
    await expect(page.locator("#me-name")).to_have_text("Priya Raman")
    await page.fill("#composer textarea", "Customer ZX-42 cant log in")
    await page.press("#composer textarea", "Enter")
    message = page.locator("#messages .msg", has_text="Customer ZX-42")
    await expect(message).to_have_count(1)

    await message.hover()
    await message.locator("[data-more]").click()
    await message.locator("[data-edit]").click()
    await message.locator(".edit-form textarea").fill("Customer ZX-42 cannot log in")
    await message.locator(".edit-form textarea").press("Enter")
    await expect(message.locator(".edited")).to_have_text("(edited)")
    await expect(message.locator(".msg-text")).to_contain_text("Customer ZX-42 cannot log in")

    await message.hover()
    await message.locator("[data-more]").click()
    await world.screenshot("message-menu")
    await message.locator("[data-shortcut='escalate']").click()
    await expect(page.locator("#modal-title")).to_have_text("Escalate to Tier-2")
    shortcut = world.app.of("message_action")[0]
    assert shortcut.data["callback_id"] == "escalate"
    assert shortcut.data["message"]["text"] == "Customer ZX-42 cannot log in"
    ts = shortcut.data["message_ts"]
    await page.locator("#modal .modal-footer [data-close-view]").click()
    await expect(page.locator("#modal")).to_have_count(0)
    assert world.sb.act.open_views("priya") == []

    await message.hover()
    await message.locator("[data-more]").click()
    await message.locator("[data-delete]").click()
    await page.locator("#dialog [data-dialog='confirm']").click()
    await expect(page.locator("#messages .msg", has_text="Customer ZX-42")).to_have_count(0)
    assert ts not in [m["ts"] for m in world.sb.state.messages("C0SUPPORT1")]

    await page.click(".sidebar [data-nav='home']")
    await expect(page.locator("#home .b-header")).to_have_text("Your Control Room")
    await world.screenshot("app-home")
    await world.sb.settle()
    kinds = [s.data["event"]["type"] for s in world.app.of("event_callback")]
    assert kinds == ["message", "message", "message", "app_home_opened"]
