"""The GPU concurrency limit: which suspended GPU Jobs may start now (pure; Kueue's Jobs are left alone)."""

from __future__ import annotations

from collections.abc import Sequence

from vividflow.jobspec import LABEL_MODEL, Json, ModelName
from vividflow.operator.jobs import KUEUE_QUEUE_LABEL, ORDER_ANNOTATION
from vividflow.operator.observed import job_finished

GPU_JOBS_SELECTOR = f"{LABEL_MODEL}={ModelName.WAN21.value}"
"""Label selector of the Jobs that the limit counts."""


def _order(job: Json) -> tuple[str, str, str]:
    metadata = job.get("metadata") or {}
    created = (metadata.get("annotations") or {}).get(ORDER_ANNOTATION, "")
    return created, metadata.get("creationTimestamp", ""), metadata.get("name", "")


def _counted(job: Json) -> bool:
    metadata = job.get("metadata") or {}
    return (
        not metadata.get("deletionTimestamp")
        and KUEUE_QUEUE_LABEL not in (metadata.get("labels") or {})
        and not job_finished(job)
    )


def jobs_to_release(jobs: Sequence[Json], limit: int) -> list[str]:
    """Names of suspended GPU Jobs to resume, in the order their jobs were accepted, so that at most
    ``limit`` unfinished GPU Jobs run (``limit`` 0: no limit, nothing is held)."""
    live = [job for job in jobs if _counted(job)]
    waiting = sorted((job for job in live if (job.get("spec") or {}).get("suspend")), key=_order)
    if limit <= 0:
        return [job["metadata"]["name"] for job in waiting]
    running = len(live) - len(waiting)
    return [job["metadata"]["name"] for job in waiting[: max(0, limit - running)]]
