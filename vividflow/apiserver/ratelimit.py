"""Request limits with the `limits` library: in process by default, Redis when configured.

- Per user (``rate_limits``), across all of the user's keys, so that more keys do not buy more
  requests; optionally also per key (``key_rate_limits``). The response headers describe whichever
  window is closest to running out.
- Failed authentications per client address (``auth_failure_limits``): past them, every key from that
  address is refused until the window frees, so keys cannot be guessed at speed.

The sliding-window counter keeps two counters per subject and window (O(1) a request, in memory or
Redis), weighting the previous window by how much of it still overlaps: close to a true moving
window without storing a timestamp per request.
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from limits import RateLimitItem, parse
from limits.aio.storage import Storage
from limits.aio.strategies import SlidingWindowCounterRateLimiter
from limits.storage import storage_from_string

from vividflow.apiserver.metrics import RATE_LIMIT_REFUSALS
from vividflow.apiserver.services.keys import Principal


@dataclass(frozen=True)
class RateLimitState:
    allowed: bool
    limit: int
    remaining: int
    reset_at: float
    """Epoch seconds when the tightest window frees a request."""

    @property
    def retry_after(self) -> int:
        return max(1, math.ceil(self.reset_at - time.time()))

    def headers(self) -> dict[str, str]:
        return {
            "X-RateLimit-Limit": str(self.limit),
            "X-RateLimit-Remaining": str(self.remaining),
            "X-RateLimit-Reset": str(math.ceil(self.reset_at)),
        }


REDIS_CONNECTIONS = 64
"""Connections of one API process to the rate-limit Redis."""
REDIS_WAIT_SECONDS = 10.0
"""How long a request waits for a free Redis connection."""


def async_storage_uri(redis_url: str | None) -> str:
    """`limits` selects its asyncio storages with an ``async+`` scheme prefix."""
    return f"async+{redis_url}" if redis_url else "async+memory://"


Window = tuple[RateLimitItem, str, str]
"""(limit, namespace, subject)"""


class RateLimiter:
    def __init__(
        self,
        user_limits: Sequence[str],
        redis_url: str | None,
        *,
        key_limits: Sequence[str] = (),
        auth_failure_limits: Sequence[str] = (),
        redis_connections: int = REDIS_CONNECTIONS,
    ) -> None:
        self.user_items: list[RateLimitItem] = [parse(text) for text in user_limits]
        self.key_items: list[RateLimitItem] = [parse(text) for text in key_limits]
        self.auth_failure_items: list[RateLimitItem] = [parse(text) for text in auth_failure_limits]
        self._parsed_cache: dict[tuple[str, ...], list[RateLimitItem]] = {}
        options: dict[str, Any] = {}
        if redis_url:
            import redis.asyncio

            # redis-py's asyncio client (a dependency already) rather than the default coredis, with
            # a bounded pool that makes a request wait for a connection rather than fail with a 500
            # (the default pool raises once 1000 requests are in flight).
            pool = redis.asyncio.BlockingConnectionPool.from_url(
                redis_url, max_connections=redis_connections, timeout=REDIS_WAIT_SECONDS
            )
            options = {"implementation": "redispy", "connection_pool": pool}
        storage = storage_from_string(async_storage_uri(redis_url), **options)
        assert isinstance(storage, Storage)
        self.storage = storage
        self._limiter = SlidingWindowCounterRateLimiter(storage)

    async def hit(self, principal: Principal) -> RateLimitState:
        """Count one request of ``principal``; the state of the window closest to running out (or of
        the one that refused it)."""
        windows: list[Window] = [(item, "user", principal.user_id) for item in self.user_items]
        if principal.key_id is not None:
            windows += [(item, "api-key", principal.key_id) for item in self.key_items]
        return await self._tightest(windows, count=True)

    async def hit_windows(
        self, namespace: str, limits: Sequence[str], subjects: Sequence[str]
    ) -> RateLimitState:
        """Count one request against each of ``limits`` for every subject (for example an address
        and an email), apart from the API's windows; the tightest (or refusing) state."""
        items = self._parsed(limits)
        windows: list[Window] = [(item, namespace, subject) for subject in subjects for item in items]
        return await self._tightest(windows, count=True)

    def _parsed(self, limits: Sequence[str]) -> list[RateLimitItem]:
        key = tuple(limits)
        items = self._parsed_cache.get(key)
        if items is None:
            items = self._parsed_cache[key] = [parse(text) for text in limits]
        return items

    async def auth_allowed(self, address: str) -> RateLimitState:
        """Whether ``address`` may still try a key (nothing is counted)."""
        windows = [(item, "auth-failure", address) for item in self.auth_failure_items]
        return await self._tightest(windows, count=False)

    async def auth_failed(self, address: str) -> None:
        for item in self.auth_failure_items:
            await self._limiter.hit(item, "auth-failure", address)

    async def _tightest(self, windows: list[Window], *, count: bool) -> RateLimitState:
        tightest: RateLimitState | None = None
        for item, namespace, subject in windows:
            check = self._limiter.hit if count else self._limiter.test
            allowed = await check(item, namespace, subject)
            stats = await self._limiter.get_window_stats(item, namespace, subject)
            state = RateLimitState(allowed, item.amount, stats.remaining, stats.reset_time)
            if not allowed:
                RATE_LIMIT_REFUSALS.labels(limit=namespace).inc()
                return state
            if tightest is None or state.remaining < tightest.remaining:
                tightest = state
        return tightest or RateLimitState(True, 0, 0, time.time())

    async def ping(self) -> bool:
        return bool(await self.storage.check())
