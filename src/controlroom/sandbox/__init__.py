"""The Control Room sandbox: a local, stateful emulation of the Slack platform.

It imports nothing from the rest of Control Room (checked by import-linter).

    sb = Sandbox(SandboxConfig(request_url="http://127.0.0.1:8000/slack/events"))
    async with serve_sandbox(sb) as running:
        client = AsyncWebClient(token=sb.bot_token, base_url=running.api_url)
        ts = await sb.act.post_message("priya", "#support", "the checkout is down")

Map for code built on top (the web client, test harnesses):

* ``sb.state`` (:class:`State`): ``teams``, ``users``, ``channels``, ``usergroups``,
  ``views``, ``tokens``, ``calls``; ``user(ref)``, ``channel(ref)``, ``dm(a, b)``,
  ``conversations_for(user)``, ``messages(channel)``, ``replies(channel, ts)``,
  ``ephemerals(user)``. References are ids, names, ``#name``/``@name`` or emails.
* ``sb.act`` (:class:`Actor`): what a person does; every action delivers what Slack
  would (``post_message``, ``edit_message``, ``delete_message``, ``add_reaction``,
  ``remove_reaction``, ``join_channel``, ``invite``, ``leave_channel``, ``create_channel``,
  ``click_button``, ``click_view_button``, ``select_option``, ``run_command``,
  ``message_shortcut``, ``global_shortcut``, ``submit_view``, ``close_view``,
  ``open_views``, ``open_app_home``).
  Impossible actions raise :class:`ActionError`; Slack-level refusals :class:`ApiError`.
* Seeds: ``SandboxConfig(seed_path=None)`` is Northwind with empty channels (what tests
  build on); ``seed_path="demo"`` adds channel history; any path loads your own YAML.
* ``sb.on_change(listener)``: ``listener(team_id, event)`` after every change (for live UIs).
* ``sb.extra_routes``: Starlette routes mounted into ``sb.app`` (append before first use).
* ``sb.deliveries``, ``sb.deliverer.emitted``, ``sb.socket.frames_sent``: what went out.
* ``sb.faults.set(...)``, ``sb.oauth.uninstall(team_id)``, ``sb.oauth.rotation``,
  ``await sb.set_request_url(url)``, ``await sb.settle()``, ``await sb.aclose()``.
"""

from __future__ import annotations

from .actor import ActionError, Actor
from .config import SandboxConfig
from .core import Sandbox
from .delivery import DeliveryRecord
from .faults import Faults, FaultSpec
from .interactivity import InteractiveResult
from .ratelimit import RateLimiter
from .seed import Seed, SeedError, load_seed
from .server import RunningSandbox, serve_sandbox
from .signing import signature
from .state import ApiCall, Channel, NotFound, State, Team, Token, User
from .webapi import ApiError

__all__ = [
    "ActionError",
    "Actor",
    "ApiCall",
    "ApiError",
    "Channel",
    "DeliveryRecord",
    "FaultSpec",
    "Faults",
    "InteractiveResult",
    "NotFound",
    "RateLimiter",
    "RunningSandbox",
    "Sandbox",
    "SandboxConfig",
    "Seed",
    "SeedError",
    "State",
    "Team",
    "Token",
    "User",
    "load_seed",
    "serve_sandbox",
    "signature",
]
