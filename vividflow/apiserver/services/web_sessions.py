"""Server-side web sessions: the browser holds a random token, the database its digest.

Ending a session is deleting its row, so logging out and changing the password take effect on
every server at once. ``last_seen_at`` is written at most once per :data:`TOUCH_INTERVAL`.
"""

from __future__ import annotations

import hashlib
import secrets
import uuid
from dataclasses import dataclass
from datetime import timedelta

from sqlalchemy import delete, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from vividflow.apiserver.clock import utcnow
from vividflow.apiserver.db.models import ServerSecret, User, WebSession

TOUCH_INTERVAL = timedelta(minutes=5)
SESSION_SIGNING_SECRET = "session-signing"


def token_digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


@dataclass(frozen=True)
class SessionUser:
    """A valid session and its user, as the pages need them."""

    session_id: str
    token_digest: str
    user_id: str
    email: str


def start(session: Session, user_id: str, lifetime: timedelta) -> str:
    """A new session for ``user_id``; returns its token (for the cookie, never stored)."""
    token = secrets.token_urlsafe(32)
    now = utcnow()
    session.add(
        WebSession(
            id=str(uuid.uuid4()),
            token_hash=token_digest(token),
            user_id=user_id,
            created_at=now,
            last_seen_at=now,
            expires_at=now + lifetime,
        )
    )
    session.flush()
    return token


def resolve(session: Session, token: str, idle: timedelta) -> SessionUser | None:
    """The session's user if the session exists, has not expired and was used within ``idle``."""
    digest = token_digest(token)
    row = session.execute(
        select(WebSession.id, WebSession.user_id, WebSession.last_seen_at, WebSession.expires_at, User.email)
        .join(User, User.id == WebSession.user_id)
        .where(WebSession.token_hash == digest)
    ).one_or_none()
    now = utcnow()
    if row is None or row.expires_at <= now or row.last_seen_at + idle <= now:
        return None
    if row.last_seen_at < now - TOUCH_INTERVAL:
        session.execute(update(WebSession).where(WebSession.id == row.id).values(last_seen_at=now))
    return SessionUser(session_id=row.id, token_digest=digest, user_id=row.user_id, email=row.email)


def end(session: Session, token: str) -> None:
    session.execute(delete(WebSession).where(WebSession.token_hash == token_digest(token)))


def end_all(session: Session, user_id: str, *, keep: str | None = None) -> int:
    """End every session of the user (but ``keep``, a session id): after a password change."""
    query = delete(WebSession).where(WebSession.user_id == user_id)
    if keep is not None:
        query = query.where(WebSession.id != keep)
    return int(session.execute(query).rowcount or 0)  # type: ignore[attr-defined]


def end_expired(session: Session, idle: timedelta) -> int:
    now = utcnow()
    query = delete(WebSession).where((WebSession.expires_at <= now) | (WebSession.last_seen_at <= now - idle))
    return int(session.execute(query).rowcount or 0)  # type: ignore[attr-defined]


def server_secret(session: Session, name: str) -> str:
    """The server's own secret ``name``, made on first use; every replica reads the same row (the
    first insert wins, a concurrent one rolls back to it)."""
    found = session.get(ServerSecret, name)
    if found is not None:
        return found.value
    value = secrets.token_urlsafe(48)
    try:
        with session.begin_nested():
            session.add(ServerSecret(name=name, value=value, created_at=utcnow()))
    except IntegrityError:  # a concurrent insert won the race
        session.expire_all()
        return session.get_one(ServerSecret, name).value
    return value
