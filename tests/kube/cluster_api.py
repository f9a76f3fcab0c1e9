"""The REST API in cluster mode, for the tests: settings, a least-privilege ServiceAccount, and
helpers to submit jobs, poll their status and look at their VideoJobs as an administrator."""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, cast

import yaml
from fastapi.testclient import TestClient
from kubernetes import client as k8s

from tests.api.conftest import app_state, create_api_key
from tests.api.conftest import submit as api_submit
from tests.api.conftest import wait_status as wait_status
from vividflow.apiserver.app import create_app
from vividflow.apiserver.backends.kubernetes import KubernetesBackend
from vividflow.jobspec import (
    ANNOTATION_OUTCOME,
    GROUP,
    LABEL_JOB_ID,
    PLURAL,
    TERMINAL_PHASES,
    VERSION,
    videojob_name,
)
from vividflow.settings import Settings

API_RULES: list[dict[str, Any]] = [
    {"apiGroups": [GROUP], "resources": [PLURAL], "verbs": ["create", "get", "list", "watch", "patch"]}
]
"""Everything the API server may do in its namespace (the Helm chart's Role for it)."""
TINY_WAN = {"width": 32, "height": 32, "length": 9, "steps": 2, "seed": 7}


def cluster_settings(tmp_path: Path, namespace: str, bucket: str, **overrides: Any) -> Settings:
    values: dict[str, Any] = {
        "backend": "kubernetes",
        "data_dir": tmp_path / "data",
        "database_url": f"sqlite:///{tmp_path / 'api.db'}",
        "kube_namespace": namespace,
        "gcs_bucket": bucket,
        "public_url": "http://testserver",
        "workers": 0,
        "rate_limits": ["100000/hour"],  # the tests poll /status often; limits are tested elsewhere
    }
    values.update(overrides)
    return Settings(**values)


@contextmanager
def running_api(settings: Settings) -> Iterator[TestClient]:
    """The API started (lifespan run: migrations, backend threads) and stopped afterwards."""
    with TestClient(create_app(settings)) as client:
        yield client


def backend(client: TestClient) -> KubernetesBackend:
    found = app_state(client).backend
    assert isinstance(found, KubernetesBackend)
    return found


def new_user(client: TestClient, email: str) -> dict[str, str]:
    return {"X-API-Key": create_api_key(client, email)}


def submit(client: TestClient, headers: dict[str, str], model: str = "wan2.1", **fields: Any) -> str:
    params = TINY_WAN if model == "wan2.1" and not fields else fields
    return api_submit(client, headers, model=model, **params)


def status_of(client: TestClient, headers: dict[str, str], job_id: str) -> dict[str, Any]:
    response = client.get(f"/api/v1/status/{job_id}", headers=headers)
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


def ready(client: TestClient) -> bool:
    return client.get("/readyz").status_code == 200


# -- the cluster side, seen by an administrator ------------------------------------------------------


def videojobs(api: k8s.ApiClient, namespace: str) -> list[dict[str, Any]]:
    listed = k8s.CustomObjectsApi(api).list_namespaced_custom_object(
        GROUP, VERSION, namespace, PLURAL, label_selector=LABEL_JOB_ID
    )
    return cast(list[dict[str, Any]], cast(dict[str, Any], listed)["items"])


def videojob(api: k8s.ApiClient, namespace: str, job_id: str) -> dict[str, Any]:
    found = k8s.CustomObjectsApi(api).get_namespaced_custom_object(
        GROUP, VERSION, namespace, PLURAL, videojob_name(job_id)
    )
    return cast(dict[str, Any], found)


def set_status(
    api: k8s.ApiClient, namespace: str, job_id: str, *, as_operator: bool = True, **status: Any
) -> None:
    """Patch the VideoJob's status subresource by hand, as the operator does: a terminal phase is
    first recorded in the outcome annotation (``as_operator=False``: status only, as a runner could)."""
    custom = k8s.CustomObjectsApi(api)
    if as_operator and status.get("phase") in TERMINAL_PHASES:
        annotation = {"metadata": {"annotations": {ANNOTATION_OUTCOME: status["phase"]}}}
        custom.patch_namespaced_custom_object(
            GROUP, VERSION, namespace, PLURAL, videojob_name(job_id), annotation
        )
    custom.patch_namespaced_custom_object_status(
        GROUP, VERSION, namespace, PLURAL, videojob_name(job_id), {"status": status}
    )


def output_url(bucket: str, job_id: str) -> str:
    """The public URL of a job's video in cluster mode (``gcs_prefix`` videos)."""
    return f"https://storage.googleapis.com/{bucket}/videos/{job_id}.mp4"


def kubeconfig_via(kubeconfig: Path, server: str, destination: Path) -> Path:
    """A copy of ``kubeconfig`` whose cluster is reached at ``server`` (e.g. through a TcpProxy)."""
    config = yaml.safe_load(kubeconfig.read_text())
    for cluster in config["clusters"]:
        cluster["cluster"]["server"] = server
    destination.write_text(json.dumps(config))
    return destination
