"""UTC time as the API stores and shows it: naive UTC datetimes, ISO 8601 to the second."""

from __future__ import annotations

from datetime import UTC, date, datetime, time, timedelta

from vividflow.jobspec import aware_utc


def utcnow() -> datetime:
    return datetime.now(UTC).replace(tzinfo=None)


def naive_utc(moment: datetime | None) -> datetime | None:
    """``moment`` as the database keeps it: naive UTC."""
    return None if moment is None else aware_utc(moment).replace(tzinfo=None)


def today() -> date:
    return utcnow().date()


def next_reset(now: datetime | None = None) -> datetime:
    """The next 00:00 UTC, when daily credits reset."""
    current = now or utcnow()
    return datetime.combine(current.date() + timedelta(days=1), time())


def iso(moment: datetime | None) -> str | None:
    return moment.isoformat(timespec="seconds") if moment else None
