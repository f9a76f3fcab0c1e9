"""Tables: users, their hashed API keys, and jobs (the API's record of every request)."""

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
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship


class Base(DeclarativeBase):
    type_annotation_map: ClassVar[dict[Any, Any]] = {dict[str, Any]: JSON, datetime: DateTime()}


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
    """Embedded mode: the executor running the job (see services.jobs: leases)."""
    lease_expires_at: Mapped[datetime | None] = mapped_column(default=None)
    """Until when the running job's executor is known to be alive; it renews the lease while it runs."""
    attempts: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    """How many times an executor has started the job."""
    dispatched_at: Mapped[datetime | None] = mapped_column(default=None)
    """Cluster mode: when the job's VideoJob was created (a missing VideoJob after that was deleted)."""
    created_at: Mapped[datetime]
    updated_at: Mapped[datetime]
    started_at: Mapped[datetime | None] = mapped_column(default=None)
    completed_at: Mapped[datetime | None] = mapped_column(default=None)
