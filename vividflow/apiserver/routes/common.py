"""Error responses documented on the routes (OpenAPI)."""

from __future__ import annotations

from typing import Any

from vividflow.apiserver.schemas import ErrorBody, RateLimitBody

_DESCRIPTIONS = {
    400: "Invalid parameters: every problem is listed in `details`.",
    401: "Missing, unknown or revoked API key.",
    403: "The job or key belongs to another user.",
    404: "No job or key with this id.",
    409: "The job is not in a state that allows this.",
    413: "The input image is larger than the configured limit.",
    415: "The body is not multipart/form-data, urlencoded or JSON.",
    429: "Rate limit or daily credits exhausted; see `retry_after` and the Retry-After header.",
}


def error_responses(*codes: int) -> dict[int | str, dict[str, Any]]:
    return {
        code: {"model": RateLimitBody if code == 429 else ErrorBody, "description": _DESCRIPTIONS[code]}
        for code in (401, 429, *codes)
    }
