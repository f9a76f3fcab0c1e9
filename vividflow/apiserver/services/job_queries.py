"""Read-only queries over the jobs table: a user's history, the queue's length, recent run times."""

from __future__ import annotations

from sqlalchemy import and_, func, or_, select
from sqlalchemy.orm import Session

from vividflow.apiserver.db.models import Job
from vividflow.jobspec import JobStatus


def history(session: Session, user_id: str, limit: int) -> list[Job]:
    query = select(Job).where(Job.user_id == user_id).order_by(Job.seq.desc()).limit(limit)
    return list(session.scalars(query))


def history_page(
    session: Session, user_id: str, statuses: list[JobStatus] | None, offset: int, limit: int
) -> tuple[list[Job], int]:
    """One page of the user's jobs, newest first, with the number of jobs matching in all."""
    condition = Job.user_id == user_id
    if statuses:
        condition = and_(condition, Job.status.in_([status.value for status in statuses]))
    total = int(session.scalar(select(func.count()).select_from(Job).where(condition)) or 0)
    query = select(Job).where(condition).order_by(Job.seq.desc()).offset(offset).limit(limit)
    return list(session.scalars(query)), total


def queue_ahead(session: Session, job: Job) -> tuple[int, int]:
    """(queued jobs submitted before ``job``, jobs processing now), in one query."""
    queued_before = and_(Job.status == JobStatus.QUEUED.value, Job.seq < job.seq)
    row = session.execute(
        select(
            func.count().filter(queued_before),
            func.count().filter(Job.status == JobStatus.PROCESSING.value),
        ).where(or_(queued_before, Job.status == JobStatus.PROCESSING.value))
    ).one()
    return int(row[0]), int(row[1])


def queue_counts(session: Session) -> tuple[int, int]:
    """(jobs queued, jobs processing) across all users, in one query."""
    row = session.execute(
        select(
            func.count().filter(Job.status == JobStatus.QUEUED.value),
            func.count().filter(Job.status == JobStatus.PROCESSING.value),
        ).where(Job.status.in_([JobStatus.QUEUED.value, JobStatus.PROCESSING.value]))
    ).one()
    return int(row[0]), int(row[1])


def recent_run_seconds(session: Session, model: str, sample: int = 20) -> list[float]:
    query = (
        select(Job.run_seconds)
        .where(Job.model == model, Job.status == JobStatus.COMPLETED.value, Job.run_seconds.is_not(None))
        .order_by(Job.seq.desc())
        .limit(sample)
    )
    return [value for value in session.scalars(query) if value is not None]
