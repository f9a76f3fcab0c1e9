"""The URL paths of the resources that Vivid Flow reads and writes."""

from __future__ import annotations

from urllib.parse import quote

from vividflow.jobspec import GROUP, PLURAL, VERSION

MERGE_PATCH = "application/merge-patch+json"


def _named(collection: str, name: str, subresource: str = "") -> str:
    path = collection + (f"/{quote(name)}" if name else "")
    return path + (f"/{subresource}" if name and subresource else "")


def videojob_path(namespace: str, name: str = "", subresource: str = "") -> str:
    """A VideoJob (or its ``status`` subresource), or the namespace's collection when ``name`` is empty."""
    return _named(f"/apis/{GROUP}/{VERSION}/namespaces/{quote(namespace)}/{PLURAL}", name, subresource)


def job_path(namespace: str, name: str = "") -> str:
    return _named(f"/apis/batch/v1/namespaces/{quote(namespace)}/jobs", name)


def pods_path(namespace: str) -> str:
    return f"/api/v1/namespaces/{quote(namespace)}/pods"


def events_path(namespace: str) -> str:
    return f"/api/v1/namespaces/{quote(namespace)}/events"
