"""The jobs table as a small state machine: every change is a conditional UPDATE from known
states, so the executor, the cancel endpoint and (in cluster mode) the status mirror can race
without ever moving a job backwards."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import UTC, date, datetime
from typing import Any

from sqlalchemy import Engine, Row, Select, and_, bindparam, case, func, or_, select, update
from sqlalchemy.orm import Session

from vividflow.apiserver.clock import utcnow
from vividflow.apiserver.db.models import Job
from vividflow.apiserver.services import credits
from vividflow.apiserver.services.keys import Principal
from vividflow.jobspec import (
    FailureReason,
    JobParameters,
    JobSpec,
    JobStatus,
    ModelName,
    RunResult,
    VideoJobStatus,
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
        created_at=now,
        updated_at=now,
    )
    session.add(job)
    session.flush()
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
        created_at=job.created_at.replace(tzinfo=UTC) if job.created_at.tzinfo is None else job.created_at,
        cancel_requested=job.cancel_requested,
    )


def transition(
    session: Session, job_id: str, to: JobStatus, from_: Iterable[JobStatus], **values: Any
) -> bool:
    """Move a job to ``to`` only if it is in one of ``from_``; True if it moved."""
    result = session.execute(
        update(Job)
        .where(Job.id == job_id, Job.status.in_([status.value for status in from_]))
        .values(status=to.value, updated_at=utcnow(), **values)
        .execution_options(synchronize_session=False)
    )
    return bool(result.rowcount)  # type: ignore[attr-defined]


def cancel_queued(session: Session, job: Job) -> bool:
    """Cancel a queued job and refund its credit; False if it is no longer queued."""
    if not transition(
        session, job.id, JobStatus.CANCELLED, [JobStatus.QUEUED], cancel_requested=True, completed_at=utcnow()
    ):
        return False
    credits.refund(session, job.user_id, job.credit_day)
    return True


def claim_next_queued(session: Session, models: Iterable[ModelName] | None = None) -> Job | None:
    """Take the oldest queued job (of ``models``) and mark it processing; None if there is none."""
    while True:
        query = select(Job.id).where(Job.status == JobStatus.QUEUED.value).order_by(Job.seq).limit(1)
        if models is not None:
            query = query.where(Job.model.in_([model.value for model in models]))
        job_id = session.scalar(query)
        if job_id is None:
            return None
        now = utcnow()
        if transition(session, job_id, JobStatus.PROCESSING, [JobStatus.QUEUED], started_at=now, progress=0):
            return get_job(session, job_id)


def record_progress(session: Session, job_id: str, progress: int) -> bool:
    """Raise a processing job's progress (never lowers it); True if it rose."""
    result = session.execute(
        update(Job)
        .where(Job.id == job_id, Job.status == JobStatus.PROCESSING.value, Job.progress < progress)
        .values(progress=progress, updated_at=utcnow())
        .execution_options(synchronize_session=False)
    )
    return bool(result.rowcount)  # type: ignore[attr-defined]


def record_result(session: Session, job_id: str, result: RunResult) -> bool:
    """Store a runner's result on a processing job (a terminal state wins: first result counts)."""
    job = get_job(session, job_id)
    if job is None:
        return False
    now = utcnow()
    run_seconds = (now - job.started_at).total_seconds() if job.started_at else None
    metrics = result.metrics.model_dump(mode="json") if result.metrics else None
    if result.ok:
        return transition(
            session,
            job_id,
            JobStatus.COMPLETED,
            ACTIVE,
            progress=100,
            result_url=result.result_url,
            metrics=metrics,
            run_seconds=run_seconds,
            completed_at=now,
        )
    target = JobStatus.CANCELLED if result.reason == "cancelled" else JobStatus.FAILED
    return transition(
        session,
        job_id,
        target,
        ACTIVE,
        error_message=result.error_message,
        failure_reason=result.reason.value if result.reason else None,
        metrics=metrics,
        run_seconds=run_seconds,
        completed_at=now,
    )


def _naive_utc(moment: datetime | None) -> datetime | None:
    if moment is None or moment.tzinfo is None:
        return moment
    return moment.astimezone(UTC).replace(tzinfo=None)


def apply_videojob_status(session: Session, job_id: str, status: VideoJobStatus) -> bool:
    """Mirror a VideoJob's whole status onto its job (level-based: applying it twice, late or out
    of order never moves a job backwards, lowers progress or changes a terminal job); True if the
    row changed."""
    target = status.status
    if target is JobStatus.QUEUED:
        return False
    started = _naive_utc(status.start_time)
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
    ended = _naive_utc(status.completion_time) or utcnow()
    started = job.started_at or started
    values: dict[str, Any] = {
        "started_at": started,
        "completed_at": ended,
        "run_seconds": (ended - started).total_seconds() if started else None,
        "metrics": status.metrics.model_dump(mode="json") if status.metrics else None,
    }
    if target is JobStatus.COMPLETED:
        values.update(progress=100, result_url=status.result_url)
    else:
        default = FailureReason.CANCELLED if target is JobStatus.CANCELLED else FailureReason.INTERNAL
        values.update(error_message=status.error_message, failure_reason=(status.reason or default).value)
        if target is JobStatus.CANCELLED:
            values["cancel_requested"] = True
    return transition(session, job_id, target, ACTIVE, **values)


def active_job_ids(session: Session) -> dict[str, JobStatus]:
    """Every queued or processing job: id -> status."""
    query = select(Job.id, Job.status).where(Job.status.in_([status.value for status in ACTIVE]))
    return {job_id: JobStatus(status) for job_id, status in session.execute(query)}


def fail_processing(session: Session, message: str, reason: str) -> int:
    """After a restart: jobs that were processing cannot be resumed; fail them clearly."""
    result = session.execute(
        update(Job)
        .where(Job.status == JobStatus.PROCESSING.value)
        .values(
            status=JobStatus.FAILED.value,
            error_message=message,
            failure_reason=reason,
            updated_at=utcnow(),
            completed_at=utcnow(),
        )
        .execution_options(synchronize_session=False)
    )
    return int(result.rowcount)  # type: ignore[attr-defined]


def _status_query() -> Select[Any]:
    ahead_table = Job.__table__.alias("ahead")
    ahead = (
        select(func.count())
        .select_from(ahead_table)
        .where(ahead_table.c.status == JobStatus.QUEUED.value, ahead_table.c.seq < Job.seq)
        .scalar_subquery()
    )
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


def recent_run_seconds(session: Session, model: str, sample: int = 20) -> list[float]:
    query = (
        select(Job.run_seconds)
        .where(Job.model == model, Job.status == JobStatus.COMPLETED.value, Job.run_seconds.is_not(None))
        .order_by(Job.seq.desc())
        .limit(sample)
    )
    return [value for value in session.scalars(query) if value is not None]
