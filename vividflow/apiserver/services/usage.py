"""The numbers behind ``GET /usage``."""

from __future__ import annotations

from datetime import timedelta

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from vividflow.apiserver.clock import iso, next_reset, today, utcnow
from vividflow.apiserver.db.models import Job, User
from vividflow.apiserver.schemas import UsageResponse
from vividflow.apiserver.services import credits
from vividflow.jobspec import JobStatus


def usage_for(session: Session, user: User, default_limit: int) -> UsageResponse:
    rows = session.execute(
        select(Job.status, func.count()).where(Job.user_id == user.id).group_by(Job.status)
    )
    counts: dict[str, int] = {status: count for status, count in rows}
    recent = (
        session.scalar(
            select(func.count())
            .select_from(Job)
            .where(Job.user_id == user.id, Job.created_at >= utcnow() - timedelta(hours=24))
        )
        or 0
    )
    limit = credits.effective_limit(user, default_limit)
    return UsageResponse(
        total_jobs=sum(counts.values()),
        completed_jobs=counts.get(JobStatus.COMPLETED.value, 0),
        failed_jobs=counts.get(JobStatus.FAILED.value, 0),
        queued_jobs=counts.get(JobStatus.QUEUED.value, 0),
        processing_jobs=counts.get(JobStatus.PROCESSING.value, 0),
        cancelled_jobs=counts.get(JobStatus.CANCELLED.value, 0),
        recent_24h_jobs=recent,
        credits_remaining=max(0, limit - credits.used_today(user, today())),
        daily_limit=limit,
        reset_time=iso(next_reset()) or "",
    )
