"""``GET /metrics``: Prometheus' text format, without an API key (like the probes; expose the port
only to the cluster, or turn it off with ``VIVID_METRICS_ENABLED=false``)."""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import Response

from vividflow.apiserver.deps import StateDep
from vividflow.apiserver.metrics import scrape_source
from vividflow.metrics import EXPOSITION_CONTENT_TYPE, exposition

router = APIRouter(tags=["metrics"])


@router.get("/metrics", include_in_schema=False)
def metrics(state: StateDep) -> Response:
    """Sync on purpose: the queue figures are a database read, done on FastAPI's thread pool."""
    return Response(exposition(scrape_source(state.engine)), media_type=EXPOSITION_CONTENT_TYPE)
