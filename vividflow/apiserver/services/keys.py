"""Users and their API keys."""

from __future__ import annotations

import uuid
from dataclasses import dataclass

from sqlalchemy import select
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
    """Who is calling: resolved from a valid, unrevoked key."""

    user_id: str
    key_id: str
    email: str


def get_or_create_user(session: Session, email: str) -> User:
    user = session.scalar(select(User).where(User.email == email))
    if user is None:
        user = User(id=str(uuid.uuid4()), email=email, created_at=utcnow(), credits_used=0)
        session.add(user)
        session.flush()
    return user


def create_key(session: Session, user: User, name: str) -> CreatedKey:
    secret = generate_key()
    key = ApiKey(
        id=str(uuid.uuid4()),
        user_id=user.id,
        name=name,
        prefix=display_prefix(secret),
        key_hash=hash_key(secret),
        created_at=utcnow(),
    )
    session.add(key)
    session.flush()
    return CreatedKey(key=key, secret=secret)


def authenticate_digest(session: Session, key_hash: str) -> Principal | None:
    """The owner of the unrevoked key with this digest, if any."""
    row = session.execute(
        select(ApiKey.id, ApiKey.user_id, User.email, ApiKey.revoked_at)
        .join(User, User.id == ApiKey.user_id)
        .where(ApiKey.key_hash == key_hash)
    ).one_or_none()
    if row is None or row.revoked_at is not None:
        return None
    return Principal(user_id=row.user_id, key_id=row.id, email=row.email)


def list_keys(session: Session, user_id: str) -> list[ApiKey]:
    return list(session.scalars(select(ApiKey).where(ApiKey.user_id == user_id).order_by(ApiKey.created_at)))


def list_all_keys(session: Session) -> list[tuple[ApiKey, str]]:
    rows = session.execute(select(ApiKey, User.email).join(User).order_by(User.email, ApiKey.created_at))
    return [(key, email) for key, email in rows]


def revoke_key(session: Session, key: ApiKey) -> None:
    if key.revoked_at is None:
        key.revoked_at = utcnow()
