"""Result retention: the input and result of a job that ended more than ``result_retention_days``
ago are deleted (local files or GCS objects) and the job is marked (``jobs.result_expired_at``);
its row and events stay.

Any number of callers may run this at once (the periodic task of every server, ``vividflow gc``):
a job's files are deleted before it is marked, a file or object that is already gone counts as
deleted, and the mark is a conditional UPDATE. A round that dies or races another only repeats
deletions; a job whose deletion failed stays unmarked and the next round retries it. The work goes
in batches, each a short read and a short UPDATE, and no transaction is open while storage is called.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import Row, func, select, update
from sqlalchemy import delete as sql_delete
from sqlalchemy.orm import Session, sessionmaker

from vividflow.apiserver.clock import utcnow
from vividflow.apiserver.db.models import Job, JobEvent
from vividflow.apiserver.services import events
from vividflow.jobspec import JobStatus
from vividflow.settings import Settings
from vividflow.storage import gcs, locations
from vividflow.storage.errors import StorageError

log = logging.getLogger(__name__)

BATCH_SIZE = 200
TERMINAL = tuple(status.value for status in JobStatus if status.is_terminal)

Target = Path | gcs.GcsLocation
"""A local file or a GCS object that retention deletes."""


@dataclass(frozen=True)
class DueJob:
    """A terminal job past the retention whose files are not yet marked deleted."""

    job_id: str
    seq: int
    ended_at: datetime
    targets: tuple[Target, ...]
    """What of the job this server stored (never an image URL the user gave)."""


@dataclass
class Outcome:
    expired: int = 0
    """Jobs whose files this call deleted and that it marked."""
    failed: list[str] = field(default_factory=list)
    """Jobs left unmarked after a storage error: the next round retries them."""


def cutoff(days: float, now: datetime | None = None) -> datetime:
    """Jobs that ended before this moment are past a retention of ``days``."""
    return (now or utcnow()) - timedelta(days=days)


def due_batch(
    session: Session, before: datetime, after_seq: int = 0, limit: int = BATCH_SIZE
) -> list[Row[Any]]:
    """Up to ``limit`` unmarked terminal jobs that ended (completed_at, else created_at) before
    ``before``, with ``seq`` above ``after_seq``, in ``seq`` order. Active jobs are never due."""
    ended = func.coalesce(Job.completed_at, Job.created_at)
    query = (
        select(Job.id, Job.seq, Job.input_uri, Job.output_uri, ended.label("ended_at"))
        .where(
            Job.status.in_(TERMINAL),
            Job.result_expired_at.is_(None),
            ended < before,
            Job.seq > after_seq,
        )
        .order_by(Job.seq)
        .limit(limit)
    )
    return list(session.execute(query))


def owned_targets(job_id: str, input_uri: str, output_uri: str, settings: Settings) -> tuple[Target, ...]:
    """The job's input and output as far as this server stored them."""
    found = (_owned(input_uri, job_id, settings.inputs_dir), _owned(output_uri, job_id, settings.results_dir))
    return tuple(target for target in found if target is not None)


def _owned(uri: str, job_id: str, local_dir: Path) -> Target | None:
    """The file or object at ``uri`` if it is one the server stored for ``job_id``: named after the
    job (so an image URL a user gave, even one into our bucket, is never deleted) and, if local,
    inside ``local_dir``."""
    location = gcs.parse_gcs_url(uri)
    if location is not None:
        return location if _named_after(location.name.rsplit("/", 1)[-1], job_id) else None
    path = locations.local_path(uri)
    if path is None or not _named_after(path.name, job_id):
        return None
    return path if path.resolve().is_relative_to(local_dir.resolve()) else None


def _named_after(name: str, job_id: str) -> bool:
    stem, dot, extension = name.partition(".")
    return stem == job_id and bool(dot) and extension.isalnum()


def describe(target: Target) -> str:
    """The target as ``vividflow gc --dry-run`` lists it."""
    return target.uri if isinstance(target, gcs.GcsLocation) else str(target)


def delete(target: Target) -> None:
    """Remove ``target``; one that is already gone is fine. Raises :class:`StorageError`."""
    if isinstance(target, gcs.GcsLocation):
        gcs.delete(target)
        return
    try:
        target.unlink(missing_ok=True)
    except OSError as exc:
        raise StorageError(f"could not delete {target}: {exc.strerror or 'I/O error'}") from exc


def mark_expired(session: Session, job_ids: Sequence[str]) -> int:
    """Mark the jobs' files deleted (only terminal, unmarked jobs) and drop their events but the last
    (what a stream of the finished job still sends); how many this call marked."""
    if not job_ids:
        return 0
    marked = list(
        session.scalars(
            update(Job)
            .where(Job.id.in_(job_ids), Job.status.in_(TERMINAL), Job.result_expired_at.is_(None))
            .values(result_expired_at=utcnow())
            .returning(Job.id)
            .execution_options(synchronize_session=False)
        )
    )
    if marked:
        latest = select(Job.event_seq).where(Job.id == JobEvent.job_id).scalar_subquery()
        session.execute(
            sql_delete(JobEvent)
            .where(JobEvent.job_id.in_(marked), JobEvent.seq < latest)
            .execution_options(synchronize_session=False)
        )
        events.hint_changed(session, marked)
    return len(marked)


def due_jobs(
    session_factory: sessionmaker[Session],
    settings: Settings,
    days: float | None = None,
    batch_size: int = BATCH_SIZE,
) -> Iterator[list[DueJob]]:
    """The due jobs in batches (``days`` overrides the setting; 0 keeps everything), each read in
    its own short transaction and paged by ``seq``, so jobs left unmarked are not read twice."""
    days = settings.result_retention_days if days is None else days
    if days <= 0:
        return
    before, after = cutoff(days), 0
    while True:
        with session_factory() as session:
            rows = due_batch(session, before, after, batch_size)
        if not rows:
            return
        yield [
            DueJob(
                row.id, row.seq, row.ended_at, owned_targets(row.id, row.input_uri, row.output_uri, settings)
            )
            for row in rows
        ]
        if len(rows) < batch_size:
            return
        after = rows[-1].seq


def expire(
    session_factory: sessionmaker[Session],
    settings: Settings,
    *,
    days: float | None = None,
    batch_size: int = BATCH_SIZE,
    should_stop: Callable[[], bool] = lambda: False,
) -> Outcome:
    """One round: delete the files of every due job and mark those whose files are all gone.
    Blocking (database and storage): run it off the event loop. ``should_stop`` is asked between
    jobs; what was deleted until then is marked before returning."""
    outcome = Outcome()
    for batch in due_jobs(session_factory, settings, days, batch_size):
        deleted: list[str] = []
        for job in batch:
            if should_stop():
                break
            if _delete_all(job):
                deleted.append(job.job_id)
            else:
                outcome.failed.append(job.job_id)
        if deleted:
            with session_factory.begin() as session:
                outcome.expired += mark_expired(session, deleted)
        if should_stop():
            break
    return outcome


def _delete_all(job: DueJob) -> bool:
    """Delete the input, then the result; stop at the first failure, so that a job left for the next
    round still has its result."""
    for target in job.targets:
        try:
            delete(target)
        except StorageError as error:
            log.warning("retention: job %s: %s", job.job_id, error)
            return False
    return True


def is_expired(session: Session, job_id: str) -> bool:
    """Whether retention deleted the files of ``job_id`` (False for an unknown job)."""
    query = select(Job.result_expired_at).where(Job.id == job_id)
    return session.scalar(query) is not None
