"""Accepting a generation request: keep the input, spend a credit, insert the job, tell the backend.
Either all of it happens or none of it does.

The service takes plain inputs (a :class:`JobRequest`, the checked image) and refuses in domain terms
(:class:`~vividflow.apiserver.services.errors.CreditsExhausted`); the HTTP layer builds the one and
answers for the other."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import ParamSpec, Protocol, TypeVar

from sqlalchemy.orm import Session, sessionmaker

from vividflow.apiserver.backends.base import JobBackend
from vividflow.apiserver.clock import next_reset, today
from vividflow.apiserver.db.models import User
from vividflow.apiserver.services import credits, estimates, job_queries, jobs, webhooks
from vividflow.apiserver.services.errors import CreditsExhausted
from vividflow.apiserver.services.job_inputs import CheckedInput, discard_input, keep_input
from vividflow.apiserver.services.keys import Principal
from vividflow.jobspec import JobParameters, ModelName
from vividflow.settings import Settings
from vividflow.storage import locations

P = ParamSpec("P")
T = TypeVar("T")


@dataclass(frozen=True)
class JobRequest:
    """What a job is asked to do, as read and checked from a request (the image comes apart, as a
    :class:`CheckedInput`)."""

    model: ModelName
    prompt: str
    parameters: JobParameters
    webhook_url: str | None = None
    webhook_events: tuple[str, ...] | None = None
    """Set with ``webhook_url``: which events it gets (services.webhooks.WEBHOOK_EVENTS)."""


class SubmitContext(Protocol):
    """What a submission needs of the application (``AppState`` is one): its settings, database,
    backend, and the thread pools that keep blocking work off the event loop."""

    settings: Settings
    session_factory: sessionmaker[Session]
    backend: JobBackend

    async def run_db(self, function: Callable[P, T], *args: P.args, **kwargs: P.kwargs) -> T: ...

    async def run_io(self, function: Callable[P, T], *args: P.args, **kwargs: P.kwargs) -> T: ...

    async def tell_backend(self, call: Callable[[str], None], job_id: str) -> None: ...


@dataclass(frozen=True)
class Accepted:
    job_id: str
    estimated_wait_time: str


async def submit(
    context: SubmitContext, principal: Principal, request: JobRequest, checked: CheckedInput
) -> Accepted:
    """Keep the input (I/O pool), then record the job and spend its credit in one transaction (DB
    pool), then tell the backend (I/O pool: in cluster mode it creates the VideoJob). Raises
    :class:`CreditsExhausted` (nothing kept) when the user has no credit left."""
    job_id = str(uuid.uuid4())
    input_uri = await context.run_io(keep_input, checked, job_id, context.settings)
    accepted = await context.run_db(_record, context, principal, request, checked, job_id, input_uri)
    await context.tell_backend(context.backend.submitted, job_id)
    return accepted


def _record(
    context: SubmitContext,
    principal: Principal,
    request: JobRequest,
    checked: CheckedInput,
    job_id: str,
    input_uri: str,
) -> Accepted:
    settings = context.settings
    try:
        with context.session_factory.begin() as session:
            user = session.get_one(User, principal.user_id)
            limit = credits.effective_limit(user, settings.daily_limit)
            day = today()
            if not credits.try_spend(session, user.id, day, limit):
                raise CreditsExhausted(limit, next_reset())
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
            queued_ahead, processing = job_queries.queue_ahead(session, job)
            recent = job_queries.recent_run_seconds(session, request.model.value)
    except BaseException:
        discard_input(input_uri, checked)  # here, not in the caller: a cancelled request may still commit
        raise
    seconds = estimates.estimated_seconds(
        request.model, queued_ahead, processing, recent, context.backend.parallelism
    )
    return Accepted(job_id=job_id, estimated_wait_time=estimates.describe(seconds))
