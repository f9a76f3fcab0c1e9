"""Web session cookies and CSRF tokens.

The session cookie is ``<token>.<signature>`` (itsdangerous): a forged or altered cookie is refused
without a database lookup, and the token is only valid while its row exists (services.web_sessions).
Visitors who have not logged in get a signed visitor cookie instead, so that the log-in and
registration forms carry CSRF tokens too.

A CSRF token is an HMAC of the session (or visitor) under the signing key: nothing to store, it
changes with every new session, and a page of one session is useless to another. State-changing
requests also must not come from another site (``Origin`` / ``Sec-Fetch-Site``).
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from dataclasses import dataclass
from datetime import timedelta
from urllib.parse import urlsplit

from itsdangerous import BadSignature, Signer
from starlette.requests import Request
from starlette.responses import Response

from vividflow.apiserver.services.web_sessions import SessionUser
from vividflow.settings import Settings

SESSION_COOKIE = "vividflow_session"
VISITOR_COOKIE = "vividflow_visitor"
CSRF_HEADER = "X-CSRF-Token"
CSRF_FIELD = "csrf_token"
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})


class SessionKeys:
    """Signs cookies and derives CSRF tokens with one server-wide secret."""

    def __init__(self, secret: str, settings: Settings) -> None:
        self._secret = secret.encode()
        self._session_signer = Signer(secret, salt="vividflow.session")
        self._visitor_signer = Signer(secret, salt="vividflow.visitor")
        self.secure = settings.public_url.startswith("https://")
        self.public_origin = origin_of(settings.public_url)
        self.lifetime = timedelta(days=settings.session_days)
        self.idle = timedelta(hours=settings.session_idle_hours)

    def session_token(self, request: Request) -> str | None:
        return self._unsign(self._session_signer, request.cookies.get(SESSION_COOKIE))

    def visitor_id(self, request: Request) -> str | None:
        return self._unsign(self._visitor_signer, request.cookies.get(VISITOR_COOKIE))

    @staticmethod
    def _unsign(signer: Signer, value: str | None) -> str | None:
        if not value:
            return None
        try:
            return signer.unsign(value).decode()
        except BadSignature:
            return None

    def set_session(self, response: Response, token: str) -> None:
        value = self._session_signer.sign(token).decode()
        max_age = int(self.lifetime.total_seconds())
        self._set(response, SESSION_COOKIE, value, max_age)

    def set_visitor(self, response: Response, visitor_id: str) -> None:
        self._set(response, VISITOR_COOKIE, self._visitor_signer.sign(visitor_id).decode(), None)

    def _set(self, response: Response, name: str, value: str, max_age: int | None) -> None:
        response.set_cookie(
            name, value, max_age=max_age, path="/", secure=self.secure, httponly=True, samesite="lax"
        )

    def clear_session(self, response: Response) -> None:
        response.delete_cookie(SESSION_COOKIE, path="/", secure=self.secure, httponly=True, samesite="lax")

    def csrf_token(self, subject: str) -> str:
        return hmac.new(self._secret, f"csrf:{subject}".encode(), hashlib.sha256).hexdigest()

    def csrf_valid(self, subject: str, supplied: str | None) -> bool:
        return bool(supplied) and hmac.compare_digest(self.csrf_token(subject), supplied or "")


@dataclass(frozen=True)
class Visitor:
    """Who is looking at a page: a logged-in user or an anonymous visitor, and the CSRF token that
    their forms must carry."""

    user: SessionUser | None
    csrf_token: str
    session_token: str | None = None
    visitor_id: str | None = None
    """An anonymous visitor's id (from their signed visitor cookie)."""
    new_visitor_id: str | None = None
    """Set when this request gave the visitor their cookie (the page's response must set it)."""


def csrf_subject(user: SessionUser | None, visitor_id: str | None) -> str:
    if user is not None:
        return f"session:{user.token_digest}"
    return f"visitor:{visitor_id}"


def new_visitor_id() -> str:
    return secrets.token_urlsafe(24)


def origin_of(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}".lower()


def cross_site(request: Request, public_origin: str) -> bool:
    """Whether the browser says the request comes from another site (a CSRF attempt): its
    ``Sec-Fetch-Site`` says so, or its ``Origin`` is neither this server's nor the public URL's."""
    if request.headers.get("sec-fetch-site", "").lower() == "cross-site":
        return True
    origin = request.headers.get("origin")
    if origin is None:
        return False
    return origin.lower() not in {origin_of(str(request.base_url)), public_origin}
