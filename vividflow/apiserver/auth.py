"""Resolving an API key to its user, with a short in-process cache.

A busy client then costs no database lookup per request. Revoking a key drops it from this
process's cache at once; other API processes stop accepting it within ``auth_cache_seconds``.
"""

from __future__ import annotations

import threading
import time

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

    def cached(self, secret: str) -> Principal | None:
        digest = hash_key(secret)
        with self._lock:
            entry = self._cache.get(digest)
        if entry is None or entry[0] < time.monotonic():
            return None
        return entry[1]

    def lookup(self, secret: str) -> Principal | None:
        """Blocking: asks the database (call from a worker thread)."""
        digest = hash_key(secret)
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
