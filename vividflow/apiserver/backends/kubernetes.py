"""Cluster mode: each accepted job becomes a VideoJob, and VideoJob status is mirrored into the DB.

The database stays the API's record (history, usage and credits are DB queries and outlive
VideoJob cleanup); the cluster is told about jobs and reports back. Two threads:

- the mirror (a :class:`vividflow.kube.watch.ListWatch`): lists and watches VideoJobs and applies
  each one's whole status to its job (:func:`jobs.apply_videojob_status`: conditional, never
  backwards). A terminal phase counts only when the operator recorded it
  (``jobspec.operator_outcome``: runners can write status, never that annotation), and a result URL
  only when it is the job's own output. A VideoJob deleted before its job ended settles the job at
  once from the best evidence: its video in the bucket (completed), else nothing (cancelled,
  refunded: deleting a VideoJob cancels it).
- the reconciler: at start, every ``resync_seconds`` and soon after a failed request, compares
  the DB's active jobs with the VideoJobs: creates the missing ones of jobs never dispatched (the API
  may have died, or the Kubernetes API been down, between the DB commit and the create), settles the
  jobs whose VideoJob was deleted, applies every status again, and re-sends cancels that did not
  arrive.

Creating a VideoJob is idempotent (deterministic name; AlreadyExists is success), so the request
path, the reconciler and a second API replica may all try.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from vividflow.apiserver.db.models import Job
from vividflow.apiserver.services import jobs
from vividflow.jobspec import (
    LABEL_JOB_ID,
    TERMINAL_PHASES,
    FailureReason,
    JobStatus,
    VideoJobStatus,
    operator_outcome,
    videojob_manifest,
    videojob_name,
)
from vividflow.kube.client import Kube
from vividflow.kube.config import load_configuration
from vividflow.kube.errors import Conflict, Invalid, KubeError, NoCredentials, NotFound
from vividflow.kube.paths import videojob_path
from vividflow.kube.watch import ListWatch
from vividflow.settings import Settings
from vividflow.storage import locations
from vividflow.storage.errors import StorageError

log = logging.getLogger(__name__)

RESYNC_SECONDS = 60.0
RETRY_SECONDS = 2.0
WATCH_TIMEOUT_SECONDS = 240
REQUEST_TIMEOUT = (3.0, 10.0)
"""(connect, read) seconds of one create or patch: the request path must not hang on a dead API
server (the job is safe in the DB; the reconciler creates its VideoJob later)."""
DEFAULT_PARALLELISM = 8
"""Jobs expected to run at once when no GPU concurrency limit is set (wait estimates only)."""
REFUSED_MESSAGE = "The cluster could not accept the job. Please try again later or contact support."


class ClusterModeError(RuntimeError):
    """Cluster mode is misconfigured (raised when the API server starts)."""


def reported_status(obj: dict[str, Any]) -> VideoJobStatus | None:
    """The status a VideoJob reports, if it reports a phase (a runner's progress alone is not one)."""
    status = VideoJobStatus.from_object(obj)
    if status is None or "phase" not in status.model_fields_set:
        if (obj.get("status") or {}).get("phase"):
            log.warning("ignoring an invalid status of VideoJob %s", obj.get("metadata", {}).get("name"))
        return None
    return status


def _job_id(obj: dict[str, Any]) -> str | None:
    labels: dict[str, str] = obj.get("metadata", {}).get("labels") or {}
    return labels.get(LABEL_JOB_ID)


class KubernetesBackend:
    name = "kubernetes"
    network_calls = True

    def __init__(
        self,
        settings: Settings,
        session_factory: sessionmaker[Session],
        *,
        resync_seconds: float = RESYNC_SECONDS,
        watch_timeout_seconds: int = WATCH_TIMEOUT_SECONDS,
    ) -> None:
        if not settings.gcs_bucket:
            raise ClusterModeError(
                "VIVID_BACKEND=kubernetes needs VIVID_GCS_BUCKET: runner Jobs read inputs from and "
                "write videos to Cloud Storage, not the API server's disk"
            )
        self.settings = settings
        self.session_factory = session_factory
        self.namespace = settings.kube_namespace
        self.parallelism = settings.max_running_gpu_jobs or DEFAULT_PARALLELISM
        try:
            configuration = load_configuration()
        except NoCredentials as error:
            raise ClusterModeError(str(error)) from error
        configuration.retries = 1  # one retry for a stale keep-alive connection; then fail fast
        self._kube = Kube(configuration, timeout=REQUEST_TIMEOUT)
        self._watch_kube = Kube(configuration)
        self._videojobs = videojob_path(self.namespace)
        self._resync_seconds = resync_seconds
        self.mirror = ListWatch(
            self._watch_kube,
            self._videojobs,
            self._mirror,
            selector=LABEL_JOB_ID,
            watch_timeout_seconds=watch_timeout_seconds,
            name="vividflow-videojob-watch",
        )
        self._stopping = threading.Event()
        self._retry_soon = False
        self._reconciler: threading.Thread | None = None
        self.reconciles = 0

    # -- JobBackend -------------------------------------------------------------------------------

    def start(self) -> None:
        self._stopping.clear()
        self.mirror.start()
        self._reconciler = threading.Thread(
            target=self._reconcile_loop, name="vividflow-videojob-reconcile", daemon=True
        )
        self._reconciler.start()

    def stop(self) -> None:
        self._stopping.set()
        self.mirror.stop()
        if self._reconciler is not None:
            self._reconciler.join(timeout=20)
            self._reconciler = None
        self._kube.close()
        self._watch_kube.close()

    def submitted(self, job_id: str) -> None:
        if not self._create(job_id):
            self._retry_later()

    def cancelled(self, job_id: str) -> None:
        if not self._request_cancel(job_id):
            self._retry_later()

    def is_ready(self) -> bool:
        alive = self.mirror.is_alive() and self._reconciler is not None and self._reconciler.is_alive()
        return alive and self.mirror.healthy

    # -- Kubernetes requests ----------------------------------------------------------------------

    def _create(self, job_id: str) -> bool:
        """Create the VideoJob of a queued job; True unless the request failed."""
        with self.session_factory() as session:
            job = jobs.get_job(session, job_id)
            if job is None or job.status != JobStatus.QUEUED.value:
                return True
            spec = jobs.job_spec(job, self.settings.job_deadline_seconds)
        try:
            self._kube.create(self._videojobs, videojob_manifest(spec, self.namespace))
        except Conflict:
            self._dispatched(job_id)
            return True
        except Invalid as error:  # the spec itself is refused: retrying cannot help
            self._refused(job_id, error.message or error.reason)
            return True
        except KubeError as error:
            log.warning("creating VideoJob of job %s failed: HTTP %s %s", job_id, error.status, error.message)
            return False
        except Exception as error:
            log.warning("creating VideoJob of job %s failed: %s", job_id, error)
            return False
        self._dispatched(job_id)
        log.info("created VideoJob %s", videojob_name(job_id))
        return True

    def _dispatched(self, job_id: str) -> None:
        with self.session_factory.begin() as session:
            jobs.mark_dispatched(session, job_id)

    def _refused(self, job_id: str, message: str) -> None:
        log.error("the API server refused the VideoJob of job %s: %s", job_id, message)
        with self.session_factory.begin() as session:
            jobs.finish(
                session,
                job_id,
                JobStatus.FAILED,
                reason=FailureReason.INTERNAL,
                message=REFUSED_MESSAGE,
                from_=[JobStatus.QUEUED],
            )

    def _request_cancel(self, job_id: str) -> bool:
        """Set ``spec.cancelRequested``; True if done or there is no VideoJob (none will be made)."""
        try:
            self._kube.merge_patch(
                videojob_path(self.namespace, videojob_name(job_id)), {"spec": {"cancelRequested": True}}
            )
        except NotFound:
            return True
        except KubeError as error:
            log.warning(
                "cancelling VideoJob of job %s failed: HTTP %s %s", job_id, error.status, error.message
            )
            return False
        except Exception as error:
            log.warning("cancelling VideoJob of job %s failed: %s", job_id, error)
            return False
        return True

    # -- status -> database -----------------------------------------------------------------------

    def _mirror(self, obj: dict[str, Any], deleted: bool = False) -> None:
        job_id, status = _job_id(obj), reported_status(obj)
        if job_id is None:
            return
        if status is not None and status.phase in TERMINAL_PHASES and operator_outcome(obj) != status.phase:
            log.warning("VideoJob %s: ignoring a %s status the operator did not record", job_id, status.phase)
            status = None
        if status is not None:
            with self.session_factory.begin() as session:
                result_url: str | None = None
                if status.phase == "Completed":
                    job = jobs.get_job(session, job_id)
                    if job is not None and not JobStatus(job.status).is_terminal:
                        result_url = self._result_url(job, status)
                if status.phase != "Completed" or result_url is not None:
                    jobs.apply_videojob_status(session, job_id, status, result_url=result_url)
        if deleted:
            self._settle_vanished(job_id)

    def _result_url(self, job: Job, status: VideoJobStatus) -> str | None:
        """The completed job's result URL: the reported one if it is the job's own output, else the
        URL of that output (None if it cannot be made: the completion is not applied)."""
        reported = status.result_url
        if reported and locations.is_result_url_of(reported, job.output_uri, self.settings):
            return reported
        log.warning("VideoJob of job %s reported a result URL that is not its output: ignored", job.id)
        try:
            return locations.result_url_for(job.output_uri, self.settings)
        except StorageError as error:
            log.error("job %s: no result URL for its output: %s", job.id, error.message)
            return None

    def _settle_vanished(self, job_id: str) -> None:
        """The job's VideoJob is gone while the job is active: completed if its video is in the
        bucket, else cancelled (with a refund)."""
        with self.session_factory() as session:
            job = jobs.get_job(session, job_id)
            if job is None or JobStatus(job.status).is_terminal:
                return
            output_uri = job.output_uri
        try:
            done = locations.output_exists(output_uri, self.settings)
            result_url = locations.result_url_for(output_uri, self.settings) if done else None
        except StorageError as error:
            log.warning("job %s: cannot look for its output yet: %s", job_id, error.message)
            self._retry_later()
            return
        with self.session_factory.begin() as session:
            if jobs.settle_vanished(session, job_id, done, result_url):
                log.warning(
                    "job %s: its VideoJob was deleted; %s",
                    job_id,
                    "its video exists" if done else "cancelled",
                )

    # -- reconciling ------------------------------------------------------------------------------

    def _retry_later(self) -> None:
        self._retry_soon = True

    def _reconcile_loop(self) -> None:
        """Reconcile at start, every ``resync_seconds``, and within RETRY_SECONDS of a failure."""
        next_run = 0.0
        while not self._stopping.is_set():
            if self._retry_soon or time.monotonic() >= next_run:
                self._retry_soon = False
                try:
                    self.reconcile()
                except Exception as error:
                    log.warning("reconciling jobs with VideoJobs failed: %s", error)
                    self._retry_soon = True
                next_run = time.monotonic() + self._resync_seconds
            self._stopping.wait(RETRY_SECONDS)

    def reconcile(self) -> None:
        """Bring the cluster and the DB's active jobs together (see the module docstring)."""
        with self.session_factory() as session:
            active = jobs.active_job_ids(session)  # read before listing: see _settle_missing
        listed = self._kube.list(self._videojobs, LABEL_JOB_ID, timeout=(5.0, 60.0))
        items: list[dict[str, Any]] = listed.get("items") or []
        by_job = {job_id: obj for obj in items if (job_id := _job_id(obj))}
        for obj in by_job.values():
            self._mirror(obj)
        self._resend_cancels(by_job)
        self._settle_missing({job_id: a for job_id, a in active.items() if job_id not in by_job})
        self.reconciles += 1

    def _resend_cancels(self, by_job: dict[str, Any]) -> None:
        waiting = [
            job_id
            for job_id, obj in by_job.items()
            if not obj.get("spec", {}).get("cancelRequested")
            and (reported_status(obj) or VideoJobStatus()).status in jobs.ACTIVE
        ]
        if not waiting:
            return
        with self.session_factory() as session:
            query = select(Job.id).where(Job.id.in_(waiting), Job.status == JobStatus.CANCELLED.value)
            cancelled = list(session.scalars(query))
        for job_id in cancelled:
            if not self._request_cancel(job_id):
                self._retry_soon = True

    def _settle_missing(self, missing: dict[str, tuple[JobStatus, bool]]) -> None:
        """Active jobs without a VideoJob. The DB was read before the list, so one never dispatched
        needs its VideoJob (create it); one dispatched had its VideoJob deleted (settle it)."""
        for job_id, (status, dispatched) in missing.items():
            if dispatched:
                self._settle_vanished(job_id)
            elif status is JobStatus.QUEUED and not self._create(job_id):
                self._retry_soon = True
