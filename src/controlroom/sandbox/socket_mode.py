"""Socket Mode: ``apps.connections.open`` and the WebSocket link behind it.

Up to 10 connections per app; payloads go round-robin to one of them. ``events_api``
envelopes not acknowledged within ``socket_ack_timeout`` (real seconds) are sent
again with ``retry_attempt``/``retry_reason`` (up to 3 retries); interactive and slash
command envelopes are sent once and their ack ``payload`` is the app's response.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import uuid
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from starlette.websockets import WebSocket, WebSocketDisconnect

from .delivery import DeliveryRecord
from .state import JSON
from .webapi import ApiError, Call, method

if TYPE_CHECKING:
    from .core import Sandbox

MAX_CONNECTIONS = 10
EVENT_RETRIES = 3
#: interactive payload types whose ack may carry a response (view response_action, options)
RESPONSE_PAYLOAD_TYPES = {"view_submission", "block_suggestion"}
#: platform seconds between "warning" and "refresh_requested"
REFRESH_WARNING = 10.0
#: "&debug_reconnects=true" on the link shortens its life to this (platform seconds)
DEBUG_RECONNECT_SECONDS = 360.0


@dataclass(eq=False)
class Connection:
    ws: WebSocket
    id: int
    opened: float
    pending: dict[str, asyncio.Future[Any]] = field(default_factory=dict)
    closed: bool = False


class SocketHub:
    def __init__(self, sb: Sandbox) -> None:
        self.sb = sb
        self.connections: list[Connection] = []
        self.tickets: set[str] = set()
        self._next = 0
        self._serial = 0
        self.frames_sent: list[JSON] = []

    # -- connections -----------------------------------------------------------------
    def issue_url(self) -> str:
        ticket = str(uuid.uuid4())
        self.tickets.add(ticket)
        base = self.sb.public_url.replace("http://", "ws://").replace("https://", "wss://")
        return f"{base}/link/?ticket={ticket}&app_id={self.sb.app_id}"

    async def endpoint(self, ws: WebSocket) -> None:
        ticket = ws.query_params.get("ticket", "")
        if ticket not in self.tickets:
            await ws.close(code=1008)
            return
        self.tickets.discard(ticket)
        await ws.accept()
        if len(self.connections) >= MAX_CONNECTIONS:
            await self._send(
                ws,
                {
                    "type": "disconnect",
                    "reason": "too_many_websockets",
                    "debug_info": {"host": "applink-sandbox"},
                },
            )
            await ws.close()
            return
        self._serial += 1
        conn = Connection(ws, self._serial, self.sb.clock())
        self.connections.append(conn)
        refresher = None
        try:
            await self._send(
                ws,
                {
                    "type": "hello",
                    "num_connections": len(self.connections),
                    "debug_info": {
                        "host": f"applink-sandbox-{conn.id}",
                        "build_number": 1,
                        "approximate_connection_time": 18060,
                    },
                    "connection_info": {"app_id": self.sb.app_id},
                },
            )
            interval = self.sb.config.socket_refresh_interval
            if ws.query_params.get("debug_reconnects") == "true":
                interval = DEBUG_RECONNECT_SECONDS
            if interval:
                refresher = asyncio.get_running_loop().create_task(self._refresh(conn, interval))
            while True:
                message = await ws.receive()
                if message["type"] == "websocket.disconnect":
                    break
                data = message.get("text")
                if data is None:
                    data = (message.get("bytes") or b"").decode(errors="replace")
                self._on_frame(conn, data)
        except (WebSocketDisconnect, RuntimeError):
            pass
        finally:
            conn.closed = True
            if conn in self.connections:
                self.connections.remove(conn)
            for fut in conn.pending.values():
                if not fut.done():
                    fut.set_result(None)
            if refresher is not None:
                refresher.cancel()

    def _on_frame(self, conn: Connection, text: str) -> None:
        try:
            frame = json.loads(text)
        except ValueError:
            return
        if not isinstance(frame, dict):
            return
        envelope_id = frame.get("envelope_id")
        fut = conn.pending.get(str(envelope_id))
        if fut is not None and not fut.done():
            fut.set_result({"payload": frame.get("payload")})

    async def _send(self, ws: WebSocket, frame: JSON) -> None:
        self.frames_sent.append(frame)
        await ws.send_text(json.dumps(frame))

    async def _refresh(self, conn: Connection, interval: float) -> None:
        await self.sb.sleep(self.sb.config.scaled(max(0.0, interval - REFRESH_WARNING)))
        await self.disconnect(conn, "warning")
        await self.sb.sleep(self.sb.config.scaled(REFRESH_WARNING))
        await self.disconnect(conn, "refresh_requested")

    async def disconnect(self, conn: Connection, reason: str) -> None:
        """Send a ``disconnect`` frame (``warning``, ``refresh_requested``, ``link_disabled``)."""
        if conn.closed:
            return
        with contextlib.suppress(Exception):
            await self._send(
                conn.ws,
                {
                    "type": "disconnect",
                    "reason": reason,
                    "debug_info": {"host": f"wss-sandbox-{conn.id}"},
                },
            )
        if reason in ("refresh_requested", "link_disabled"):
            with contextlib.suppress(Exception):
                await conn.ws.close()

    async def disconnect_all(self, reason: str = "refresh_requested") -> None:
        for conn in list(self.connections):
            await self.disconnect(conn, reason)

    def _pick(self) -> Connection | None:
        live = [c for c in self.connections if not c.closed]
        if not live:
            return None
        conn = live[self._next % len(live)]
        self._next += 1
        return conn

    async def _exchange(self, frame: JSON, wait: float) -> tuple[bool, Any, int | None]:
        conn = self._pick()
        if conn is None:
            return False, None, None
        envelope_id = str(frame["envelope_id"])
        fut: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        conn.pending[envelope_id] = fut
        try:
            await self._send(conn.ws, frame)
            result = await asyncio.wait_for(fut, wait)
        except (TimeoutError, RuntimeError, WebSocketDisconnect):
            return False, None, conn.id
        except Exception:
            return False, None, conn.id
        finally:
            conn.pending.pop(envelope_id, None)
        if result is None:
            return False, None, conn.id
        return True, result.get("payload"), conn.id

    # -- delivery ----------------------------------------------------------------------
    async def deliver_event(self, body: JSON) -> None:
        sb = self.sb
        event_id = str(body["event_id"])
        envelope_id = str(uuid.uuid4())
        reason = ""
        for attempt in range(EVENT_RETRIES + 1):
            frame = {
                "envelope_id": envelope_id,
                "payload": body,
                "type": "events_api",
                "accepts_response_payload": False,
                "retry_attempt": attempt,
                "retry_reason": reason,
            }
            acked, _, conn_id = await self._exchange(frame, sb.config.socket_ack_timeout)
            sb.deliverer.records.append(
                DeliveryRecord(
                    event_id,
                    "event_callback",
                    "socket",
                    attempt,
                    None,
                    acked,
                    None if acked else ("no_connection" if conn_id is None else "timeout"),
                    {"retry_attempt": str(attempt), "retry_reason": reason} if attempt else {},
                    time=sb.clock(),
                )
            )
            if acked or conn_id is None:
                return
            reason = "timeout"

    async def request(self, envelope_type: str, payload: JSON) -> tuple[bool, Any]:
        frame = {
            "envelope_id": str(uuid.uuid4()),
            "payload": payload,
            "type": envelope_type,
            "accepts_response_payload": envelope_type == "slash_commands"
            or payload.get("type") in RESPONSE_PAYLOAD_TYPES,
        }
        sb = self.sb
        acked, ack_payload, conn_id = await self._exchange(frame, sb.config.socket_ack_timeout)
        kind = "slash_command" if envelope_type == "slash_commands" else str(payload.get("type"))
        sb.deliverer.records.append(
            DeliveryRecord(
                "",
                kind,
                "socket",
                0,
                None,
                acked,
                None if acked else ("no_connection" if conn_id is None else "timeout"),
                time=sb.clock(),
            )
        )
        return acked, ack_payload

    async def aclose(self) -> None:
        for conn in list(self.connections):
            conn.closed = True
            with contextlib.suppress(Exception):
                await conn.ws.close(code=1001)
        self.connections.clear()


@method("apps.connections.open", scopes=("connections:write",), token_types=("app",))
async def apps_connections_open(call: Call) -> JSON:
    if call.params.get("token"):
        raise ApiError("invalid_auth")
    return {"url": call.sb.socket.issue_url()}
