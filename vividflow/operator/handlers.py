"""The kopf handlers: thin and stateless. VideoJob, Job and Pod watch events go to the controller's
cache and queue; startup configures kopf and starts the workers; a probe reports their health.

No change-detection handlers (``on.create``/``on.update``) and no timers or daemons: those would make
kopf write its state onto VideoJobs and add a finalizer. Reconciliation is level-based instead.
"""

from __future__ import annotations

from typing import Any

import kopf

from vividflow.jobspec import GROUP, LABEL_VIDEOJOB, PLURAL, VERSION
from vividflow.operator.config import configure, connection_info
from vividflow.operator.controller import Controller


def build_registry(controller: Controller) -> kopf.OperatorRegistry:
    """A registry of handlers bound to ``controller`` (one per operator; tests build several)."""
    registry = kopf.OperatorRegistry()
    ours = {LABEL_VIDEOJOB: kopf.PRESENT}

    @kopf.on.startup(registry=registry)
    def startup(settings: kopf.OperatorSettings, **_: Any) -> None:
        configure(settings)
        controller.start()

    @kopf.on.cleanup(registry=registry)
    def cleanup(**_: Any) -> None:
        controller.stop()

    @kopf.on.login(registry=registry)
    def login(**_: Any) -> kopf.ConnectionInfo:
        return connection_info(controller.kube.configuration)

    @kopf.on.probe(id="reconciler", registry=registry)
    def probe(**_: Any) -> dict[str, Any]:
        return controller.health()

    @kopf.on.event(GROUP, VERSION, PLURAL, registry=registry)
    async def videojob_event(event: kopf.RawEvent, **_: Any) -> None:
        controller.on_videojob(event["type"], event["object"])

    @kopf.on.event("batch", "v1", "jobs", labels=ours, registry=registry)
    async def job_event(event: kopf.RawEvent, **_: Any) -> None:
        controller.on_job(event["type"], event["object"])

    @kopf.on.event("v1", "pods", labels=ours, registry=registry)
    async def pod_event(event: kopf.RawEvent, **_: Any) -> None:
        controller.on_pod(event["type"], event["object"])

    del startup, cleanup, login, probe, videojob_event, job_event, pod_event
    return registry
