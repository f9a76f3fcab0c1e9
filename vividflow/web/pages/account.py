"""The account page: API keys (a new key is shown once), credits and usage, password change, and
the webhook signing secret (shown or rotated on request only)."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import RedirectResponse
from starlette.responses import Response

from vividflow.apiserver.db.models import User
from vividflow.apiserver.deps import StateDep
from vividflow.apiserver.routes.keys import owned_key
from vividflow.apiserver.schemas import KeyInfo
from vividflow.apiserver.services import accounts, keys, web_sessions, webhooks
from vividflow.apiserver.services.usage import usage_for
from vividflow.apiserver.services.web_sessions import SessionUser
from vividflow.apiserver.sessions import CSRF_FIELD, Visitor
from vividflow.apiserver.state import AppState
from vividflow.web.page_route import PageRoute
from vividflow.web.pages.forms import read_form
from vividflow.web.templating import render
from vividflow.web.visitors import VisitorDep, check_csrf, principal_of, signed_in

router = APIRouter(route_class=PageRoute)

SECRET_HEADERS = {"Cache-Control": "no-store", "Pragma": "no-cache"}


def _overview(state: AppState, user: SessionUser) -> dict[str, Any]:
    with state.session_factory() as session:
        account = session.get_one(User, user.user_id)
        return {
            "usage": usage_for(session, account, state.settings.daily_limit),
            "keys": [KeyInfo.of(key) for key in keys.list_keys(session, user.user_id)],
            "has_password": account.password_hash is not None,
            "max_keys": state.settings.max_keys_per_user,
            "min_length": accounts.MIN_PASSWORD_LENGTH,
        }


async def _page(
    request: Request,
    state: AppState,
    visitor: Visitor,
    user: SessionUser,
    extra: dict[str, Any] | None = None,
    *,
    status_code: int = 200,
) -> Response:
    context = {**await state.run_db(_overview, state, user), **(extra or {})}
    return render(
        request, state, visitor, "account.html", context, status_code=status_code, headers=SECRET_HEADERS
    )


@router.get("/account")
async def account_page(request: Request, state: StateDep, visitor: VisitorDep) -> Response:
    user = signed_in(visitor, request)
    notice = {"revoked": "The key is revoked.", "password": "Your password is changed."}.get(
        request.query_params.get("done", "")
    )
    return await _page(request, state, visitor, user, {"notice": notice})


async def _posted(request: Request, state: AppState, visitor: Visitor) -> tuple[SessionUser, dict[str, str]]:
    user = signed_in(visitor, request)
    form = await read_form(request)
    check_csrf(request, state, visitor, form.get(CSRF_FIELD))
    return user, form


@router.post("/account/keys")
async def create_key(request: Request, state: StateDep, visitor: VisitorDep) -> Response:
    user, form = await _posted(request, state, visitor)
    name = form.get("name", "").strip() or "default"
    outcome = await state.run_db(_create_key, state, user, name)
    if isinstance(outcome, str):
        return await _page(
            request, state, visitor, user, {"key_error": outcome, "key_name": name}, status_code=400
        )
    return await _page(request, state, visitor, user, {"new_key": outcome})


def _create_key(state: AppState, user: SessionUser, name: str) -> dict[str, str] | str:
    """The new key (its secret, shown once), or why it could not be made."""
    with state.session_factory() as session:
        account = session.get_one(User, user.user_id)
        try:
            created = keys.create_key(session, account, name, max_keys=state.settings.max_keys_per_user)
        except keys.TooManyKeys as error:
            return f"You have {error.limit} active keys, the most allowed; revoke one first."
        except ValueError as error:
            return f"The key {error}."
        session.commit()
        return {"name": created.key.name, "secret": created.secret, "prefix": created.key.prefix}


@router.post("/account/keys/{key_id}/revoke")
async def revoke_key(key_id: str, request: Request, state: StateDep, visitor: VisitorDep) -> Response:
    user, form = await _posted(request, state, visitor)
    if form.get("confirm") != "yes":
        key = await state.run_db(_owned_key_info, state, user, key_id)
        return render(request, state, visitor, "confirm_revoke.html", {"key": key})
    await state.run_db(_revoke, state, user, key_id)
    state.authenticator.forget(key_id)
    return RedirectResponse("/account?done=revoked", status_code=303)


def _owned_key_info(state: AppState, user: SessionUser, key_id: str) -> KeyInfo:
    with state.session_factory() as session:
        return KeyInfo.of(owned_key(session, principal_of(user), key_id))


def _revoke(state: AppState, user: SessionUser, key_id: str) -> None:
    with state.session_factory.begin() as session:
        keys.revoke_key(session, owned_key(session, principal_of(user), key_id))


@router.post("/account/password")
async def change_password(request: Request, state: StateDep, visitor: VisitorDep) -> Response:
    user, form = await _posted(request, state, visitor)
    current, new = form.get("current_password", ""), form.get("new_password", "")
    if new != form.get("new_password_confirm", ""):
        problem: str | None = "The two new passwords differ."
    else:
        problem = await state.run_io(_change_password, state, user, current, new)
    if problem is not None:
        return await _page(request, state, visitor, user, {"password_error": problem}, status_code=400)
    return RedirectResponse("/account?done=password", status_code=303)


def _change_password(state: AppState, user: SessionUser, current: str, new: str) -> str | None:
    """Change the password and end the user's other sessions; or why not."""
    with state.session_factory.begin() as session:
        account = session.get_one(User, user.user_id)
        if not accounts.verify_password(account, current):
            return "The current password is not right."
        try:
            accounts.set_password(session, account, new)
        except accounts.PasswordRefused as error:
            return str(error)
        web_sessions.end_all(session, user.user_id, keep=user.session_id)
    return None


@router.post("/account/webhook-secret")
async def webhook_secret(request: Request, state: StateDep, visitor: VisitorDep) -> Response:
    user, form = await _posted(request, state, visitor)
    rotate = form.get("action") == "rotate"
    secret = await state.run_db(_webhook_secret, state, user, rotate)
    return await _page(request, state, visitor, user, {"webhook_secret": secret, "rotated": rotate})


def _webhook_secret(state: AppState, user: SessionUser, rotate: bool) -> str:
    with state.session_factory.begin() as session:
        if rotate:
            return webhooks.rotate_secret(session, user.user_id)
        return webhooks.ensure_secret(session, user.user_id)
