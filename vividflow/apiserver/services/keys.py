"""Users and their API keys."""

from __future__ import annotations

import unicodedata
import uuid
from dataclasses import dataclass
from datetime import timedelta

from sqlalchemy import func, or_, select, update
from sqlalchemy.orm import Session

from vividflow.apiserver.clock import utcnow
from vividflow.apiserver.db.models import ApiKey, User
from vividflow.apiserver.security import display_prefix, generate_key, hash_key


@dataclass(frozen=True)
class CreatedKey:
    key: ApiKey
    secret: str
    """The key itself: returned once, never stored."""


@dataclass(frozen=True)
class Principal:
    """Who is calling: resolved from a valid, unrevoked key, or from a web session (no key)."""

    user_id: str
    key_id: str | None
    email: str


def get_or_create_user(session: Session, email: str) -> User:
    """The user with this email (compared without case, as the web app's log-in does), or a new one."""
    user = session.scalars(select(User).where(func.lower(User.email) == email.strip().lower())).first()
    if user is None:
        user = User(id=str(uuid.uuid4()), email=email, created_at=utcnow(), credits_used=0)
        session.add(user)
        session.flush()
    return user


KEY_NAME_MAX_LENGTH = 100
LAST_USED_RESOLUTION = timedelta(minutes=1)
"""``last_used_at`` is written at most this often per key (on a cache miss), never per request."""
_REFUSED_CATEGORIES = frozenset({"Cc", "Cf", "Cs", "Co", "Cn", "Zl", "Zp"})
_MARKUP = frozenset("<>")


class TooManyKeys(Exception):
    def __init__(self, limit: int) -> None:
        super().__init__(f"a user may have at most {limit} active API keys")
        self.limit = limit


def key_name_problem(name: str) -> str | None:
    """Why ``name`` cannot name a key (None if it can): printable text without markup, 1-100 characters."""
    if not name.strip():
        return "name must not be empty"
    if len(name) > KEY_NAME_MAX_LENGTH:
        return f"name must be at most {KEY_NAME_MAX_LENGTH} characters"
    if any(unicodedata.category(char) in _REFUSED_CATEGORIES for char in name):
        return "name must not contain control characters (such as line breaks or NUL)"
    if any(char in _MARKUP for char in name):
        return "name must not contain < or >"
    return None


def lock_user(session: Session, user_id: str) -> None:
    """Take the user's row lock for the rest of the transaction (PostgreSQL: row lock; SQLite: the
    write lock), so that check-then-insert sequences of one user run one at a time."""
    session.execute(update(User).where(User.id == user_id).values(id=User.id))


def active_key_count(session: Session, user_id: str) -> int:
    query = (
        select(func.count()).select_from(ApiKey).where(ApiKey.user_id == user_id, ApiKey.revoked_at.is_(None))
    )
    return int(session.scalar(query) or 0)


def create_key(session: Session, user: User, name: str, *, max_keys: int | None = None) -> CreatedKey:
    """A new key for ``user``; :class:`TooManyKeys` if they already have ``max_keys`` active ones
    (counted under the user's lock, so concurrent creations cannot pass it)."""
    problem = key_name_problem(name)
    if problem is not None:
        raise ValueError(problem)
    if max_keys is not None:
        lock_user(session, user.id)
        if active_key_count(session, user.id) >= max_keys:
            raise TooManyKeys(max_keys)
    secret = generate_key()
    key = ApiKey(
        id=str(uuid.uuid4()),
        user_id=user.id,
        name=name.strip(),
        prefix=display_prefix(secret),
        key_hash=hash_key(secret),
        created_at=utcnow(),
    )
    session.add(key)
    session.flush()
    return CreatedKey(key=key, secret=secret)


def authenticate_digest(session: Session, key_hash: str) -> Principal | None:
    """The owner of the unrevoked key with this digest, if any; notes the key's use (at most once per
    :data:`LAST_USED_RESOLUTION`: the caller commits)."""
    row = session.execute(
        select(ApiKey.id, ApiKey.user_id, User.email, ApiKey.revoked_at, ApiKey.last_used_at)
        .join(User, User.id == ApiKey.user_id)
        .where(ApiKey.key_hash == key_hash)
    ).one_or_none()
    if row is None or row.revoked_at is not None:
        return None
    now = utcnow()
    if row.last_used_at is None or row.last_used_at < now - LAST_USED_RESOLUTION:
        stale = or_(ApiKey.last_used_at.is_(None), ApiKey.last_used_at < now - LAST_USED_RESOLUTION)
        session.execute(
            update(ApiKey)
            .where(ApiKey.id == row.id, stale)
            .values(last_used_at=now)
            .execution_options(synchronize_session=False)
        )
    return Principal(user_id=row.user_id, key_id=row.id, email=row.email)


def list_keys(session: Session, user_id: str) -> list[ApiKey]:
    return list(session.scalars(select(ApiKey).where(ApiKey.user_id == user_id).order_by(ApiKey.created_at)))


def list_all_keys(session: Session) -> list[tuple[ApiKey, str]]:
    rows = session.execute(select(ApiKey, User.email).join(User).order_by(User.email, ApiKey.created_at))
    return [(key, email) for key, email in rows]


def revoke_key(session: Session, key: ApiKey) -> None:
    if key.revoked_at is None:
        key.revoked_at = utcnow()
