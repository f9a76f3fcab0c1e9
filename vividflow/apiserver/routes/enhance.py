"""``POST /enhance-prompt``: Gemini rewrites a video prompt into a richer one (it starts no job)."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request, Response
from pydantic import BaseModel, Field

from vividflow.apiserver.deps import CallerDep, StateDep
from vividflow.apiserver.errors import ApiError, invalid_parameters, too_many_requests
from vividflow.apiserver.generate_input import MAX_PROMPT_LENGTH, parse_json_object, read_prompt
from vividflow.apiserver.routes.common import error_responses
from vividflow.apiserver.schemas import ErrorBody
from vividflow.apiserver.services.enhance import (
    UNAVAILABLE_REASON,
    EnhanceFailed,
    EnhanceUnavailable,
    PromptEnhancer,
    enhance_available,
)
from vividflow.jobspec import DEFAULT_MODEL, ModelName

router = APIRouter(tags=["jobs"])

UNAVAILABLE = "Prompt enhancement is not available"
FAILED = "Prompt enhancement failed"
_FIELDS = frozenset({"prompt", "model"})


class EnhanceResponse(BaseModel):
    prompt: str = Field(
        description=f"The rewritten prompt (at most {MAX_PROMPT_LENGTH} characters), ready for /generate."
    )


ENHANCE_OPENAPI: dict[str, Any] = {
    "requestBody": {
        "required": True,
        "content": {
            "application/json": {
                "schema": {
                    "type": "object",
                    "title": "EnhanceRequest",
                    "additionalProperties": False,
                    "required": ["prompt"],
                    "properties": {
                        "prompt": {
                            "type": "string",
                            "minLength": 1,
                            "maxLength": MAX_PROMPT_LENGTH,
                            "pattern": r"\S",
                            "description": "The prompt to improve: what should happen in the video.",
                        },
                        "model": {
                            "type": "string",
                            "enum": [m.value for m in ModelName],
                            "default": DEFAULT_MODEL.value,
                            "description": "The video model the prompt is for: Veo 3.1 prompts may carry "
                            "sound and dialogue cues, Wan 2.1 prompts stay concise and visual.",
                        },
                    },
                }
            }
        },
    }
}

_RESPONSES: dict[int | str, dict[str, Any]] = {
    **error_responses(400, 413, 415),
    502: {"model": ErrorBody, "description": "Gemini failed, refused or did not answer in time."},
    503: {"model": ErrorBody, "description": "Prompt enhancement is not configured on this server."},
}


def get_enhancer(request: Request, state: StateDep) -> PromptEnhancer:
    """The application's enhancer (it keeps its Vertex AI client between requests)."""
    enhancer: PromptEnhancer | None = getattr(request.app.state, "vivid_enhancer", None)
    if enhancer is None or enhancer.settings is not state.settings:
        enhancer = PromptEnhancer(state.settings)
        request.app.state.vivid_enhancer = enhancer
    return enhancer


def read_enhance_input(payload: dict[str, Any]) -> tuple[str, ModelName]:
    """The prompt (trimmed) and model of a JSON body, or a 400 listing every problem."""
    problems: list[str] = []
    fields = {key: value for key, value in payload.items() if value is not None}
    prompt, problem = read_prompt(fields.get("prompt"))
    if problem is not None:
        problems.append(problem)
    model = DEFAULT_MODEL
    if "model" in fields:
        try:
            model = ModelName(fields["model"])
        except ValueError:
            problems.append(f"model must be one of: {', '.join(m.value for m in ModelName)}")
    for key in sorted(set(fields) - _FIELDS):
        problems.append(f"unknown parameter: {key}")
    if problems:
        raise invalid_parameters(problems)
    return prompt.strip(), model


async def _read_body(request: Request) -> dict[str, Any]:
    content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if content_type != "application/json":
        raise ApiError(415, "Unsupported content type", ["Send the body as application/json."])
    return parse_json_object(await request.body())


@router.post(
    "/enhance-prompt",
    response_model=EnhanceResponse,
    summary="Improve a prompt with Gemini",
    description="Rewrites a video prompt into a richer one for the given model (it starts no job). "
    "Limited per user (`VIVID_ENHANCE_LIMITS`, default 10 a minute) besides the API's own limits; "
    "503 when the server has no Vertex AI credentials.",
    responses=_RESPONSES,
    openapi_extra=ENHANCE_OPENAPI,
)
async def enhance_prompt(
    request: Request,
    response: Response,
    state: StateDep,
    principal: CallerDep,
) -> EnhanceResponse:
    settings = state.settings
    if not enhance_available(settings):
        raise ApiError(503, UNAVAILABLE, [UNAVAILABLE_REASON])
    prompt, model = read_enhance_input(await _read_body(request))
    limit = await state.limiter.hit_windows("enhance", settings.enhance_limits, [principal.user_id])
    if not limit.allowed:
        raise too_many_requests(
            "Rate limit exceeded",
            f"At most {limit.limit} prompt enhancements are allowed in this window; try again later.",
            limit.retry_after,
            limit.headers(),
        )
    current = response.headers.get("X-RateLimit-Remaining")
    if current is None or limit.remaining <= int(current):
        response.headers.update(limit.headers())
    enhancer = get_enhancer(request, state)
    try:
        text = await state.run_io(enhancer.enhance, prompt, model, max_length=MAX_PROMPT_LENGTH)
    except EnhanceUnavailable as exc:
        raise ApiError(503, UNAVAILABLE, [exc.reason]) from None
    except EnhanceFailed as exc:
        raise ApiError(502, FAILED, [exc.reason]) from None
    return EnhanceResponse(prompt=text)
