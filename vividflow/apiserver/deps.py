"""Typed dependencies of the routes: state, settings, a DB session, and the calling key."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Annotated

from fastapi import Depends, Request, Response, Security
from fastapi.security import APIKeyHeader
from sqlalchemy.orm import Session

from vividflow.apiserver.errors import ApiError, too_many_requests, unauthorized
from vividflow.apiserver.ratelimit import RateLimitState
from vividflow.apiserver.services.keys import Principal
from vividflow.apiserver.state import AppState
from vividflow.settings import Settings

api_key_header = APIKeyHeader(
    name="X-API-Key", auto_error=False, description="Your API key (create one with `vividflow keys create`)."
)


async def get_state(request: Request) -> AppState:
    state: AppState = request.app.state.vivid
    return state


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


async def current_principal(
    request: Request,
    state: StateDep,
    response: Response,
    api_key: Annotated[str | None, Security(api_key_header)] = None,
) -> Principal:
    """Authenticate the key (failures are limited per client address), then count the request
    against the user's rate limits."""
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
        principal = await state.run_db(state.authenticator.lookup, api_key)
        if principal is None:
            await state.limiter.auth_failed(address)
            raise unauthorized("The API key is not valid or has been revoked.")
    limit = await state.limiter.hit(principal)
    if not limit.allowed:
        raise _too_many("Rate limit exceeded", "429 Too Many Requests", limit)
    response.headers.update(limit.headers())
    return principal


PrincipalDep = Annotated[Principal, Depends(current_principal)]
