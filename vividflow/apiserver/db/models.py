"""Tables: users, their hashed API keys and web sessions, and jobs (the API's record of every request)."""

from __future__ import annotations

from datetime import date, datetime
from typing import Any, ClassVar

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    Date,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship


class Base(DeclarativeBase):
    type_annotation_map: ClassVar[dict[Any, Any]] = {
        dict[str, Any]: JSON,
        list[str]: JSON,
        datetime: DateTime(),
    }


class User(Base):
    __tablename__ = "users"

    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    email: Mapped[str] = mapped_column(String(320), unique=True)
    created_at: Mapped[datetime]
    daily_limit: Mapped[int | None] = mapped_column(Integer, default=None)
    """Per-user override of the daily credit limit (None: the configured default)."""
    credits_day: Mapped[date | None] = mapped_column(Date, default=None)
    credits_used: Mapped[int] = mapped_column(Integer, default=0)
    """Credits spent on ``credits_day`` (UTC); counted atomically, see services.credits."""
    webhook_secret: Mapped[str | None] = mapped_column(String(100), default=None)
    """``whsec_…``: signs the user's webhook deliveries (made on first use)."""
    webhook_previous_secret: Mapped[str | None] = mapped_column(String(100), default=None)
    webhook_secret_rotated_at: Mapped[datetime | None] = mapped_column(default=None)
    """The previous secret keeps signing for a while after a rotation (see services.webhooks)."""
    password_hash: Mapped[str | None] = mapped_column(String(255), default=None)
    """Argon2id (services.accounts); None for users made by `vividflow keys create --user`."""
    password_changed_at: Mapped[datetime | None] = mapped_column(default=None)

    keys: Mapped[list[ApiKey]] = relationship(back_populates="user")


class ApiKey(Base):
    __tablename__ = "api_keys"

    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    user_id: Mapped[str] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    name: Mapped[str] = mapped_column(String(100))
    prefix: Mapped[str] = mapped_column(String(16))
    """The first characters of the key, shown in listings so a user can tell keys apart."""
    key_hash: Mapped[str] = mapped_column(String(64), unique=True)
    created_at: Mapped[datetime]
    last_used_at: Mapped[datetime | None] = mapped_column(default=None)
    revoked_at: Mapped[datetime | None] = mapped_column(default=None)

    user: Mapped[User] = relationship(back_populates="keys")


class Job(Base):
    __tablename__ = "jobs"
    __table_args__ = (
        Index("ix_jobs_user_seq", "user_id", "seq"),
        Index("ix_jobs_status_seq", "status", "seq"),
    )

    seq: Mapped[int] = mapped_column(
        BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=True
    )
    """Submission order: the queue and history order by it."""
    id: Mapped[str] = mapped_column(String(36), unique=True)
    user_id: Mapped[str] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"))
    api_key_id: Mapped[str | None] = mapped_column(ForeignKey("api_keys.id", ondelete="SET NULL"))
    model: Mapped[str] = mapped_column(String(32))
    prompt: Mapped[str] = mapped_column(Text)
    parameters: Mapped[dict[str, Any]]
    input_uri: Mapped[str] = mapped_column(Text)
    output_uri: Mapped[str] = mapped_column(Text)
    status: Mapped[str] = mapped_column(String(16))
    progress: Mapped[int] = mapped_column(Integer, default=0)
    result_url: Mapped[str | None] = mapped_column(Text, default=None)
    error_message: Mapped[str | None] = mapped_column(Text, default=None)
    failure_reason: Mapped[str | None] = mapped_column(String(32), default=None)
    metrics: Mapped[dict[str, Any] | None] = mapped_column(JSON, default=None)
    run_seconds: Mapped[float | None] = mapped_column(Float, default=None)
    """Wall time from start to end of processing, used to estimate waits."""
    credit_day: Mapped[date] = mapped_column(Date)
    """The UTC day whose credit this job spent (refunded if it is cancelled)."""
    cancel_requested: Mapped[bool] = mapped_column(Boolean, default=False)
    lease_owner: Mapped[str | None] = mapped_column(String(100), default=None)
    """Embedded mode: the executor running the job (see services.leases)."""
    lease_expires_at: Mapped[datetime | None] = mapped_column(default=None)
    """Until when the running job's executor is known to be alive; it renews the lease while it runs."""
    attempts: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    """How many times an executor has started the job."""
    dispatched_at: Mapped[datetime | None] = mapped_column(default=None)
    """Cluster mode: when the job's VideoJob was created (a missing VideoJob after that was deleted)."""
    event_seq: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    """The sequence number of the job's latest event (services.events); raised by every change."""
    webhook_url: Mapped[str | None] = mapped_column(Text, default=None)
    webhook_events: Mapped[list[str] | None] = mapped_column(JSON, default=None)
    """Which events are delivered to ``webhook_url``: start, progress, completed (any end)."""
    result_expired_at: Mapped[datetime | None] = mapped_column(default=None)
    """When retention deleted the job's input and result."""
    created_at: Mapped[datetime]
    updated_at: Mapped[datetime]
    started_at: Mapped[datetime | None] = mapped_column(default=None)
    completed_at: Mapped[datetime | None] = mapped_column(default=None)


class JobEvent(Base):
    """One change of a job, with its status body as ``GET /status`` gave it then: what the status
    stream replays (``Last-Event-ID``) and the webhook outbox is filled from."""

    __tablename__ = "job_events"
    __table_args__ = (UniqueConstraint("job_id", "seq", name="uq_job_events_job_seq"),)

    id: Mapped[int] = mapped_column(
        BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=True
    )
    job_id: Mapped[str] = mapped_column(ForeignKey("jobs.id", ondelete="CASCADE"))
    seq: Mapped[int] = mapped_column(Integer)
    """1, 2, … per job, in the order of the changes (the stream's event id)."""
    kind: Mapped[str] = mapped_column(String(16))
    """queued, start, progress or the terminal status."""
    body: Mapped[dict[str, Any]]
    created_at: Mapped[datetime]


class WebhookDelivery(Base):
    """The webhook outbox: one row per event to deliver, written in the transaction of the change;
    delivered by whichever server claims it (a lease, like jobs)."""

    __tablename__ = "webhook_deliveries"
    __table_args__ = (
        Index("ix_webhook_deliveries_due", "state", "next_attempt_at"),
        Index("ix_webhook_deliveries_job", "job_id", "id"),
    )

    id: Mapped[int] = mapped_column(
        BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=True
    )
    job_id: Mapped[str] = mapped_column(ForeignKey("jobs.id", ondelete="CASCADE"))
    user_id: Mapped[str] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"))
    message_id: Mapped[str] = mapped_column(String(80), unique=True)
    """``webhook-id``: the same on every retry of this event."""
    event: Mapped[str] = mapped_column(String(16))
    """start, progress or completed."""
    url: Mapped[str] = mapped_column(Text)
    payload: Mapped[str] = mapped_column(Text)
    """The exact JSON body sent (and signed) on every attempt."""
    state: Mapped[str] = mapped_column(String(16))
    """pending, delivered, failed (given up) or disabled (the receiver answered 410)."""
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    next_attempt_at: Mapped[datetime | None] = mapped_column(default=None)
    lease_owner: Mapped[str | None] = mapped_column(String(100), default=None)
    lease_expires_at: Mapped[datetime | None] = mapped_column(default=None)
    last_status_code: Mapped[int | None] = mapped_column(Integer, default=None)
    last_error: Mapped[str | None] = mapped_column(Text, default=None)
    created_at: Mapped[datetime]
    delivered_at: Mapped[datetime | None] = mapped_column(default=None)


class WebSession(Base):
    """A logged-in browser: the cookie carries the token, this row its digest, so that logging out
    or changing the password ends the session everywhere at once."""

    __tablename__ = "web_sessions"

    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    user_id: Mapped[str] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    created_at: Mapped[datetime]
    last_seen_at: Mapped[datetime]
    expires_at: Mapped[datetime]


class ServerSecret(Base):
    """Secrets the server makes for itself when none is configured (the session signing key), kept
    here so that every replica uses the same one."""

    __tablename__ = "server_secrets"

    name: Mapped[str] = mapped_column(String(64), primary_key=True)
    value: Mapped[str] = mapped_column(String(255))
    created_at: Mapped[datetime]
