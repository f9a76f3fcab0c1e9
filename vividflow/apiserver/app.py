"""The FastAPI application: ``create_app(settings)`` wires state, routes and error handlers."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI
from fastapi.responses import JSONResponse
from starlette.types import ASGIApp, Receive, Scope, Send

from vividflow import __version__
from vividflow.apiserver.db.migrate import upgrade
from vividflow.apiserver.errors import install_handlers
from vividflow.apiserver.routes import api_router, files, health
from vividflow.apiserver.state import AppState
from vividflow.settings import Settings, get_settings

DESCRIPTION = """Turn an image and a prompt into a video with **wan2.1** (Wan 2.1 on a GPU) or
**veo3.1** (Google Veo 3.1). Submit with `POST /api/v1/generate`, then poll `GET /api/v1/status/{id}`.
Every `/api/v1` call needs an `X-API-Key` header. Errors answer `{"error": ..., "details": [...]}`."""

BODY_SLACK_BYTES = 1024 * 1024
"""Room for the form fields around an image of the maximum size."""


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or get_settings()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        if settings.migrate_on_start:
            upgrade(settings.resolved_database_url)
        settings.data_dir.mkdir(parents=True, exist_ok=True)
        state = AppState.build(settings)
        app.state.vivid = state
        state.backend.start()
        try:
            yield
        finally:
            state.backend.stop()
            state.close()

    app = FastAPI(title="Vivid Flow", version=__version__, description=DESCRIPTION, lifespan=lifespan)
    install_handlers(app)
    app.include_router(api_router)
    app.include_router(health.router)
    app.include_router(files.router)

    app.add_middleware(BodySizeLimit, max_bytes=settings.max_upload_bytes + BODY_SLACK_BYTES)
    return app


class BodySizeLimit:
    """Refuse a body announced as larger than any valid request before reading it (pure ASGI, so
    it costs nothing on other requests)."""

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            length = dict(scope["headers"]).get(b"content-length", b"")
            if length.isdigit() and int(length) > self.max_bytes:
                response = JSONResponse(
                    {
                        "error": "Request too large",
                        "details": [f"The body is {int(length)} bytes; the limit is {self.max_bytes} bytes."],
                    },
                    status_code=413,
                )
                await response(scope, receive, send)
                return
        await self.app(scope, receive, send)
