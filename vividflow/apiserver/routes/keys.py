"""``/keys``: a user lists, creates and revokes their own API keys."""

from __future__ import annotations

from fastapi import APIRouter
from sqlalchemy.orm import Session

from vividflow.apiserver.db.models import ApiKey, User
from vividflow.apiserver.deps import PrincipalDep, SessionDep, SettingsDep, StateDep
from vividflow.apiserver.errors import ApiError, forbidden, not_found
from vividflow.apiserver.routes.common import error_responses
from vividflow.apiserver.schemas import KeyCreated, KeyCreateRequest, KeyInfo, KeyList, KeyRevoked
from vividflow.apiserver.services import keys
from vividflow.apiserver.services.keys import Principal

router = APIRouter(tags=["account"])


def owned_key(session: Session, principal: Principal, key_id: str) -> ApiKey:
    """The caller's key ``key_id``: 404 if there is none, 403 if it is another user's."""
    key = session.get(ApiKey, key_id)
    if key is None:
        raise not_found(f"No API key with id {key_id}.")
    if key.user_id != principal.user_id:
        raise forbidden("This API key belongs to another user.")
    return key


@router.get("/keys", response_model=KeyList, summary="Your API keys", responses=error_responses())
def list_keys(session: SessionDep, principal: PrincipalDep) -> KeyList:
    items = [KeyInfo.of(key) for key in keys.list_keys(session, principal.user_id)]
    return KeyList(count=len(items), keys=items)


@router.post(
    "/keys",
    response_model=KeyCreated,
    status_code=201,
    summary="Create an API key",
    responses=error_responses(400, 409),
)
def create_key(
    session: SessionDep,
    principal: PrincipalDep,
    settings: SettingsDep,
    body: KeyCreateRequest | None = None,
) -> KeyCreated:
    user = session.get_one(User, principal.user_id)
    try:
        created = keys.create_key(
            session, user, (body or KeyCreateRequest()).name, max_keys=settings.max_keys_per_user
        )
    except keys.TooManyKeys as error:
        session.rollback()
        raise ApiError(
            409,
            "Too many API keys",
            [f"You have {error.limit} active API keys, the most allowed; revoke one to create another."],
        ) from None
    session.commit()
    return KeyCreated(**KeyInfo.of(created.key).model_dump(), key=created.secret)


@router.delete(
    "/keys/{key_id}",
    response_model=KeyRevoked,
    summary="Revoke an API key",
    responses=error_responses(403, 404),
)
def revoke_key(key_id: str, session: SessionDep, principal: PrincipalDep, state: StateDep) -> KeyRevoked:
    key = owned_key(session, principal, key_id)
    keys.revoke_key(session, key)
    session.commit()
    state.authenticator.forget(key.id)
    return KeyRevoked(id=key.id)
