"""Typed dependencies of the routes: state, settings, a DB session, and the calling key."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Annotated, Any

from fastapi import Depends, Request, Response, Security
from fastapi.security import APIKeyHeader
from sqlalchemy.orm import Session

from vividflow.apiserver.errors import ApiError, forbidden, too_many_requests, unauthorized
from vividflow.apiserver.ratelimit import RateLimitState
from vividflow.apiserver.services import web_sessions
from vividflow.apiserver.services.keys import Principal
from vividflow.apiserver.services.web_sessions import SessionUser
from vividflow.apiserver.sessions import CSRF_HEADER, SAFE_METHODS, cross_site, csrf_subject
from vividflow.apiserver.state import AppState
from vividflow.settings import Settings

api_key_header = APIKeyHeader(
    name="X-API-Key", auto_error=False, description="Your API key (create one with `vividflow keys create`)."
)


def app_state(request: Request) -> AppState:
    state: AppState = request.app.state.vivid
    return state


async def get_state(request: Request) -> AppState:
    return app_state(request)


StateDep = Annotated[AppState, Depends(get_state)]


async def get_settings(state: StateDep) -> Settings:
    return state.settings


SettingsDep = Annotated[Settings, Depends(get_settings)]


def get_db(state: StateDep) -> Iterator[Session]:
    with state.session_factory() as session:
        yield session


SessionDep = Annotated[Session, Depends(get_db)]


def client_address(request: Request) -> str:
    """The caller's address (behind a trusted proxy, uvicorn has already taken it from X-Forwarded-For)."""
    return request.client.host if request.client else "unknown"


def _too_many(error: str, detail: str, limit: RateLimitState) -> ApiError:
    return too_many_requests(error, detail, limit.retry_after, limit.headers())


async def authenticate(
    state: AppState, request: Request, api_key: str | None
) -> tuple[Principal, RateLimitState]:
    """Authenticate the key (failures are limited per client address), then count the request
    against the user's rate limits: the caller, and the window to report in the response headers."""
    if not api_key:
        raise unauthorized("Send your API key in the X-API-Key header.")
    principal = state.authenticator.cached(api_key)
    if principal is None:
        address = client_address(request)
        attempts = await state.limiter.auth_allowed(address)
        if not attempts.allowed:
            raise _too_many(
                "Too many failed authentications",
                "Too many requests with an invalid API key came from your address; try again later.",
                attempts,
            )
        principal = await state.authenticator.resolve(api_key, state.run_db)
        if principal is None:
            await state.limiter.auth_failed(address)
            raise unauthorized("The API key is not valid or has been revoked.")
    limit = await state.limiter.hit(principal)
    if not limit.allowed:
        raise _too_many("Rate limit exceeded", "429 Too Many Requests", limit)
    return principal, limit


async def current_principal(
    request: Request,
    state: StateDep,
    response: Response,
    api_key: Annotated[str | None, Security(api_key_header)] = None,
) -> Principal:
    """The caller of an API-key endpoint (:func:`authenticate`), its rate-limit headers set."""
    principal, limit = await authenticate(state, request, api_key)
    response.headers.update(limit.headers())
    return principal


API_KEY_SECURITY: dict[str, Any] = {"security": [{api_key_header.scheme_name: []}]}
"""``openapi_extra`` of a route that calls :func:`authenticate` itself rather than depend on
:data:`PrincipalDep`: the same security requirement in its OpenAPI operation."""


PrincipalDep = Annotated[Principal, Depends(current_principal)]


async def session_user(request: Request, state: StateDep) -> SessionUser | None:
    """The logged-in web user of the request's session cookie, if any."""
    token = state.session_keys.session_token(request)
    if token is None:
        return None
    return await state.run_db(_resolve_session, state, token)


def _resolve_session(state: AppState, token: str) -> SessionUser | None:
    with state.session_factory.begin() as session:
        return web_sessions.resolve(session, token, state.session_keys.idle)


async def current_caller(
    request: Request,
    state: StateDep,
    response: Response,
    api_key: Annotated[str | None, Security(api_key_header)] = None,
) -> Principal:
    """An API key, or else the web app's session: for the few ``/api/v1`` endpoints its pages call.
    A session's state-changing requests must carry its CSRF token in the X-CSRF-Token header and
    come from this site; they are not counted against the API's rate limits (the page's own are)."""
    if api_key:
        return await current_principal(request, state, response, api_key)
    user = await session_user(request, state)
    if user is None:
        raise unauthorized("Send your API key in the X-API-Key header.")
    if request.method not in SAFE_METHODS:
        keys = state.session_keys
        supplied = request.headers.get(CSRF_HEADER)
        if cross_site(request, keys.public_origin) or not keys.csrf_valid(csrf_subject(user, None), supplied):
            raise forbidden("The request did not carry this page's CSRF token; reload the page.")
    return Principal(user_id=user.user_id, key_id=None, email=user.email)


CallerDep = Annotated[Principal, Depends(current_caller)]
"""An API key or a web session (with CSRF checks): only for endpoints the web pages call."""
