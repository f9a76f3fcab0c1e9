"""A job's life as a sequence of events: the one source the status stream, the webhooks and the
metrics (apiserver.metrics) are fed from.

Every change of a job (services.jobs) raises ``jobs.event_seq`` in the same conditional UPDATE and
records, in the same transaction, a :class:`JobEvent` holding the status body as ``GET /status``
answers it at that moment. The per-job sequence is gap-free and commits in order (the UPDATE holds
the job's row lock until commit), so a stream resumes from any sequence number without losing or
repeating an event, and the webhook outbox row of the event (services.webhooks) commits or rolls
back with the change itself.

After a commit the events are *announced* to whoever listens in this process (the stream hub, the
webhook sender): :func:`add_listener`. Other processes learn of them through the hub's channel
(PostgreSQL NOTIFY, sent in the transaction; Redis pub/sub; or polling ``jobs.event_seq``).
"""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Row, and_, func, insert, select, text, update
from sqlalchemy import event as sa_event
from sqlalchemy.orm import Session
from sqlalchemy.sql.selectable import ScalarSelect

from vividflow.apiserver.clock import utcnow
from vividflow.apiserver.db.models import Job, JobEvent
from vividflow.apiserver.schemas import JobStatusBody
from vividflow.jobspec import JobStatus

log = logging.getLogger(__name__)

NOTIFY_CHANNEL = "vividflow_job_events"
"""PostgreSQL NOTIFY channel and Redis pub/sub channel of job events."""
MAX_NOTIFY_BYTES = 7000
"""PostgreSQL payloads must stay under 8000 bytes; a larger event is announced without its body."""


class Kind:
    """What happened (``JobEvent.kind``): queued (submitted, queued again, or a new queue position),
    start, progress, or the terminal status."""

    QUEUED = "queued"
    START = "start"
    PROGRESS = "progress"
    CHANGED = "changed"
    """Not an event: a hint that the job's status body changed otherwise (its result expired)."""


@dataclass(frozen=True)
class JobFacts:
    """The job as the change left it, for this process's listeners (the metrics): never sent on."""

    model: str
    status: str
    failure_reason: str | None
    created_at: datetime
    started_at: datetime | None
    metrics: dict[str, Any] | None


@dataclass(frozen=True)
class Announced:
    """A committed event, as listeners get it (``body`` None: read it from the database; ``facts``
    only in the process that made the change)."""

    job_id: str
    seq: int
    kind: str
    body: dict[str, Any] | None
    facts: JobFacts | None = None

    @property
    def terminal(self) -> bool:
        return self.kind in TERMINAL_KINDS


TERMINAL_KINDS = frozenset(status.value for status in JobStatus if status.is_terminal)
Listener = Callable[[Announced], None]
_listeners: list[Listener] = []
_listeners_lock = threading.Lock()
_PENDING = "vividflow.events"


def add_listener(listener: Listener) -> None:
    """Call ``listener`` (on the committing thread: keep it quick) with every event this process commits."""
    with _listeners_lock:
        _listeners.append(listener)


def remove_listener(listener: Listener) -> None:
    with _listeners_lock:
        if listener in _listeners:
            _listeners.remove(listener)


@sa_event.listens_for(Session, "after_commit")
def _announce(session: Session) -> None:
    pending: list[Announced] = session.info.pop(_PENDING, [])
    if not pending:
        return
    with _listeners_lock:
        listeners = list(_listeners)
    for announced in pending:
        for listener in listeners:
            try:
                listener(announced)
            except Exception:  # a listener's trouble is its own: the change is committed
                log.exception("an event listener failed")


@sa_event.listens_for(Session, "after_rollback")
def _forget(session: Session) -> None:
    session.info.pop(_PENDING, None)


def status_body(row: Job | Row[Any], queue_position: int | None = None) -> dict[str, Any]:
    """The JSON ``GET /status`` answers for ``row``."""
    return JobStatusBody.of(row, queue_position).model_dump(mode="json", exclude_none=True)


def queued_ahead() -> ScalarSelect[int]:
    """How many queued jobs were submitted before the ``Job`` row of the enclosing query."""
    ahead = Job.__table__.alias("ahead")
    return (
        select(func.count())
        .select_from(ahead)
        .where(ahead.c.status == JobStatus.QUEUED.value, ahead.c.seq < Job.seq)
        .scalar_subquery()
    )


def queue_position(session: Session, job_id: str) -> int | None:
    """Queued jobs submitted before ``job_id`` (None when it is not queued)."""
    query = select(queued_ahead()).where(Job.id == job_id, Job.status == JobStatus.QUEUED.value)
    position = session.scalar(query)
    return None if position is None else int(position)


def record(session: Session, row: Row[Any], kind: str) -> None:
    """Record the event of a change just made to ``row`` (the job's row as the UPDATE returned it,
    its ``event_seq`` already raised), queue its webhook delivery, and announce it after commit."""
    from vividflow.apiserver.services import webhooks

    position = queue_position(session, row.id) if row.status == JobStatus.QUEUED.value else None
    body = status_body(row, position)
    session.execute(
        insert(JobEvent).values(job_id=row.id, seq=row.event_seq, kind=kind, body=body, created_at=utcnow())
    )
    webhooks.enqueue(session, row, kind, body)
    facts = JobFacts(row.model, row.status, row.failure_reason, row.created_at, row.started_at, row.metrics)
    announced = Announced(row.id, row.event_seq, kind, body, facts)
    _announce_after_commit(session, announced)


def hint_changed(session: Session, job_ids: Sequence[str]) -> None:
    """Announce after commit that the status bodies of ``job_ids`` changed without an event (seq 0:
    streams ignore it; caches of status bodies drop the jobs')."""
    for job_id in job_ids:
        _announce_after_commit(session, Announced(job_id, 0, Kind.CHANGED, None))


def _announce_after_commit(session: Session, announced: Announced) -> None:
    if session.get_bind().dialect.name == "postgresql":
        notify = text("SELECT pg_notify(:channel, :payload)")
        session.execute(notify, {"channel": NOTIFY_CHANNEL, "payload": encode(announced)})
    session.info.setdefault(_PENDING, []).append(announced)


def encode(announced: Announced) -> str:
    """The event as a notification payload (without its body when that would be too large)."""
    payload = {"job": announced.job_id, "seq": announced.seq, "kind": announced.kind, "body": announced.body}
    encoded = json.dumps(payload, separators=(",", ":"))
    if len(encoded.encode()) > MAX_NOTIFY_BYTES:
        payload["body"] = None
        encoded = json.dumps(payload, separators=(",", ":"))
    return encoded


def decode(payload: str | bytes) -> Announced | None:
    try:
        data = json.loads(payload)
        return Announced(str(data["job"]), int(data["seq"]), str(data["kind"]), data.get("body"))
    except (ValueError, KeyError, TypeError):
        log.warning("ignoring a malformed job event notification")
        return None


def events_after(session: Session, job_id: str, after: int) -> list[JobEvent]:
    """The job's events with a sequence number above ``after``, in order."""
    query = select(JobEvent).where(JobEvent.job_id == job_id, JobEvent.seq > after).order_by(JobEvent.seq)
    return list(session.scalars(query))


def latest_event(session: Session, job_id: str) -> JobEvent | None:
    query = select(JobEvent).where(JobEvent.job_id == job_id).order_by(JobEvent.seq.desc()).limit(1)
    return session.scalar(query)


def event_seqs(session: Session, job_ids: Sequence[str]) -> dict[str, int]:
    """The latest sequence number of each of ``job_ids`` (for polling when there is no channel)."""
    found: dict[str, int] = {}
    for start in range(0, len(job_ids), 500):
        chunk = job_ids[start : start + 500]
        for job_id, seq in session.execute(select(Job.id, Job.event_seq).where(Job.id.in_(chunk))):
            found[job_id] = seq
    return found


def refresh_position(session: Session, job_id: str, seen_seq: int, seen_position: int | None) -> bool:
    """Record a ``queued`` event when a queued job's position moved since its event ``seen_seq``
    (whoever follows the job calls this; the conditional UPDATE lets one of several callers win).
    True if an event was recorded."""
    position = queue_position(session, job_id)
    if position is None or position == seen_position:
        return False
    row = session.execute(
        update(Job)
        .where(and_(Job.id == job_id, Job.event_seq == seen_seq, Job.status == JobStatus.QUEUED.value))
        .values(event_seq=Job.event_seq + 1)
        .returning(*Job.__table__.c)
        .execution_options(synchronize_session=False)
    ).one_or_none()
    if row is None:
        return False
    record(session, row, Kind.QUEUED)
    return True
