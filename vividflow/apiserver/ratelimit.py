"""Per-key request limits with the `limits` library: in process by default, Redis when configured."""

from __future__ import annotations

import math
import time
from dataclasses import dataclass

from limits import RateLimitItem, parse
from limits.storage import Storage, storage_from_string
from limits.strategies import MovingWindowRateLimiter


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


class KeyRateLimiter:
    def __init__(self, limits: list[str], storage_uri: str | None) -> None:
        self.items: list[RateLimitItem] = [parse(text) for text in limits]
        storage = storage_from_string(storage_uri or "memory://")
        assert isinstance(storage, Storage)  # the synchronous flavour, for sync routes
        self.storage = storage
        self._limiter = MovingWindowRateLimiter(self.storage)

    def hit(self, key: str) -> RateLimitState:
        """Count one request; the state of the limit closest to running out (or the one broken)."""
        tightest: RateLimitState | None = None
        for item in self.items:
            allowed = self._limiter.hit(item, "api-key", key)
            stats = self._limiter.get_window_stats(item, "api-key", key)
            state = RateLimitState(allowed, item.amount, stats.remaining, stats.reset_time)
            if not allowed:
                return state
            if tightest is None or state.remaining < tightest.remaining:
                tightest = state
        return tightest or RateLimitState(True, 0, 0, time.time())

    def ping(self) -> bool:
        return bool(self.storage.check())
