"""HTTP routes: the public API under /api/v1, plus health probes and local result files."""

from fastapi import APIRouter

from vividflow.apiserver.routes import enhance, events, files, generate, health, jobs, keys, usage, webhooks

api_router = APIRouter(prefix="/api/v1")
# Routes are matched in order: the status endpoint, which clients poll, first.
for module in (jobs, events, generate, enhance, usage, keys, webhooks):
    api_router.include_router(module.router)

__all__ = ["api_router", "files", "health"]
