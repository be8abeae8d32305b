"""The Sandbox object: one emulated Slack platform with its app installed."""

from __future__ import annotations

import asyncio
import logging
import secrets
from collections.abc import Callable
from typing import TYPE_CHECKING

from . import api_chat, api_conversations, api_misc, api_views, oauth
from .actor import Actor
from .config import SandboxConfig
from .delivery import Deliverer, DeliveryRecord
from .faults import Faults
from .interactivity import Interactions
from .ops import Ops
from .ratelimit import RateLimiter
from .seed import load_seed
from .socket_mode import SocketHub
from .state import JSON, Channel, IdFactory, State, User
from .webapi import WebApi, wait_or

if TYPE_CHECKING:
    from starlette.applications import Starlette
    from starlette.routing import BaseRoute

    from .oauth import OAuth

# the api_* modules register their Web API methods when imported
_METHOD_MODULES = (api_chat, api_conversations, api_misc, api_views, oauth)

log = logging.getLogger("controlroom.sandbox")
ChangeListener = Callable[[str, JSON], None]


class Sandbox:
    """A local, stateful Slack: Web API, Events API, Socket Mode, interactivity, OAuth.

    Build it, then serve ``sb.app`` (``serve_sandbox``) and point ``slack_sdk`` at
    ``running.api_url``. ``sb.act`` drives seeded users; ``sb.state`` shows the world.
    """

    def __init__(self, config: SandboxConfig | None = None) -> None:
        self.config = config or SandboxConfig()
        self.seed = load_seed(self.config.seed_path)
        self.clock = self.config.clock
        self.sleep = self.config.sleep
        self.state = State(self.seed, self.clock, IdFactory(self.config.random_seed))
        self.signing_secret: str = self.config.signing_secret or secrets.token_hex(16)
        self.client_secret: str = self.seed.app.client_secret or secrets.token_hex(16)
        self.request_url: str | None = self.config.request_url
        self.ratelimiter = RateLimiter(
            self.clock,
            self.config.time_scale,
            self.config.rate_limits,
            self.config.non_marketplace_app,
        )
        self.faults = Faults(self.clock, self.config.time_scale, self.config.random_seed)
        self.deliverer = Deliverer(self)
        self.ops = Ops(self)
        self.interactions = Interactions(self)
        self.socket = SocketHub(self)
        self.oauth: OAuth = oauth.OAuth(self)
        self.act = Actor(self)
        self.webapi = WebApi(self)
        self._public_url = self.config.public_url
        self._closed = asyncio.Event()
        self.bot_tokens: dict[str, str] = {}
        for t in self.seed.teams:
            if t.installed:
                token = self.state.issue_token(
                    "bot", t.id, t.bot.user_id, tuple(self.seed.app.bot_scopes), value=t.bot.token
                )
                self.bot_tokens[t.id] = token.value
        primary = self.state.primary_team
        self.app_token: str = self.state.issue_token(
            "app",
            primary.id,
            primary.bot_user_id,
            ("connections:write",),
            value=f"xapp-1-{self.seed.app.app_id}-{self.state.ids.hex(13)}-{self.state.ids.hex(64)}",
        ).value
        self._app: Starlette | None = None
        #: routes added to ``sb.app`` (e.g. the web client); append before using ``app``
        self.extra_routes: list[BaseRoute] = []
        self._listeners: list[ChangeListener] = []

    # -- identity ------------------------------------------------------------------
    @property
    def team_id(self) -> str:
        return self.state.primary_team.id

    @property
    def app_id(self) -> str:
        return self.seed.app.app_id

    @property
    def client_id(self) -> str:
        return self.seed.app.client_id

    @property
    def bot_user_id(self) -> str:
        return self.state.primary_team.bot_user_id

    @property
    def bot_id(self) -> str:
        return self.state.primary_team.bot_id

    @property
    def bot_token(self) -> str:
        return self.bot_tokens.get(self.team_id, "")

    @property
    def public_url(self) -> str:
        return self._public_url or "http://sandbox.invalid"

    @public_url.setter
    def public_url(self, value: str) -> None:
        self._public_url = value.rstrip("/")

    @property
    def app(self) -> Starlette:
        """The ASGI app (built on first use)."""
        if self._app is None:
            from .app import build_app

            self._app = build_app(self, self.extra_routes)
        return self._app

    @property
    def deliveries(self) -> list[DeliveryRecord]:
        """Every delivery attempt (events and interactive payloads), oldest first."""
        return self.deliverer.records

    def user(self, name_or_id: str, team_id: str | None = None) -> User:
        return self.state.user(name_or_id, team_id)

    def channel(self, name_or_id: str, team_id: str | None = None) -> Channel:
        return self.state.channel(name_or_id, team_id)

    # -- change notifications (for UIs) ---------------------------------------------
    def on_change(self, listener: ChangeListener) -> Callable[[], None]:
        """Call ``listener(team_id, event)`` after every change to the world.

        ``event`` is the Slack-shaped inner event (message, message_changed,
        reaction_added, member_joined_channel, ...) whether or not the app is subscribed,
        plus sandbox-only kinds: ``ephemeral``, ``view_opened``, ``view_updated``,
        ``view_closed``. Returns a function that removes the listener.
        """
        self._listeners.append(listener)
        return lambda: self._listeners.remove(listener)

    def notify(self, team_id: str, event: JSON) -> None:
        for listener in list(self._listeners):
            try:
                listener(team_id, event)
            except Exception:
                log.exception("sandbox change listener failed")

    # -- lifecycle -----------------------------------------------------------------
    async def set_request_url(self, url: str | None) -> bool:
        """Point event delivery at ``url`` after Slack's ``url_verification`` challenge.

        Returns False (and leaves the URL unchanged) when the challenge is not answered.
        """
        if url is None:
            self.request_url = None
            return True
        if await self.deliverer.verify_url(url):
            self.request_url = url
            return True
        return False

    async def hold(self, seconds: float) -> None:
        """Wait ``seconds`` or until the sandbox closes (used by timeout faults)."""
        await wait_or(self._closed, seconds)

    async def settle(self, within: float | None = None) -> None:
        """Wait for in-flight deliveries (and their scheduled retries) to finish.

        Retries wait 1 and 5 platform minutes: with ``time_scale=1`` a failing endpoint
        keeps this waiting for 6 minutes, so pass ``within`` (seconds) to bound it
        (raises ``TimeoutError``).
        """
        if within is None:
            await self.deliverer.settle()
            return
        async with asyncio.timeout(within):
            await self.deliverer.settle()

    async def aclose(self) -> None:
        """Stop background work: deliveries, Socket Mode connections, held responses."""
        self._closed.set()
        await self.socket.aclose()
        await self.deliverer.aclose()
