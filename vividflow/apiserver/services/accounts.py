"""Web accounts: registration, password log-in and password changes.

Passwords are hashed with Argon2id (pwdlib). Registration and log-in answer the same way whether
or not the email has an account, and cost about the same time: an unknown email (or a user made by
``vividflow keys create --user``, which has no password) is checked against a dummy hash, and
registering a taken email hashes the password all the same and changes nothing.
"""

from __future__ import annotations

import functools
import re
import uuid
from dataclasses import dataclass
from importlib import resources

from pwdlib import PasswordHash
from pwdlib.hashers.argon2 import Argon2Hasher
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from vividflow.apiserver.clock import utcnow
from vividflow.apiserver.db.models import User

MIN_PASSWORD_LENGTH = 10
MAX_PASSWORD_LENGTH = 256
"""Longer is refused: hashing megabytes of "password" is a cheap way to tie up a server."""
MAX_EMAIL_LENGTH = 320
_EMAIL = re.compile(r"[^@\s]+@[^@\s]+\.[^@\s]+")


class PasswordRefused(ValueError):
    """The password breaks the policy (the message says which rule)."""


@functools.cache
def _hasher() -> PasswordHash:
    return PasswordHash((Argon2Hasher(),))


@functools.cache
def _dummy_hash() -> str:
    return _hasher().hash("not anyone's password: evens out the time of unknown emails")


@functools.cache
def common_passwords() -> frozenset[str]:
    """The 20 000 most common passwords (zxcvbn-ts; see vividflow/web/data/README.md)."""
    text = resources.files("vividflow.web").joinpath("data/common-passwords.txt").read_text("utf-8")
    return frozenset(line.strip().lower() for line in text.splitlines() if line.strip())


def normalize_email(email: str) -> str:
    return email.strip().lower()


def email_problem(email: str) -> str | None:
    if len(email) > MAX_EMAIL_LENGTH:
        return f"The email address must be at most {MAX_EMAIL_LENGTH} characters."
    if not _EMAIL.fullmatch(email):
        return "Enter an email address such as name@example.com."
    return None


def check_password_policy(password: str, email: str | None = None) -> None:
    """Raise :class:`PasswordRefused` unless ``password`` is long enough, not too long, and not
    a common password (nor the email or its name)."""
    if len(password) < MIN_PASSWORD_LENGTH:
        raise PasswordRefused(f"The password must be at least {MIN_PASSWORD_LENGTH} characters.")
    if len(password) > MAX_PASSWORD_LENGTH:
        raise PasswordRefused(f"The password must be at most {MAX_PASSWORD_LENGTH} characters.")
    lowered = password.lower()
    if lowered in common_passwords():
        raise PasswordRefused("This password is one of the most common ones; choose another.")
    if email and lowered in {email.lower(), email.split("@")[0].lower()}:
        raise PasswordRefused("The password must not be your email address.")


def hash_password(password: str) -> str:
    return _hasher().hash(password)


def find_user(session: Session, email: str) -> User | None:
    """The user with this email, compared without case (users made by the CLI keep their spelling)."""
    return session.scalars(select(User).where(func.lower(User.email) == normalize_email(email))).first()


@dataclass(frozen=True)
class Registration:
    created: bool
    """False when the email already had an account (which is left exactly as it was)."""


def register(session: Session, email: str, password: str) -> Registration:
    """Create a user with this password, unless the email is taken. The caller shows the same page
    either way. Raises :class:`PasswordRefused` for a weak password (before anything is looked up)."""
    email = normalize_email(email)
    check_password_policy(password, email)
    password_hash = hash_password(password)  # also for a taken email, so both take as long
    if find_user(session, email) is not None:
        return Registration(created=False)
    now = utcnow()
    session.add(
        User(
            id=str(uuid.uuid4()),
            email=email,
            created_at=now,
            credits_used=0,
            password_hash=password_hash,
            password_changed_at=now,
        )
    )
    session.flush()
    return Registration(created=True)


def authenticate(session: Session, email: str, password: str) -> User | None:
    """The user if the password is theirs; None otherwise, after the same amount of hashing work."""
    user = find_user(session, email) if len(password) <= MAX_PASSWORD_LENGTH else None
    stored = user.password_hash if user is not None else None
    valid, updated = _hasher().verify_and_update(password[:MAX_PASSWORD_LENGTH], stored or _dummy_hash())
    if user is None or stored is None or not valid:
        return None
    if updated is not None:  # hashed with older parameters: upgrade it now that we know the password
        user.password_hash = updated
    return user


def verify_password(user: User, password: str) -> bool:
    stored = user.password_hash
    valid = _hasher().verify(password[:MAX_PASSWORD_LENGTH], stored or _dummy_hash())
    return stored is not None and valid


def set_password(session: Session, user: User, password: str) -> None:
    """Give ``user`` a new password (policy checked). The caller ends the user's other sessions."""
    check_password_policy(password, user.email)
    user.password_hash = hash_password(password)
    user.password_changed_at = utcnow()
    session.flush()
