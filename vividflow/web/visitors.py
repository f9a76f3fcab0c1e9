"""Who is looking at a page (a logged-in user or an anonymous visitor) and the checks that guard
the pages: login required, CSRF token, same-site origin."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request

from vividflow.apiserver.deps import StateDep, session_user
from vividflow.apiserver.services.keys import Principal
from vividflow.apiserver.services.web_sessions import SessionUser
from vividflow.apiserver.sessions import Visitor, cross_site, csrf_subject, new_visitor_id


class LoginRequired(Exception):
    """Raised by pages that need a logged-in user: answered with a redirect to the login page."""

    def __init__(self, next_path: str) -> None:
        super().__init__(next_path)
        self.next_path = next_path


class CsrfRefused(Exception):
    """A state-changing request without this page's CSRF token, or from another site."""


async def current_visitor(request: Request, state: StateDep) -> Visitor:
    keys = state.session_keys
    user = await session_user(request, state)
    token = keys.session_token(request) if user is not None else None
    if user is not None:
        return Visitor(user=user, csrf_token=keys.csrf_token(csrf_subject(user, None)), session_token=token)
    visitor_id = keys.visitor_id(request)
    fresh = None
    if visitor_id is None:
        visitor_id = fresh = new_visitor_id()
    csrf_token = keys.csrf_token(csrf_subject(None, visitor_id))
    return Visitor(user=None, csrf_token=csrf_token, visitor_id=visitor_id, new_visitor_id=fresh)


VisitorDep = Annotated[Visitor, Depends(current_visitor)]


def signed_in(visitor: Visitor, request: Request) -> SessionUser:
    if visitor.user is None:
        target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
        raise LoginRequired(target)
    return visitor.user


def principal_of(user: SessionUser) -> Principal:
    """The service layer's caller for a web user (no API key)."""
    return Principal(user_id=user.user_id, key_id=None, email=user.email)


def check_csrf(request: Request, state: StateDep, visitor: Visitor, supplied: str | None) -> None:
    """Refuse a form post whose token is not this visitor's, or that another site sent."""
    if visitor.new_visitor_id is not None:  # no cookie came with it: nobody could have been given a token
        raise CsrfRefused()
    if cross_site(request, state.session_keys.public_origin) or not supplied:
        raise CsrfRefused()
    if not state.session_keys.csrf_valid(csrf_subject(visitor.user, visitor.visitor_id), supplied):
        raise CsrfRefused()
