"""A work queue of keys (client-go's semantics): a key waits at most once, is never handled by two
workers at once, is handled again if it was added while being handled, and can be added for later.

Two lanes: urgent keys (a VideoJob that still needs its Job) go before the others, so that a burst of
new VideoJobs gets its Jobs first and status writes follow; every ``fairness``-th take serves the
normal lane anyway, so that it never starves.
"""

from __future__ import annotations

import heapq
import itertools
import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Hashable
from typing import Generic, TypeVar

log = logging.getLogger(__name__)
K = TypeVar("K", bound=Hashable)
MAX_BACKOFF_SECONDS = 60.0


class WorkQueue(Generic[K]):
    """Calls ``handler(key, urgent)`` on ``workers`` threads; a handler that raises is retried with
    backoff (in the normal lane)."""

    def __init__(
        self,
        handler: Callable[[K, bool], None],
        *,
        workers: int = 8,
        name: str = "work",
        fairness: int = 10,
    ) -> None:
        self._handler = handler
        self._workers = workers
        self._name = name
        self._fairness = fairness
        lock = threading.Lock()
        self._cond = threading.Condition(lock)  # workers wait here for keys
        self._timer_wake = threading.Condition(lock)  # the timer waits here for earlier deadlines
        self._lanes: tuple[deque[K], deque[K]] = (deque(), deque())  # (normal, urgent)
        self._dirty: dict[K, bool] = {}  # waiting keys -> urgent
        self._processing: set[K] = set()
        self._later: list[tuple[float, int, K]] = []
        self._sequence = itertools.count()
        self._failures: dict[K, int] = {}
        self._threads: list[threading.Thread] = []
        self._streak = 0
        self._stopping = False
        self.handled = 0
        self.errors = 0
        self.adds = 0
        """Keys added so far (counted once per add, whether or not the key was already waiting)."""

    def start(self) -> None:
        for index in range(self._workers):
            thread = threading.Thread(target=self._work, name=f"{self._name}-{index}", daemon=True)
            thread.start()
            self._threads.append(thread)
        timer = threading.Thread(target=self._timer, name=f"{self._name}-timer", daemon=True)
        timer.start()
        self._threads.append(timer)

    def stop(self, timeout: float = 10.0) -> None:
        """Stop taking keys; wait for the handlers in progress."""
        with self._cond:
            self._stopping = True
            self._cond.notify_all()
            self._timer_wake.notify_all()
        deadline = time.monotonic() + timeout
        for thread in self._threads:
            thread.join(max(0.0, deadline - time.monotonic()))
        self._threads.clear()

    @property
    def alive(self) -> bool:
        return bool(self._threads) and all(thread.is_alive() for thread in self._threads)

    @property
    def name(self) -> str:
        return self._name

    def add(self, key: K, after: float = 0.0, *, urgent: bool = False) -> None:
        with self._cond:
            self.adds += 1
            if after > 0:
                heapq.heappush(self._later, (time.monotonic() + after, next(self._sequence), key))
                self._timer_wake.notify()
            else:
                self._mark(key, urgent)

    def _mark(self, key: K, urgent: bool) -> None:
        """Make ``key`` wait (once), in the urgent lane if asked; with the lock held."""
        waiting = key in self._dirty
        if waiting and (self._dirty[key] or not urgent):
            return
        self._dirty[key] = urgent
        if key not in self._processing:
            self._lanes[urgent].append(key)  # a stale entry left in the normal lane is skipped
            self._cond.notify()  # one worker: waking them all would only make them fight for the lock

    def depth(self) -> int:
        with self._cond:
            return len(self._dirty) + len(self._processing)

    def idle(self) -> bool:
        """Nothing waiting or in progress now (delayed keys aside)."""
        return self.depth() == 0

    def _timer(self) -> None:
        with self._cond:
            while not self._stopping:
                now = time.monotonic()
                while self._later and self._later[0][0] <= now:
                    _, _, key = heapq.heappop(self._later)
                    self._mark(key, False)
                wait = self._later[0][0] - now if self._later else None
                self._timer_wake.wait(wait)

    def _pop(self) -> tuple[K, bool] | None:
        """The next waiting key and its lane (with the lock held), skipping stale entries."""
        normal, urgent = self._lanes
        serve_normal = self._streak >= self._fairness or not urgent
        for lane in (normal, urgent) if serve_normal else (urgent, normal):
            while lane:
                key = lane.popleft()
                if key in self._dirty and key not in self._processing:
                    is_urgent = self._dirty.pop(key)
                    self._streak = self._streak + 1 if is_urgent else 0
                    return key, is_urgent
        return None

    def _take(self) -> tuple[K, bool] | None:
        with self._cond:
            while not self._stopping:
                taken = self._pop()
                if taken is not None:
                    self._processing.add(taken[0])
                    return taken
                self._cond.wait()
            return None

    def _done(self, key: K, failed: bool) -> None:
        with self._cond:
            self._processing.discard(key)
            if failed:
                count = self._failures.get(key, 0) + 1
                self._failures[key] = count
                backoff = min(MAX_BACKOFF_SECONDS, 0.5 * 2 ** (count - 1))
                heapq.heappush(self._later, (time.monotonic() + backoff, next(self._sequence), key))
                self._timer_wake.notify()
            else:
                self._failures.pop(key, None)
            if key in self._dirty:
                self._lanes[self._dirty[key]].append(key)
                self._cond.notify()

    def _work(self) -> None:
        while (taken := self._take()) is not None:
            key, urgent = taken
            failed = False
            try:
                self._handler(key, urgent)
            except Exception:
                failed = True
                self.errors += 1
                log.exception("%s: handling %s failed; retrying with backoff", self._name, key)
            finally:
                self.handled += 1
                self._done(key, failed)
