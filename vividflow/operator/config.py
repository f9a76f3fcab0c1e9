"""kopf's settings for production, and kopf's login from our own client configuration."""

from __future__ import annotations

import logging
import zlib
from collections.abc import Iterable

import kopf
from kubernetes import client as k8s

from vividflow.jobspec import GROUP, LABEL_VIDEOJOB

WATCH_SERVER_TIMEOUT = 300
"""The API server ends each watch request after this long; kopf reconnects from the last version."""
WATCH_CLIENT_TIMEOUT = WATCH_SERVER_TIMEOUT + 30.0
CONNECT_TIMEOUT = 10.0
REQUEST_TIMEOUT = 30.0


class WatchOnlyDiffBaseStorage(kopf.AnnotationsDiffBaseStorage):
    """kopf's annotations storage without the per-event "essence": kopf deep-copies every event body
    to diff it for change handlers (``on.create``/``on.update``/``on.field``), which this operator has
    none of; that copy was half of kopf's CPU under a burst. Add a change handler, drop this class."""

    def build(
        self, *, body: kopf.Body, extra_fields: Iterable[kopf.FieldSpec] | None = None
    ) -> kopf.BodyEssence:
        return kopf.BodyEssence()


def configure(settings: kopf.OperatorSettings) -> None:
    """Timeouts so that a stuck watch cannot stall the operator, server-side label filtering of Jobs
    and Pods, kopf's own state (if it ever keeps any: our handlers are stateless) in annotations so
    that ``.status`` stays ours, and kopf's warnings and errors posted as Events."""
    settings.watching.server_timeout = WATCH_SERVER_TIMEOUT
    settings.watching.client_timeout = WATCH_CLIENT_TIMEOUT
    settings.watching.connect_timeout = CONNECT_TIMEOUT
    settings.networking.connect_timeout = CONNECT_TIMEOUT
    settings.networking.request_timeout = REQUEST_TIMEOUT
    # Only our Jobs and Pods: the API server filters, so a busy cluster costs us nothing.
    settings.watching.label_selectors["batch", "v1", "jobs"] = LABEL_VIDEOJOB
    settings.watching.label_selectors["v1", "pods"] = LABEL_VIDEOJOB
    settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix=GROUP)
    settings.persistence.diffbase_storage = WatchOnlyDiffBaseStorage(
        prefix=GROUP, key="last-handled-configuration"
    )
    settings.persistence.finalizer = f"{GROUP}/kopf-finalizer"
    settings.posting.enabled = True
    settings.posting.level = logging.WARNING
    # Every handler names its resource exactly and namespaces are given by name: no cluster-wide
    # scans of CRDs and namespaces, which a namespaced Role may not allow (kopf would retry them).
    settings.scanning.disabled = True


def default_priority(identity: str) -> int:
    """A stable per-replica peering priority (kopf pauses every replica of equal priority)."""
    return zlib.crc32(identity.encode()) % 1_000_000


def connection_info(configuration: k8s.Configuration) -> kopf.ConnectionInfo:
    """kopf's credentials, taken from the client configuration that our own requests use."""
    header = configuration.get_api_key_with_prefix("BearerToken") or configuration.get_api_key_with_prefix(
        "authorization"
    )
    scheme, _, token = (header or "").rpartition(" ")
    return kopf.ConnectionInfo(
        server=configuration.host,
        ca_path=configuration.ssl_ca_cert,
        insecure=not configuration.verify_ssl,
        scheme=scheme or ("Bearer" if token else None),
        token=token or None,
        certificate_path=configuration.cert_file,
        private_key_path=configuration.key_file,
    )
