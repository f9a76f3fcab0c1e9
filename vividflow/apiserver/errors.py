"""The API's error type and the handlers that give every error the contract's body:
``{"error": "...", "details": [...]}`` (429 adds ``retry_after``). The service layer's refusals
(services.errors) become responses here, in :func:`service_error`."""

from __future__ import annotations

import logging
from http import HTTPStatus
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from pydantic import ValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.requests import ClientDisconnect
from starlette.routing import Match

from vividflow.apiserver.clock import iso, utcnow
from vividflow.apiserver.services.errors import CreditsExhausted, ServiceError

log = logging.getLogger(__name__)


class ApiError(Exception):
    def __init__(
        self,
        status_code: int,
        error: str,
        details: list[str] | None = None,
        *,
        headers: dict[str, str] | None = None,
        extra: dict[str, Any] | None = None,
    ) -> None:
        super().__init__(error)
        self.status_code = status_code
        self.error = error
        self.details = details or []
        self.headers = headers
        self.extra = extra or {}

    def body(self) -> dict[str, Any]:
        return {"error": self.error, "details": self.details, **self.extra}


def invalid_parameters(details: list[str]) -> ApiError:
    return ApiError(400, "Invalid parameters", details)


def unauthorized(detail: str) -> ApiError:
    return ApiError(401, "Invalid or missing API key", [detail], headers={"WWW-Authenticate": "APIKey"})


def forbidden(detail: str) -> ApiError:
    return ApiError(403, "Access denied", [detail])


def not_found(what: str) -> ApiError:
    return ApiError(404, "Not found", [what])


def gone(what: str) -> ApiError:
    return ApiError(410, "Gone", [what])


def too_many_requests(
    error: str, detail: str, retry_after: int, headers: dict[str, str] | None = None
) -> ApiError:
    """429 in the contract's shape: ``retry_after`` in the body and the Retry-After header."""
    return ApiError(
        429,
        error,
        [detail],
        headers={**(headers or {}), "Retry-After": str(retry_after)},
        extra={"retry_after": retry_after},
    )


def service_error(error: ServiceError) -> ApiError:
    """The response to a refusal of the service layer: the one place each kind is mapped (the API's
    handler and the web pages both come here)."""
    if isinstance(error, CreditsExhausted):
        retry_after = max(1, int((error.resets_at - utcnow()).total_seconds()))
        detail = f"All {error.limit} daily credits are used; they reset at {iso(error.resets_at)} UTC."
        return too_many_requests("Daily credit limit reached", detail, retry_after)
    raise TypeError(f"no response for {type(error).__name__}")  # a new kind must be mapped above


def format_validation_errors(error: ValidationError | RequestValidationError, prefix: str = "") -> list[str]:
    """``field: message`` lines; our own validators already name their field in the message."""
    lines: list[str] = []
    for item in error.errors():
        location = ".".join(str(part) for part in item["loc"] if part not in ("body", "query", "path"))
        message = str(item["msg"]).removeprefix("Value error, ")
        field = f"{prefix}{location}"
        lines.append(message if field and message.startswith(field) else f"{field}: {message}".lstrip(": "))
    return lines


def _api_error(_: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, ApiError)
    return JSONResponse(exc.body(), status_code=exc.status_code, headers=exc.headers)


def _service_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, ServiceError)
    return _api_error(request, service_error(exc))


_TITLES = {
    400: "Invalid request",
    404: "Not found",
    405: "Method not allowed",
    413: "Request too large",
    415: "Unsupported content type",
}


_METHODS = ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE")


def allowed_methods(request: Request) -> list[str]:
    """Every method some route serves at this request's path (Starlette's 405 names only the first
    route's), plus OPTIONS, which is always answered: each method is tried against the routes."""
    routes = request.app.router.routes
    methods = {"OPTIONS"}
    for method in _METHODS:
        scope = {**request.scope, "method": method}
        if any(route.matches(scope)[0] is Match.FULL for route in routes):
            methods.add(method)
    return sorted(methods)


def _http_error(request: Request, exc: Exception) -> Response:
    """The framework's own refusals (unknown path, wrong method, unparsable form) in the contract's
    shape: a short ``error`` and the framework's explanation in ``details``."""
    assert isinstance(exc, StarletteHTTPException)
    status = exc.status_code
    headers = dict(exc.headers or {})
    if status == 405:
        allow = allowed_methods(request)
        if request.method == "OPTIONS":
            return Response(status_code=204, headers={"Allow": ", ".join(allow)})
        headers["Allow"] = ", ".join(allow)
    phrase = HTTPStatus(status).phrase if status in HTTPStatus._value2member_map_ else "Error"
    detail = str(exc.detail)
    if status == 404 and detail == phrase:
        detail = f"There is nothing at {request.url.path}."
    elif status == 405 and detail == phrase:
        detail = f"{request.method} is not allowed here; use {headers['Allow']}."
    details = [] if detail == phrase else [detail]
    return JSONResponse({"error": _TITLES.get(status, phrase), "details": details}, status, headers)


def _validation_error(_: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    return JSONResponse(invalid_parameters(format_validation_errors(exc)).body(), status_code=400)


def _client_gone(request: Request, exc: Exception) -> Response:
    """The client hung up before its body was complete: nobody is left to answer; not an error."""
    log.info("%s %s: the client disconnected before sending its whole body", request.method, request.url.path)
    return Response(status_code=400)


def _unexpected(_: Request, exc: Exception) -> JSONResponse:
    log.error("unhandled error: %s", type(exc).__name__, exc_info=exc)
    return JSONResponse({"error": "Internal server error", "details": []}, status_code=500)


def install_handlers(app: FastAPI) -> None:
    app.add_exception_handler(ApiError, _api_error)
    app.add_exception_handler(ServiceError, _service_error)
    app.add_exception_handler(StarletteHTTPException, _http_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(ClientDisconnect, _client_gone)
    app.add_exception_handler(Exception, _unexpected)
