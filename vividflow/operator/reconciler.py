"""One reconcile of one VideoJob: read what exists, decide (``status.decide``), act, write the status.

Idempotent: the Job has the VideoJob's name (AlreadyExists is success), the status is written with a
resourceVersion precondition (a conflict means: read again, decide again), and a sticky decision (a
terminal phase, a lost Job) is only taken on fresh reads. The caller never runs two reconciles of one
VideoJob at once (``workqueue``), and peering keeps a second operator replica paused.
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
    MERGE_PATCH,
    TERMINAL_PHASES,
    JobSpec,
    Json,
    ModelName,
    VideoJobStatus,
    operator_outcome,
    videojob_path,
)
from vividflow.operator import metrics
from vividflow.operator.admission import GPU_JOBS_SELECTOR, jobs_to_release
from vividflow.operator.cache import Cache, Key
from vividflow.operator.events import EventRecorder
from vividflow.operator.jobs import job_manifest
from vividflow.operator.kube import Kube, KubeError, job_path, pods_path
from vividflow.operator.status import (
    Decision,
    Event,
    current_status,
    decide,
    job_created_event,
    status_patch,
    transition_events,
)
from vividflow.settings import Settings

log = logging.getLogger(__name__)
MAX_CONFLICTS = 5


class Conflict(Exception):
    """The VideoJob changed between our read and our write: read it again."""


@dataclass(frozen=True)
class Result:
    """What the caller schedules after a reconcile."""

    requeue_after: float | None = None
    admission: bool = False
    """A GPU Job was created, finished or removed: run the concurrency limit's admission pass."""
    sync: bool = False
    """Only the Job was created (``create_only``): reconcile again, not urgently, to write the status."""


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

    # -- reads ---------------------------------------------------------------------------------------

    def _videojob(self, key: Key) -> Json | None:
        body = self._kube.get(videojob_path(*key))
        if body is None:
            self._cache.forget_videojob(key)
        else:
            self._cache.put_videojob(body)
        return body

    def _job(self, key: Key, *, fresh: bool) -> Json | None:
        job = None if fresh else self._cache.job(key)
        if job is None:
            job = self._kube.get(job_path(*key))
            if job is not None:
                self._cache.put_job(job)
        return job

    def _pods(self, key: Key, *, fresh: bool) -> Sequence[Json]:
        if not fresh:
            return self._cache.pods(key)
        answer = self._kube.request(
            "GET", pods_path(key[0]), query={"labelSelector": f"{LABEL_VIDEOJOB}={key[1]}"}
        )
        pods: list[dict[str, Any]] = answer.get("items") or []
        for pod in pods:
            pod.setdefault("metadata", {}).setdefault("namespace", key[0])
            self._cache.put_pod(pod)
        return pods

    # -- writes --------------------------------------------------------------------------------------

    def _create_job(self, videojob: Json, spec: JobSpec) -> tuple[Json, bool]:
        """(the Job, whether we created it): an existing Job of that name is taken as is."""
        manifest = job_manifest(videojob, spec, self.settings)
        kopf.adopt(manifest, owner=dict(videojob))  # type: ignore[arg-type]
        namespace, name = videojob["metadata"]["namespace"], videojob["metadata"]["name"]
        try:
            job = self._kube.request("POST", job_path(namespace), body=manifest)
            created = True
            metrics.count_job_created(manifest)
            self.events.record(videojob, job_created_event(manifest))
        except KubeError as error:
            if error.status != 409:
                raise
            existing = self._kube.get(job_path(namespace, name))
            if existing is None:
                raise Conflict(f"Job {name} exists and does not") from error
            job, created = existing, False
        self._cache.put_job(job)
        return job, created

    def _patch_videojob(self, videojob: Json, body: dict[str, Any], subresource: str = "") -> Json | None:
        """Merge-patch the VideoJob (or a subresource); the updated object, None if it is gone."""
        metadata = videojob["metadata"]
        try:
            updated = self._kube.request(
                "PATCH",
                videojob_path(metadata["namespace"], metadata["name"], subresource),
                body=body,
                content_type=MERGE_PATCH,
            )
        except KubeError as error:
            if error.status == 409:
                raise Conflict(metadata["name"]) from error
            if error.status == 404:
                return None
            raise
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

    # -- the reconcile -------------------------------------------------------------------------------

    def _observe(self, videojob: Json, *, fresh: bool) -> tuple[Decision, bool]:
        """(decision, whether we created the Job now)."""
        key: Key = (videojob["metadata"]["namespace"], videojob["metadata"]["name"])
        old = current_status(videojob)
        # A Job we once had that the cache lacks may be cache lag: look it up for real. A Job we never
        # had is created when the cache lacks it (AlreadyExists is fine).
        job = self._job(key, fresh=fresh) if fresh or old.job_name else self._cache.job(key)
        pods = self._pods(key, fresh=fresh)
        decision = self._decide(videojob, job, pods)
        created = False
        if decision.create_job and decision.spec is not None:
            job, created = self._create_job(videojob, decision.spec)
            decision = self._decide(videojob, job, pods)
        return decision, created

    def _decide(self, videojob: Json, job: Json | None, pods: Sequence[Json]) -> Decision:
        return decide(
            videojob,
            job,
            pods,
            self._clock(),
            image_pull_grace=self._grace,
            duration_step=self.settings.operator_resync_seconds,
        )

    def reconcile(self, key: Key, *, fresh: bool = False, create_only: bool = False) -> Result:
        """Bring one VideoJob's Job and status in line with each other; ``fresh``: read everything
        from the API server instead of the cache (the periodic resync). ``create_only``: if the
        VideoJob needs its Job, create it and leave the status for a later reconcile (a burst of new
        VideoJobs gets its Jobs first)."""
        videojob = None if fresh else self._cache.videojob(key)
        if videojob is None:
            videojob = self._videojob(key)
        if create_only and videojob is not None:
            created = self._create_only(videojob)
            if created is not None:
                return created
        for _ in range(MAX_CONFLICTS):
            if videojob is None:
                return Result()
            try:
                return self._reconcile(videojob, fresh=fresh)
            except Conflict:
                videojob, fresh = self._videojob(key), True
        raise Conflict(f"{key}: still conflicting after {MAX_CONFLICTS} tries")

    def _create_only(self, videojob: Json) -> Result | None:
        """Create the Job of a new VideoJob (None: it needs more than that: a full reconcile)."""
        key: Key = (videojob["metadata"]["namespace"], videojob["metadata"]["name"])
        if current_status(videojob).job_name or self._cache.job(key) is not None:
            return None
        decision = self._decide(videojob, None, [])
        if not decision.create_job or decision.spec is None:
            return None
        job, _ = self._create_job(videojob, decision.spec)
        gpu = decision.spec.model is ModelName.WAN21 and self.settings.max_running_gpu_jobs > 0
        return Result(sync=True, admission=gpu and bool((job.get("spec") or {}).get("suspend")))

    def _reconcile(self, videojob: Json, *, fresh: bool) -> Result:
        old = current_status(videojob)
        recorded = operator_outcome(videojob)
        if recorded in ("Completed", "Failed") and old.phase == recorded:
            return Result()
        decision, created = self._observe(videojob, fresh=fresh)
        sticky = decision.status.phase in TERMINAL_PHASES and recorded is None
        if not fresh and (sticky or decision.delete_job):
            decision, created_now = self._observe(videojob, fresh=True)
            created = created or created_now
        namespace, name = videojob["metadata"]["namespace"], videojob["metadata"]["name"]
        if decision.delete_job and self._kube.delete(job_path(namespace, name), propagation="Background"):
            metrics.JOBS_DELETED.inc()
            self.events.record(videojob, Event("Normal", "JobDeleted", f"Deleted the runner Job {name}."))
        if decision.record_outcome and recorded != decision.status.phase:
            # First the outcome, then the status: the API believes a terminal status only with it.
            marked = self._record_outcome(videojob, decision.status.phase)
            if marked is not None:
                self._count_finished(marked, decision.status)
            videojob = marked or videojob
        patch = status_patch(videojob, decision.status)
        if patch is not None and self._write_status(videojob, patch) is not None:
            for event in transition_events(old, decision.status, decision.detail):
                self.events.record(videojob, event)
        gpu = (videojob.get("spec") or {}).get("model") == ModelName.WAN21.value
        changed = created or decision.delete_job or decision.status.phase in TERMINAL_PHASES
        return Result(
            requeue_after=decision.requeue_after,
            admission=gpu and self.settings.max_running_gpu_jobs > 0 and changed,
        )

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
        answer = self._kube.request(
            "GET", job_path(namespace), query={"labelSelector": f"{GPU_JOBS_SELECTOR},{LABEL_VIDEOJOB}"}
        )
        released = jobs_to_release(answer.get("items") or [], limit)
        for name in released:
            self._kube.request(
                "PATCH",
                job_path(namespace, name),
                body={"spec": {"suspend": False}},
                content_type=MERGE_PATCH,
            )
            metrics.GPU_JOBS_RESUMED.inc()
            log.info("resumed GPU Job %s/%s (limit %d)", namespace, name, limit)
            owner = self._cache.videojob((namespace, name))
            if owner is not None:
                message = f"GPU capacity is free (at most {limit} running): the runner Job resumed."
                self.events.record(owner, Event("Normal", "Admitted", message))
        return released
