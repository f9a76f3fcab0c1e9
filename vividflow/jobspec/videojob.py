"""The VideoJob custom resource: cluster mode's record of a job (``crds/`` is generated from it)."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any, Literal

from pydantic import Field, ValidationError

from vividflow.jobspec.spec import JobMetrics, JobSpec
from vividflow.jobspec.words import TERMINAL_PHASES, FailureReason, JobStatus, Wire

GROUP = "vivid.studioionique.com"
VERSION = "v1alpha1"
KIND = "VideoJob"
PLURAL = "videojobs"
Json = Mapping[str, Any]
"""A Kubernetes object as JSON (a VideoJob, Job, Pod or Event), as the operator reads it."""

SHORT_NAME = "vj"
API_VERSION = f"{GROUP}/{VERSION}"

LABEL_JOB_ID = f"{GROUP}/job-id"
LABEL_OWNER = f"{GROUP}/owner"
LABEL_VIDEOJOB = f"{GROUP}/videojob"
"""On a runner Job and its Pods: the name of the VideoJob they run."""
LABEL_MODEL = f"{GROUP}/model"
ANNOTATION_OUTCOME = f"{GROUP}/outcome"
"""On a VideoJob, set by the operator alone (runners can write status, never metadata): the terminal
phase it decided. A terminal ``status.phase`` without it is not believed, by the operator or the API."""


def operator_outcome(videojob: Mapping[str, Any]) -> str | None:
    """The terminal phase the operator recorded on ``videojob``, if any."""
    annotations = (videojob.get("metadata") or {}).get("annotations") or {}
    outcome = annotations.get(ANNOTATION_OUTCOME)
    return outcome if outcome in TERMINAL_PHASES else None


def videojob_name(job_id: str) -> str:
    """The VideoJob's name (and its Job's): deterministic, so creating it twice is harmless."""
    return f"vj-{job_id}"


def videojob_manifest(spec: JobSpec, namespace: str) -> dict[str, Any]:
    return {
        "apiVersion": API_VERSION,
        "kind": KIND,
        "metadata": {
            "name": videojob_name(spec.job_id),
            "namespace": namespace,
            "labels": {LABEL_JOB_ID: spec.job_id, LABEL_OWNER: spec.owner, LABEL_MODEL: spec.model.value},
        },
        "spec": spec.model_dump(mode="json", by_alias=True, exclude_none=True),
    }


Phase = Literal["Queued", "Processing", "Completed", "Failed", "Cancelled"]


class Condition(Wire):
    """A Kubernetes-style condition (``Started``, ``Finished``)."""

    type: str
    status: Literal["True", "False", "Unknown"]
    reason: str = ""
    message: str = ""
    last_transition_time: datetime | None = None
    observed_generation: int | None = None


class VideoJobStatus(Wire):
    """What the operator (and, for progress, the runner) reports on a VideoJob."""

    phase: Phase = "Queued"
    progress: int = Field(0, ge=0, le=100, description="0-100 while processing.")
    result_url: str | None = Field(None, alias="resultURL")
    error_message: str | None = None
    reason: FailureReason | None = Field(None, description="Machine-readable reason of a failure.")
    metrics: JobMetrics | None = None
    start_time: datetime | None = None
    completion_time: datetime | None = None
    duration: str | None = Field(None, description="Run time so far or in all, e.g. 1m5s (a column).")
    job_name: str | None = Field(None, description="The batch/v1 Job running this VideoJob.")
    conditions: list[Condition] = Field(default_factory=list)
    observed_generation: int | None = None

    @property
    def status(self) -> JobStatus:
        return JobStatus.from_phase(self.phase)

    @classmethod
    def from_object(cls, videojob: Mapping[str, Any]) -> VideoJobStatus | None:
        """A VideoJob's ``.status`` as this model (fields others write there, e.g. kopf's, ignored);
        None when it has none, or one that does not validate. ``model_fields_set`` tells whether the
        phase itself was written."""
        raw = videojob.get("status")
        if not isinstance(raw, Mapping) or not raw:
            return None
        try:
            return cls.model_validate({key: value for key, value in raw.items() if key in _STATUS_KEYS})
        except ValidationError:
            return None


_STATUS_KEYS = frozenset(info.alias or name for name, info in VideoJobStatus.model_fields.items())
