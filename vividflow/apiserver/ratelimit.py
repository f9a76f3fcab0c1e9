"""Per-key request limits with the `limits` library: in process by default, Redis when configured.

The sliding-window counter keeps two counters per key and window (O(1) a request, in memory or
Redis), weighting the previous window by how much of it still overlaps: close to a true moving
window without storing a timestamp per request.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass

from limits import RateLimitItem, parse
from limits.aio.storage import Storage
from limits.aio.strategies import SlidingWindowCounterRateLimiter
from limits.storage import storage_from_string


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


def async_storage_uri(redis_url: str | None) -> str:
    """`limits` selects its asyncio storages with an ``async+`` scheme prefix."""
    return f"async+{redis_url}" if redis_url else "async+memory://"


class KeyRateLimiter:
    def __init__(self, limits: list[str], redis_url: str | None) -> None:
        self.items: list[RateLimitItem] = [parse(text) for text in limits]
        # redis-py's asyncio client (a dependency already) rather than the default coredis
        options = {"implementation": "redispy"} if redis_url else {}
        storage = storage_from_string(async_storage_uri(redis_url), **options)
        assert isinstance(storage, Storage)
        self.storage = storage
        self._limiter = SlidingWindowCounterRateLimiter(storage)

    async def hit(self, key: str) -> RateLimitState:
        """Count one request; the state of the limit closest to running out (or the one broken)."""
        tightest: RateLimitState | None = None
        for item in self.items:
            allowed = await self._limiter.hit(item, "api-key", key)
            stats = await self._limiter.get_window_stats(item, "api-key", key)
            state = RateLimitState(allowed, item.amount, stats.remaining, stats.reset_time)
            if not allowed:
                return state
            if tightest is None or state.remaining < tightest.remaining:
                tightest = state
        return tightest or RateLimitState(True, 0, 0, time.time())

    async def ping(self) -> bool:
        return bool(await self.storage.check())
