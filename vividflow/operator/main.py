"""Run the operator: ``vividflow operator`` (kopf on our handlers, in this process)."""

from __future__ import annotations

import logging
import socket
from pathlib import Path

import kopf

from vividflow.kube.client import Kube
from vividflow.kube.config import load_configuration
from vividflow.logs import configure_logging
from vividflow.operator.config import default_priority
from vividflow.operator.controller import Controller
from vividflow.operator.handlers import build_registry
from vividflow.operator.metrics import count_api_error, count_watch_restarts, serve_metrics
from vividflow.settings import Settings

DEFAULT_WORKERS = 8


def create_controller(
    settings: Settings,
    *,
    kubeconfig: Path | None = None,
    workers: int = DEFAULT_WORKERS,
    image_pull_grace: float | None = None,
) -> Controller:
    """A controller with its own API client (in-cluster, else ``kubeconfig`` / ``$KUBECONFIG``)."""
    kube = Kube(load_configuration(kubeconfig), pool_size=max(4, workers * 2), on_error=count_api_error)
    return Controller(settings, kube, workers=workers, image_pull_grace=image_pull_grace)


def run(
    settings: Settings,
    *,
    namespaces: list[str],
    liveness: str | None = None,
    peering: str | None = None,
    priority: int | None = None,
    workers: int = DEFAULT_WORKERS,
    verbose: bool = False,
    metrics_port: int = 0,
) -> None:
    """Serve ``namespaces`` (all when empty) until interrupted. Standalone unless ``peering`` names a
    KopfPeering/ClusterKopfPeering object: then replicas take turns, the highest priority active."""
    configure_logging(settings, "operator", level="DEBUG" if verbose else None)
    if not verbose:  # not a line per watch event or liveness probe
        for name in ("kopf.objects", "kopf.activities.probe", "aiohttp.access"):
            logging.getLogger(name).setLevel(logging.WARNING)
    controller = create_controller(settings, workers=workers)
    count_watch_restarts(verbose)
    if metrics_port:
        serve_metrics(controller, metrics_port)
    if peering is not None and priority is None:
        priority = default_priority(socket.gethostname())
    kopf.run(
        registry=build_registry(controller),
        namespaces=namespaces,
        clusterwide=not namespaces,
        standalone=peering is None,
        peering_name=peering,
        priority=priority,
        liveness_endpoint=liveness,
    )
