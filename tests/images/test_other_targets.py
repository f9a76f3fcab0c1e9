"""The Dockerfile's targets that are not built here (``runner``, ``runner-cpu``, ``runner-dev``), each
built by ``scripts/images.sh check`` (``buildah bud --layers --target``) as far as this machine allows:
every step before the first one that needs the CUDA base image (a registry) or the PyTorch CPU wheel
index builds, and the build stops at that step, for that reason. Where both are reachable the targets
are built completely."""

from __future__ import annotations

import subprocess

import pytest

from tests.images import podman
from tests.kube.controlplane import REPO_ROOT

pytestmark = pytest.mark.timeout(1800)
SCRIPT = REPO_ROOT / "scripts" / "images.sh"
# Where each target must stop when its source is unreachable: the step that needs it.
STOPS = {
    "runner": ("FROM docker.io/nvidia/cuda:", "needs the CUDA base image"),
    "runner-cpu": (
        'RUN pip install --index-url "${TORCH_CPU_INDEX_URL}"',
        "needs the PyTorch CPU wheel index",
    ),
    "runner-dev": (
        'RUN pip install --index-url "${TORCH_CPU_INDEX_URL}"',
        "needs the PyTorch CPU wheel index",
    ),
}


def test_the_other_targets_build_up_to_what_this_machine_cannot_reach() -> None:
    podman.built_images()  # buildah and the base are set up (make test does it)
    done = subprocess.run(
        ["bash", str(SCRIPT), "check"], capture_output=True, text=True, timeout=1700, check=False
    )
    assert done.returncode == 0, done.stdout + done.stderr[-4000:]
    lines = {line.split(": ", 1)[0]: line for line in done.stdout.splitlines() if ": " in line}
    assert set(lines) == set(STOPS), done.stdout
    for target, line in lines.items():
        print(line)
        if line == f"{target}: built":
            continue
        step, needs = STOPS[target]
        assert f"{target}: stopped at " in line and step in line and needs in line, line
