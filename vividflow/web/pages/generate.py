"""The generate page: the same request as ``POST /api/v1/generate``, through the same reading,
checks, credits and submission, from a form built out of the job definition.

Web submissions have their own limit (``VIVID_WEB_GENERATE_LIMITS``, per user) instead of the
API's request limits; credits are the same.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query, Request
from fastapi.responses import RedirectResponse
from starlette.responses import Response

from vividflow.apiserver.db.models import User
from vividflow.apiserver.deps import StateDep
from vividflow.apiserver.errors import ApiError, service_error
from vividflow.apiserver.generate_input import (
    COMMON_FIELDS,
    MAX_PROMPT_LENGTH,
    read_form_fields,
    validate_fields,
)
from vividflow.apiserver.inputs import check_input
from vividflow.apiserver.services import estimates, job_queries, jobs, submit
from vividflow.apiserver.services.errors import ServiceError
from vividflow.apiserver.services.usage import usage_for
from vividflow.apiserver.services.web_sessions import SessionUser
from vividflow.apiserver.sessions import CSRF_FIELD, Visitor
from vividflow.apiserver.state import AppState
from vividflow.jobspec import DEFAULT_MODEL, ModelName, parameter_names
from vividflow.web import forms
from vividflow.web.page_route import PageRoute
from vividflow.web.templating import render
from vividflow.web.visitors import VisitorDep, check_csrf, principal_of, signed_in

router = APIRouter(route_class=PageRoute)

IMAGE_SOURCE_FIELD = "image_source"
"""The page's upload/URL switch: only the chosen one is sent on."""
WEB_ONLY_FIELDS = (CSRF_FIELD, IMAGE_SOURCE_FIELD, "size_preset")


@router.get("/generate")
async def generate_page(
    request: Request,
    state: StateDep,
    visitor: VisitorDep,
    from_job: Annotated[str | None, Query(alias="from")] = None,
) -> Response:
    user = signed_in(visitor, request)
    values: dict[str, str] = {}
    if from_job:
        values = await state.run_db(_settings_of, state, user, from_job)
    return await _page(request, state, visitor, user, values)


async def _page(
    request: Request,
    state: AppState,
    visitor: Visitor,
    user: SessionUser,
    values: dict[str, str],
    *,
    errors: list[str] | None = None,
    status_code: int = 200,
) -> Response:
    overview = await state.run_db(_overview, state, user)
    context: dict[str, Any] = {
        "fields": forms.all_model_fields(),
        "models": [model.value for model in ModelName],
        "model": values.get("model", DEFAULT_MODEL.value),
        "values": values,
        "errors": errors or [],
        "presets": forms.SIZE_PRESETS,
        "max_upload_bytes": state.settings.max_upload_bytes,
        "max_prompt_length": MAX_PROMPT_LENGTH,
        **overview,
    }
    return render(request, state, visitor, "generate.html", context, status_code=status_code)


def _overview(state: AppState, user: SessionUser) -> dict[str, Any]:
    """Credits left and the estimated wait of a job submitted now, per model."""
    with state.session_factory() as session:
        usage = usage_for(session, session.get_one(User, user.user_id), state.settings.daily_limit)
        queued, processing = job_queries.queue_counts(session)
        waits = {
            model.value: estimates.describe(
                estimates.estimated_seconds(
                    model,
                    queued,
                    processing,
                    job_queries.recent_run_seconds(session, model.value),
                    state.backend.parallelism,
                )
            )
            for model in ModelName
        }
    return {"usage": usage, "waits": waits}


def _settings_of(state: AppState, user: SessionUser, job_id: str) -> dict[str, str]:
    """An earlier job's prompt, model and parameters, to fill the form again (the user's own only)."""
    with state.session_factory() as session:
        job = jobs.get_job(session, job_id)
        if job is None or job.user_id != user.user_id:
            return {}
        values = {"prompt": job.prompt, "model": job.model}
        section = next(iter(job.parameters.values()), None) or {}
        for name, value in section.items():
            if value is not None:
                values[name] = forms.field_text(value)
        return values


def _fields_for_model(fields: dict[str, Any]) -> dict[str, Any]:
    """The form carries every model's fields; only the chosen model's (and the common ones) are
    the request (an unknown model is left for the validation to report)."""
    try:
        model = ModelName(fields.get("model", DEFAULT_MODEL.value))
    except ValueError:
        return {key: value for key, value in fields.items() if key in COMMON_FIELDS}
    wanted = COMMON_FIELDS | parameter_names(model)
    return {key: value for key, value in fields.items() if key in wanted}


@router.post("/generate")
async def generate(request: Request, state: StateDep, visitor: VisitorDep) -> Response:
    user = signed_in(visitor, request)
    fields, upload = await read_form_fields(request, state.settings)
    check_csrf(request, state, visitor, fields.get(CSRF_FIELD))
    source = fields.get(IMAGE_SOURCE_FIELD)
    if source == "url":
        upload = None
    elif source == "upload":
        fields.pop("image_url", None)
    request_fields = _fields_for_model(fields)
    shown = {key: str(value) for key, value in fields.items() if key not in (CSRF_FIELD,)}
    limit = await state.limiter.hit_windows(
        "web-generate", state.settings.web_generate_limits, [user.user_id]
    )
    if not limit.allowed:
        windows = ", ".join(state.settings.web_generate_limits)
        detail = (
            f"The web app takes at most {windows} videos from one user; try again in {limit.retry_after} s."
        )
        return await _page(request, state, visitor, user, shown, errors=[detail], status_code=429)
    try:
        wanted = validate_fields(request_fields, upload, state.settings)
        checked = await check_input(wanted.upload, wanted.image_url, state, user.user_id)
        accepted = await submit.submit(state, principal_of(user), wanted.job, checked)
    except (ApiError, ServiceError) as refused:
        error = service_error(refused) if isinstance(refused, ServiceError) else refused
        return await _page(
            request,
            state,
            visitor,
            user,
            shown,
            errors=error.details or [error.error],
            status_code=error.status_code,
        )
    return RedirectResponse(f"/jobs/{accepted.job_id}", status_code=303)
