"""The route class of every page: a page's refusals are answered as pages (the API under /api/v1
keeps its JSON ones)."""

from __future__ import annotations

from collections.abc import Callable, Coroutine
from typing import Any
from urllib.parse import quote

from fastapi.responses import RedirectResponse
from fastapi.routing import APIRoute
from starlette.requests import Request
from starlette.responses import Response

from vividflow.apiserver.errors import ApiError
from vividflow.apiserver.state import AppState
from vividflow.web.templating import render
from vividflow.web.visitors import CsrfRefused, LoginRequired, current_visitor

CSRF_REFUSED = "This form has expired or did not come from this site. Go back, reload the page and try again."


class PageRoute(APIRoute):
    """A page's refusals as pages: the login page for a visitor who is not logged in, and an error
    page (with the status code the API would give) for the rest."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()

        async def page_handler(request: Request) -> Response:
            try:
                return await handler(request)
            except LoginRequired as needed:
                return RedirectResponse(f"/login?next={quote(needed.next_path)}", status_code=303)
            except CsrfRefused:
                return await error_page(request, 403, "Form refused", [CSRF_REFUSED])
            except ApiError as error:
                return await error_page(request, error.status_code, error.error, error.details, error.headers)

        return page_handler


async def error_page(
    request: Request, status_code: int, title: str, details: list[str], headers: dict[str, str] | None = None
) -> Response:
    state: AppState = request.app.state.vivid
    visitor = await current_visitor(request, state)
    context = {"title": title, "details": details, "status_code": status_code}
    return render(request, state, visitor, "error.html", context, status_code=status_code, headers=headers)
