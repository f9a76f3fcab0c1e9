"""Webhooks per the Standard Webhooks specification: the outbox of a user's job events, the
users' signing secrets, and the deliveries' life (the database side; the sending is
apiserver.webhook_sender).

:func:`enqueue` runs inside the transaction that records a job's event (services.events), so a
delivery exists exactly when its change committed. A sender :func:`claim_due` s deliveries with a
lease (a conditional UPDATE, like jobs), so that several servers share the outbox and a delivery
whose sender died is claimed again once its lease expires; :func:`settle` records an attempt's
outcome only while the lease is held, and a delivered one is never claimed again.
"""

from __future__ import annotations

import base64
import json
import secrets
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Row, and_, case, func, insert, or_, select, update
from sqlalchemy.orm import Session

from vividflow.apiserver.clock import utcnow
from vividflow.apiserver.db.models import Job, User, WebhookDelivery
from vividflow.jobspec import JobStatus

START, PROGRESS, COMPLETED = "start", "progress", "completed"
WEBHOOK_EVENTS = (START, PROGRESS, COMPLETED)
"""What a job's webhook may be sent for; ``completed`` is any end (completed, failed, cancelled)."""
DEFAULT_WEBHOOK_EVENTS = (COMPLETED,)
PENDING, DELIVERED, FAILED, DISABLED = "pending", "delivered", "failed", "disabled"

PROGRESS_INTERVAL_SECONDS = 5.0
"""Least time between two ``progress`` deliveries of one job."""


def webhook_event(kind: str) -> str | None:
    """The webhook event of a job event kind (services.events.Kind or a terminal status)."""
    if kind in (START, PROGRESS):
        return kind
    if kind in (status.value for status in JobStatus if status.is_terminal):
        return COMPLETED
    return None


def message_id(job_id: str, seq: int) -> str:
    """``webhook-id``: one per event, the same on every retry."""
    return f"msg_{job_id}_{seq}"


def enqueue(session: Session, row: Row[Any], kind: str, body: dict[str, Any]) -> None:
    """Queue the delivery of a job event to the job's webhook, if it has one and asked for it
    (``progress`` at most once per PROGRESS_INTERVAL_SECONDS per job)."""
    if not row.webhook_url:
        return
    event = webhook_event(kind)
    if event is None or event not in (row.webhook_events or DEFAULT_WEBHOOK_EVENTS):
        return
    now = utcnow()
    if event == PROGRESS:
        last = session.scalar(
            select(func.max(WebhookDelivery.created_at)).where(
                WebhookDelivery.job_id == row.id, WebhookDelivery.event == PROGRESS
            )
        )
        if last is not None and (now - last).total_seconds() < PROGRESS_INTERVAL_SECONDS:
            return
    session.execute(
        insert(WebhookDelivery).values(
            job_id=row.id,
            user_id=row.user_id,
            message_id=message_id(row.id, row.event_seq),
            event=event,
            url=row.webhook_url,
            payload=json.dumps(body, separators=(",", ":")),
            state=PENDING,
            attempts=0,
            next_attempt_at=now,
            created_at=now,
        )
    )


# ---------------------------------------------------------------------------------------------------
# Signing secrets
# ---------------------------------------------------------------------------------------------------

SECRET_PREFIX = "whsec_"
SECRET_BYTES = 32


def new_secret() -> str:
    return SECRET_PREFIX + base64.b64encode(secrets.token_bytes(SECRET_BYTES)).decode("ascii")


def ensure_secret(session: Session, user_id: str) -> str:
    """The user's secret, made now if they have none. A conditional UPDATE (only while there is
    none), so of concurrent first calls one secret wins and every caller gets that one."""
    session.execute(
        update(User)
        .where(User.id == user_id, User.webhook_secret.is_(None))
        .values(webhook_secret=new_secret())
        .execution_options(synchronize_session=False)
    )
    secret = session.scalar(select(User.webhook_secret).where(User.id == user_id))
    assert secret is not None, user_id
    return secret


def rotate_secret(session: Session, user_id: str) -> str:
    """Replace the user's secret; the one it replaces keeps signing for a while (see
    :func:`signing_secrets`). The new secret."""
    secret = new_secret()
    session.execute(
        update(User)
        .where(User.id == user_id)
        .values(
            webhook_previous_secret=User.webhook_secret,
            webhook_secret=secret,
            webhook_secret_rotated_at=utcnow(),
        )
        .execution_options(synchronize_session=False)
    )
    return secret


def signing_secrets(
    current: str, previous: str | None, rotated_at: datetime | None, overlap_seconds: float, now: datetime
) -> tuple[str, ...]:
    """The secrets that sign a delivery now: the current one, and the previous one during the overlap
    after a rotation."""
    if previous and rotated_at is not None and now - rotated_at < timedelta(seconds=overlap_seconds):
        return (current, previous)
    return (current,)


# ---------------------------------------------------------------------------------------------------
# Deliveries: claims, leases and outcomes
# ---------------------------------------------------------------------------------------------------

MAX_RETRY_AFTER_SECONDS = 24 * 3600.0
"""A receiver's Retry-After is honoured up to this."""


@dataclass(frozen=True)
class Claimed:
    """A delivery a sender holds the lease of, with what it needs to send it."""

    id: int
    job_id: str
    message_id: str
    event: str
    url: str
    payload: str
    attempt: int
    """1 for the first attempt, counting this one (an attempt cut off by a dead sender counts)."""
    secrets: tuple[str, ...] = field(repr=False)
    """The signing secrets (kept out of reprs, hence of logs)."""


@dataclass(frozen=True)
class Attempt:
    """What one attempt came to: the receiver's status code (None: no answer) and why it failed."""

    status_code: int | None
    error: str | None = None
    retry_after: float | None = None
    """Seconds the receiver asked to wait (429 and 503 only)."""


def _claimable(now: datetime) -> Any:
    return and_(
        WebhookDelivery.state == PENDING,
        WebhookDelivery.next_attempt_at <= now,
        or_(WebhookDelivery.lease_expires_at.is_(None), WebhookDelivery.lease_expires_at < now),
    )


def claim_due(
    session: Session, owner: str, lease_seconds: float, limit: int, overlap_seconds: float
) -> list[Claimed]:
    """Take up to ``limit`` due deliveries for sender ``owner``, oldest due first, each with a lease of
    ``lease_seconds``: a conditional UPDATE per delivery, so each is claimed by one sender at a time."""
    now = utcnow()
    candidates = session.scalars(
        select(WebhookDelivery.id)
        .where(_claimable(now))
        .order_by(WebhookDelivery.next_attempt_at, WebhookDelivery.id)
        .limit(limit)
    ).all()
    claimed: list[Claimed] = []
    for delivery_id in candidates:
        row = session.execute(
            update(WebhookDelivery)
            .where(WebhookDelivery.id == delivery_id, _claimable(now))
            .values(
                lease_owner=owner,
                lease_expires_at=now + timedelta(seconds=lease_seconds),
                attempts=WebhookDelivery.attempts + 1,
            )
            .returning(*WebhookDelivery.__table__.c)
            .execution_options(synchronize_session=False)
        ).one_or_none()
        if row is not None:
            keys = _user_secrets(session, row.user_id, overlap_seconds, now)
            claimed.append(
                Claimed(
                    row.id, row.job_id, row.message_id, row.event, row.url, row.payload, row.attempts, keys
                )
            )
    return claimed


def _user_secrets(session: Session, user_id: str, overlap_seconds: float, now: datetime) -> tuple[str, ...]:
    current, previous, rotated_at = session.execute(
        select(User.webhook_secret, User.webhook_previous_secret, User.webhook_secret_rotated_at).where(
            User.id == user_id
        )
    ).one()
    if current is None:  # submitting with a webhook made one; a job recorded otherwise may lack it
        current = ensure_secret(session, user_id)
    return signing_secrets(current, previous, rotated_at, overlap_seconds, now)


def next_due(session: Session) -> datetime | None:
    """When the soonest pending delivery may be claimed (its next attempt, or its lease's end)."""
    lease = WebhookDelivery.lease_expires_at
    due = case(
        (and_(lease.is_not(None), lease > WebhookDelivery.next_attempt_at), lease),
        else_=WebhookDelivery.next_attempt_at,
    )
    soonest: datetime | None = session.scalar(select(func.min(due)).where(WebhookDelivery.state == PENDING))
    return soonest


def settle(
    session: Session, claimed: Claimed, owner: str, attempt: Attempt, retry_seconds: Sequence[float]
) -> str | None:
    """Record an attempt of a delivery ``owner`` holds: 2xx delivered; 410 disables the job's webhook
    (this and its other pending deliveries, and no new ones); anything else is retried after the
    next of ``retry_seconds`` (longer if the receiver asked so), or given up (failed) after the last.
    The delivery's new state; None if the lease was lost meanwhile (nothing is recorded)."""
    now = utcnow()
    mine = and_(
        WebhookDelivery.id == claimed.id,
        WebhookDelivery.state == PENDING,
        WebhookDelivery.lease_owner == owner,
    )
    code = attempt.status_code
    values: dict[str, Any] = {"last_status_code": code, "lease_owner": None, "lease_expires_at": None}
    if code is not None and 200 <= code < 300:
        values.update(state=DELIVERED, delivered_at=now, next_attempt_at=None, last_error=None)
    elif code == 410:
        values.update(state=DISABLED, next_attempt_at=None, last_error=attempt.error)
    elif claimed.attempt <= len(retry_seconds):
        delay = retry_seconds[claimed.attempt - 1]
        if attempt.retry_after is not None:
            delay = max(delay, min(attempt.retry_after, MAX_RETRY_AFTER_SECONDS))
        values.update(state=PENDING, next_attempt_at=now + timedelta(seconds=delay), last_error=attempt.error)
    else:
        values.update(state=FAILED, next_attempt_at=None, last_error=attempt.error)
    result = session.execute(
        update(WebhookDelivery).where(mine).values(**values).execution_options(synchronize_session=False)
    )
    if not result.rowcount:  # type: ignore[attr-defined]
        return None
    if values["state"] == DISABLED:
        disable_job(session, claimed.job_id)
    return str(values["state"])


def disable_job(session: Session, job_id: str) -> None:
    """The receiver said 410 Gone: the job's pending deliveries are dropped and no more are made."""
    session.execute(
        update(WebhookDelivery)
        .where(WebhookDelivery.job_id == job_id, WebhookDelivery.state == PENDING)
        .values(
            state=DISABLED,
            next_attempt_at=None,
            lease_owner=None,
            lease_expires_at=None,
            last_error="not sent: the receiver answered 410 Gone to another delivery of this job",
        )
        .execution_options(synchronize_session=False)
    )
    session.execute(
        update(Job)
        .where(Job.id == job_id)
        .values(webhook_url=None)
        .execution_options(synchronize_session=False)
    )


def release(session: Session, owner: str) -> int:
    """Drop the leases ``owner`` holds (a stopping sender gave up its attempts), so that any sender
    claims them again now rather than when the leases expire; how many."""
    result = session.execute(
        update(WebhookDelivery)
        .where(WebhookDelivery.lease_owner == owner, WebhookDelivery.state == PENDING)
        .values(lease_owner=None, lease_expires_at=None)
        .execution_options(synchronize_session=False)
    )
    return int(result.rowcount)  # type: ignore[attr-defined]


def job_deliveries(session: Session, job_id: str) -> list[WebhookDelivery]:
    """The job's deliveries, oldest first."""
    query = select(WebhookDelivery).where(WebhookDelivery.job_id == job_id).order_by(WebhookDelivery.id)
    return list(session.scalars(query))
