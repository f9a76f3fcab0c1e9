"""Response bodies of the public API (the contract's field names, documented for /docs)."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator
from sqlalchemy import Row

from vividflow.apiserver.clock import iso
from vividflow.apiserver.db.models import ApiKey, Job, WebhookDelivery
from vividflow.apiserver.services.keys import KEY_NAME_MAX_LENGTH, key_name_problem
from vividflow.jobspec import JobStatus

STATUS_MESSAGES: dict[JobStatus, str] = {
    JobStatus.QUEUED: "Job is in queue. It will start processing shortly.",
    JobStatus.PROCESSING: "Job is currently being processed.",
    JobStatus.COMPLETED: "Job completed successfully.",
    JobStatus.FAILED: "Job failed. Check error details.",
    JobStatus.CANCELLED: "Job was cancelled.",
}


class ErrorBody(BaseModel):
    error: str = Field(description="What went wrong, in a few words.")
    details: list[str] = Field(description="Every problem found, one line each.")


class RateLimitBody(ErrorBody):
    retry_after: int = Field(description="Seconds until a request will be accepted again.")


class GenerateAccepted(BaseModel):
    message: str = "Generation job accepted"
    job_id: str
    status: JobStatus = JobStatus.QUEUED
    estimated_wait_time: str = Field(description="A rough range, e.g. '~2-5 minutes'.")


class Metrics(BaseModel):
    generation_time: float | None = None
    spin_up_time: float | None = None
    total_time: float | None = None
    upload_time: float | None = None
    model_load_time: float | None = None
    step_time: float | None = None
    peak_gpu_memory_bytes: int | None = None


class JobStatusBody(BaseModel):
    """Fields that do not apply to the job's state are left out."""

    job_id: str
    status: JobStatus
    model: str
    created_at: str
    updated_at: str | None = None
    message: str
    progress: int | None = Field(None, description="0-100, while processing.")
    queue_position: int | None = Field(None, description="Jobs ahead of this one, while queued.")
    result_url: str | None = None
    metrics: Metrics | None = None
    error_message: str | None = None
    failure_reason: str | None = Field(None, description="Machine-readable reason of a failure.")
    result_expired: bool | None = Field(
        None, description="True once retention deleted the result: result_url no longer serves it."
    )

    @classmethod
    def of(cls, job: Job | Row[Any], queue_position: int | None = None) -> JobStatusBody:
        status = JobStatus(job.status)
        body: dict[str, Any] = {
            "job_id": job.id,
            "status": status,
            "model": job.model,
            "created_at": iso(job.created_at),
            "message": STATUS_MESSAGES[status],
        }
        if status is not JobStatus.QUEUED:
            body["updated_at"] = iso(job.updated_at)
        if status is JobStatus.QUEUED:
            body["queue_position"] = queue_position
        elif status is JobStatus.PROCESSING:
            body["progress"] = job.progress
        elif status is JobStatus.COMPLETED:
            body["result_url"] = job.result_url
            body["metrics"] = Metrics.model_validate(job.metrics or {})
            if job.result_expired_at is not None:
                body["result_expired"] = True
        elif status is JobStatus.FAILED:
            body["error_message"] = job.error_message or "Job failed."
            body["failure_reason"] = job.failure_reason
        return cls.model_validate(body)


class CancelResponse(BaseModel):
    message: str = "Job cancelled successfully"
    job_id: str


class HistoryItem(BaseModel):
    job_id: str
    status: JobStatus
    model: str
    prompt: str
    result_url: str | None
    created_at: str

    @classmethod
    def of(cls, job: Job) -> HistoryItem:
        return cls(
            job_id=job.id,
            status=JobStatus(job.status),
            model=job.model,
            prompt=job.prompt,
            result_url=job.result_url,
            created_at=iso(job.created_at) or "",
        )


class HistoryResponse(BaseModel):
    count: int
    jobs: list[HistoryItem]


class UsageResponse(BaseModel):
    total_jobs: int
    completed_jobs: int
    failed_jobs: int
    queued_jobs: int
    processing_jobs: int
    cancelled_jobs: int
    recent_24h_jobs: int = Field(description="Jobs submitted in the last 24 hours.")
    credits_remaining: int = Field(description="Jobs that can still be submitted today (UTC).")
    daily_limit: int
    reset_time: str = Field(description="When credits reset: the next 00:00 UTC.")


class KeyCreateRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = Field(
        "default",
        max_length=KEY_NAME_MAX_LENGTH,
        description="A label to tell keys apart: 1-100 printable characters, no < or >.",
    )

    @field_validator("name")
    @classmethod
    def _printable(cls, value: str) -> str:
        problem = key_name_problem(value)
        if problem is not None:
            raise ValueError(problem)
        return value.strip()


class KeyInfo(BaseModel):
    id: str
    name: str
    prefix: str = Field(description="The key's first characters, to tell keys apart.")
    created_at: str
    last_used_at: str | None
    revoked: bool

    @classmethod
    def of(cls, key: ApiKey) -> KeyInfo:
        return cls(
            id=key.id,
            name=key.name,
            prefix=key.prefix,
            created_at=iso(key.created_at) or "",
            last_used_at=iso(key.last_used_at),
            revoked=key.revoked_at is not None,
        )


class KeyCreated(KeyInfo):
    key: str = Field(description="The new API key. It is shown only once.")
    message: str = "API key created. Store it now: it cannot be shown again."


class KeyList(BaseModel):
    count: int
    keys: list[KeyInfo]


class KeyRevoked(BaseModel):
    message: str = "API key revoked"
    id: str


class WebhookSecret(BaseModel):
    secret: str = Field(
        description="whsec_ and base64: verify deliveries with it (Standard Webhooks). Keep it secret."
    )


class WebhookDeliveryInfo(BaseModel):
    id: int
    webhook_id: str = Field(description="The delivery's `webhook-id` header, the same on every retry.")
    event: str = Field(description="start, progress or completed (any end of the job).")
    state: str = Field(
        description="pending, delivered, failed (given up) or disabled (the receiver answered 410)."
    )
    attempts: int
    last_status_code: int | None = Field(description="The receiver's last answer (null: none, or no answer).")
    last_error: str | None = Field(description="Why the last attempt failed.")
    next_attempt_at: str | None = Field(description="When the next attempt is due, while pending.")
    created_at: str
    delivered_at: str | None

    @classmethod
    def of(cls, delivery: WebhookDelivery) -> WebhookDeliveryInfo:
        return cls(
            id=delivery.id,
            webhook_id=delivery.message_id,
            event=delivery.event,
            state=delivery.state,
            attempts=delivery.attempts,
            last_status_code=delivery.last_status_code,
            last_error=delivery.last_error,
            next_attempt_at=iso(delivery.next_attempt_at) if delivery.state == "pending" else None,
            created_at=iso(delivery.created_at) or "",
            delivered_at=iso(delivery.delivered_at),
        )


class WebhookDeliveryList(BaseModel):
    job_id: str
    count: int
    deliveries: list[WebhookDeliveryInfo]
