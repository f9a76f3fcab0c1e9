"""Webhooks per the Standard Webhooks specification: the outbox of a user's job events.

:func:`enqueue` runs inside the transaction that records a job's event (services.events), so a
delivery exists exactly when its change committed.
"""

from __future__ import annotations

import json
from typing import Any

from sqlalchemy import Row, func, insert, select
from sqlalchemy.orm import Session

from vividflow.apiserver.clock import utcnow
from vividflow.apiserver.db.models import WebhookDelivery
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
