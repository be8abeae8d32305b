"""What the HTTP connectors share: one client, a timeout, retries of transient failures
(timeouts, connection errors, 429, 5xx) with capped exponential backoff and full jitter,
``Retry-After`` honoured up to a cap, and the mapping of failures to ``CrmUnavailable``.

Only reads go through here, so retrying a POST (HubSpot's search) is safe.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any, Self

import httpx

from controlroom.workflows.escalations.crm.base import CrmBadResponse, CrmUnavailable

__all__ = ["HttpConnector", "RetryPolicy"]

Sleep = Callable[[float], Awaitable[None]]


@dataclass(frozen=True)
class RetryPolicy:
    """``attempts`` in total; the n-th retry waits ``uniform(0, min(cap, base * 2**(n-1)))``
    (full jitter), or the server's ``Retry-After`` when it gives one (at most
    ``max_retry_after``; longer means "unavailable now")."""

    attempts: int = 3
    base: float = 0.25
    cap: float = 4.0
    max_retry_after: float = 10.0

    def __post_init__(self) -> None:
        if self.attempts < 1:
            raise ValueError("attempts must be at least 1")
        if self.base < 0 or self.cap < 0:
            raise ValueError("base and cap must not be negative")

    def backoff(self, retry: int, rand: Callable[[], float]) -> float:
        return float(rand() * min(self.cap, self.base * 2 ** (retry - 1)))


_TRANSIENT_STATUS = frozenset({408, 425, 429, 500, 502, 503, 504})


def _retry_after(resp: httpx.Response) -> float | None:
    value = resp.headers.get("retry-after")
    if value is None:
        return None
    try:
        seconds = float(value)
    except ValueError:
        return None
    return seconds if seconds >= 0 else None


class HttpConnector:
    """Base of the HTTP connectors. Owns an ``httpx.AsyncClient`` created on first use;
    ``aclose`` (or ``async with``) closes it."""

    name = "http"

    def __init__(
        self,
        *,
        timeout: float = 5.0,
        retry: RetryPolicy | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
        sleep: Sleep = asyncio.sleep,
        rand: Callable[[], float] = random.random,
    ) -> None:
        if timeout <= 0:
            raise ValueError("timeout must be positive")
        self.timeout = timeout
        self.retry = retry or RetryPolicy()
        self._transport = transport
        self._sleep = sleep
        self._rand = rand
        self._client: httpx.AsyncClient | None = None

    @property
    def client(self) -> httpx.AsyncClient:
        if self._client is None:
            self._client = httpx.AsyncClient(
                timeout=httpx.Timeout(self.timeout),
                transport=self._transport,
                follow_redirects=False,
                headers={"User-Agent": "controlroom-escalations/0.1"},
            )
        return self._client

    async def aclose(self) -> None:
        if self._client is not None:
            await self._client.aclose()
            self._client = None

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def send(
        self,
        method: str,
        url: str,
        *,
        headers: Mapping[str, str] | None = None,
        params: Mapping[str, str] | None = None,
        json: Any = None,
        data: Mapping[str, str] | None = None,
    ) -> httpx.Response:
        """Send with retries of transient failures. Returns any non-transient response
        (2xx, and 4xx other than 408/425/429) for the caller to interpret; raises
        ``CrmUnavailable`` when the attempts run out."""
        attempts = self.retry.attempts
        for attempt in range(1, attempts + 1):
            wait: float | None = None
            try:
                resp = await self.client.request(
                    method, url, headers=headers, params=params, json=json, data=data
                )
            except httpx.TimeoutException:
                error = CrmUnavailable(self.name, f"timed out after {self.timeout:g}s")
            except httpx.TransportError as exc:
                error = CrmUnavailable(self.name, f"connection failed ({type(exc).__name__})")
            else:
                if resp.status_code not in _TRANSIENT_STATUS:
                    return resp
                error = CrmUnavailable(
                    self.name,
                    f"HTTP {resp.status_code} from {method} {resp.url.path}",
                    status=resp.status_code,
                )
                wait = _retry_after(resp)
                if wait is not None and wait > self.retry.max_retry_after:
                    raise CrmUnavailable(
                        self.name,
                        f"rate limited for {wait:g}s (HTTP {resp.status_code})",
                        status=resp.status_code,
                    )
            if attempt == attempts:
                raise error
            await self._sleep(wait if wait is not None else self.retry.backoff(attempt, self._rand))
        raise AssertionError("unreachable")  # pragma: no cover

    def json_of(self, resp: httpx.Response) -> Any:
        """The JSON body, or ``CrmBadResponse`` naming the status and content type."""
        try:
            return resp.json()
        except ValueError:
            ctype = resp.headers.get("content-type", "?")
            raise CrmBadResponse(
                self.name,
                f"HTTP {resp.status_code} from {resp.url.path} is not JSON ({ctype})",
                status=resp.status_code,
            ) from None
