"""The job spec (the runner's input; a VideoJob's ``spec``) and the runner's result."""

from __future__ import annotations

from datetime import UTC, datetime

from pydantic import Field, field_validator, model_validator

from vividflow.jobspec.parameters import JobParameters, VeoParams, WanParams
from vividflow.jobspec.words import FailureReason, ModelName, Wire


def aware_utc(moment: datetime) -> datetime:
    """``moment`` in UTC with its time zone; a naive one (as databases keep them) is taken as UTC."""
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


DEFAULT_DEADLINE_SECONDS = 3600


class JobSpec(Wire):
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


class JobMetrics(Wire):
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


class RunResult(Wire):
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
