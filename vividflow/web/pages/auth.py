"""Registration, log-in and log-out.

Both forms answer the same way whether or not the email has an account, and both are limited per
client address and per email (``VIVID_WEB_AUTH_LIMITS``), counting every attempt.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query, Request
from fastapi.responses import RedirectResponse
from sqlalchemy.exc import IntegrityError
from starlette.responses import Response

from vividflow.apiserver.deps import StateDep, client_address
from vividflow.apiserver.services import accounts, web_sessions
from vividflow.apiserver.sessions import CSRF_FIELD, Visitor
from vividflow.apiserver.state import AppState
from vividflow.web.page_route import PageRoute
from vividflow.web.pages.forms import read_form
from vividflow.web.templating import render
from vividflow.web.visitors import VisitorDep, check_csrf

router = APIRouter(route_class=PageRoute)

REGISTERED_NOTICE = "Registration received. Log in with your email and password."
LOGIN_FAILED = "The email or password is not right."


def safe_next(value: str | None) -> str:
    """Where to go after logging in: a path on this site only (never ``//host`` or a URL)."""
    if not value or not value.startswith("/") or value.startswith("//") or "\\" in value:
        return "/generate"
    return value


@router.get("/")
async def home(visitor: VisitorDep) -> Response:
    return RedirectResponse("/generate" if visitor.user else "/login", status_code=303)


@router.get("/login")
async def login_page(
    request: Request,
    state: StateDep,
    visitor: VisitorDep,
    next_path: Annotated[str | None, Query(alias="next")] = None,
    registered: bool = False,
    logged_out: bool = False,
) -> Response:
    if visitor.user is not None:
        return RedirectResponse(safe_next(next_path), status_code=303)
    notice = REGISTERED_NOTICE if registered else ("You are logged out." if logged_out else None)
    return render(request, state, visitor, "login.html", {"next": safe_next(next_path), "notice": notice})


async def _throttled(request: Request, state: AppState, visitor: Visitor, email: str) -> Response | None:
    subjects = [f"address:{client_address(request)}", f"email:{accounts.normalize_email(email)}"]
    limit = await state.limiter.hit_windows("web-auth", state.settings.web_auth_limits, subjects)
    if limit.allowed:
        return None
    return render(
        request,
        state,
        visitor,
        "throttled.html",
        {"retry_after": limit.retry_after},
        status_code=429,
        headers={"Retry-After": str(limit.retry_after), **limit.headers()},
    )


@router.post("/login")
async def login(request: Request, state: StateDep, visitor: VisitorDep) -> Response:
    form = await read_form(request)
    check_csrf(request, state, visitor, form.get(CSRF_FIELD))
    email, password = form.get("email", ""), form.get("password", "")
    next_path = safe_next(form.get("next"))
    refused = await _throttled(request, state, visitor, email)
    if refused is not None:
        return refused
    token = await state.run_io(_log_in, state, email, password)
    if token is None:
        context = {"next": next_path, "email": email, "error": LOGIN_FAILED}
        return render(request, state, visitor, "login.html", context, status_code=400)
    response = RedirectResponse(next_path, status_code=303)
    state.session_keys.set_session(response, token)
    return response


def _log_in(state: AppState, email: str, password: str) -> str | None:
    with state.session_factory.begin() as session:
        user = accounts.authenticate(session, email, password)
        if user is None:
            return None
        web_sessions.end_expired(session, state.session_keys.idle)
        return web_sessions.start(session, user.id, state.session_keys.lifetime)


@router.get("/register")
async def register_page(request: Request, state: StateDep, visitor: VisitorDep) -> Response:
    if visitor.user is not None:
        return RedirectResponse("/generate", status_code=303)
    return render(request, state, visitor, "register.html", {"min_length": accounts.MIN_PASSWORD_LENGTH})


@router.post("/register")
async def register(request: Request, state: StateDep, visitor: VisitorDep) -> Response:
    form = await read_form(request)
    check_csrf(request, state, visitor, form.get(CSRF_FIELD))
    email = accounts.normalize_email(form.get("email", ""))
    password, confirm = form.get("password", ""), form.get("password_confirm", "")
    refused = await _throttled(request, state, visitor, email)
    if refused is not None:
        return refused
    errors: dict[str, str] = {}
    if problem := accounts.email_problem(email):
        errors["email"] = problem
    try:
        accounts.check_password_policy(password, email)
    except accounts.PasswordRefused as error:
        errors["password"] = str(error)
    if password != confirm:
        errors["password_confirm"] = "The two passwords differ."
    if errors:
        context = {"email": email, "errors": errors, "min_length": accounts.MIN_PASSWORD_LENGTH}
        return render(request, state, visitor, "register.html", context, status_code=400)
    await state.run_io(_register, state, email, password)
    return RedirectResponse("/login?registered=true", status_code=303)


def _register(state: AppState, email: str, password: str) -> None:
    try:
        with state.session_factory.begin() as session:
            accounts.register(session, email, password)
    except IntegrityError:  # the same email registered at the same moment: it is taken, as answered
        pass


@router.post("/logout")
async def logout(request: Request, state: StateDep, visitor: VisitorDep) -> Response:
    form = await read_form(request)
    check_csrf(request, state, visitor, form.get(CSRF_FIELD))
    if visitor.session_token is not None:
        await state.run_db(_log_out, state, visitor.session_token)
    response = RedirectResponse("/login?logged_out=true", status_code=303)
    state.session_keys.clear_session(response)
    return response


def _log_out(state: AppState, token: str) -> None:
    with state.session_factory.begin() as session:
        web_sessions.end(session, token)
