"""Running the built images with podman, as the chart runs them: the image's own user (uid 10001), a
read-only root filesystem with an emptyDir-like ``/tmp``, no added capabilities. The host's network
stands in for the cluster's, so that containers reach the suite's loopback services.

podman needs Debian's ``runc`` here (crun refuses these hybrid cgroups) and explicit rlimits (the
default ones are refused).
"""

from __future__ import annotations

import os
import subprocess
import uuid
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.kube.kubelet_podman import RUNTIME_ARGS

RUNTIME = RUNTIME_ARGS  # runc and explicit rlimits, as the fake kubelet's container mode runs them
AS_THE_CHART_RUNS_IT = [
    "--network",
    "host",
    "--read-only",
    "--tmpfs",
    "/tmp:rw,size=256m",
    "--cap-drop",
    "all",
]


@dataclass(frozen=True)
class Images:
    api: str
    runner_veo: str


def built_images() -> Images:
    """The images that ``scripts/images.sh env`` built (``make test`` exports them); skips without."""
    api, runner_veo = os.environ.get("VIVID_IMAGE_API"), os.environ.get("VIVID_IMAGE_RUNNER_VEO")
    if not api or not runner_veo:
        pytest.skip('no images: run `eval "$(bash scripts/images.sh env)"` first (make test does)')
    return Images(api, runner_veo)


def _arguments(env: Mapping[str, str], volumes: Sequence[tuple[Path, str]]) -> list[str]:
    arguments = [*RUNTIME, *AS_THE_CHART_RUNS_IT]
    for name, value in env.items():
        arguments += ["--env", f"{name}={value}"]
    for host, container in volumes:
        arguments += ["--volume", f"{host}:{container}:rw"]
    return arguments


def run(
    image: str,
    *command: str,
    env: Mapping[str, str] | None = None,
    volumes: Sequence[tuple[Path, str]] = (),
    entrypoint: str | None = None,
    timeout: float = 180,
) -> subprocess.CompletedProcess[str]:
    """Run ``image`` to its end (``command`` replaces its CMD); its exit code and output."""
    arguments = _arguments(env or {}, volumes)
    if entrypoint is not None:
        arguments += ["--entrypoint", entrypoint]
    return subprocess.run(
        ["podman", "run", "--rm", *arguments, image, *command],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


@contextmanager
def detached(image: str, *command: str, env: Mapping[str, str] | None = None) -> Iterator[str]:
    """``image`` running in the background; its container name. Removed on leaving the block."""
    name = f"vividflow-test-{uuid.uuid4().hex[:12]}"
    subprocess.run(
        ["podman", "run", "--detach", "--name", name, *_arguments(env or {}, ()), image, *command],
        check=True,
        capture_output=True,
        timeout=60,
    )
    try:
        yield name
    finally:
        subprocess.run(["podman", "rm", "--force", "--time", "5", name], capture_output=True, timeout=60)


def logs(name: str) -> str:
    done = subprocess.run(["podman", "logs", name], capture_output=True, text=True, timeout=30)
    return done.stdout + done.stderr


def running(name: str) -> bool:
    done = subprocess.run(
        ["podman", "inspect", "--format", "{{.State.Running}}", name],
        capture_output=True,
        text=True,
        timeout=30,
    )
    return done.stdout.strip() == "true"


def image_user(image: str) -> str:
    done = subprocess.run(
        ["podman", "image", "inspect", "--format", "{{.Config.User}}", image],
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
    )
    return done.stdout.strip()
