"""A small synchronous Kubernetes client for plain-dict objects, on the ``kubernetes`` package's
``ApiClient`` (its auth, TLS and token refresh) without its model (de)serialisation."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any
from urllib.parse import quote

from kubernetes import client as k8s
from kubernetes import config as k8s_config

from vividflow.operator.metrics import count_api_error

Body = dict[str, Any]
"""A Kubernetes object as the API server answers it (the caller may change it)."""


class KubeError(Exception):
    """An API request answered with an error status."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(f"{status}: {message}")
        self.status = status


def load_configuration(kubeconfig: Path | None = None) -> k8s.Configuration:
    """In-cluster credentials when running in a Pod, else ``kubeconfig`` (default ``$KUBECONFIG``)."""
    configuration = k8s.Configuration()
    if kubeconfig is None and os.environ.get("KUBERNETES_SERVICE_HOST"):
        k8s_config.load_incluster_config(client_configuration=configuration)  # type: ignore[no-untyped-call]
        return configuration
    path = kubeconfig or Path(os.environ.get("KUBECONFIG", "~/.kube/config")).expanduser()
    k8s_config.load_kube_config(  # type: ignore[no-untyped-call]
        config_file=str(path), client_configuration=configuration
    )
    return configuration


class Kube:
    """Dict-in, dict-out API calls; thread-safe (one connection pool shared by all threads)."""

    def __init__(
        self, configuration: k8s.Configuration, *, timeout: float = 30.0, pool_size: int = 16
    ) -> None:
        configuration.connection_pool_maxsize = pool_size
        self.configuration = configuration
        self._api = k8s.ApiClient(configuration)
        self._timeout = timeout

    def close(self) -> None:
        self._api.close()  # type: ignore[no-untyped-call]

    def request(
        self,
        method: str,
        path: str,
        *,
        body: Any = None,
        query: dict[str, str] | None = None,
        content_type: str = "application/json",
    ) -> Body:
        headers = {"Accept": "application/json", "Content-Type": content_type}
        method, url, headers, body, _ = self._api.param_serialize(
            method,
            path,
            query_params=list((query or {}).items()),
            header_params=headers,
            body=body,
            auth_settings=["BearerToken"],
        )
        try:
            response = self._api.call_api(method, url, headers, body, _request_timeout=self._timeout)
        except Exception:
            count_api_error(method, "connection")
            raise
        data: bytes = response.read()  # type: ignore[no-untyped-call]
        if response.status >= 400:
            if response.status != 404 or method != "GET":  # a GET of something gone is an answer
                count_api_error(method, response.status)
            try:
                message = json.loads(data).get("message", "")
            except ValueError:
                message = data.decode(errors="replace")[:500]
            raise KubeError(response.status, message)
        result: Body = json.loads(data) if data else {}
        return result

    def get(self, path: str) -> Body | None:
        """The object at ``path``, or None if there is none."""
        try:
            return self.request("GET", path)
        except KubeError as error:
            if error.status == 404:
                return None
            raise

    def delete(self, path: str, propagation: str = "Background") -> bool:
        """Delete the object at ``path`` (and, by default, its dependents); False if it was gone."""
        try:
            self.request("DELETE", path, body={"propagationPolicy": propagation})
        except KubeError as error:
            if error.status == 404:
                return False
            raise
        return True


def job_path(namespace: str, name: str = "") -> str:
    path = f"/apis/batch/v1/namespaces/{quote(namespace)}/jobs"
    return path + (f"/{quote(name)}" if name else "")


def pods_path(namespace: str) -> str:
    return f"/api/v1/namespaces/{quote(namespace)}/pods"


def events_path(namespace: str) -> str:
    return f"/api/v1/namespaces/{quote(namespace)}/events"
