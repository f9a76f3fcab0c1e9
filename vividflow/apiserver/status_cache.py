"""The answers of ``GET /status/{id}`` kept for a few seconds, and dropped the moment their job changes.

A polled job is read from the database once per change rather than once per poll. What keeps it
exact is the job event hints of :mod:`vividflow.apiserver.event_hub`: every change of what a status
body shows raises the job's event sequence and is announced after its commit, to this process at
once (so a client reads its own writes) and to the other processes through the notification channel.
A hint drops its job's answer; a change of a job's status also drops every queued job's answer (its
queue position may have moved). The cache is used only while the hub's channel is connected, is
emptied when it connects or drops (hints may have been missed), and keeps no answer longer than
``VIVID_STATUS_CACHE_SECONDS``: the same bound as the streams' safety poll, should a hint be lost.

A read races with the hints that arrive while it runs: an answer is stored only if no hint for its
job (or, for a queued job, for the queue) came after the read began.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass

MAX_ENTRIES = 10_000
"""Answers kept at most (the oldest go first): a few MB."""


@dataclass(frozen=True)
class CachedStatus:
    user_id: str
    body: bytes
    """The encoded status body."""
    queued: bool
    stored_at: float


class StatusCache:
    """Encoded status bodies by job id; :meth:`invalidate` may be called from any thread."""

    def __init__(self, ttl_seconds: float, max_entries: int = MAX_ENTRIES) -> None:
        self.ttl = ttl_seconds
        self._max_entries = max_entries
        self._entries: dict[str, CachedStatus] = {}
        self._queued: set[str] = set()
        self._hinted_at: dict[str, float] = {}
        """When each job was last hinted (only while a read begun before then could still store)."""
        self._queue_moved_at = 0.0
        self._cleared_at = 0.0
        self._lock = threading.Lock()
        self.active = False
        """Whether hints reach this process (the hub's channel is up): only then is the cache used."""

    @staticmethod
    def clock() -> float:
        """The time a read begins, to pass to :meth:`store`."""
        return time.monotonic()

    def get(self, job_id: str) -> CachedStatus | None:
        if not self.active:
            return None
        entry = self._entries.get(job_id)
        if entry is None or time.monotonic() - entry.stored_at > self.ttl:
            return None
        return entry

    def store(self, job_id: str, user_id: str, body: bytes, *, queued: bool, read_began: float) -> None:
        """Keep the answer of a read that began at ``read_began`` unless a hint came since."""
        if not self.active:
            return
        now = time.monotonic()
        with self._lock:
            if read_began <= max(self._cleared_at, self._hinted_at.get(job_id, 0.0)):
                return
            if queued and read_began <= self._queue_moved_at:
                return
            if now - read_began > self.ttl:
                return
            self._drop(job_id)
            if len(self._entries) >= self._max_entries:
                self._drop(next(iter(self._entries)))
            self._entries[job_id] = CachedStatus(user_id, body, queued, now)
            if queued:
                self._queued.add(job_id)

    def invalidate(self, job_id: str, *, status_changed: bool) -> None:
        """A hint of a change to ``job_id`` (``status_changed``: not just its progress)."""
        now = time.monotonic()
        with self._lock:
            self._drop(job_id)
            self._hinted_at[job_id] = now
            if status_changed:
                self._queue_moved_at = now
                for queued in self._queued:
                    del self._entries[queued]
                self._queued.clear()
            if len(self._hinted_at) > self._max_entries:
                self._forget_old_hints(now)

    def clear(self) -> None:
        """Forget every answer (hints may have been missed)."""
        with self._lock:
            self._entries.clear()
            self._queued.clear()
            self._hinted_at.clear()
            self._cleared_at = time.monotonic()

    def _drop(self, job_id: str) -> None:
        if self._entries.pop(job_id, None) is not None:
            self._queued.discard(job_id)

    def _forget_old_hints(self, now: float) -> None:
        """Hints older than the TTL no longer matter: a read that began before them cannot store."""
        self._hinted_at = {job_id: at for job_id, at in self._hinted_at.items() if now - at <= self.ttl}
        if len(self._hinted_at) > self._max_entries:  # a storm of hints: treat it as a clear
            self._hinted_at.clear()
            self._entries.clear()
            self._queued.clear()
            self._cleared_at = now
