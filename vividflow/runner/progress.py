"""Progress of a runner in a Pod, merge-patched onto ``status.progress`` of its VideoJob.

Uses the Pod's ServiceAccount, which needs nothing but ``patch`` on ``videojobs/status``: an empty
merge patch answers the current object, and each write carries the ``resourceVersion`` it was based on,
so progress never moves backwards (e.g. when a retried Pod starts again at 0) and a terminal VideoJob is
left alone. Sends from a background thread, at most every ``min_interval`` seconds (the last value is
flushed on :meth:`ProgressReporter.close`); failures are logged, never raised into the job.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Any

from vividflow.jobspec import TERMINAL_PHASES
from vividflow.kube.client import Kube
from vividflow.kube.config import load_configuration
from vividflow.kube.errors import Conflict, NoCredentials
from vividflow.kube.paths import videojob_path
from vividflow.settings import Settings

log = logging.getLogger(__name__)
REQUEST_TIMEOUT_SECONDS = 5.0


class ProgressReporter:
    """A progress callback (``reporter(percent)``) that never blocks the job."""

    def __init__(
        self,
        kube: Kube,
        namespace: str,
        name: str,
        *,
        min_interval: float = 2.0,
    ) -> None:
        self._path = videojob_path(namespace, name, "status")
        self._kube = kube
        self._min_interval = min_interval
        self._cond = threading.Condition()
        self._wanted = -1
        self._sent = -1
        self._closing = False
        self._done = False
        self._current: dict[str, Any] | None = None
        self._thread = threading.Thread(target=self._run, name="progress-reporter", daemon=True)
        self._thread.start()

    def __call__(self, percent: int) -> None:
        with self._cond:
            if percent > self._wanted:
                self._wanted = percent
                self._cond.notify()

    def close(self, timeout: float = 10.0) -> None:
        """Send the last value (if any is pending) and stop."""
        with self._cond:
            self._closing = True
            self._cond.notify()
        self._thread.join(timeout)
        self._kube.close()

    @property
    def cancel_requested(self) -> bool:
        """Whether the VideoJob, as last read, asks the job to stop (cancelled, or already ended)."""
        current = self._current or {}
        phase = (current.get("status") or {}).get("phase")
        return bool((current.get("spec") or {}).get("cancelRequested")) or phase in TERMINAL_PHASES

    @property
    def sent(self) -> int:
        """The last value written (or found already higher on the VideoJob); -1 before any."""
        return self._sent

    def _next(self, last_send: float) -> int | None:
        """The value to send now (waiting for one, and for the throttle); None: stop."""
        with self._cond:
            while not self._done:
                if self._wanted <= self._sent:
                    if self._closing:
                        return None
                    self._cond.wait()
                    continue
                wait = last_send + self._min_interval - time.monotonic()
                if wait > 0 and not self._closing:
                    self._cond.wait(wait)
                    continue
                return self._wanted
            return None

    def _run(self) -> None:
        last_send = -float("inf")
        while (value := self._next(last_send)) is not None:
            last_send = time.monotonic()
            try:
                self._send(value)
            except Exception as error:  # progress is best effort: the job goes on
                log.warning("could not report progress %d%%: %s", value, error)
                with self._cond:
                    self._sent = max(self._sent, value)  # do not retry this value; a newer one may follow

    def _send(self, value: int) -> None:
        for _ in range(5):
            if self._current is None:
                # An empty patch answers the VideoJob as it is: nothing is written.
                self._current = self._kube.merge_patch(self._path, {})
            status = self._current.get("status") or {}
            if status.get("phase") in TERMINAL_PHASES:
                with self._cond:
                    self._done = True
                return
            if int(status.get("progress") or 0) >= value:
                break
            body = {
                "metadata": {"resourceVersion": self._current["metadata"]["resourceVersion"]},
                "status": {"progress": value},
            }
            try:
                self._current = self._kube.merge_patch(self._path, body)
                break
            except Conflict:
                self._current = None
        with self._cond:
            self._sent = max(self._sent, value)


def progress_reporter(settings: Settings) -> ProgressReporter | None:
    """A reporter for ``settings.videojob_name`` (set in runner Pods), or None outside a cluster."""
    if not settings.videojob_name:
        return None
    try:
        kube = Kube(load_configuration(), timeout=REQUEST_TIMEOUT_SECONDS)
    except NoCredentials as error:
        log.warning("progress reporting is off: %s", error)
        return None
    namespace = settings.videojob_namespace or settings.kube_namespace
    return ProgressReporter(kube, namespace, settings.videojob_name)
