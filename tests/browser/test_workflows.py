"""The product as a person meets it: `controlroom up` (hub + sandbox, as a real process)
driven through the sandbox's web client in Chromium. A failed deploy is rolled back with
one click by a release manager; a :rotating_light: reaction opens the incident room."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from playwright.async_api import Browser, Page, expect

from controlroom.demo import send_demo_deploys
from tests.browser.conftest import SCREENSHOTS

pytestmark = [pytest.mark.browser, pytest.mark.slow]


@dataclass
class Up:
    hub_url: str
    sandbox_url: str
    data_dir: Path


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def up(tmp_path: Path) -> Iterator[Up]:
    hub, sandbox = _free_port(), _free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("CONTROLROOM_")}
    log = (tmp_path / "up.log").open("w")
    proc = subprocess.Popen(
        [
            *(sys.executable, "-c", "from controlroom.cli import main; main()", "up"),
            *("--port", str(hub), "--sandbox-port", str(sandbox)),
        ],
        cwd=tmp_path,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:
        deadline = time.monotonic() + 40
        while True:
            try:
                if httpx.get(f"http://127.0.0.1:{hub}/readyz", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError((tmp_path / "up.log").read_text())
            time.sleep(0.2)
        yield Up(
            f"http://127.0.0.1:{hub}", f"http://127.0.0.1:{sandbox}", tmp_path / ".controlroom"
        )
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()
    assert_no_secret_at_rest(tmp_path)


def assert_no_secret_at_rest(root: Path) -> None:
    """After a whole run, neither the database files nor the logs hold a Slack token or
    the demo webhook secret in plain text."""
    data = root / ".controlroom"
    secret = (data / "demo-hook.secret").read_text().strip().encode()
    files = [root / "up.log", *sorted(data.glob("controlroom.db*"))]
    for path in files:
        content = path.read_bytes()
        for needle in (b"xoxb-", b"xoxp-", b"xapp-", b"xoxe", secret):
            assert needle not in content, f"{needle[:5]!r}... found in {path.name}"


@pytest.fixture
async def page(browser: Browser) -> AsyncIterator[Page]:
    context = await browser.new_context(viewport={"width": 1280, "height": 860})
    page = await context.new_page()
    page.set_default_timeout(15000)
    try:
        yield page
    finally:
        await context.close()


async def act_as(page: Page, name: str) -> None:
    await page.click("#switcher-btn")
    await page.click(f".switcher-user:has-text('{name}')")
    await expect(page.locator("#me-name")).to_have_text(name)


async def shot(page: Page, name: str) -> None:
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    await page.screenshot(path=str(SCREENSHOTS / f"{name}.png"))


async def test_a_release_manager_rolls_back_a_failed_deploy_with_one_click(
    up: Up, page: Page
) -> None:
    codes = await send_demo_deploys(
        up.hub_url,
        up.data_dir,
        service="checkout",
        environment="production",
        good="v2.4.0",
        bad="v2.5.0",
    )
    assert codes == [202, 202, 202, 202]
    await page.goto(f"{up.sandbox_url}/?c=C0DEPLOYS1")
    failed = page.locator("#messages .msg", has_text="Deploy FAILED: checkout v2.5.0")
    rollback = failed.locator("button.block-btn.danger", has_text="Rollback to v2.4.0")

    # Kenji is an engineer, not a release manager: refused, privately.
    await act_as(page, "Kenji Watanabe")
    await rollback.click()
    await page.locator("#dialog [data-dialog='confirm']").click()
    await expect(page.locator("#messages .msg.ephemeral")).to_contain_text("not allowed")
    await shot(page, "deploys-refused")

    await act_as(page, "Grace Thompson")
    await expect(rollback).to_be_visible()
    await shot(page, "deploys-failed")
    await rollback.click()
    await expect(page.locator("#dialog .dialog")).to_contain_text("v2.4.0")
    await page.locator("#dialog [data-dialog='confirm']").click()
    rolled = page.locator("#messages .msg", has_text="Rolled back: checkout in production")
    await expect(rolled).to_contain_text("Rolled back to v2.4.0 by")
    # The stand-in CI reports the rolled-back version as deployed.
    await expect(
        page.locator("#messages .msg", has_text="Deployed: checkout v2.4.0").nth(1)
    ).to_be_visible()
    await shot(page, "deploys-rolled-back")


async def test_an_agent_reacts_with_rotating_light_and_the_incident_room_opens(
    up: Up, page: Page
) -> None:
    await page.goto(f"{up.sandbox_url}/?c=C0SUPPORT1")
    await act_as(page, "Priya Raman")
    await page.fill(
        "#composer textarea",
        "Acme's checkout is failing, jane@acme.example says payments time out since 10:00",
    )
    await page.keyboard.press("Enter")
    message = page.locator("#messages .msg", has_text="checkout is failing")
    await message.hover()
    await message.locator(".hover-menu [data-picker]").click()
    await page.click("#picker [data-pick='rotating_light']")
    # The pointer to the room arrives in the thread, and the room in the sidebar.
    await expect(message.locator(".replies-count")).to_be_visible()
    await page.get_by_text("incident-acme-").first.click()
    briefing = page.locator("#messages .msg", has_text="Incident: Acme Corporation")
    await expect(briefing).to_contain_text("Enterprise")
    await expect(briefing).to_contain_text("@sofia")
    await expect(briefing).to_contain_text("payments time out")
    await expect(page.locator(".pinned, .msg", has_text="Pinned").first).to_be_visible()
    await shot(page, "escalation-room")
