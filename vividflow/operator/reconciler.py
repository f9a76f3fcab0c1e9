"""One reconcile of one VideoJob: observe what exists, decide (``status.decide``), act, in one pass.

Idempotent: the Job has the VideoJob's name (AlreadyExists is success), the status is written with a
resourceVersion precondition (a conflict means: observe again, fresh), and a decision that cannot be
undone (a terminal phase, deleting the Job) is only acted on when it was made on fresh reads: made on
the cache, it sends the reconcile round again on fresh reads. Creating the Job is a pass of its own:
the status that follows is written by the next pass (the caller queues it). The caller never runs two
reconciles of one VideoJob at once (``workqueue``), and peering keeps a second operator replica paused.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import kopf

from vividflow.jobspec import (
    ANNOTATION_OUTCOME,
    LABEL_VIDEOJOB,
    TERMINAL_PHASES,
    JobSpec,
    Json,
    ModelName,
    VideoJobStatus,
    operator_outcome,
)
from vividflow.kube import errors
from vividflow.kube.client import Kube
from vividflow.kube.paths import job_path, pods_path, videojob_path
from vividflow.operator import metrics
from vividflow.operator.admission import GPU_JOBS_SELECTOR, jobs_to_release
from vividflow.operator.cache import Cache, Key
from vividflow.operator.events import EventRecorder
from vividflow.operator.jobs import job_manifest
from vividflow.operator.status import Decision, current_status, decide
from vividflow.operator.transitions import Event, job_created_event, status_patch, transition_events
from vividflow.settings import Settings

log = logging.getLogger(__name__)
MAX_PASSES = 5


class Conflict(Exception):
    """The VideoJob changed between our read and our write: read it again."""


@dataclass(frozen=True)
class Result:
    """What the caller schedules after a reconcile."""

    requeue_after: float | None = None
    admission: bool = False
    """A GPU Job was created, finished or removed: run the concurrency limit's admission pass."""
    sync: bool = False
    """The Job was created in this pass: reconcile again (not urgently) to write the status."""


@dataclass(frozen=True)
class Observed:
    """What one pass looked at: the VideoJob (with its status parsed once), its Job and Pods."""

    videojob: Json
    status: VideoJobStatus
    job: Json | None
    pods: Sequence[Json]
    fresh: bool

    @property
    def key(self) -> Key:
        return self.videojob["metadata"]["namespace"], self.videojob["metadata"]["name"]


def _now() -> datetime:
    return datetime.now(UTC)


class Reconciler:
    def __init__(
        self,
        settings: Settings,
        kube: Kube,
        cache: Cache,
        events: EventRecorder,
        *,
        image_pull_grace: float | None = None,
        clock: Callable[[], datetime] = _now,
    ) -> None:
        self.settings = settings
        self._kube = kube
        self._cache = cache
        self.events = events
        self._grace = settings.image_pull_grace_seconds if image_pull_grace is None else image_pull_grace
        self._clock = clock

    # -- observe -------------------------------------------------------------------------------------

    def _observe(self, key: Key, *, fresh: bool) -> Observed | None:
        """The VideoJob, its Job and Pods: from the cache, or (``fresh``) from the API server. A Job that
        the VideoJob once had and the cache lacks may be cache lag: it is looked up for real."""
        videojob = None if fresh else self._cache.videojob(key)
        if videojob is None:
            videojob = self._read_videojob(key)
            if videojob is None:
                return None
            fresh = True
        status = current_status(videojob)
        job = None if fresh else self._cache.job(key)
        if job is None and (fresh or status.job_name):
            job = self._kube.get(job_path(*key))
            if job is not None:
                self._cache.put_job(job)
        pods = self._read_pods(key) if fresh else self._cache.pods(key)
        return Observed(videojob, status, job, pods, fresh)

    def _read_videojob(self, key: Key) -> Json | None:
        body = self._kube.get(videojob_path(*key))
        if body is None:
            self._cache.forget_videojob(key)
        else:
            self._cache.put_videojob(body)
        return body

    def _read_pods(self, key: Key) -> Sequence[Json]:
        answer = self._kube.list(pods_path(key[0]), f"{LABEL_VIDEOJOB}={key[1]}")
        pods: list[dict[str, Any]] = answer.get("items") or []
        for pod in pods:
            pod.setdefault("metadata", {}).setdefault("namespace", key[0])
            self._cache.put_pod(pod)
        return pods

    # -- decide --------------------------------------------------------------------------------------

    def _decide(self, seen: Observed) -> Decision:
        return decide(
            seen.videojob,
            seen.job,
            seen.pods,
            self._clock(),
            image_pull_grace=self._grace,
            duration_step=self.settings.operator_resync_seconds,
            old=seen.status,
        )

    @staticmethod
    def _needs_fresh_reads(seen: Observed, decision: Decision) -> bool:
        """A decision that cannot be undone, made on the cache: observe again, fresh, before acting."""
        final = decision.record_outcome and operator_outcome(seen.videojob) is None
        return not seen.fresh and (final or decision.delete_job)

    # -- the reconcile -------------------------------------------------------------------------------

    def reconcile(self, key: Key, *, fresh: bool = False) -> Result:
        """Bring one VideoJob's Job and status in line with each other; ``fresh``: read everything
        from the API server instead of the cache (the periodic resync)."""
        for _ in range(MAX_PASSES):
            seen = self._observe(key, fresh=fresh)
            if seen is None or self._settled(seen):
                return Result()
            decision = self._decide(seen)
            if self._needs_fresh_reads(seen, decision):
                fresh = True
                continue
            try:
                return self._act(seen, decision)
            except Conflict:
                fresh = True
        raise Conflict(f"{key}: no settled pass after {MAX_PASSES} tries")

    @staticmethod
    def _settled(seen: Observed) -> bool:
        """Completed or failed, recorded and written: nothing can change any more."""
        recorded = operator_outcome(seen.videojob)
        return recorded in ("Completed", "Failed") and seen.status.phase == recorded

    def _act(self, seen: Observed, decision: Decision) -> Result:
        videojob, (namespace, name) = seen.videojob, seen.key
        gpu = (videojob.get("spec") or {}).get("model") == ModelName.WAN21.value
        gpu_limited = gpu and self.settings.max_running_gpu_jobs > 0
        if decision.create_job and decision.spec is not None:
            job = self._create_job(videojob, decision.spec)
            return Result(sync=True, admission=gpu_limited and bool((job.get("spec") or {}).get("suspend")))
        if decision.delete_job and self._kube.delete(job_path(namespace, name), propagation="Background"):
            metrics.JOBS_DELETED.inc()
            self.events.record(videojob, Event("Normal", "JobDeleted", f"Deleted the runner Job {name}."))
        if decision.record_outcome and operator_outcome(videojob) != decision.status.phase:
            # First the outcome, then the status: the API believes a terminal status only with it.
            marked = self._record_outcome(videojob, decision.status.phase)
            if marked is not None:
                self._count_finished(marked, decision.status)
            videojob = marked or videojob
        patch = status_patch(videojob, decision.status, decision.previous)
        if patch is not None and self._write_status(videojob, patch) is not None:
            for event in transition_events(decision.previous, decision.status, decision.detail):
                self.events.record(videojob, event)
        changed = decision.delete_job or decision.status.phase in TERMINAL_PHASES
        return Result(requeue_after=decision.requeue_after, admission=gpu_limited and changed)

    # -- act -----------------------------------------------------------------------------------------

    def _create_job(self, videojob: Json, spec: JobSpec) -> Json:
        """The VideoJob's Job, created now (or, when one of that name exists, taken as it is)."""
        manifest = job_manifest(videojob, spec, self.settings)
        kopf.adopt(manifest, owner=dict(videojob))  # type: ignore[arg-type]
        namespace, name = videojob["metadata"]["namespace"], videojob["metadata"]["name"]
        try:
            job = self._kube.create(job_path(namespace), manifest)
            metrics.count_job_created(manifest)
            self.events.record(videojob, job_created_event(manifest))
        except errors.Conflict as error:
            existing = self._kube.get(job_path(namespace, name))
            if existing is None:
                raise Conflict(f"Job {name} exists and does not") from error
            job = existing
        self._cache.put_job(job)
        return job

    def _patch_videojob(self, videojob: Json, body: dict[str, Any], subresource: str = "") -> Json | None:
        """Merge-patch the VideoJob (or a subresource); the updated object, None if it is gone."""
        metadata = videojob["metadata"]
        try:
            updated = self._kube.merge_patch(
                videojob_path(metadata["namespace"], metadata["name"], subresource), body
            )
        except errors.Conflict as error:
            raise Conflict(metadata["name"]) from error
        except errors.NotFound:
            return None
        self._cache.put_videojob(updated)
        return updated

    def _write_status(self, videojob: Json, patch: dict[str, Any]) -> Json | None:
        """Merge-patch the status subresource if the VideoJob is unchanged since we read it."""
        precondition = {"metadata": {"resourceVersion": videojob["metadata"]["resourceVersion"]}}
        return self._patch_videojob(videojob, {**precondition, **patch}, "status")

    def _record_outcome(self, videojob: Json, phase: str) -> Json | None:
        """Record a terminal phase in the VideoJob's metadata (runners, who may patch its status,
        cannot touch it): from here on, that phase is final for the operator and the API alike."""
        return self._patch_videojob(videojob, {"metadata": {"annotations": {ANNOTATION_OUTCOME: phase}}})

    @staticmethod
    def _count_finished(videojob: Json, status: VideoJobStatus) -> None:
        model = str((videojob.get("spec") or {}).get("model", "unknown"))
        reason = status.reason.value if status.reason else None
        timings = status.metrics.model_dump(mode="json") if status.metrics else None
        metrics.count_finished(model, status.phase, reason, timings)

    # -- the GPU concurrency limit -------------------------------------------------------------------

    def admit(self, namespace: str) -> list[str]:
        """Resume the suspended GPU Jobs that fit under the limit, oldest job first; their names."""
        limit = self.settings.max_running_gpu_jobs
        if limit <= 0:
            return []
        answer = self._kube.list(job_path(namespace), f"{GPU_JOBS_SELECTOR},{LABEL_VIDEOJOB}")
        released = jobs_to_release(answer.get("items") or [], limit)
        for name in released:
            self._kube.merge_patch(job_path(namespace, name), {"spec": {"suspend": False}})
            metrics.GPU_JOBS_RESUMED.inc()
            log.info("resumed GPU Job %s/%s (limit %d)", namespace, name, limit)
            owner = self._cache.videojob((namespace, name))
            if owner is not None:
                message = f"GPU capacity is free (at most {limit} running): the runner Job resumed."
                self.events.record(owner, Event("Normal", "Admitted", message))
        return released
