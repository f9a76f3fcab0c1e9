"""``GET /usage``: job counts and daily credits."""

from __future__ import annotations

from fastapi import APIRouter

from vividflow.apiserver.db.models import User
from vividflow.apiserver.deps import PrincipalDep, SessionDep, SettingsDep
from vividflow.apiserver.routes.common import error_responses
from vividflow.apiserver.schemas import UsageResponse
from vividflow.apiserver.services.usage import usage_for

router = APIRouter(tags=["account"])


@router.get(
    "/usage",
    response_model=UsageResponse,
    summary="Your usage and remaining credits",
    responses=error_responses(),
)
def usage(session: SessionDep, principal: PrincipalDep, settings: SettingsDep) -> UsageResponse:
    return usage_for(session, session.get_one(User, principal.user_id), settings.daily_limit)
