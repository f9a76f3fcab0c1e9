"""Liveness and readiness probes (no API key)."""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import JSONResponse
from sqlalchemy import text
from starlette.concurrency import run_in_threadpool

from vividflow.apiserver.deps import StateDep
from vividflow.apiserver.state import AppState

router = APIRouter(tags=["health"])


@router.get("/healthz", summary="The process is alive")
async def healthz() -> dict[str, str]:
    return {"status": "ok"}


@router.get("/readyz", summary="Database, rate-limit storage and job backend are usable")
async def readyz(state: StateDep) -> JSONResponse:
    checks: dict[str, bool] = {"database": await run_in_threadpool(_database_answers, state)}
    try:
        checks["rate_limit_storage"] = await state.limiter.ping()
    except Exception:
        checks["rate_limit_storage"] = False
    checks["backend"] = state.backend.is_ready()
    ready = all(checks.values())
    return JSONResponse(
        {"status": "ready" if ready else "not ready", "checks": checks}, status_code=200 if ready else 503
    )


def _database_answers(state: AppState) -> bool:
    try:
        with state.engine.connect() as connection:
            connection.execute(text("SELECT 1"))
    except Exception:
        return False
    return True
