"""Kubernetes Events on VideoJobs (``kubectl describe videojob`` shows them); failures are logged only."""

from __future__ import annotations

import logging
import secrets
import socket
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from vividflow.jobspec import GROUP
from vividflow.kube.client import Kube
from vividflow.kube.paths import events_path
from vividflow.operator.transitions import Event

log = logging.getLogger(__name__)
COMPONENT = "vividflow-operator"
REPORTING_CONTROLLER = f"{GROUP}/operator"


def event_body(obj: Mapping[str, Any], event: Event, now: datetime, instance: str) -> dict[str, Any]:
    """A core/v1 Event about ``obj``."""
    metadata = obj["metadata"]
    utc = now.astimezone(UTC)
    stamp = utc.strftime("%Y-%m-%dT%H:%M:%SZ")
    return {
        "apiVersion": "v1",
        "kind": "Event",
        "metadata": {
            "name": f"{metadata['name']}.{secrets.token_hex(8)}",
            "namespace": metadata["namespace"],
        },
        "involvedObject": {
            "apiVersion": obj.get("apiVersion"),
            "kind": obj.get("kind"),
            "name": metadata["name"],
            "namespace": metadata["namespace"],
            "uid": metadata.get("uid"),
        },
        "type": event.type,
        "reason": event.reason,
        "message": event.message[:1024],
        "firstTimestamp": stamp,
        "lastTimestamp": stamp,
        "eventTime": utc.strftime("%Y-%m-%dT%H:%M:%S.%fZ"),  # microseconds: events keep their order
        "action": event.reason,
        "count": 1,
        "source": {"component": COMPONENT},
        "reportingComponent": REPORTING_CONTROLLER,
        "reportingInstance": instance,
    }


class EventRecorder:
    """Posts Events through ``kube``."""

    def __init__(self, kube: Kube, instance: str | None = None) -> None:
        self._kube = kube
        self._instance = instance or socket.gethostname()

    def record(self, obj: Mapping[str, Any], event: Event) -> None:
        body = event_body(obj, event, datetime.now(UTC), self._instance)
        try:
            self._kube.request("POST", events_path(body["metadata"]["namespace"]), body=body)
        except Exception as error:  # an Event is best effort: never fail the reconcile for it
            log.warning("could not record event %s on %s: %s", event.reason, obj["metadata"]["name"], error)
