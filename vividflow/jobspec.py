"""The one definition of a video job, shared by the API server, the operator and the runner.

Everything that describes a job lives here: model names, each model's parameters with their
defaults and ranges, status values, failure reasons, the job spec handed to the runner (and, in
cluster mode, stored as a VideoJob's ``spec``), and the runner's result. Field names are
snake_case in Python and camelCase on the wire of the VideoJob resource (``by_alias=True``).
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime
from enum import IntEnum, StrEnum
from typing import Any, Literal
from urllib.parse import quote

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator
from pydantic.alias_generators import to_camel


class JobStatus(StrEnum):
    """Status values of the public API (the VideoJob phase is the capitalised form)."""

    QUEUED = "queued"
    PROCESSING = "processing"
    COMPLETED = "completed"
    FAILED = "failed"
    CANCELLED = "cancelled"

    @property
    def is_terminal(self) -> bool:
        return self in TERMINAL_STATUSES

    @property
    def phase(self) -> str:
        """The VideoJob ``status.phase`` spelling: ``Queued``, ``Processing``, …"""
        return self.value.capitalize()

    @classmethod
    def from_phase(cls, phase: str) -> JobStatus:
        return cls(phase.lower())


TERMINAL_STATUSES = frozenset({JobStatus.COMPLETED, JobStatus.FAILED, JobStatus.CANCELLED})
TERMINAL_PHASES: frozenset[str] = frozenset(status.phase for status in TERMINAL_STATUSES)


class ModelName(StrEnum):
    WAN21 = "wan2.1"
    VEO31 = "veo3.1"

    @property
    def needs_gpu(self) -> bool:
        return self is ModelName.WAN21


DEFAULT_MODEL = ModelName.WAN21


class FailureReason(StrEnum):
    """Machine-readable reason of a failed job (``error_message`` is the human one)."""

    INVALID_INPUT = "invalid_input"
    MODEL_LOAD_FAILED = "model_load_failed"
    OUT_OF_MEMORY = "out_of_memory"
    TIMEOUT = "timeout"
    UPSTREAM_ERROR = "upstream_error"
    CANCELLED = "cancelled"
    WORKER_CRASHED = "worker_crashed"
    INTERRUPTED = "interrupted"
    IMAGE_PULL_FAILED = "image_pull_failed"
    INTERNAL = "internal"


NOT_THE_INPUTS_FAULT = frozenset(
    {
        FailureReason.MODEL_LOAD_FAILED,
        FailureReason.UPSTREAM_ERROR,
        FailureReason.WORKER_CRASHED,
        FailureReason.INTERRUPTED,
        FailureReason.IMAGE_PULL_FAILED,
        FailureReason.INTERNAL,
        FailureReason.CANCELLED,
    }
)
"""Failures of the platform, not of what the user asked for: their credit is refunded. Not here:
``invalid_input`` (the input), ``out_of_memory`` (the size asked for) and ``timeout`` once the job ran
(its own run time); see :func:`refunds_credit`."""


def refunds_credit(status: JobStatus, reason: FailureReason | None, *, started: bool) -> bool:
    """Whether a job that ended in ``status`` (with ``reason``) gets its credit back: every cancelled
    job, and every failure that was no fault of its input. A timeout is the platform's when the job
    never started running (it waited for a runner that did not come)."""
    if status is JobStatus.CANCELLED:
        return True
    if status is not JobStatus.FAILED:
        return False
    if reason is FailureReason.TIMEOUT:
        return not started
    return reason is None or reason in NOT_THE_INPUTS_FAULT


class RunnerExit(IntEnum):
    """Exit codes of ``python -m vividflow.runner`` (a Job's podFailurePolicy reads them)."""

    OK = 0
    FAILED = 1
    INVALID_INPUT = 2
    MODEL_LOAD_FAILED = 3
    OUT_OF_MEMORY = 4

    @classmethod
    def for_reason(cls, reason: FailureReason | None) -> RunnerExit:
        return _EXIT_BY_REASON.get(reason, cls.FAILED) if reason is not None else cls.FAILED


_EXIT_BY_REASON = {
    FailureReason.INVALID_INPUT: RunnerExit.INVALID_INPUT,
    FailureReason.MODEL_LOAD_FAILED: RunnerExit.MODEL_LOAD_FAILED,
    FailureReason.OUT_OF_MEMORY: RunnerExit.OUT_OF_MEMORY,
}
NO_RETRY_EXIT_CODES = (RunnerExit.INVALID_INPUT, RunnerExit.MODEL_LOAD_FAILED, RunnerExit.OUT_OF_MEMORY)
"""Runner exits that another try cannot change: the Job fails at once instead of spending retries."""


class _Wire(BaseModel):
    """Base for models that also travel as Kubernetes objects (camelCase aliases)."""

    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="forbid")


# ---------------------------------------------------------------------------------------------
# Model parameters. Defaults and ranges are those of the public API contract.
# ---------------------------------------------------------------------------------------------

WAN_MIN_SIDE, WAN_MAX_SIDE, WAN_SIDE_MULTIPLE = 16, 1920, 16
WAN_MIN_FRAMES, WAN_MAX_FRAMES = 5, 241
WAN_FRAME_COUNTS = tuple(range(WAN_MIN_FRAMES, WAN_MAX_FRAMES + 1, 4))
"""Every valid ``length``: (length - 1) divisible by 4."""
WAN_FPS = 16
VEO_DURATIONS = (4, 6, 8)
VEO_RESOLUTIONS = ("720p", "1080p")


_SIDE: dict[str, Any] = {"minimum": WAN_MIN_SIDE, "maximum": WAN_MAX_SIDE, "multipleOf": WAN_SIDE_MULTIPLE}


def aware_utc(moment: datetime) -> datetime:
    """``moment`` in UTC with its time zone; a naive one (as databases keep them) is taken as UTC."""
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


def _check_wan_side(name: str, value: int) -> int:
    if not WAN_MIN_SIDE <= value <= WAN_MAX_SIDE or value % WAN_SIDE_MULTIPLE:
        raise ValueError(
            f"{name} must be a multiple of {WAN_SIDE_MULTIPLE} between {WAN_MIN_SIDE} and {WAN_MAX_SIDE}"
        )
    return value


class WanParams(_Wire):
    """Parameters of ``wan2.1`` (Wan 2.1 image-to-video through diffusers)."""

    negative_prompt: str = Field(
        "blurry, low quality, distorted", max_length=2000, description="What to avoid."
    )
    cfg: float = Field(7.5, ge=1.0, le=20.0, allow_inf_nan=False, description="Guidance scale, 1.0-20.0.")
    width: int = Field(
        1280, description="Output width in pixels: a multiple of 16 within 16-1920.", json_schema_extra=_SIDE
    )
    height: int = Field(
        720, description="Output height in pixels: a multiple of 16 within 16-1920.", json_schema_extra=_SIDE
    )
    length: int = Field(
        81,
        description="Number of frames: 5-241 with (length - 1) divisible by 4.",
        json_schema_extra={
            "minimum": WAN_MIN_FRAMES,
            "maximum": WAN_MAX_FRAMES,
            "x-kubernetes-validations": [
                {"rule": "(self - 1) % 4 == 0", "message": "length - 1 must be divisible by 4"}
            ],
        },
    )
    steps: int = Field(30, ge=1, le=100, description="Diffusion steps, 1-100.")
    seed: int = Field(42, ge=0, le=2**32 - 1, description="Random seed, 0-4294967295.")

    @field_validator("width", "height")
    @classmethod
    def _side(cls, value: int, info: Any) -> int:
        return _check_wan_side(info.field_name, value)

    @field_validator("length")
    @classmethod
    def _length(cls, value: int) -> int:
        if value not in WAN_FRAME_COUNTS:
            raise ValueError(
                f"length must be between {WAN_MIN_FRAMES} and {WAN_MAX_FRAMES} with (length - 1) "
                "divisible by 4 (e.g. 5, 9, 81)"
            )
        return value


class VeoParams(_Wire):
    """Parameters of ``veo3.1`` (Google Veo 3.1 on Vertex AI)."""

    duration_seconds: int = Field(
        4, description="Video length in seconds: 4, 6 or 8.", json_schema_extra={"enum": list(VEO_DURATIONS)}
    )
    resolution: str = Field(
        "720p", description="720p or 1080p.", json_schema_extra={"enum": list(VEO_RESOLUTIONS)}
    )
    camera_motion: str | None = Field(
        None, max_length=200, description="Camera movement, folded into the prompt."
    )
    subject_animation: str | None = Field(
        None, max_length=200, description="Subject motion, folded into the prompt."
    )
    environmental_animation: str | None = Field(
        None, max_length=200, description="Environmental effects, folded into the prompt."
    )
    enhance_prompt: bool = Field(False, description="Let Veo rewrite the prompt.")

    @field_validator("duration_seconds")
    @classmethod
    def _duration(cls, value: int) -> int:
        if value not in VEO_DURATIONS:
            raise ValueError("duration_seconds must be 4, 6, or 8")
        return value

    @field_validator("resolution")
    @classmethod
    def _resolution(cls, value: str) -> str:
        if value not in VEO_RESOLUTIONS:
            raise ValueError("resolution must be 720p or 1080p")
        return value

    @field_validator("camera_motion", "subject_animation", "environmental_animation")
    @classmethod
    def _blank_is_none(cls, value: str | None) -> str | None:
        if value is None or not value.strip() or value.strip().lower() == "none":
            return None
        return value.strip()


PARAMS_BY_MODEL: dict[ModelName, type[WanParams] | type[VeoParams]] = {
    ModelName.WAN21: WanParams,
    ModelName.VEO31: VeoParams,
}


def parameter_names(model: ModelName) -> frozenset[str]:
    return frozenset(PARAMS_BY_MODEL[model].model_fields)


def parameter_schemas(model: ModelName) -> dict[str, Any]:
    """The model's parameters as JSON Schema properties of a request's fields (the API's OpenAPI
    document and the web app's form are both built from this)."""
    schema = PARAMS_BY_MODEL[model].model_json_schema(by_alias=False)
    properties: dict[str, Any] = {}
    for name, field in schema["properties"].items():
        field = {k: v for k, v in field.items() if k not in ("title", "x-kubernetes-validations")}
        if name == "length":
            field["enum"] = list(WAN_FRAME_COUNTS)  # (length - 1) % 4 == 0, which JSON Schema cannot say
        properties[name] = field
    return properties


class JobParameters(_Wire):
    """Exactly one section, the one of the job's model, is set."""

    wan: WanParams | None = None
    veo: VeoParams | None = None

    @classmethod
    def for_model(cls, model: ModelName, values: dict[str, Any], *, strict: bool = False) -> JobParameters:
        """Validate ``values`` as ``model``'s parameters (raises pydantic's ValidationError); ``strict``:
        no type conversions (values already have their field's type)."""
        if model is ModelName.WAN21:
            return cls(wan=WanParams.model_validate(values, strict=strict))
        return cls(veo=VeoParams.model_validate(values, strict=strict))

    def of(self, model: ModelName) -> WanParams | VeoParams:
        section = self.wan if model is ModelName.WAN21 else self.veo
        if section is None:
            raise ValueError(f"no parameters for model {model}")
        return section


# ---------------------------------------------------------------------------------------------
# The job spec (runner input; VideoJob .spec) and the runner's result.
# ---------------------------------------------------------------------------------------------

DEFAULT_DEADLINE_SECONDS = 3600


class JobSpec(_Wire):
    """Everything a runner needs to turn one request into one video."""

    job_id: str = Field(alias="jobID", description="The public job id (a UUID).")
    owner: str = Field(description="Id of the user who submitted the job.")
    model: ModelName
    prompt: str = Field(min_length=1, max_length=2000)
    input_uri: str = Field(
        alias="inputURI",
        description="Where the input image is: a local path, gs://bucket/object or https URL.",
    )
    parameters: JobParameters
    output_uri: str = Field(
        alias="outputURI", description="Where the MP4 goes: a local path or gs://bucket/object."
    )
    deadline_seconds: int = Field(DEFAULT_DEADLINE_SECONDS, ge=1, description="Run-time limit once started.")
    created_at: datetime = Field(description="When the API accepted the job (for total_time).")
    cancel_requested: bool = False

    @field_validator("created_at")
    @classmethod
    def _aware(cls, value: datetime) -> datetime:
        return aware_utc(value)

    @model_validator(mode="after")
    def _parameters_match_model(self) -> JobSpec:
        self.parameters.of(self.model)
        other = self.parameters.veo if self.model is ModelName.WAN21 else self.parameters.wan
        if other is not None:
            raise ValueError(f"parameters hold a section for another model than {self.model}")
        return self

    @property
    def params(self) -> WanParams | VeoParams:
        return self.parameters.of(self.model)


class JobMetrics(_Wire):
    """Timings in seconds, as reported by the API's ``metrics``."""

    spin_up_time: float = Field(description="Runner start to model ready.")
    generation_time: float = Field(description="The model's own run.")
    total_time: float = Field(description="Job creation to completion.")
    upload_time: float = Field(0.0, description="Writing the result to its destination.")
    model_load_time: float | None = Field(
        None, description="Loading the model, when this job loaded it (a warm runner reuses it)."
    )
    step_time: float | None = Field(None, description="Mean time of one diffusion step (wan2.1).")
    peak_gpu_memory_bytes: int | None = Field(
        None, ge=0, description="Peak GPU memory the job allocated (wan2.1 on a GPU)."
    )


class RunResult(_Wire):
    """What a runner reports for one job: success with a result, or a failure with a reason."""

    ok: bool
    result_url: str | None = Field(None, alias="resultURL")
    output_uri: str | None = Field(None, alias="outputURI")
    metrics: JobMetrics | None = None
    error_message: str | None = None
    reason: FailureReason | None = None

    @classmethod
    def success(cls, *, result_url: str, output_uri: str, metrics: JobMetrics) -> RunResult:
        return cls(ok=True, result_url=result_url, output_uri=output_uri, metrics=metrics)

    @classmethod
    def failure(cls, reason: FailureReason, message: str, metrics: JobMetrics | None = None) -> RunResult:
        return cls(ok=False, reason=reason, error_message=message, metrics=metrics)


# ---------------------------------------------------------------------------------------------
# The VideoJob custom resource: cluster mode's record of a job (crds/ is generated from these).
# ---------------------------------------------------------------------------------------------

GROUP = "vivid.studioionique.com"
VERSION = "v1alpha1"
KIND = "VideoJob"
PLURAL = "videojobs"
Json = Mapping[str, Any]
"""A Kubernetes object as JSON (a VideoJob, Job, Pod or Event), as the operator reads it."""
MERGE_PATCH = "application/merge-patch+json"
"""The content type of the JSON merge patches the operator and runners send."""


def videojob_path(namespace: str, name: str = "", subresource: str = "") -> str:
    """The Kubernetes API path of the namespace's VideoJobs, one of them, or its subresource."""
    path = f"/apis/{GROUP}/{VERSION}/namespaces/{quote(namespace)}/{PLURAL}"
    if name:
        path += f"/{quote(name)}"
    return path + (f"/{subresource}" if subresource else "")
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


class Condition(_Wire):
    """A Kubernetes-style condition (``Started``, ``Finished``)."""

    type: str
    status: Literal["True", "False", "Unknown"]
    reason: str = ""
    message: str = ""
    last_transition_time: datetime | None = None
    observed_generation: int | None = None


class VideoJobStatus(_Wire):
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
