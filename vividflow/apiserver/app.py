"""The FastAPI application: ``create_app(settings)`` wires state, routes and error handlers."""

from __future__ import annotations

import gc
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI

from vividflow import __version__
from vividflow.apiserver.body_limits import BodyGuard
from vividflow.apiserver.db.migrate import upgrade
from vividflow.apiserver.errors import install_handlers
from vividflow.apiserver.retention_task import RetentionTask
from vividflow.apiserver.routes import api_router, files, health
from vividflow.apiserver.state import AppState
from vividflow.apiserver.webhook_sender import WebhookSender
from vividflow.settings import Settings, get_settings

DESCRIPTION = """Turn an image and a prompt into a video with **wan2.1** (Wan 2.1 on a GPU) or
**veo3.1** (Google Veo 3.1). Submit with `POST /api/v1/generate`, then poll `GET /api/v1/status/{id}`.
Every `/api/v1` call needs an `X-API-Key` header. Errors answer `{"error": ..., "details": [...]}`."""

UPLOAD_PATHS = ("/api/v1/generate", "/generate")
"""Where multipart bodies may carry an image (they get the image size limit)."""


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or get_settings()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        if settings.migrate_on_start:
            upgrade(settings.resolved_database_url)
        settings.data_dir.mkdir(parents=True, exist_ok=True)
        state = AppState.build(settings)
        app.state.vivid = state
        await state.status_reader.open()
        await state.event_hub.start()
        state.backend.start()
        webhook_sender = WebhookSender(state)
        webhook_sender.start()
        retention = RetentionTask(state)
        retention.start()
        # What exists now (modules, routes, models, pools) lives as long as the server: frozen, the
        # collector's full passes skip it. Under load they come about once a second (in-flight
        # requests' objects outlive the young collections) and walking it all paused for 0.1-0.2 s.
        gc.freeze()
        try:
            yield
        finally:
            gc.unfreeze()
            await retention.stop()
            await webhook_sender.stop()
            state.backend.stop()
            await state.event_hub.stop()
            await state.status_reader.close()
            state.close()

    app = FastAPI(title="Vivid Flow", version=__version__, description=DESCRIPTION, lifespan=lifespan)
    install_handlers(app)
    app.include_router(api_router)
    app.include_router(health.router)
    app.include_router(files.router)
    if settings.metrics_enabled:
        from vividflow.apiserver import metrics as api_metrics
        from vividflow.apiserver.routes import metrics

        api_metrics.install()
        app.include_router(metrics.router)
    if settings.web_enabled:
        from vividflow.web.install import install_web

        install_web(app)

    app.add_middleware(
        BodyGuard,
        max_bytes=settings.max_body_bytes,
        max_upload_bytes=settings.max_upload_bytes,
        upload_paths=UPLOAD_PATHS,
        idle_timeout=settings.body_idle_timeout_seconds,
        total_timeout=settings.body_timeout_seconds,
    )
    if settings.metrics_enabled:  # outermost: it times (and counts) everything, refusals included
        from vividflow.apiserver.http_metrics import HttpMetrics

        app.add_middleware(HttpMetrics)
    return app
