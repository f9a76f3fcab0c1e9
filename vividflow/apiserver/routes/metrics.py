"""``GET /metrics``: Prometheus' text format, without an API key (like the probes).

Prometheus scrapes a Pod or Service directly; a request that came through a proxy (an Ingress, a
load balancer: it carries ``X-Forwarded-For`` or ``Forwarded``) is answered 404 unless
``VIVID_METRICS_VIA_PROXY`` allows it, so that publishing the API does not publish its metrics.
``VIVID_METRICS_ENABLED=false`` removes the route.
"""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import Response

from vividflow.apiserver.deps import StateDep
from vividflow.apiserver.errors import not_found
from vividflow.apiserver.metrics import scrape_source
from vividflow.metrics import EXPOSITION_CONTENT_TYPE, exposition

router = APIRouter(tags=["metrics"])
PROXY_HEADERS = ("x-forwarded-for", "forwarded")


@router.get("/metrics", include_in_schema=False)
def metrics(request: Request, state: StateDep) -> Response:
    """Sync on purpose: the queue figures are a database read, done on FastAPI's thread pool."""
    if not state.settings.metrics_via_proxy and any(name in request.headers for name in PROXY_HEADERS):
        raise not_found("/metrics is served to direct scrapes only, not through a proxy.")
    return Response(exposition(scrape_source(state.engine)), media_type=EXPOSITION_CONTENT_TYPE)
