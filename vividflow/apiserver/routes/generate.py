"""``POST /generate``: accept a job (202), or with ``Prefer: wait=N`` wait for its end (200)."""

from __future__ import annotations

import asyncio
import re
import time
from typing import Annotated, Any

from fastapi import APIRouter, Header, Request
from fastapi.responses import JSONResponse

from vividflow.apiserver.deps import PrincipalDep, StateDep
from vividflow.apiserver.generate_input import read_generate_input
from vividflow.apiserver.inputs import check_input
from vividflow.apiserver.routes.common import error_responses
from vividflow.apiserver.schemas import GenerateAccepted, JobStatusBody
from vividflow.apiserver.services import jobs, submit
from vividflow.apiserver.state import AppState
from vividflow.jobspec import VeoParams, WanParams

router = APIRouter(tags=["jobs"])

_WAIT = re.compile(r"(?:^|[,;\s])wait=(\d+(?:\.\d+)?)", re.IGNORECASE)
WAIT_POLL_SECONDS = 0.25


def _request_schema(binary_image: bool) -> dict[str, Any]:
    properties: dict[str, Any] = {
        "prompt": {"type": "string", "description": "What should happen in the video."},
        "model": {
            "type": "string",
            "enum": ["wan2.1", "veo3.1"],
            "default": "wan2.1",
            "description": "Which model generates the video.",
        },
        "image_url": {
            "type": "string",
            "description": "gs://bucket/object, https://storage.googleapis.com/"
            "bucket/object or another https URL. Give this or image.",
        },
    }
    if binary_image:
        properties["image"] = {
            "type": "string",
            "format": "binary",
            "description": "PNG, JPEG or WebP upload. Give this or image_url.",
        }
    for params, model in ((WanParams, "wan2.1"), (VeoParams, "veo3.1")):
        schema = params.model_json_schema(by_alias=False)
        for name, field in schema["properties"].items():
            field = {k: v for k, v in field.items() if k != "title"}
            field["description"] = f"({model} only) {field.get('description', '')}".strip()
            properties[name] = field
    return {"type": "object", "required": ["prompt"], "properties": properties}


GENERATE_OPENAPI: dict[str, Any] = {
    "requestBody": {
        "required": True,
        "content": {
            "multipart/form-data": {"schema": _request_schema(binary_image=True)},
            "application/x-www-form-urlencoded": {"schema": _request_schema(binary_image=False)},
            "application/json": {"schema": _request_schema(binary_image=False)},
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
        **error_responses(400, 413, 415),
    },
)
async def generate(
    request: Request,
    state: StateDep,
    principal: PrincipalDep,
    prefer: Annotated[str | None, Header(include_in_schema=False)] = None,
) -> Any:
    wanted = await read_generate_input(request)
    checked = await check_input(wanted.upload, wanted.image_url, state.settings)
    accepted = await state.run_db(submit.submit, state, principal, wanted, checked)
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
        if job is None or job.status not in ("completed", "failed", "cancelled"):
            return None
        return JobStatusBody.of(job)
