"""What a status change tells people: the merge patch that writes it and the Kubernetes Events
(``kubectl describe videojob``) that announce it."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

from vividflow.jobspec import Condition, Json, VideoJobStatus
from vividflow.operator.observed import STUCK_WAITING_REASONS
from vividflow.operator.status import current_status


@dataclass(frozen=True)
class Event:
    """A Kubernetes Event to record on the VideoJob."""

    type: Literal["Normal", "Warning"]
    reason: str
    message: str


def _wire(status: VideoJobStatus) -> dict[str, Any]:
    return status.model_dump(mode="json", by_alias=True, exclude_none=True)


def status_patch(
    videojob: Json, new: VideoJobStatus, old: VideoJobStatus | None = None
) -> dict[str, Any] | None:
    """A merge patch of ``status`` from the VideoJob's current status (``old``, when the caller has
    parsed it) to ``new``; None if equal. Only our fields are compared and written; ``null`` removes
    one we no longer set."""
    before, after = _wire(current_status(videojob) if old is None else old), _wire(new)
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
