"""Where the Kubernetes API is and how to authenticate: the ``kubernetes`` package's loaders (tokens,
client certificates, exec plugins; in-cluster tokens re-read as they rotate)."""

from __future__ import annotations

import os
from pathlib import Path

from kubernetes import client as k8s
from kubernetes import config as k8s_config

from vividflow.kube.errors import NoCredentials


def load_configuration(kubeconfig: Path | None = None) -> k8s.Configuration:
    """``kubeconfig`` when given; else in-cluster credentials (in a Pod); else ``$KUBECONFIG`` or
    ``~/.kube/config``. Raises :class:`NoCredentials` when there are none."""
    configuration = k8s.Configuration()
    if kubeconfig is None:
        try:
            k8s_config.load_incluster_config(client_configuration=configuration)  # type: ignore[no-untyped-call]
            return configuration
        except k8s_config.ConfigException:
            pass  # not in a Pod (or its token is not mounted): a kubeconfig then
    path = kubeconfig or Path(os.environ.get("KUBECONFIG") or "~/.kube/config").expanduser()
    try:
        k8s_config.load_kube_config(  # type: ignore[no-untyped-call]
            config_file=str(path), client_configuration=configuration
        )
    except (k8s_config.ConfigException, OSError) as error:
        raise NoCredentials(f"no Kubernetes credentials: not in a cluster, and {path}: {error}") from error
    return configuration
