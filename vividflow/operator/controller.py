"""The operator's moving parts behind kopf: watch events fill the cache and queue the VideoJob they
concern; worker threads reconcile queued VideoJobs; a resync thread re-queues every active VideoJob
each ``operator_resync_seconds`` (time-based changes: durations, image-pull grace), and every
``FRESH_EVERY``-th round on fresh reads, so that nothing depends on no watch event being missed."""

from __future__ import annotations

import logging
import threading
import time
from typing import Any

from vividflow.jobspec import Json, operator_outcome
from vividflow.kube.client import Kube
from vividflow.logs import log_context
from vividflow.operator import metrics
from vividflow.operator.cache import Cache, Key, key_of
from vividflow.operator.events import EventRecorder
from vividflow.operator.reconciler import Conflict, Reconciler
from vividflow.operator.transitions import Event
from vividflow.operator.workqueue import WorkQueue
from vividflow.settings import Settings

log = logging.getLogger(__name__)
FRESH_EVERY = 10
WorkKey = tuple[str, str, str]
"""("videojob", namespace, name) or ("admission", namespace, "")"""


class Controller:
    def __init__(
        self, settings: Settings, kube: Kube, *, workers: int = 8, image_pull_grace: float | None = None
    ) -> None:
        self.settings = settings
        self.kube = kube
        self.cache = Cache()
        self.reconciler = Reconciler(
            settings, kube, self.cache, EventRecorder(kube), image_pull_grace=image_pull_grace
        )
        self.queue: WorkQueue[WorkKey] = WorkQueue(self._handle, workers=workers, name="reconcile")
        self._fresh: set[Key] = set()
        self._failing: set[Key] = set()
        """VideoJobs whose last reconcile failed (worker threads add and remove their own keys)."""
        self._fresh_lock = threading.Lock()
        self._stop = threading.Event()
        self._resync_thread: threading.Thread | None = None
        self.last_resync: float | None = None
        self._rounds = 0

    # -- lifecycle -----------------------------------------------------------------------------------

    def start(self) -> None:
        self._stop.clear()
        self.queue.start()
        self._resync_thread = threading.Thread(target=self._resync_loop, name="resync", daemon=True)
        self._resync_thread.start()

    def stop(self) -> None:
        self._stop.set()
        self.queue.stop()
        if self._resync_thread is not None:
            self._resync_thread.join(5.0)
        self.kube.close()

    def health(self) -> dict[str, Any]:
        """For the liveness probe; raises when the workers or the resync thread are gone."""
        resync_alive = self._resync_thread is not None and self._resync_thread.is_alive()
        if not self.queue.alive or not resync_alive:
            raise RuntimeError("reconcile workers or the resync thread stopped")
        return {
            "queue": self.queue.depth(),
            "handled": self.queue.handled,
            "errors": self.queue.errors,
            **self.cache.sizes(),
        }

    # -- watch events (called from kopf's event loop: no blocking) -----------------------------------

    def on_videojob(self, event_type: str | None, body: Json) -> None:
        key = (body["metadata"]["namespace"], body["metadata"]["name"])
        if event_type == "DELETED":
            self.cache.forget_videojob(key)  # its Job and Pods go by owner references
            return
        if not self.cache.put_videojob(body) and event_type is not None:
            return  # the echo of our own write (or older): nothing new to reconcile
        new = not (body.get("status") or {}).get("jobName") and self.cache.job(key) is None
        self.queue.add(("videojob", *key), urgent=new)

    def on_job(self, event_type: str | None, body: Json) -> None:
        if event_type == "DELETED":
            self.cache.forget_job(body)
            if self.settings.max_running_gpu_jobs > 0:  # it may have held a GPU slot
                self.queue.add(("admission", body["metadata"]["namespace"], ""))
        elif not self.cache.put_job(body) and event_type is not None:
            return  # the echo of our own create
        self._enqueue_owner(body)

    def on_pod(self, event_type: str | None, body: Json) -> None:
        if event_type == "DELETED":
            self.cache.forget_pod(body)
        else:
            self.cache.put_pod(body)
        self._enqueue_owner(body)

    def _enqueue_owner(self, body: Json) -> None:
        key = key_of(body)
        if key is not None and self.cache.videojob(key) is not None:
            self.queue.add(("videojob", *key))

    # -- work ----------------------------------------------------------------------------------------

    def _handle(self, item: WorkKey, _urgent: bool) -> None:
        kind, namespace, name = item
        if kind == "admission":
            self.reconciler.admit(namespace)
            return
        key = (namespace, name)
        with self._fresh_lock:
            fresh = key in self._fresh
            self._fresh.discard(key)
        started = time.perf_counter()
        outcome = "error"
        try:
            with log_context(videojob=f"{namespace}/{name}"):
                result = self.reconciler.reconcile(key, fresh=fresh)
            outcome = "success"
        except Conflict:
            outcome = "conflict"
            raise
        except Exception as error:
            self._report_failure(key, error)
            raise
        finally:
            metrics.RECONCILES.labels(result=outcome).inc()
            metrics.RECONCILE_SECONDS.observe(time.perf_counter() - started)
        self._failing.discard(key)
        if result.sync:
            self.queue.add(item)
        if result.requeue_after is not None:
            self.queue.add(item, after=result.requeue_after)
        if result.admission:
            self.queue.add(("admission", namespace, ""))

    def _report_failure(self, key: Key, error: Exception) -> None:
        """A Warning Event on the VideoJob, once per run of failed reconciles (they are retried)."""
        if key in self._failing:
            return
        self._failing.add(key)
        body = self.cache.videojob(key)
        if body is not None:
            message = f"Reconciling failed ({type(error).__name__}: {error}); retrying with backoff."
            self.reconciler.events.record(body, Event("Warning", "ReconcileFailed", message))

    def resync(self, *, fresh: bool = True) -> int:
        """Queue every active VideoJob for a reconcile (``fresh``: read from the API server, not the
        cache); how many were queued."""
        count = 0
        namespaces: set[str] = set()
        for key in self.cache.videojob_keys():
            body = self.cache.videojob(key)
            if body is None or operator_outcome(body) is not None:
                continue
            if fresh:
                with self._fresh_lock:
                    self._fresh.add(key)
            self.queue.add(("videojob", *key))
            namespaces.add(key[0])
            count += 1
        if self.settings.max_running_gpu_jobs > 0:
            for namespace in namespaces:
                self.queue.add(("admission", namespace, ""))
        self.last_resync = time.monotonic()
        return count

    def _resync_loop(self) -> None:
        while not self._stop.wait(self.settings.operator_resync_seconds):
            self._rounds += 1
            try:
                self.resync(fresh=self._rounds % FRESH_EVERY == 0)
            except Exception:  # keep resyncing whatever one round hit
                log.exception("resync failed")
