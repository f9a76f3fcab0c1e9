"""Resolving an API key to its user, with a short in-process cache.

A busy client then costs no database lookup per request. Revoking a key drops it from this
process's cache at once; other API processes stop accepting it within ``auth_cache_seconds``.
When an entry expires under load, the requests that find it gone share one lookup.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Awaitable, Callable

from sqlalchemy.orm import Session, sessionmaker

from vividflow.apiserver.security import hash_key
from vividflow.apiserver.services import keys
from vividflow.apiserver.services.keys import Principal

MAX_ENTRIES = 10_000


class Authenticator:
    def __init__(self, session_factory: sessionmaker[Session], ttl_seconds: float) -> None:
        self._session_factory = session_factory
        self._ttl = ttl_seconds
        self._cache: dict[str, tuple[float, Principal]] = {}
        self._lock = threading.Lock()
        self._looking_up: dict[str, asyncio.Future[Principal | None]] = {}

    def cached(self, secret: str) -> Principal | None:
        digest = hash_key(secret)
        with self._lock:
            entry = self._cache.get(digest)
        if entry is None or entry[0] < time.monotonic():
            return None
        return entry[1]

    async def resolve(
        self,
        secret: str,
        run_db: Callable[[Callable[[str], Principal | None], str], Awaitable[Principal | None]],
    ) -> Principal | None:
        """Look ``secret`` up in the database through ``run_db`` (a worker thread), one lookup at a
        time per key: callers that come while it runs get its answer."""
        digest = hash_key(secret)
        pending = self._looking_up.get(digest)
        if pending is None:
            pending = asyncio.ensure_future(run_db(self._lookup_digest, digest))
            self._looking_up[digest] = pending
            pending.add_done_callback(lambda _: self._looking_up.pop(digest, None))
        return await asyncio.shield(pending)  # one caller's cancellation leaves the others' lookup

    def _lookup_digest(self, digest: str) -> Principal | None:
        """Blocking: asks the database (in a worker thread)."""
        with self._session_factory.begin() as session:
            principal = keys.authenticate_digest(session, digest)
        if principal is not None and self._ttl > 0:
            with self._lock:
                if len(self._cache) >= MAX_ENTRIES:
                    self._cache.clear()
                self._cache[digest] = (time.monotonic() + self._ttl, principal)
        return principal

    def forget(self, key_id: str) -> None:
        with self._lock:
            for digest, (_, principal) in list(self._cache.items()):
                if principal.key_id == key_id:
                    del self._cache[digest]
