"""Reading what Kubernetes says about a runner: its Job's conditions, its Pods' container states and
the runner's termination message. Pure functions of the objects (``now`` is an argument)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from pydantic import ValidationError

from vividflow.jobspec import FailureReason, JobSpec, Json, RunnerExit, RunResult
from vividflow.operator.jobs import CONTAINER_NAME

IMAGE_PULL_REASONS = frozenset({"ErrImagePull", "ImagePullBackOff", "InvalidImageName", "ErrImageNeverPull"})
STUCK_WAITING_REASONS = IMAGE_PULL_REASONS | {"CreateContainerConfigError"}
"""Container waiting reasons that do not resolve by themselves: fail after a grace period."""
_MESSAGE_CHARS = 1000


def parse_time(value: object) -> datetime | None:
    if not isinstance(value, str) or not value:
        return None
    return datetime.fromisoformat(value)


def true_conditions(job: Json) -> dict[str, Json]:
    conditions = (job.get("status") or {}).get("conditions") or []
    return {c["type"]: c for c in conditions if c.get("status") == "True"}


def job_finished(job: Json) -> bool:
    return bool(true_conditions(job).keys() & {"Complete", "SuccessCriteriaMet", "Failed", "FailureTarget"})


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


def container_state(pod: Json, name: str) -> Json:
    return (runner_status(pod).get("state") or {}).get(name) or {}


def parse_result(message: object) -> RunResult | None:
    """The runner's RunResult from a termination message, if it is one."""
    if not isinstance(message, str) or not message.strip().startswith("{"):
        return None
    try:
        return RunResult.model_validate_json(message)
    except ValidationError:
        return None


def tail(text: str) -> str:
    text = " ".join(text.split())
    return text if len(text) <= _MESSAGE_CHARS else "…" + text[-_MESSAGE_CHARS:]


def started_at(pods: Sequence[Json]) -> datetime | None:
    moments = [parse_time(container_state(p, "running").get("startedAt")) for p in pods]
    moments += [parse_time(container_state(p, "terminated").get("startedAt")) for p in pods]
    known = [m for m in moments if m is not None]
    return min(known) if known else None


def has_started(pods: Sequence[Json]) -> bool:
    return any(
        (p.get("status") or {}).get("phase") in ("Running", "Succeeded", "Failed")
        or container_state(p, "running")
        or container_state(p, "terminated")
        for p in pods
    )


def latest_terminated(pods: Sequence[Json], *, succeeded: bool) -> Json | None:
    finished = [
        container_state(p, "terminated")
        for p in pods
        if container_state(p, "terminated")
        and (container_state(p, "terminated").get("exitCode") == 0) == succeeded
    ]
    if not finished:
        return None
    return max(finished, key=lambda t: t.get("finishedAt") or "")


def failure_from(
    job: Json, pods: Sequence[Json], spec: JobSpec | None
) -> tuple[FailureReason, str, str | None]:
    """Why a failed Job failed: (reason, a sentence for the user, details for operators). The runner's
    own report comes first, then what Kubernetes says; a raw log tail never reaches the user."""
    conditions = true_conditions(job)
    condition = conditions.get("Failed") or conditions.get("FailureTarget") or {}
    if condition.get("reason") == "DeadlineExceeded":
        limit = (job.get("spec") or {}).get("activeDeadlineSeconds") or (spec and spec.deadline_seconds)
        return FailureReason.TIMEOUT, f"The job did not finish within its deadline of {limit} seconds.", None
    terminated = latest_terminated(pods, succeeded=False)
    if terminated:
        if terminated.get("reason") == "OOMKilled":
            return FailureReason.OUT_OF_MEMORY, "The runner ran out of memory (OOMKilled).", None
        result = parse_result(terminated.get("message"))
        if result is not None and not result.ok:
            reason = result.reason or FailureReason.INTERNAL
            return reason, result.error_message or "The runner failed.", None
        code = terminated.get("exitCode")
        detail = tail(str(terminated.get("message") or "")) or None
        if code == RunnerExit.INVALID_INPUT:
            return FailureReason.INVALID_INPUT, "The runner could not use the job's input.", detail
        message = f"The runner stopped unexpectedly (exit code {code}). Please submit the job again."
        return FailureReason.WORKER_CRASHED, message, detail
    detail = condition.get("message") or f"The runner Job failed ({condition.get('reason', 'unknown')})."
    return FailureReason.WORKER_CRASHED, "The runner failed. Please submit the job again.", detail


@dataclass(frozen=True)
class Stuck:
    reason: FailureReason
    message: str
    detail: str


def stuck_failure(pods: Sequence[Json], now: datetime, grace: float) -> tuple[Stuck | None, float | None]:
    """(the failure, seconds until a stuck Pod's grace ends): a Pod that cannot start at all."""
    wait: float | None = None
    for pod in pods:
        waiting = container_state(pod, "waiting")
        if waiting.get("reason") not in STUCK_WAITING_REASONS:
            continue
        created = parse_time((pod.get("metadata") or {}).get("creationTimestamp")) or now
        left = grace - (now - created).total_seconds()
        if left <= 0:
            image = runner_status(pod).get("image") or "the runner image"
            detail = f"{waiting['reason']} (image {image}): {waiting.get('message') or waiting['reason']}"
            if waiting["reason"] in IMAGE_PULL_REASONS:
                message = "The job could not start: the runner image could not be pulled."
                return Stuck(FailureReason.IMAGE_PULL_FAILED, message, detail), None
            message = "The job could not start: the runner's configuration is incomplete."
            return Stuck(FailureReason.INTERNAL, message, detail), None
        wait = left if wait is None else min(wait, left)
    return None, wait


def pod_waiting(pods: Sequence[Json]) -> tuple[str, str] | None:
    """(reason, message) of a runner container that waits to start (e.g. ImagePullBackOff)."""
    for pod in pods:
        waiting = container_state(pod, "waiting")
        reason = waiting.get("reason")
        if reason and reason != "ContainerCreating":
            return str(reason), str(waiting.get("message") or reason)
    return None
