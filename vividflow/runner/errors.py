"""Failures a runner reports as a :class:`~vividflow.jobspec.RunResult` instead of a stack trace."""

from __future__ import annotations

from vividflow.jobspec import FailureReason


class RunnerError(Exception):
    """A job failure with a short human message and a machine-readable reason."""

    reason: FailureReason = FailureReason.INTERNAL

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class InvalidInput(RunnerError):
    reason = FailureReason.INVALID_INPUT


class ModelLoadFailed(RunnerError):
    reason = FailureReason.MODEL_LOAD_FAILED


class OutOfMemory(RunnerError):
    reason = FailureReason.OUT_OF_MEMORY
    default_message = "The job ran out of memory. Try a smaller size, fewer frames or fewer steps."


class GenerationTimeout(RunnerError):
    reason = FailureReason.TIMEOUT


class UpstreamError(RunnerError):
    reason = FailureReason.UPSTREAM_ERROR


class Cancelled(RunnerError):
    reason = FailureReason.CANCELLED
