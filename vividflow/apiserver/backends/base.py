"""The seam between the API and whatever runs jobs. The database is the API's record; a backend
is told about new and cancelled jobs and writes their progress back through services.jobs."""

from __future__ import annotations

from typing import Protocol


class JobBackend(Protocol):
    name: str
    parallelism: int
    """How many jobs it expects to run at once (for wait estimates)."""
    network_calls: bool
    """Whether ``submitted`` and ``cancelled`` make network requests (then they run on the I/O pool)."""

    def start(self) -> None:
        """Begin running jobs (and recover what a previous process left)."""

    def stop(self) -> None: ...

    def submitted(self, job_id: str) -> None:
        """A queued job was committed to the database."""

    def cancelled(self, job_id: str) -> None:
        """A job was cancelled in the database."""

    def is_ready(self) -> bool: ...
