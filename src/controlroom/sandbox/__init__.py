"""The Control Room sandbox: a local, stateful emulation of the Slack platform.

It imports nothing from the rest of Control Room.

    sb = Sandbox(SandboxConfig(request_url="http://127.0.0.1:8000/slack/events"))
    async with serve_sandbox(sb) as running:
        client = AsyncWebClient(token=sb.bot_token, base_url=running.api_url)
        ts = await sb.act.post_message("priya", "#support", "the checkout is down")
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
