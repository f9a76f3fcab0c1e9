"""``POST /generate``: accept a job (202), or with ``Prefer: wait=N`` wait for its end (200)."""

from __future__ import annotations

import asyncio
import re
import time
from typing import Annotated, Any

from fastapi import APIRouter, Header, Request
from fastapi.responses import JSONResponse

from vividflow.apiserver.deps import PrincipalDep, StateDep
from vividflow.apiserver.generate_input import MAX_PROMPT_LENGTH, MAX_WEBHOOK_URL_LENGTH, read_generate_input
from vividflow.apiserver.inputs import check_input
from vividflow.apiserver.routes.common import error_responses
from vividflow.apiserver.schemas import GenerateAccepted, JobStatusBody
from vividflow.apiserver.services import jobs, submit
from vividflow.apiserver.services.webhooks import DEFAULT_WEBHOOK_EVENTS as DEFAULT_EVENTS
from vividflow.apiserver.services.webhooks import WEBHOOK_EVENTS
from vividflow.apiserver.state import AppState
from vividflow.jobspec import DEFAULT_MODEL, JobStatus, ModelName, parameter_schemas

router = APIRouter(tags=["jobs"])

_WAIT = re.compile(r"(?:^|[,;\s])wait=(\d+(?:\.\d+)?)", re.IGNORECASE)
WAIT_POLL_SECONDS = 0.25


def _webhook_schemas(*, form: bool) -> dict[str, Any]:
    """``webhook_url`` and ``webhook_events``: a comma list or a JSON array (in a form, its text)."""
    name = "(?:" + "|".join(WEBHOOK_EVENTS) + ")"
    comma_list = {"type": "string", "pattern": rf"^\s*{name}\s*(?:,\s*{name}\s*)*$"}
    array_text = {"type": "string", "pattern": rf'^\s*\[\s*"{name}"\s*(?:,\s*"{name}"\s*)*\]\s*$'}
    array = {"type": "array", "items": {"type": "string", "enum": list(WEBHOOK_EVENTS)}, "minItems": 1}
    return {
        "webhook_url": {
            "type": "string",
            "pattern": "^https://",
            "maxLength": MAX_WEBHOOK_URL_LENGTH,
            "description": "Where to POST the job's status on the events of webhook_events, signed per the "
            "Standard Webhooks specification (see GET /api/v1/webhooks/secret). Public https hosts only.",
        },
        "webhook_events": {
            "anyOf": [comma_list, array_text] if form else [comma_list, array_text, array],
            "default": ",".join(DEFAULT_EVENTS),
            "description": "Which events are sent to webhook_url: start, progress (at most one per 5 s) "
            "and completed (any end: completed, failed or cancelled). Needs webhook_url.",
        },
    }


def _request_schema(*, multipart: bool, json_body: bool = False) -> dict[str, Any]:
    """One ``oneOf`` branch per model, each closed to other fields, so that a body valid against the
    schema is one the server accepts (apart from what only fetching the image can tell)."""
    common: dict[str, Any] = {
        "prompt": {
            "type": "string",
            "minLength": 1,
            "maxLength": MAX_PROMPT_LENGTH,
            "pattern": r"\S",
            "description": "What should happen in the video.",
        },
        "image_url": {
            "type": "string",
            "pattern": "^(gs|https)://",
            "description": "gs://bucket/object, https://storage.googleapis.com/bucket/object or another "
            "https URL." + (" Give this or image." if multipart else ""),
        },
        **_webhook_schemas(form=not json_body),
    }
    if multipart:
        common["image"] = {
            "type": "string",
            "format": "binary",
            "description": "PNG, JPEG or WebP upload. Give this or image_url.",
        }
    branches = []
    for model in ModelName:
        model_field: dict[str, Any] = {"type": "string", "enum": [model.value], "description": "The model."}
        if model is DEFAULT_MODEL:
            model_field["default"] = model.value
        branch: dict[str, Any] = {
            "title": model.value,
            "type": "object",
            "properties": {**common, "model": model_field, **parameter_schemas(model)},
            "required": ["prompt"] if model is DEFAULT_MODEL else ["prompt", "model"],
            "additionalProperties": False,
            "dependentRequired": {"webhook_events": ["webhook_url"]},
        }
        if multipart:
            branch["oneOf"] = [{"required": ["image"]}, {"required": ["image_url"]}]
        else:
            branch["required"].append("image_url")
        branches.append(branch)
    return {"oneOf": branches}


GENERATE_OPENAPI: dict[str, Any] = {
    "requestBody": {
        "required": True,
        "content": {
            "multipart/form-data": {"schema": _request_schema(multipart=True)},
            "application/x-www-form-urlencoded": {"schema": _request_schema(multipart=False)},
            "application/json": {"schema": _request_schema(multipart=False, json_body=True)},
        },
    },
    "parameters": [
        {
            "name": "Prefer",
            "in": "header",
            "required": False,
            "schema": {"type": "string"},
            "description": "`wait=N`: wait up to N seconds (capped by the server) and answer 200 with the "
            "final status if the job ends by then; otherwise the usual 202.",
        }
    ],
}


def parse_prefer_wait(prefer: str | None, cap: float) -> float:
    match = _WAIT.search(prefer or "")
    return min(float(match.group(1)), cap) if match else 0.0


@router.post(
    "/generate",
    status_code=202,
    response_model=GenerateAccepted,
    summary="Submit an image-to-video job",
    openapi_extra=GENERATE_OPENAPI,
    responses={
        200: {"model": JobStatusBody, "description": "With `Prefer: wait=N`: the job ended in time."},
        **error_responses(400, 408, 413, 415),
    },
)
async def generate(
    request: Request,
    state: StateDep,
    principal: PrincipalDep,
    prefer: Annotated[str | None, Header(include_in_schema=False)] = None,
) -> Any:
    wanted = await read_generate_input(request, state.settings)
    checked = await check_input(wanted.upload, wanted.image_url, state, principal.user_id)
    accepted = await submit.submit(state, principal, wanted.job, checked)
    wait = parse_prefer_wait(prefer, state.settings.prefer_wait_max_seconds)
    if wait > 0:
        final = await _wait_for_end(state, accepted.job_id, wait)
        if final is not None:
            return JSONResponse(
                final.model_dump(mode="json", exclude_none=True),
                status_code=200,
                headers={"Preference-Applied": f"wait={wait:g}"},
            )
    return GenerateAccepted(job_id=accepted.job_id, estimated_wait_time=accepted.estimated_wait_time)


async def _wait_for_end(state: AppState, job_id: str, seconds: float) -> JobStatusBody | None:
    deadline = time.monotonic() + seconds
    while True:
        body = await state.run_db(_terminal_status, state, job_id)
        if body is not None or time.monotonic() >= deadline:
            return body
        await asyncio.sleep(min(WAIT_POLL_SECONDS, max(0.0, deadline - time.monotonic())))


def _terminal_status(state: AppState, job_id: str) -> JobStatusBody | None:
    with state.session_factory() as session:
        job = jobs.get_job(session, job_id)
        if job is None or not JobStatus(job.status).is_terminal:
            return None
        return JobStatusBody.of(job)
