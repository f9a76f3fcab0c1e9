"""Error responses documented on the routes (OpenAPI)."""

from __future__ import annotations

from typing import Any

from vividflow.apiserver.schemas import ErrorBody, RateLimitBody

_DESCRIPTIONS = {
    400: "Invalid parameters: every problem is listed in `details`.",
    401: "Missing, unknown or revoked API key.",
    403: "The job or key belongs to another user.",
    404: "No job or key with this id.",
    408: "The request body did not arrive in time.",
    409: "The request conflicts with the current state (a job that is no longer queued, too many keys).",
    413: "The request body or the input image is larger than allowed.",
    415: "The body is not multipart/form-data, urlencoded or JSON.",
    429: "Rate limit, daily credits or concurrent image downloads exhausted; see `retry_after` and the "
    "Retry-After header.",
}


def error_responses(*codes: int) -> dict[int | str, dict[str, Any]]:
    return {
        code: {"model": RateLimitBody if code == 429 else ErrorBody, "description": _DESCRIPTIONS[code]}
        for code in (401, 429, *codes)
    }
