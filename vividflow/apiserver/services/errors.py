"""What the service layer refuses, in its own terms: no status codes or response bodies here. The HTTP
layer turns each kind into its response in one place (``apiserver.errors.service_error``)."""

from __future__ import annotations

from datetime import datetime


class ServiceError(Exception):
    """A request the service layer refuses (not a fault: the caller is told why)."""


class CreditsExhausted(ServiceError):
    """The user's daily credits are spent; they come back at ``resets_at`` (naive UTC)."""

    def __init__(self, limit: int, resets_at: datetime) -> None:
        super().__init__(f"all {limit} daily credits are used")
        self.limit = limit
        self.resets_at = resets_at
