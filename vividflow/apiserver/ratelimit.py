"""Request limits with the `limits` library: in process by default, Redis when configured.

- Per user (``rate_limits``), across all of the user's keys, so that more keys do not buy more
  requests; optionally also per key (``key_rate_limits``). The response headers describe whichever
  window is closest to running out.
- Failed authentications per client address (``auth_failure_limits``): past them, every key from that
  address is refused until the window frees, so keys cannot be guessed at speed.

The sliding-window counter keeps two counters per subject and window (O(1) a request, in memory or
Redis), weighting the previous window by how much of it still overlaps: close to a true moving
window without storing a timestamp per request. With Redis, a request's windows are counted in one
round trip (:data:`HIT_SCRIPT`), on the keys `limits` uses, and the hits of the requests that reach
them in the same turn of the event loop go to Redis in one pipeline (:mod:`script_batch`).
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from limits import RateLimitItem, parse
from limits.aio.storage import SlidingWindowCounterSupport, Storage
from limits.storage import storage_from_string

from vividflow.apiserver.metrics import RATE_LIMIT_REFUSALS
from vividflow.apiserver.script_batch import ScriptBatcher
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
Counts = tuple[int, float, int, float]
"""A sliding window as `limits` storages report it: previous count, seconds the previous window still
weighs, current count, seconds until the current counter expires."""

REDIS_KEY_PREFIX = "LIMITS"
"""`limits`' Redis prefix: a window's counters are ``LIMITS:{key}`` and ``LIMITS:{key}/-1`` (previous)."""
HIT_SCRIPT = """
-- Per window (KEYS: previous and current counter; ARGV: limit and expiry in seconds), in order: what
-- limits' acquire_sliding_window.lua does for one hit, then the read of its sliding_window.lua. Stops
-- after the first window that refuses, as counting window by window did.
local replies = {}
for i = 1, #KEYS / 2 do
    local previous, current = KEYS[2 * i - 1], KEYS[2 * i]
    local limit, expiry = tonumber(ARGV[2 * i - 1]), tonumber(ARGV[2 * i]) * 1000
    local current_ttl = tonumber(redis.call('pttl', current))
    if current_ttl > 0 and current_ttl < expiry then
        redis.call('rename', current, previous)
        redis.call('set', current, 0, 'PX', current_ttl + expiry)
    end
    local previous_count = tonumber(redis.call('get', previous)) or 0
    local previous_ttl = math.max(0, tonumber(redis.call('pttl', previous)))
    local current_count = tonumber(redis.call('get', current)) or 0
    local allowed = math.floor(previous_count * previous_ttl / expiry) + current_count + 1 <= limit
    if allowed then
        if redis.call('exists', current) == 1 then
            current_count = redis.call('incrby', current, 1)
        else
            redis.call('set', current, 1, 'PX', expiry * 2)
            current_count = 1
        end
    end
    current_ttl = math.max(0, tonumber(redis.call('pttl', current)))
    replies[i] = {allowed and 1 or 0, previous_count, previous_ttl, current_count, current_ttl}
    if not allowed then
        break
    end
end
return replies
"""


def window_state(item: RateLimitItem, allowed: bool, counts: Counts) -> RateLimitState:
    """The window's state from its counts, as `limits`' ``get_window_stats`` computes it."""
    previous_count, previous_ttl, current_count, current_ttl = counts
    expiry = item.get_expiry()
    weighted = previous_count * previous_ttl / expiry + current_count
    reset_in = min(
        previous_ttl % (expiry / previous_count) if previous_count else math.inf,
        current_ttl % expiry if current_count else math.inf,
    )
    remaining = max(0, item.amount - math.floor(weighted))
    return RateLimitState(
        allowed, item.amount, remaining, time.time() + (0 if reset_in == math.inf else reset_in)
    )


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
        self._hit_script: ScriptBatcher | None = None
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
            self._hit_script = ScriptBatcher(redis.asyncio.Redis(connection_pool=pool), HIT_SCRIPT)
        storage = storage_from_string(async_storage_uri(redis_url), **options)
        assert isinstance(storage, Storage) and isinstance(storage, SlidingWindowCounterSupport)
        self.storage = storage
        self._windows: SlidingWindowCounterSupport = storage

    async def hit(self, principal: Principal) -> RateLimitState:
        """Count one request of ``principal``; the state of the window closest to running out (or of
        the one that refused it)."""
        windows: list[Window] = [(item, "user", principal.user_id) for item in self.user_items]
        if principal.key_id is not None:
            windows += [(item, "api-key", principal.key_id) for item in self.key_items]
        return self._tightest(windows, await self._count(windows))

    async def hit_windows(
        self, namespace: str, limits: Sequence[str], subjects: Sequence[str]
    ) -> RateLimitState:
        """Count one request against each of ``limits`` for every subject (for example an address
        and an email), apart from the API's windows; the tightest (or refusing) state."""
        items = self._parsed(limits)
        windows: list[Window] = [(item, namespace, subject) for subject in subjects for item in items]
        return self._tightest(windows, await self._count(windows))

    def _parsed(self, limits: Sequence[str]) -> list[RateLimitItem]:
        key = tuple(limits)
        items = self._parsed_cache.get(key)
        if items is None:
            items = self._parsed_cache[key] = [parse(text) for text in limits]
        return items

    async def auth_allowed(self, address: str) -> RateLimitState:
        """Whether ``address`` may still try a key (nothing is counted)."""
        windows = [(item, "auth-failure", address) for item in self.auth_failure_items]
        states = []
        for item, namespace, subject in windows:
            counts = await self._windows.get_sliding_window(
                item.key_for(namespace, subject), item.get_expiry()
            )
            previous_count, previous_ttl, current_count, _ = counts
            weighted = previous_count * previous_ttl / item.get_expiry() + current_count
            states.append(window_state(item, weighted < item.amount, counts))
        return self._tightest(windows, states)

    async def auth_failed(self, address: str) -> None:
        for item in self.auth_failure_items:
            await self._windows.acquire_sliding_window_entry(
                item.key_for("auth-failure", address), item.amount, item.get_expiry()
            )

    async def _count(self, windows: list[Window]) -> list[RateLimitState]:
        """Hit the windows in order, up to the first that refuses: their states after the hit."""
        if self._hit_script is not None and windows:
            keys: list[str] = []
            arguments: list[int] = []
            for item, namespace, subject in windows:
                current = f"{REDIS_KEY_PREFIX}:{{{item.key_for(namespace, subject)}}}"
                keys += [f"{current}/-1", current]
                arguments += [item.amount, item.get_expiry()]
            replies = await self._hit_script(keys, arguments)
            return [
                window_state(
                    item, bool(allowed), (int(previous), previous_ttl / 1000, int(current), ttl / 1000)
                )
                for (item, _, _), (allowed, previous, previous_ttl, current, ttl) in zip(
                    windows, replies, strict=False
                )
            ]
        states = []
        for item, namespace, subject in windows:
            key, expiry = item.key_for(namespace, subject), item.get_expiry()
            allowed = await self._windows.acquire_sliding_window_entry(key, item.amount, expiry)
            states.append(window_state(item, allowed, await self._windows.get_sliding_window(key, expiry)))
            if not allowed:
                break
        return states

    @staticmethod
    def _tightest(windows: list[Window], states: list[RateLimitState]) -> RateLimitState:
        """The refusing window's state (counted as a refusal), else the one with the fewest left
        (``states`` end at a refusal)."""
        for (_, namespace, _), state in zip(windows, states, strict=False):
            if not state.allowed:
                RATE_LIMIT_REFUSALS.labels(limit=namespace).inc()
                return state
        return min(states, key=lambda state: state.remaining, default=RateLimitState(True, 0, 0, time.time()))

    async def ping(self) -> bool:
        return bool(await self.storage.check())
