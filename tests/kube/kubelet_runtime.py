"""The seam between the fake kubelet (``tests/kube/kubelet.py``) and a container runtime
(``tests/kube/kubelet_podman.py``): what the kubelet hands over to start one container, and what it
needs back to report and end it. The kubelet keeps scheduling, env, waiting reasons, status reports,
deadlines and deletion for both of its modes."""

from __future__ import annotations

import subprocess
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

__all__ = ["ContainerConfigError", "ContainerExit", "ContainerLaunch", "ContainerRuntime", "RuntimeContainer"]

Pod = dict[str, Any]


class ContainerConfigError(Exception):
    """The container's env or volumes refer to a missing Secret, ConfigMap or key, or to what the fake
    kubelet does not support (the container waits: CreateContainerConfigError)."""


@dataclass
class ContainerLaunch:
    """One container of a Pod as the kubelet hands it to a :class:`ContainerRuntime`."""

    pod: Pod
    container: dict[str, Any]
    command: list[str]
    """``command`` with ``$(VAR)`` expanded; empty: the image's entrypoint."""
    args: list[str]
    """``args`` with ``$(VAR)`` expanded; empty (and no ``command``): the image's CMD."""
    env: dict[str, str]
    """The container's environment as the Pod defines it (nothing of ``base_env``)."""
    pod_dir: Path
    log_path: Path
    termination_log_path: Path
    service_account_dir: Path | None
    """token, ca.crt and namespace of the Pod's projected ServiceAccount token (None: not mounted)."""
    object_data: Callable[[str, str, str, bool], dict[str, str] | None]
    """``(resource, namespace, name, optional)`` -> a Secret's or ConfigMap's data (None: optional and
    missing); raises :class:`ContainerConfigError` when it is missing."""
    api_get: Callable[[str], Any]
    """A GET on the API server with the kubelet's credentials (decoded JSON)."""
    prepared: list[str] = field(default_factory=list)
    """What :meth:`ContainerRuntime.prepare` leaves for :meth:`ContainerRuntime.start` (e.g. mounts)."""


@dataclass(frozen=True)
class ContainerExit:
    exit_code: int
    oom_killed: bool


class RuntimeContainer(Protocol):
    """A started container; :attr:`process` is attached to it and ends when it ends."""

    process: subprocess.Popen[bytes]
    container_id: str
    image_id: str

    def stop(self, grace_seconds: float) -> None:
        """Stop signal, then SIGKILL after ``grace_seconds`` (at once for 0)."""

    def exit(self) -> ContainerExit:
        """How it ended (after :attr:`process` ended)."""

    def remove(self) -> None:
        """Remove it whatever its state (idempotent)."""


class ContainerRuntime(Protocol):
    """Runs the containers whose image it :meth:`handles` (container mode); other Pods run as processes."""

    def handles(self, image: str) -> bool: ...

    def prepare(self, launch: ContainerLaunch) -> None:
        """Materialize volumes and the like; :class:`ContainerConfigError` keeps the container waiting."""

    def start(self, launch: ContainerLaunch) -> RuntimeContainer:
        """Create and start it; returns once it runs (or ran). OSError: it could not start (StartError)."""
