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
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal

from pydantic import ValidationError

from vividflow.jobspec import (
    TERMINAL_PHASES,
    Condition,
    FailureReason,
    JobSpec,
    Json,
    Phase,
    RunnerExit,
    RunResult,
    VideoJobStatus,
    operator_outcome,
)
from vividflow.operator.jobs import CONTAINER_NAME, KUEUE_QUEUE_LABEL

IMAGE_PULL_REASONS = frozenset({"ErrImagePull", "ImagePullBackOff", "InvalidImageName", "ErrImageNeverPull"})
STUCK_WAITING_REASONS = IMAGE_PULL_REASONS | {"CreateContainerConfigError"}
"""Container waiting reasons that do not resolve by themselves: fail after a grace period."""
_MESSAGE_CHARS = 1000


@dataclass(frozen=True)
class Event:
    """A Kubernetes Event to record on the VideoJob."""

    type: Literal["Normal", "Warning"]
    reason: str
    message: str


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

    @property
    def record_outcome(self) -> bool:
        """A terminal phase was decided: record it in the VideoJob's outcome annotation."""
        return self.status.phase in TERMINAL_PHASES


# ---------------------------------------------------------------------------------------------------
# Reading Kubernetes objects
# ---------------------------------------------------------------------------------------------------


def parse_time(value: object) -> datetime | None:
    if not isinstance(value, str) or not value:
        return None
    return datetime.fromisoformat(value)


def _seconds(moment: datetime) -> datetime:
    return moment.replace(microsecond=0)


def current_status(videojob: Json) -> VideoJobStatus:
    """The VideoJob's status as our model (fields of others, e.g. kopf's, ignored)."""
    raw = videojob.get("status") or {}
    known = {name for name, info in VideoJobStatus.model_fields.items()} | {
        info.alias for info in VideoJobStatus.model_fields.values() if info.alias
    }
    try:
        return VideoJobStatus.model_validate({k: v for k, v in raw.items() if k in known})
    except ValidationError:
        return VideoJobStatus()


def _true_conditions(job: Json) -> dict[str, Json]:
    conditions = (job.get("status") or {}).get("conditions") or []
    return {c["type"]: c for c in conditions if c.get("status") == "True"}


def job_finished(job: Json) -> bool:
    return bool(_true_conditions(job).keys() & {"Complete", "SuccessCriteriaMet", "Failed", "FailureTarget"})


def owned_by(obj: Json, uid: str) -> bool:
    refs = (obj.get("metadata") or {}).get("ownerReferences") or []
    return any(ref.get("uid") == uid and ref.get("controller") for ref in refs)


def runner_status(pod: Json) -> Json:
    """The runner container's status in ``pod`` (empty if the Pod has none yet)."""
    statuses = (pod.get("status") or {}).get("containerStatuses") or []
    for status in statuses:
        if status.get("name") == CONTAINER_NAME:
            return dict(status)
    return dict(statuses[0]) if statuses else {}


def _state(pod: Json, name: str) -> Json:
    return (runner_status(pod).get("state") or {}).get(name) or {}


def parse_result(message: object) -> RunResult | None:
    """The runner's RunResult from a termination message, if it is one."""
    if not isinstance(message, str) or not message.strip().startswith("{"):
        return None
    try:
        return RunResult.model_validate_json(message)
    except ValidationError:
        return None


def _tail(text: str) -> str:
    text = " ".join(text.split())
    return text if len(text) <= _MESSAGE_CHARS else "…" + text[-_MESSAGE_CHARS:]


def _started_at(pods: Sequence[Json]) -> datetime | None:
    moments = [parse_time(_state(p, "running").get("startedAt")) for p in pods]
    moments += [parse_time(_state(p, "terminated").get("startedAt")) for p in pods]
    known = [m for m in moments if m is not None]
    return min(known) if known else None


def _has_started(pods: Sequence[Json]) -> bool:
    return any(
        (p.get("status") or {}).get("phase") in ("Running", "Succeeded", "Failed")
        or _state(p, "running")
        or _state(p, "terminated")
        for p in pods
    )


def _latest_terminated(pods: Sequence[Json], *, succeeded: bool) -> Json | None:
    finished = [
        _state(p, "terminated")
        for p in pods
        if _state(p, "terminated") and (_state(p, "terminated").get("exitCode") == 0) == succeeded
    ]
    if not finished:
        return None
    return max(finished, key=lambda t: t.get("finishedAt") or "")


# ---------------------------------------------------------------------------------------------------
# Outcomes
# ---------------------------------------------------------------------------------------------------


def failure_from(
    job: Json, pods: Sequence[Json], spec: JobSpec | None
) -> tuple[FailureReason, str, str | None]:
    """Why a failed Job failed: (reason, a sentence for the user, details for operators). The runner's
    own report comes first, then what Kubernetes says; a raw log tail never reaches the user."""
    conditions = _true_conditions(job)
    condition = conditions.get("Failed") or conditions.get("FailureTarget") or {}
    if condition.get("reason") == "DeadlineExceeded":
        limit = (job.get("spec") or {}).get("activeDeadlineSeconds") or (spec and spec.deadline_seconds)
        return FailureReason.TIMEOUT, f"The job did not finish within its deadline of {limit} seconds.", None
    terminated = _latest_terminated(pods, succeeded=False)
    if terminated:
        if terminated.get("reason") == "OOMKilled":
            return FailureReason.OUT_OF_MEMORY, "The runner ran out of memory (OOMKilled).", None
        result = parse_result(terminated.get("message"))
        if result is not None and not result.ok:
            reason = result.reason or FailureReason.INTERNAL
            return reason, result.error_message or "The runner failed.", None
        code = terminated.get("exitCode")
        detail = _tail(str(terminated.get("message") or "")) or None
        if code == RunnerExit.INVALID_INPUT:
            return FailureReason.INVALID_INPUT, "The runner could not use the job's input.", detail
        message = f"The runner stopped unexpectedly (exit code {code}). Please submit the job again."
        return FailureReason.WORKER_CRASHED, message, detail
    detail = condition.get("message") or f"The runner Job failed ({condition.get('reason', 'unknown')})."
    return FailureReason.WORKER_CRASHED, "The runner failed. Please submit the job again.", detail


@dataclass(frozen=True)
class _Stuck:
    reason: FailureReason
    message: str
    detail: str


def _stuck(pods: Sequence[Json], now: datetime, grace: float) -> tuple[_Stuck | None, float | None]:
    """(the failure, seconds until a stuck Pod's grace ends): a Pod that cannot start at all."""
    wait: float | None = None
    for pod in pods:
        waiting = _state(pod, "waiting")
        if waiting.get("reason") not in STUCK_WAITING_REASONS:
            continue
        created = parse_time((pod.get("metadata") or {}).get("creationTimestamp")) or now
        left = grace - (now - created).total_seconds()
        if left <= 0:
            image = runner_status(pod).get("image") or "the runner image"
            detail = f"{waiting['reason']} (image {image}): {waiting.get('message') or waiting['reason']}"
            if waiting["reason"] in IMAGE_PULL_REASONS:
                message = "The job could not start: the runner image could not be pulled."
                return _Stuck(FailureReason.IMAGE_PULL_FAILED, message, detail), None
            message = "The job could not start: the runner's configuration is incomplete."
            return _Stuck(FailureReason.INTERNAL, message, detail), None
        wait = left if wait is None else min(wait, left)
    return None, wait


def _pod_waiting(pods: Sequence[Json]) -> tuple[str, str] | None:
    """(reason, message) of a runner container that waits to start (e.g. ImagePullBackOff)."""
    for pod in pods:
        waiting = _state(pod, "waiting")
        reason = waiting.get("reason")
        if reason and reason != "ContainerCreating":
            return str(reason), str(waiting.get("message") or reason)
    return None


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
    conditions = _true_conditions(job)
    start = _started_at(pods)
    if "Complete" in conditions or "SuccessCriteriaMet" in conditions:
        terminated = _latest_terminated(pods, succeeded=True)
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
    stuck, wait = _stuck(pods, now, grace)
    if stuck:
        outcome = _Outcome(
            "Failed", start_time=start, reason=stuck.reason, message=stuck.message, detail=stuck.detail
        )
        return outcome, True, None
    if old.phase == "Processing" or _has_started(pods):
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
    waiting = _pod_waiting(pods) or ("PodPending", "waiting for the runner Pod")
    return _Outcome("Queued", waiting_reason=waiting[0], waiting_message=waiting[1]), False, wait


def decide(
    videojob: Json,
    job: Json | None,
    pods: Sequence[Json],
    now: datetime,
    *,
    image_pull_grace: float = 60.0,
    duration_step: float = 30.0,
) -> Decision:
    """The VideoJob's status from what exists, and the action that follows.

    ``job`` None means the Job is known not to exist (read fresh, not from a cache); ``pods`` may hold
    Pods of other Jobs (those are ignored). ``duration_step``: while processing, ``duration`` moves in
    steps of this many seconds, so that it does not cause a status write on every look.
    """
    old = current_status(videojob)
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
        message = _tail(f"Invalid VideoJob spec: {error.errors(include_url=False)}")
        outcome = _Outcome(
            "Failed", reason=FailureReason.INVALID_INPUT, message=message, has_job=job is not None
        )
        return Decision(_build(videojob, old, outcome, now, duration_step), delete_job=job is not None)
    if spec.cancel_requested:
        outcome = _Outcome(
            "Cancelled",
            start_time=_started_at(pods),
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


# ---------------------------------------------------------------------------------------------------
# Writing it back
# ---------------------------------------------------------------------------------------------------


def _wire(status: VideoJobStatus) -> dict[str, Any]:
    return status.model_dump(mode="json", by_alias=True, exclude_none=True)


def status_patch(videojob: Json, new: VideoJobStatus) -> dict[str, Any] | None:
    """A merge patch of ``status`` from the VideoJob's current status to ``new``; None if equal.

    Only our fields are compared and written; ``null`` removes one we no longer set."""
    before, after = _wire(current_status(videojob)), _wire(new)
    raw = videojob.get("status") or {}
    changes: dict[str, Any] = {k: v for k, v in after.items() if before.get(k) != v or k not in raw}
    changes.update({k: None for k in before if k not in after and k in raw})
    return {"status": changes} if changes else None


def _started_condition(status: VideoJobStatus) -> Condition | None:
    return next((c for c in status.conditions if c.type == "Started"), None)


def _held(status: VideoJobStatus) -> Condition | None:
    """The Started condition if it says the Job is held back (GPU limit, Kueue) or cannot start."""
    started = _started_condition(status)
    if started is None or started.status != "False":
        return None
    held = started.reason.startswith("WaitingFor") or started.reason in STUCK_WAITING_REASONS
    return started if held else None


def job_created_event(manifest: Json) -> Event:
    name = (manifest.get("metadata") or {}).get("name", "")
    if (manifest.get("spec") or {}).get("suspend"):
        return Event("Normal", "JobCreated", f"Created the runner Job {name}, suspended until admitted.")
    return Event("Normal", "JobCreated", f"Created the runner Job {name}.")


def transition_events(old: VideoJobStatus, new: VideoJobStatus, detail: str | None = None) -> list[Event]:
    """The Events for what changed: held back for capacity or admission, an image that does not pull,
    a phase entered (a failure with its ``detail`` for operators)."""
    events: list[Event] = []
    held = _held(new)
    if held is not None and held.reason != getattr(_held(old), "reason", None):
        if held.reason in STUCK_WAITING_REASONS:
            events.append(Event("Warning", held.reason, f"The runner cannot start yet: {held.message}"))
        else:
            events.append(Event("Normal", held.reason, f"The job is {held.message}."))
    if old.phase == new.phase:
        return events
    if new.phase == "Processing":
        events.append(Event("Normal", "Started", "The runner started."))
    elif new.phase == "Completed":
        message = f"The video is ready after {new.duration or '0s'}: {new.result_url}"
        events.append(Event("Normal", "Completed", message))
    elif new.phase == "Failed":
        reason = new.reason.value if new.reason else "unknown"
        text = " ".join(filter(None, (new.error_message, detail)))
        events.append(Event("Warning", "Failed", f"{reason}: {text}".strip()))
    elif new.phase == "Cancelled":
        events.append(Event("Normal", "Cancelled", new.error_message or "The job was cancelled."))
    return events
