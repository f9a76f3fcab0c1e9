"""The embedded executors' leases on jobs (see backends.local): a job is taken from the queue with a
lease (``jobs.claim``), the lease is renewed while it runs, and a job whose lease expired (or that its
executor hands back) is queued again or, out of attempts, failed. Every change is a conditional
UPDATE, so executors on several servers can race safely."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import timedelta
from typing import Any

from sqlalchemy import and_, or_, select, update
from sqlalchemy.orm import Session

from vividflow.apiserver.clock import utcnow
from vividflow.apiserver.db.models import Job
from vividflow.apiserver.services import events
from vividflow.apiserver.services.jobs import claim, finish, get_job
from vividflow.jobspec import FailureReason, JobStatus, ModelName


def claim_next_queued(
    session: Session, owner: str, lease_seconds: float, models: Iterable[ModelName] | None = None
) -> Job | None:
    """Take the oldest queued job (of ``models``) for executor ``owner``: processing, with a lease
    until ``lease_seconds`` from now; None if there is none."""
    while True:
        query = select(Job.id).where(Job.status == JobStatus.QUEUED.value).order_by(Job.seq).limit(1)
        if models is not None:
            query = query.where(Job.model.in_([model.value for model in models]))
        job_id = session.scalar(query)
        if job_id is None:
            return None
        if claim(session, job_id, owner, lease_seconds):
            return get_job(session, job_id)


def renew_leases(session: Session, owner: str, lease_seconds: float) -> int:
    """Extend the leases of every job ``owner`` runs; how many it holds."""
    result = session.execute(
        update(Job)
        .where(Job.status == JobStatus.PROCESSING.value, Job.lease_owner == owner)
        .values(lease_expires_at=utcnow() + timedelta(seconds=lease_seconds))
        .execution_options(synchronize_session=False)
    )
    return int(result.rowcount)  # type: ignore[attr-defined]


def _lost(session: Session, condition: Any, max_attempts: int, message: str) -> tuple[int, int]:
    """Jobs matching ``condition`` whose executor is gone: queued again while they have attempts left
    (keeping their place: the queue orders by submission), else failed ``interrupted`` (refunded).
    (requeued, failed)."""
    requeued_rows = session.execute(
        update(Job)
        .where(condition, Job.attempts < max_attempts)
        .values(
            status=JobStatus.QUEUED.value,
            progress=0,
            started_at=None,
            lease_owner=None,
            lease_expires_at=None,
            updated_at=utcnow(),
            event_seq=Job.event_seq + 1,
        )
        .returning(*Job.__table__.c)
        .execution_options(synchronize_session=False)
    ).all()
    for row in requeued_rows:
        events.record(session, row, events.Kind.QUEUED)
    requeued = len(requeued_rows)
    failed = 0
    for job_id in list(session.scalars(select(Job.id).where(condition))):
        failed += finish(session, job_id, JobStatus.FAILED, reason=FailureReason.INTERRUPTED, message=message)
    return int(requeued), failed


def recover_expired(session: Session, max_attempts: int, message: str) -> tuple[int, int]:
    """Processing jobs whose lease has expired (their executor died without a word), on any server;
    see :func:`_lost`. A job without a lease (from before leases existed) counts as expired."""
    expired = and_(
        Job.status == JobStatus.PROCESSING.value,
        or_(Job.lease_expires_at.is_(None), Job.lease_expires_at < utcnow()),
    )
    return _lost(session, expired, max_attempts, message)


def release(session: Session, job_id: str, owner: str, max_attempts: int, message: str) -> tuple[int, int]:
    """``owner`` stops running ``job_id`` before it ended (the server is stopping); see :func:`_lost`."""
    mine = and_(Job.id == job_id, Job.status == JobStatus.PROCESSING.value, Job.lease_owner == owner)
    return _lost(session, mine, max_attempts, message)


def holds(session: Session, job_id: str, owner: str) -> bool:
    """Whether executor ``owner`` still runs ``job_id`` (it is processing under its lease)."""
    query = select(Job.id).where(
        Job.id == job_id, Job.status == JobStatus.PROCESSING.value, Job.lease_owner == owner
    )
    return session.scalar(query) is not None
