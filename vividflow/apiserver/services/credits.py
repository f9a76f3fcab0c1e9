"""Daily credits: one accepted job spends one; the count resets at 00:00 UTC.

Spending is one conditional UPDATE, atomic on SQLite and PostgreSQL alike, so concurrent
submissions can never overspend a user's limit.
"""

from __future__ import annotations

from datetime import date

from sqlalchemy import case, or_, update
from sqlalchemy.orm import Session

from vividflow.apiserver.db.models import User


def effective_limit(user: User, default_limit: int) -> int:
    return default_limit if user.daily_limit is None else user.daily_limit


def try_spend(session: Session, user_id: str, day: date, limit: int) -> bool:
    result = session.execute(
        update(User)
        .where(
            User.id == user_id,
            or_(User.credits_day.is_(None), User.credits_day != day, User.credits_used < limit),
        )
        .values(credits_used=case((User.credits_day == day, User.credits_used + 1), else_=1), credits_day=day)
        .execution_options(synchronize_session=False)
    )
    return bool(result.rowcount)  # type: ignore[attr-defined]


def refund(session: Session, user_id: str, day: date) -> None:
    session.execute(
        update(User)
        .where(User.id == user_id, User.credits_day == day, User.credits_used > 0)
        .values(credits_used=User.credits_used - 1)
        .execution_options(synchronize_session=False)
    )


def used_today(user: User, day: date) -> int:
    return user.credits_used if user.credits_day == day else 0
