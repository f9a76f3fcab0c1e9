"""The jobs table as a small state machine: every change is a conditional UPDATE from known
states, so the executor, the cancel endpoint and (in cluster mode) the status mirror can race
without ever moving a job backwards. A run's end, from either mode, goes through :func:`finish_job`.

The embedded executors' leases (beyond :func:`claim`) are in services.leases, read-only queries in
services.job_queries."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from typing import Any

from sqlalchemy import Row, and_, select, update
from sqlalchemy.orm import Session

from vividflow.apiserver.clock import naive_utc, utcnow
from vividflow.apiserver.db.models import Job
from vividflow.apiserver.services import credits, events
from vividflow.apiserver.services.keys import Principal
from vividflow.jobspec import (
    FailureReason,
    JobMetrics,
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


# ---------------------------------------------------------------------------------------------------
# A run's end, as its runner (embedded mode) or its VideoJob (cluster mode) reports it
# ---------------------------------------------------------------------------------------------------


@dataclass(frozen=True, kw_only=True)
class Outcome:
    """How a job's run ended: ``status`` is completed, failed or cancelled; ``reason`` and ``message``
    say why it did not complete, ``result_url`` is the completed video's (the caller vouches that it is
    the job's own output). ``started_at`` and ``completed_at`` (naive UTC) are the run's, where the
    report has them: the job's own start time comes first, and the end is now without one."""

    status: JobStatus
    reason: FailureReason | None
    message: str | None
    result_url: str | None
    metrics: JobMetrics | None
    started_at: datetime | None = None
    completed_at: datetime | None = None

    @classmethod
    def of_run(cls, result: RunResult) -> Outcome:
        """An embedded runner's result (a failure for ``cancelled`` is the run stopped by a cancel)."""
        to = JobStatus.CANCELLED if result.reason is FailureReason.CANCELLED else JobStatus.FAILED
        if result.ok:
            to = JobStatus.COMPLETED
        return cls(
            status=to,
            reason=result.reason,
            message=result.error_message,
            result_url=result.result_url,
            metrics=result.metrics,
        )

    @classmethod
    def of_videojob(cls, status: VideoJobStatus, result_url: str | None) -> Outcome:
        """A VideoJob's terminal status (the operator recorded it)."""
        assert status.status.is_terminal
        return cls(
            status=status.status,
            reason=status.reason,
            message=status.error_message,
            result_url=result_url,
            metrics=status.metrics,
            started_at=naive_utc(status.start_time),
            completed_at=naive_utc(status.completion_time),
        )


def finish_job(session: Session, job_id: str, outcome: Outcome, *, owner: str | None = None) -> bool:
    """Store how an active job's run ended, in both modes: its run time (start to end), metrics and
    result or failure, through :func:`finish` (which refunds per ``refunds_credit`` and records the
    event). With ``owner``, only while that executor holds the job's lease. True if the job ended now;
    False if it had already ended: a cancel (or any other end) that came first wins, the late outcome
    is dropped, because the end is one conditional UPDATE from the active states."""
    job = get_job(session, job_id)
    if job is None or JobStatus(job.status).is_terminal:
        return False
    ended = outcome.completed_at or utcnow()
    started = job.started_at or outcome.started_at
    values: dict[str, Any] = {
        "completed_at": ended,
        "run_seconds": (ended - started).total_seconds() if started else None,
        "metrics": outcome.metrics.model_dump(mode="json") if outcome.metrics else None,
    }
    if job.started_at is None and started is not None:
        values["started_at"] = started  # it ran, but we saw it only now
    if outcome.status is JobStatus.COMPLETED:
        values.update(progress=100, result_url=outcome.result_url)
    return finish(
        session, job_id, outcome.status, reason=outcome.reason, message=outcome.message, owner=owner, **values
    )


def record_result(session: Session, job_id: str, result: RunResult, owner: str) -> bool:
    """Store a runner's result on the job ``owner`` runs (only while it holds the lease: a result from
    an executor that lost the job is discarded); True if the job ended now."""
    return finish_job(session, job_id, Outcome.of_run(result), owner=owner)


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
    return finish_job(session, job_id, Outcome.of_videojob(status, result_url))


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
