"""Test helpers for workflow authors (and for Control Room's own tests).

```python
from controlroom.testing import running_hub

async def test_thanks(tmp_path):
    async with running_hub(tmp_path, workflows=[thanks.workflow]) as h:
        ts = await h.act.post_message("priya", "#support", "the checkout is down")
        await h.act.add_reaction("dan", "#support", ts, "pray")
        await h.settle()
        assert h.sandbox.state.replies("#support", ts)[-1]["text"] == "You're welcome!"
```

``running_hub`` starts the sandbox and the hub on loopback ports, wires them together as
``controlroom up`` does (signed HTTP delivery, or Socket Mode), and runs the workers;
``settle()`` waits until every delivery and job has finished. ``sign_slack_request``
builds the headers Slack would send for a body.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import time
from collections.abc import AsyncIterator, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from controlroom.config import Secret, Settings, load_settings
from controlroom.hub import Hub
from controlroom.serving import bound_port, free_port, serve_asgi
from controlroom.workflow import Workflow

__all__ = ["HubHarness", "running_hub", "sign_slack_request"]


def sign_slack_request(
    body: bytes | str, signing_secret: str, timestamp: int | None = None
) -> dict[str, str]:
    """The ``X-Slack-Signature`` and ``X-Slack-Request-Timestamp`` headers for ``body``."""
    raw = body.encode() if isinstance(body, str) else body
    ts = str(int(time.time()) if timestamp is None else timestamp)
    digest = hmac.new(signing_secret.encode(), b"v0:" + ts.encode() + b":" + raw, hashlib.sha256)
    return {"X-Slack-Request-Timestamp": ts, "X-Slack-Signature": "v0=" + digest.hexdigest()}


@dataclass
class HubHarness:
    hub: Hub
    sandbox: Any
    hub_url: str
    sandbox_url: str
    settings: Settings

    @property
    def act(self) -> Any:
        """Act as a seeded sandbox user (``post_message``, ``add_reaction``, ...)."""
        return self.sandbox.act

    async def settle(self, within: float = 15.0) -> None:
        """Wait until event deliveries are done and no job is queued or running."""
        deadline = time.monotonic() + within
        quiet = 0
        while True:
            await self.sandbox.settle()
            counts = await self.hub.queue.counts()
            busy = counts.get("queued", 0) + counts.get("running", 0)
            quiet = quiet + 1 if busy == 0 else 0
            if quiet >= 3:
                return
            if time.monotonic() > deadline:
                raise TimeoutError(f"hub did not settle within {within}s: {counts}")
            await asyncio.sleep(0.02)


@contextlib.asynccontextmanager
async def running_hub(
    data_dir: Path,
    *,
    workflows: Iterable[Workflow] = (),
    overrides: Mapping[str, Any] | None = None,
    sandbox_config: Any = None,
    database_url: str | None = None,
    workers: int = 4,
    socket_mode: bool = False,
    installable: bool = False,
) -> AsyncIterator[HubHarness]:
    """Sandbox + hub + workers on loopback ports, wired like ``controlroom up``: events
    arrive as signed HTTP requests, or over Socket Mode with ``socket_mode=True``.
    With ``installable=True`` the hub is an installable app (OAuth v2 with the sandbox's
    client id and secret) instead of holding one bot token: workspaces install it at
    ``hub_url + "/slack/install"``."""
    from controlroom.app import create_app, socket_mode_intake
    from controlroom.sandbox import Sandbox, SandboxConfig, serve_sandbox

    sb = Sandbox(sandbox_config or SandboxConfig(socket_mode=socket_mode))
    async with serve_sandbox(sb, host="127.0.0.1", port=0) as running:
        port = free_port()
        base: dict[str, Any] = {
            "data_dir": str(data_dir),
            "sandbox.enabled": "off",
            "server.port": port,
            "server.public_url": f"http://127.0.0.1:{port}",
        }
        if database_url:
            base["database_url"] = database_url
        base.update(overrides or {})
        settings = load_settings(environ={}, overrides=base)
        settings = settings.model_copy(
            update={
                "slack": settings.slack.model_copy(
                    update={
                        "signing_secret": Secret(sb.signing_secret, "sandbox"),
                        "bot_token": None if installable else Secret(sb.bot_token, "sandbox"),
                        "client_id": sb.client_id if installable else "",
                        "client_secret": Secret(sb.client_secret, "sandbox")
                        if installable
                        else None,
                        "app_token": Secret(sb.app_token, "sandbox"),
                        "api_url": running.api_url,
                        "team_id": sb.team_id,
                        "socket_mode": socket_mode,
                    }
                )
            }
        )
        hub = Hub(settings, workflows=list(workflows))
        await hub.start()
        try:
            web = create_app(settings, hub=hub, manage_hub=False)
            async with (
                serve_asgi(web, "127.0.0.1", port) as server,
                socket_mode_intake(settings, web) as intake,
            ):
                hub_url = f"http://127.0.0.1:{bound_port(server)}"
                if intake is not None:
                    await intake.wait_connected()
                elif not await sb.set_request_url(f"{hub_url}/slack/events"):
                    raise RuntimeError("the hub did not answer the url_verification challenge")
                worker = asyncio.create_task(hub.queue.run_worker(concurrency=workers))
                try:
                    yield HubHarness(hub, sb, hub_url, running.url, settings)
                finally:
                    worker.cancel()
                    with contextlib.suppress(asyncio.CancelledError):
                        await worker
        finally:
            await hub.close()
