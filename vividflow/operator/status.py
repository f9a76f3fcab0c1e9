"""What a VideoJob's status should be, computed from what exists: the VideoJob, its Job, the Job's Pods.

Level-based and pure (no API calls, ``now`` is an argument): whatever the operator missed, the same
inputs give the same answer. Progress never goes backwards.

Phase and result come only from the Job, its Pods and the runner's termination message, never from
what a runner may have written into the status: a terminal phase is sticky once the operator has
recorded it in the VideoJob's ``outcome`` annotation (metadata, which the status subresource that
runners may patch cannot change); a terminal ``status.phase`` without it is decided again.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Literal

from pydantic import ValidationError

from vividflow.jobspec import (
    TERMINAL_PHASES,
    Condition,
    FailureReason,
    JobSpec,
    Json,
    Phase,
    RunResult,
    VideoJobStatus,
    operator_outcome,
)
from vividflow.operator.jobs import KUEUE_QUEUE_LABEL
from vividflow.operator.observed import (
    failure_from,
    has_started,
    job_finished,
    latest_terminated,
    owned_by,
    parse_result,
    parse_time,
    pod_waiting,
    started_at,
    stuck_failure,
    tail,
    true_conditions,
)


@dataclass(frozen=True)
class Decision:
    """The status the VideoJob should have and what to do to the world to get there."""

    status: VideoJobStatus
    create_job: bool = False
    delete_job: bool = False
    requeue_after: float | None = None
    spec: JobSpec | None = field(default=None, compare=False)
    detail: str | None = field(default=None, compare=False)
    """For operators only (an Event): what the runner left behind, e.g. its log tail."""
    previous: VideoJobStatus = field(default_factory=VideoJobStatus, compare=False)
    """The status the VideoJob had: what the patch and the Events are computed from."""

    @property
    def record_outcome(self) -> bool:
        """A terminal phase was decided: record it in the VideoJob's outcome annotation."""
        return self.status.phase in TERMINAL_PHASES


def _seconds(moment: datetime) -> datetime:
    return moment.replace(microsecond=0)


def current_status(videojob: Json) -> VideoJobStatus:
    """The VideoJob's status as our model; the default (Queued) when it has none that validates."""
    return VideoJobStatus.from_object(videojob) or VideoJobStatus()


# ---------------------------------------------------------------------------------------------------
# The status
# ---------------------------------------------------------------------------------------------------


def format_duration(seconds: float) -> str:
    """``45s``, ``1m5s``, ``2h0m3s``: the printer column's form."""
    total = max(0, int(seconds))
    hours, rest = divmod(total, 3600)
    minutes, secs = divmod(rest, 60)
    if hours:
        return f"{hours}h{minutes}m{secs}s"
    if minutes:
        return f"{minutes}m{secs}s"
    return f"{secs}s"


def _condition(
    old: VideoJobStatus,
    type_: str,
    value: bool,
    reason: str,
    message: str,
    now: datetime,
    generation: int | None,
) -> Condition:
    status: Literal["True", "False"] = "True" if value else "False"
    previous = next((c for c in old.conditions if c.type == type_), None)
    since = previous.last_transition_time if previous and previous.status == status else None
    return Condition(
        type=type_,
        status=status,
        reason=reason,
        message=message,
        last_transition_time=since or _seconds(now),
        observed_generation=generation,
    )


def _pascal(reason: FailureReason) -> str:
    return "".join(part.capitalize() for part in reason.value.split("_"))


@dataclass(frozen=True)
class _Outcome:
    phase: Phase
    waiting_reason: str = "Pending"
    waiting_message: str = ""
    start_time: datetime | None = None
    completion_time: datetime | None = None
    result: RunResult | None = None
    reason: FailureReason | None = None
    message: str | None = None
    """For the user (the status' errorMessage)."""
    detail: str | None = None
    """For operators (the Finished condition and an Event), never for the user."""
    has_job: bool = True


def _build(
    videojob: Json, old: VideoJobStatus, outcome: _Outcome, now: datetime, duration_step: float
) -> VideoJobStatus:
    generation = (videojob.get("metadata") or {}).get("generation")
    terminal = outcome.phase in TERMINAL_PHASES
    start = old.start_time or outcome.start_time
    if start is None and outcome.phase == "Processing":
        start = now
    start = _seconds(start) if start else None
    completion = _seconds(outcome.completion_time or now) if terminal else None
    duration: str | None = None
    if start and completion:
        duration = format_duration((completion - start).total_seconds())
    elif start and outcome.phase == "Processing":
        elapsed = (now - start).total_seconds()
        duration = format_duration(math.floor(elapsed / duration_step) * duration_step)
    progress = 100 if outcome.phase == "Completed" else old.progress
    started = outcome.phase == "Processing" or (terminal and start is not None)
    finished_reason = _pascal(outcome.reason) if outcome.reason else outcome.phase
    return VideoJobStatus(
        phase=outcome.phase,
        progress=progress,
        result_url=outcome.result.result_url if outcome.result else None,
        error_message=outcome.message,
        reason=outcome.reason,
        metrics=outcome.result.metrics if outcome.result else None,
        start_time=start,
        completion_time=completion,
        duration=duration,
        job_name=(videojob.get("metadata") or {}).get("name") if outcome.has_job else old.job_name,
        conditions=[
            _condition(
                old,
                "Started",
                started,
                "RunnerStarted" if started else outcome.waiting_reason,
                "" if started else outcome.waiting_message,
                now,
                generation,
            ),
            _condition(
                old,
                "Finished",
                terminal,
                finished_reason if terminal else outcome.phase,
                " ".join(filter(None, (outcome.message, outcome.detail))) if terminal else "",
                now,
                generation,
            ),
        ],
        observed_generation=generation,
    )


def _observe(
    spec: JobSpec, old: VideoJobStatus, job: Json, pods: Sequence[Json], now: datetime, grace: float
) -> tuple[_Outcome, bool, float | None]:
    """(outcome, delete the Job, requeue after) for a Job that exists."""
    conditions = true_conditions(job)
    start = started_at(pods)
    if "Complete" in conditions or "SuccessCriteriaMet" in conditions:
        terminated = latest_terminated(pods, succeeded=True)
        result = parse_result(terminated.get("message")) if terminated else None
        finished = parse_time((job.get("status") or {}).get("completionTime")) or parse_time(
            (terminated or {}).get("finishedAt")
        )
        if result is not None and result.ok and result.output_uri == spec.output_uri:
            return (
                _Outcome("Completed", start_time=start, completion_time=finished, result=result),
                False,
                None,
            )
        message = "The runner finished without reporting a result."
        detail = None
        if result is not None and result.ok:
            detail = f"The runner reported output {result.output_uri}, not the job's {spec.output_uri}."
        outcome = _Outcome(
            "Failed",
            start_time=start,
            completion_time=finished,
            reason=FailureReason.INTERNAL,
            message=message,
            detail=detail,
        )
        return outcome, False, None
    if "Failed" in conditions or "FailureTarget" in conditions:
        reason, message, detail = failure_from(job, pods, spec)
        condition = conditions.get("Failed") or conditions["FailureTarget"]
        finished = parse_time(condition.get("lastTransitionTime"))
        outcome = _Outcome(
            "Failed",
            start_time=start,
            completion_time=finished,
            reason=reason,
            message=message,
            detail=detail,
        )
        return outcome, False, None
    stuck, wait = stuck_failure(pods, now, grace)
    if stuck:
        outcome = _Outcome(
            "Failed", start_time=start, reason=stuck.reason, message=stuck.message, detail=stuck.detail
        )
        return outcome, True, None
    if old.phase == "Processing" or has_started(pods):
        return _Outcome("Processing", start_time=start), False, wait
    if (job.get("spec") or {}).get("suspend"):
        labels = (job.get("metadata") or {}).get("labels") or {}
        if KUEUE_QUEUE_LABEL in labels:
            why = (
                "WaitingForAdmission",
                f"waiting for Kueue to admit it (queue {labels[KUEUE_QUEUE_LABEL]})",
            )
        else:
            why = ("WaitingForCapacity", "waiting for a free GPU slot")
        return _Outcome("Queued", waiting_reason=why[0], waiting_message=why[1]), False, wait
    waiting = pod_waiting(pods) or ("PodPending", "waiting for the runner Pod")
    return _Outcome("Queued", waiting_reason=waiting[0], waiting_message=waiting[1]), False, wait


def decide(
    videojob: Json,
    job: Json | None,
    pods: Sequence[Json],
    now: datetime,
    *,
    image_pull_grace: float = 60.0,
    duration_step: float = 30.0,
    old: VideoJobStatus | None = None,
) -> Decision:
    """The VideoJob's status from what exists, and the action that follows.

    ``job`` None means the Job is known not to exist (read fresh, not from a cache); ``pods`` may hold
    Pods of other Jobs (those are ignored). ``duration_step``: while processing, ``duration`` moves in
    steps of this many seconds, so that it does not cause a status write on every look. ``old``: the
    VideoJob's status, when the caller has parsed it already.
    """
    old = current_status(videojob) if old is None else old
    return replace(_decide(videojob, old, job, pods, now, image_pull_grace, duration_step), previous=old)


def _decide(
    videojob: Json,
    old: VideoJobStatus,
    job: Json | None,
    pods: Sequence[Json],
    now: datetime,
    image_pull_grace: float,
    duration_step: float,
) -> Decision:
    metadata = videojob.get("metadata") or {}
    recorded = operator_outcome(videojob)
    if recorded is not None:  # decided before: the phase is the recorded one, whatever status says
        running_job = (
            job is not None and not job_finished(job) and not job["metadata"].get("deletionTimestamp")
        )
        status = old if old.phase == recorded else old.model_copy(update={"phase": recorded})
        return Decision(status=status, delete_job=recorded == "Cancelled" and running_job)
    try:
        spec = JobSpec.model_validate(videojob.get("spec") or {})
    except ValidationError as error:
        message = tail(f"Invalid VideoJob spec: {error.errors(include_url=False)}")
        outcome = _Outcome(
            "Failed", reason=FailureReason.INVALID_INPUT, message=message, has_job=job is not None
        )
        return Decision(_build(videojob, old, outcome, now, duration_step), delete_job=job is not None)
    if spec.cancel_requested:
        outcome = _Outcome(
            "Cancelled",
            start_time=started_at(pods),
            reason=FailureReason.CANCELLED,
            message="The job was cancelled.",
            has_job=job is not None,
        )
        status = _build(videojob, old, outcome, now, duration_step)
        return Decision(status, delete_job=job is not None, spec=spec)
    if job is None:
        if old.job_name:
            message = f"The runner Job {old.job_name} was deleted before it finished."
            outcome = _Outcome("Failed", reason=FailureReason.INTERRUPTED, message=message, has_job=False)
            return Decision(_build(videojob, old, outcome, now, duration_step), spec=spec)
        return Decision(status=old, create_job=True, spec=spec)
    if not owned_by(job, metadata.get("uid", "")):
        # A Job of an earlier VideoJob with the same name, still being garbage-collected.
        return Decision(status=old, requeue_after=2.0, spec=spec)
    uid = job["metadata"]["uid"]
    mine = [pod for pod in pods if owned_by(pod, uid)]
    outcome, delete, requeue = _observe(spec, old, job, mine, now, image_pull_grace)
    status = _build(videojob, old, outcome, now, duration_step)
    return Decision(status, delete_job=delete, requeue_after=requeue, spec=spec, detail=outcome.detail)
