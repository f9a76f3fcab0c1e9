"""A job's live page, its cancel button, and the history gallery.

The job page renders the job's current status (so a refresh without JavaScript shows where it is)
and then follows ``GET /api/v1/status/{id}/events`` with the session cookie.
"""

from __future__ import annotations

import math
from typing import Annotated, Any

from fastapi import APIRouter, Query, Request
from fastapi.responses import RedirectResponse
from starlette.responses import Response

from vividflow.apiserver.db.models import Job
from vividflow.apiserver.deps import StateDep
from vividflow.apiserver.errors import ApiError, forbidden, not_found
from vividflow.apiserver.routes.jobs import owned_job
from vividflow.apiserver.schemas import JobStatusBody
from vividflow.apiserver.services import job_queries, job_status, jobs
from vividflow.apiserver.services.web_sessions import SessionUser
from vividflow.apiserver.sessions import CSRF_FIELD
from vividflow.apiserver.state import AppState
from vividflow.jobspec import JobStatus
from vividflow.web.page_route import PageRoute
from vividflow.web.pages.forms import read_form
from vividflow.web.templating import render
from vividflow.web.visitors import VisitorDep, check_csrf, principal_of, signed_in

router = APIRouter(route_class=PageRoute)

PAGE_SIZE = 12
STATUS_FILTERS = tuple(status.value for status in JobStatus)


def _job_view(state: AppState, user: SessionUser, job_id: str) -> dict[str, Any]:
    found = job_status.status_row(state.read_engine, job_id)
    if found is None:
        raise not_found(f"No job with id {job_id}.")
    row, position = found
    if row.user_id != user.user_id:
        raise forbidden("This job belongs to another user.")
    body = JobStatusBody.of(row, position)
    return {
        "job": row,
        "status": body,
        "status_json": body.model_dump(mode="json", exclude_none=True),
        "parameters": next(iter(row.parameters.values()), None) or {},
    }


@router.get("/jobs/{job_id}")
async def job_page(job_id: str, request: Request, state: StateDep, visitor: VisitorDep) -> Response:
    user = signed_in(visitor, request)
    view = await state.run_db(_job_view, state, user, job_id)
    return render(request, state, visitor, "job.html", view)


@router.post("/jobs/{job_id}/cancel")
async def cancel(job_id: str, request: Request, state: StateDep, visitor: VisitorDep) -> Response:
    user = signed_in(visitor, request)
    form = await read_form(request)
    check_csrf(request, state, visitor, form.get(CSRF_FIELD))
    running = form.get("running") == "true"
    if running and form.get("confirm") != "yes":
        view = await state.run_db(_job_view, state, user, job_id)
        return render(request, state, visitor, "confirm_cancel.html", view)
    await state.run_db(_cancel, state, user, job_id, running)
    await state.tell_backend(state.backend.cancelled, job_id)
    return RedirectResponse(f"/jobs/{job_id}", status_code=303)


def _cancel(state: AppState, user: SessionUser, job_id: str, running: bool) -> None:
    with state.session_factory() as session:
        job = owned_job(session, principal_of(user), job_id)
        cancelled = jobs.cancel_running(session, job) if running else jobs.cancel_queued(session, job)
        session.commit()
        if not cancelled:
            session.refresh(job)
            raise ApiError(
                409, "Job cannot be cancelled", [f"The job is {job.status} and can no longer be cancelled."]
            )


@router.get("/history")
async def history(
    request: Request,
    state: StateDep,
    visitor: VisitorDep,
    status: Annotated[str | None, Query()] = None,
    page: Annotated[int, Query(ge=1, le=100_000)] = 1,
) -> Response:
    user = signed_in(visitor, request)
    chosen = [JobStatus(status)] if status in STATUS_FILTERS else None
    items, total = await state.run_db(_history, state, user, chosen, page)
    pages = max(1, math.ceil(total / PAGE_SIZE))
    context = {
        "jobs": items,
        "total": total,
        "page": page,
        "pages": pages,
        "status_filter": status if chosen else None,
        "filters": STATUS_FILTERS,
    }
    return render(request, state, visitor, "history.html", context)


def _history(
    state: AppState, user: SessionUser, statuses: list[JobStatus] | None, page: int
) -> tuple[list[Job], int]:
    with state.session_factory() as session:
        items, total = job_queries.history_page(
            session, user.user_id, statuses, (page - 1) * PAGE_SIZE, PAGE_SIZE
        )
        session.expunge_all()
        return items, total
