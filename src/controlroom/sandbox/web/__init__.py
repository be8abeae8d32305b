"""The sandbox's web client: a Slack-like page to act as any seeded user.

Mounted by the sandbox app at ``/`` (the page) and ``/web/...`` (HTML fragments, JSON
actions, static files, the live event stream). Server-rendered Jinja2; one small plain-JS
module sends actions and re-fetches fragments when ``/web/events`` (Server-Sent Events)
says something changed. Live updates come from ``Sandbox.on_change`` plus a 250 ms poll
of a cheap conversation fingerprint for the few Web API changes that do not notify.

    client = web_client(sb)            # one per sandbox, created on first use
    client.set_shortcuts([{"callback_id": "escalate", "name": "Escalate", "type": "message"}])
"""

from __future__ import annotations

from .mrkdwn import Renderer
from .render import Shortcut
from .routes import WebClient, web_client, web_routes

__all__ = ["Renderer", "Shortcut", "WebClient", "web_client", "web_routes"]
