"""HTTP request counts and latencies by route template (a pure ASGI middleware).

The route is the template the router matched (``/api/v1/status/{job_id}``), read from the scope after
the request was routed, so a label never holds an id; a mounted app (``/static``) counts under its
mount path, and anything unrouted under ``unmatched``. Status classes (``2xx``...) keep the label set
small; an exception that escapes the app counts as ``5xx``.
"""

from __future__ import annotations

import time

from starlette.routing import Mount
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from vividflow.apiserver.metrics import HTTP_REQUEST_SECONDS, HTTP_REQUESTS

UNMATCHED = "unmatched"


def route_template(scope: Scope) -> str:
    """The matched route's full template. A route of an included router knows only its own part
    (``/status/{job_id}``): the prefix is what of the request's path lies before the part it matched
    (prefixes here are fixed text)."""
    path: str = scope.get("path", "")
    route = scope.get("route")
    template, pattern = getattr(route, "path", None), getattr(route, "path_regex", None)
    if isinstance(template, str) and pattern is not None:
        for index, char in enumerate(path):
            if char == "/" and pattern.match(path[index:]):
                return path[:index] + template
        return template
    app = scope.get("app")
    for candidate in getattr(getattr(app, "router", None), "routes", ()):
        if isinstance(candidate, Mount) and path.startswith(candidate.path + "/"):
            return candidate.path
    return UNMATCHED


class HttpMetrics:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500

        async def send_counting(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_counting)
        finally:
            route, method = route_template(scope), scope["method"]
            HTTP_REQUESTS.labels(route=route, method=method, status_class=f"{status // 100}xx").inc()
            HTTP_REQUEST_SECONDS.labels(route=route, method=method).observe(time.perf_counter() - started)
