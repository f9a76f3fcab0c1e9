"""Webhooks: a user's signing secret, and a job's deliveries (services.webhooks)."""

from __future__ import annotations

from fastapi import APIRouter, Response

from vividflow.apiserver.deps import PrincipalDep, SessionDep
from vividflow.apiserver.routes.common import error_responses
from vividflow.apiserver.routes.jobs import owned_job
from vividflow.apiserver.schemas import WebhookDeliveryInfo, WebhookDeliveryList, WebhookSecret
from vividflow.apiserver.services import webhooks

router = APIRouter(tags=["webhooks"])

_NO_STORE = {"Cache-Control": "no-store"}


@router.get(
    "/webhooks/secret",
    response_model=WebhookSecret,
    summary="Your webhook signing secret (made on first use)",
    responses=error_responses(),
)
def get_secret(session: SessionDep, principal: PrincipalDep, response: Response) -> WebhookSecret:
    secret = webhooks.ensure_secret(session, principal.user_id)
    session.commit()
    response.headers.update(_NO_STORE)
    return WebhookSecret(secret=secret)


@router.post(
    "/webhooks/secret/rotate",
    response_model=WebhookSecret,
    summary="Replace your webhook signing secret (the previous one keeps signing for a while)",
    responses=error_responses(),
)
def rotate_secret(session: SessionDep, principal: PrincipalDep, response: Response) -> WebhookSecret:
    secret = webhooks.rotate_secret(session, principal.user_id)
    session.commit()
    response.headers.update(_NO_STORE)
    return WebhookSecret(secret=secret)


@router.get(
    "/jobs/{job_id}/webhooks",
    response_model=WebhookDeliveryList,
    summary="A job's webhook deliveries, oldest first",
    responses=error_responses(403, 404),
)
def job_webhooks(job_id: str, session: SessionDep, principal: PrincipalDep) -> WebhookDeliveryList:
    job = owned_job(session, principal, job_id)
    items = [WebhookDeliveryInfo.of(delivery) for delivery in webhooks.job_deliveries(session, job.id)]
    return WebhookDeliveryList(job_id=job.id, count=len(items), deliveries=items)
