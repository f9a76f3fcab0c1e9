"""Accepting a generation request: keep the input, spend a credit, insert the job, tell the backend.
Either all of it happens or none of it does."""

from __future__ import annotations

import uuid
from dataclasses import dataclass

from vividflow.apiserver.clock import iso, next_reset, today, utcnow
from vividflow.apiserver.db.models import User
from vividflow.apiserver.errors import ApiError, too_many_requests
from vividflow.apiserver.generate_input import GenerateInput
from vividflow.apiserver.inputs import CheckedInput, discard_input, keep_input
from vividflow.apiserver.services import credits, estimates, jobs, webhooks
from vividflow.apiserver.services.keys import Principal
from vividflow.apiserver.state import AppState
from vividflow.storage import locations


@dataclass(frozen=True)
class Accepted:
    job_id: str
    estimated_wait_time: str


def credits_exhausted(limit: int) -> ApiError:
    reset = next_reset()
    retry_after = max(1, int((reset - utcnow()).total_seconds()))
    detail = f"All {limit} daily credits are used; they reset at {iso(reset)} UTC."
    return too_many_requests("Daily credit limit reached", detail, retry_after)


async def submit(
    state: AppState, principal: Principal, request: GenerateInput, checked: CheckedInput
) -> Accepted:
    """Keep the input (I/O pool), then record the job and spend its credit in one transaction (DB
    pool), then tell the backend (I/O pool: in cluster mode it creates the VideoJob)."""
    job_id = str(uuid.uuid4())
    input_uri = await state.run_io(keep_input, checked, job_id, state.settings)
    accepted = await state.run_db(_record, state, principal, request, checked, job_id, input_uri)
    await state.tell_backend(state.backend.submitted, job_id)
    return accepted


def _record(
    state: AppState,
    principal: Principal,
    request: GenerateInput,
    checked: CheckedInput,
    job_id: str,
    input_uri: str,
) -> Accepted:
    settings = state.settings
    try:
        with state.session_factory.begin() as session:
            user = session.get_one(User, principal.user_id)
            limit = credits.effective_limit(user, settings.daily_limit)
            day = today()
            if not credits.try_spend(session, user.id, day, limit):
                raise credits_exhausted(limit)
            job = jobs.insert_job(
                session,
                job_id=job_id,
                principal=principal,
                model=request.model,
                prompt=request.prompt,
                parameters=request.parameters,
                input_uri=input_uri,
                output_uri=locations.output_uri_for(job_id, settings),
                credit_day=day,
                webhook_url=request.webhook_url,
                webhook_events=list(request.webhook_events) if request.webhook_events else None,
            )
            if request.webhook_url:
                webhooks.ensure_secret(session, user.id)  # deliveries are signed from the first
            queued_ahead, processing = jobs.queue_ahead(session, job)
            recent = jobs.recent_run_seconds(session, request.model.value)
    except BaseException:
        discard_input(input_uri, checked)  # here, not in the caller: a cancelled request may still commit
        raise
    seconds = estimates.estimated_seconds(
        request.model, queued_ahead, processing, recent, state.backend.parallelism
    )
    return Accepted(job_id=job_id, estimated_wait_time=estimates.describe(seconds))
