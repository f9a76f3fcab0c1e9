"""Per-user bounds on long-lived work in one API process (image downloads, status streams)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from vividflow.apiserver.errors import too_many_requests


class UserSlots:
    """How many of something each user holds at once; used from the event loop only."""

    def __init__(self, per_user: int, error: str, detail: str) -> None:
        """``detail`` may name the limit as ``{limit}``."""
        self.per_user = per_user
        self._error = error
        self._detail = detail
        self._held: dict[str, int] = {}

    def held(self, user_id: str) -> int:
        return self._held.get(user_id, 0)

    def acquire(self, user_id: str) -> None:
        """Take one of the user's slots; 429 (ApiError) when all are held."""
        held = self.held(user_id)
        if held >= self.per_user:
            raise too_many_requests(self._error, self._detail.format(limit=self.per_user), retry_after=1)
        self._held[user_id] = held + 1

    def release(self, user_id: str) -> None:
        left = self.held(user_id) - 1
        if left > 0:
            self._held[user_id] = left
        else:
            self._held.pop(user_id, None)

    @contextmanager
    def take(self, user_id: str) -> Iterator[None]:
        self.acquire(user_id)
        try:
            yield
        finally:
            self.release(user_id)
