"""Status values, model names, failure reasons and the runner's exit codes: the words every side uses."""

from __future__ import annotations

from enum import IntEnum, StrEnum

from pydantic import BaseModel, ConfigDict
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
    ORPHANED = 5
    """An embedded-mode worker process whose server died: it stops rather than run on unwatched."""

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


class Wire(BaseModel):
    """Base for models that also travel as Kubernetes objects (camelCase aliases)."""

    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="forbid")
