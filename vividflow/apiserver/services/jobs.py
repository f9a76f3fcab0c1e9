"""The jobs table as a small state machine: every change is a conditional UPDATE from known
states, so the executor, the cancel endpoint and (in cluster mode) the status mirror can race
without ever moving a job backwards."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import date, timedelta
from typing import Any

from sqlalchemy import Engine, Row, Select, and_, bindparam, case, func, or_, select, update
from sqlalchemy.orm import Session

from vividflow.apiserver.clock import naive_utc, utcnow
from vividflow.apiserver.db.models import Job
from vividflow.apiserver.services import credits, events
from vividflow.apiserver.services.keys import Principal
from vividflow.jobspec import (
    FailureReason,
    JobParameters,
    JobSpec,
    JobStatus,
    ModelName,
    RunResult,
    VideoJobStatus,
    refunds_credit,
)

ACTIVE = (JobStatus.QUEUED, JobStatus.PROCESSING)


def insert_job(
    session: Session,
    *,
    job_id: str,
    principal: Principal,
    model: ModelName,
    prompt: str,
    parameters: JobParameters,
    input_uri: str,
    output_uri: str,
    credit_day: date,
    webhook_url: str | None = None,
    webhook_events: list[str] | None = None,
) -> Job:
    now = utcnow()
    job = Job(
        id=job_id,
        user_id=principal.user_id,
        api_key_id=principal.key_id,
        model=model.value,
        prompt=prompt,
        parameters=parameters.model_dump(mode="json", exclude_none=True),
        input_uri=input_uri,
        output_uri=output_uri,
        status=JobStatus.QUEUED.value,
        progress=0,
        credit_day=credit_day,
        cancel_requested=False,
        webhook_url=webhook_url,
        webhook_events=webhook_events,
        event_seq=1,
        created_at=now,
        updated_at=now,
    )
    session.add(job)
    session.flush()
    row = session.execute(select(*Job.__table__.c).where(Job.id == job_id)).one()
    events.record(session, row, events.Kind.QUEUED)
    return job


def get_job(session: Session, job_id: str) -> Job | None:
    return session.scalar(select(Job).where(Job.id == job_id))


def job_spec(job: Job, deadline_seconds: int) -> JobSpec:
    """The runner's (and the VideoJob's) spec of ``job``; times are timezone-aware UTC, as the
    VideoJob schema's date-time format requires."""
    return JobSpec(
        job_id=job.id,
        owner=job.user_id,
        model=ModelName(job.model),
        prompt=job.prompt,
        input_uri=job.input_uri,
        parameters=JobParameters.model_validate(job.parameters),
        output_uri=job.output_uri,
        deadline_seconds=deadline_seconds,
        created_at=job.created_at,
        cancel_requested=job.cancel_requested,
    )


def transition(
    session: Session,
    job_id: str,
    to: JobStatus,
    from_: Iterable[JobStatus],
    *,
    owner: str | None = None,
    **values: Any,
) -> bool:
    """Move a job to ``to`` only if it is in one of ``from_`` (and, with ``owner``, only if that executor
    holds its lease), recording the event; True if it moved."""
    conditions = [Job.id == job_id, Job.status.in_([status.value for status in from_])]
    if owner is not None:
        conditions.append(Job.lease_owner == owner)
    row = _change(session, and_(*conditions), status=to.value, updated_at=utcnow(), **values)
    if row is None:
        return False
    events.record(session, row, events.Kind.START if to is JobStatus.PROCESSING else to.value)
    return True


def _change(session: Session, condition: Any, **values: Any) -> Row[Any] | None:
    """One conditional UPDATE of one job that raises its event sequence; the row after it (None if
    the condition did not hold)."""
    return session.execute(
        update(Job)
        .where(condition)
        .values(event_seq=Job.event_seq + 1, **values)
        .returning(*Job.__table__.c)
        .execution_options(synchronize_session=False)
    ).one_or_none()


def finish(
    session: Session,
    job_id: str,
    to: JobStatus,
    *,
    reason: FailureReason | None = None,
    message: str | None = None,
    owner: str | None = None,
    from_: Iterable[JobStatus] = ACTIVE,
    **values: Any,
) -> bool:
    """The one way a job ends: an active job (in ``from_``) becomes ``to`` (completed, failed or
    cancelled), its lease is dropped, and, in the same transaction, a cancelled job or a failure that
    was no fault of its input gets its credit back (``jobspec.refunds_credit``). True if it ended now
    (a job ends once)."""
    assert to.is_terminal
    conditions = [Job.id == job_id, Job.status.in_([status.value for status in from_])]
    if owner is not None:
        conditions.append(Job.lease_owner == owner)
    now = utcnow()
    if to is not JobStatus.COMPLETED:
        reason = reason or (FailureReason.CANCELLED if to is JobStatus.CANCELLED else FailureReason.INTERNAL)
        values.update(error_message=message, failure_reason=reason.value)
    if to is JobStatus.CANCELLED:
        values["cancel_requested"] = True
    values.setdefault("completed_at", now)
    ended = _change(
        session,
        and_(*conditions),
        status=to.value,
        updated_at=now,
        lease_owner=None,
        lease_expires_at=None,
        **values,
    )
    if ended is None:
        return False
    if refunds_credit(to, reason, started=ended.started_at is not None):
        credits.refund(session, ended.user_id, ended.credit_day)
    events.record(session, ended, to.value)
    return True


def cancel_queued(session: Session, job: Job) -> bool:
    """Cancel a queued job (its credit is refunded); False if it is no longer queued."""
    return finish(session, job.id, JobStatus.CANCELLED, from_=[JobStatus.QUEUED])


# ---------------------------------------------------------------------------------------------------
# Embedded executors: claims and leases
# ---------------------------------------------------------------------------------------------------


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


def claim(session: Session, job_id: str, owner: str, lease_seconds: float) -> bool:
    """Start queued ``job_id`` for executor ``owner`` under a lease of ``lease_seconds``; False if it
    is no longer queued (another executor took it, or it was cancelled)."""
    now = utcnow()
    return transition(
        session,
        job_id,
        JobStatus.PROCESSING,
        [JobStatus.QUEUED],
        started_at=now,
        progress=0,
        lease_owner=owner,
        lease_expires_at=now + timedelta(seconds=lease_seconds),
        attempts=Job.attempts + 1,
    )


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


def cancel_running(session: Session, job: Job) -> bool:
    """Cancel a queued or processing job (refunded; whoever runs it stops, see the backends);
    False if it already ended."""
    return finish(session, job.id, JobStatus.CANCELLED)


def record_progress(session: Session, job_id: str, progress: int, owner: str | None = None) -> bool:
    """Raise a processing job's progress (never lowers it; with ``owner``, only under its lease); True
    if it rose."""
    conditions = [Job.id == job_id, Job.status == JobStatus.PROCESSING.value, Job.progress < progress]
    if owner is not None:
        conditions.append(Job.lease_owner == owner)
    row = _change(session, and_(*conditions), progress=progress, updated_at=utcnow())
    if row is None:
        return False
    events.record(session, row, events.Kind.PROGRESS)
    return True


def record_result(session: Session, job_id: str, result: RunResult, owner: str) -> bool:
    """Store a runner's result on the job ``owner`` runs (only while it holds the lease: a result from
    an executor that lost the job is discarded); True if the job ended now."""
    job = get_job(session, job_id)
    if job is None:
        return False
    now = utcnow()
    run_seconds = (now - job.started_at).total_seconds() if job.started_at else None
    metrics = result.metrics.model_dump(mode="json") if result.metrics else None
    if result.ok:
        return finish(
            session,
            job_id,
            JobStatus.COMPLETED,
            owner=owner,
            progress=100,
            result_url=result.result_url,
            metrics=metrics,
            run_seconds=run_seconds,
        )
    to = JobStatus.CANCELLED if result.reason is FailureReason.CANCELLED else JobStatus.FAILED
    return finish(
        session,
        job_id,
        to,
        owner=owner,
        reason=result.reason,
        message=result.error_message,
        metrics=metrics,
        run_seconds=run_seconds,
    )


# ---------------------------------------------------------------------------------------------------
# Cluster mode: the VideoJob mirror
# ---------------------------------------------------------------------------------------------------


def mark_dispatched(session: Session, job_id: str) -> None:
    """The job's VideoJob exists now (from here on, its absence means it was deleted)."""
    session.execute(
        update(Job)
        .where(Job.id == job_id, Job.dispatched_at.is_(None))
        .values(dispatched_at=utcnow())
        .execution_options(synchronize_session=False)
    )


def apply_videojob_status(
    session: Session, job_id: str, status: VideoJobStatus, *, result_url: str | None = None
) -> bool:
    """Mirror a VideoJob's whole status onto its job (level-based: applying it twice, late or out
    of order never moves a job backwards, lowers progress or changes a terminal job); True if the
    row changed. The caller vouches for a terminal phase (the operator recorded it) and passes the
    ``result_url`` to keep (checked to be the job's own output)."""
    target = status.status
    if target is JobStatus.QUEUED:
        return False
    started = naive_utc(status.start_time)
    if target is JobStatus.PROCESSING:
        moved = transition(
            session,
            job_id,
            JobStatus.PROCESSING,
            [JobStatus.QUEUED],
            started_at=started or utcnow(),
            progress=status.progress,
        )
        return record_progress(session, job_id, status.progress) or moved
    job = get_job(session, job_id)
    if job is None or JobStatus(job.status).is_terminal:
        return False
    ended = naive_utc(status.completion_time) or utcnow()
    started = job.started_at or started
    values: dict[str, Any] = {
        "started_at": started,
        "completed_at": ended,
        "run_seconds": (ended - started).total_seconds() if started else None,
        "metrics": status.metrics.model_dump(mode="json") if status.metrics else None,
    }
    if target is JobStatus.COMPLETED:
        return finish(session, job_id, target, progress=100, result_url=result_url, **values)
    return finish(session, job_id, target, reason=status.reason, message=status.error_message, **values)


def settle_vanished(session: Session, job_id: str, output_exists: bool, result_url: str | None) -> bool:
    """An active job whose VideoJob was deleted: completed if its video is in place (the VideoJob
    finished, then went before we saw it), else cancelled (deleting a VideoJob cancels it; refunded)."""
    if output_exists and result_url is not None:
        return finish(session, job_id, JobStatus.COMPLETED, progress=100, result_url=result_url)
    return finish(session, job_id, JobStatus.CANCELLED, message=VIDEOJOB_DELETED_MESSAGE)


VIDEOJOB_DELETED_MESSAGE = "The job was cancelled: its VideoJob was deleted."


def active_job_ids(session: Session) -> dict[str, tuple[JobStatus, bool]]:
    """Every queued or processing job: id -> (status, whether its VideoJob was created)."""
    query = select(Job.id, Job.status, Job.dispatched_at).where(
        Job.status.in_([status.value for status in ACTIVE])
    )
    return {
        job_id: (JobStatus(status), dispatched is not None)
        for job_id, status, dispatched in session.execute(query)
    }


def _status_query() -> Select[Any]:
    ahead = events.queued_ahead()
    position = case((Job.status == JobStatus.QUEUED.value, ahead), else_=None).label("queue_position")
    return select(Job.__table__, position).where(Job.id == bindparam("job_id"))


_STATUS_QUERY = _status_query()
"""Built once: constructing the statement costs more than running it on SQLite."""


def status_row(engine: Engine, job_id: str) -> tuple[Row[Any], int | None] | None:
    """A job's row and, while it is queued, how many queued jobs are ahead of it, in one statement
    (pass a read engine: then one round trip on PostgreSQL)."""
    with engine.connect() as connection:
        row = connection.execute(_STATUS_QUERY, {"job_id": job_id}).one_or_none()
    if row is None:
        return None
    return row, None if row.queue_position is None else int(row.queue_position)


def history(session: Session, user_id: str, limit: int) -> list[Job]:
    query = select(Job).where(Job.user_id == user_id).order_by(Job.seq.desc()).limit(limit)
    return list(session.scalars(query))


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


def recent_run_seconds(session: Session, model: str, sample: int = 20) -> list[float]:
    query = (
        select(Job.run_seconds)
        .where(Job.model == model, Job.status == JobStatus.COMPLETED.value, Job.run_seconds.is_not(None))
        .order_by(Job.seq.desc())
        .limit(sample)
    )
    return [value for value in session.scalars(query) if value is not None]
