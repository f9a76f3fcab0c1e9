"""Mounting the web app on the API's FastAPI application: the pages and their static files."""

from __future__ import annotations

from fastapi import FastAPI
from starlette.responses import Response
from starlette.staticfiles import StaticFiles
from starlette.types import Scope

from vividflow.web.templating import WEB_DIR

STATIC_MAX_AGE = 24 * 3600
"""Static URLs carry the release (``?v=``), so browsers may keep them a day."""


class CachedStatic(StaticFiles):
    async def get_response(self, path: str, scope: Scope) -> Response:
        response = await super().get_response(path, scope)
        if response.status_code in (200, 304):
            response.headers["Cache-Control"] = f"public, max-age={STATIC_MAX_AGE}"
            response.headers["X-Content-Type-Options"] = "nosniff"
        return response


def install_web(app: FastAPI) -> None:
    from vividflow.web.pages import router

    app.include_router(router)
    app.mount("/static", CachedStatic(directory=WEB_DIR / "static"), name="static")
