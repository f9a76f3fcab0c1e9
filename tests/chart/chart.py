"""Helpers of the chart tests: render charts/vividflow with the real helm, validate, find objects."""

from __future__ import annotations

import subprocess
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import yaml

from tests.kube.controlplane import REPO_ROOT

CHART_DIR = REPO_ROOT / "charts" / "vividflow"
CI_VALUES_DIR = CHART_DIR / "ci"
GPU_KUEUE_VALUES = CI_VALUES_DIR / "gpu-kueue-values.yaml"
KIND_VALUES = CI_VALUES_DIR / "kind-values.yaml"
#: The Kubernetes version the rendered manifests are validated against (the test control plane's minor).
KUBE_VERSION = "1.35.0"
RELEASE = "vf"
NAMESPACE = "vividflow"

Obj = dict[str, Any]


class HelmError(AssertionError):
    """helm exited non-zero; the message has its stderr."""


def run_helm(helm: Path, *args: str, kubeconfig: Path | None = None, timeout: float = 120.0) -> str:
    argv = [str(helm), *args]
    if kubeconfig is not None:
        argv += ["--kubeconfig", str(kubeconfig)]
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, check=False)
    if proc.returncode != 0:
        raise HelmError(
            f"{' '.join(args[:2])} failed ({proc.returncode}):\n{proc.stderr}\n{proc.stdout[-2000:]}"
        )
    return proc.stdout


def helm_uninstall(helm: Path, namespace: str, kubeconfig: Path, timeout: float = 120.0) -> None:
    """``helm uninstall`` of the tests' release, best effort (teardown: the namespace goes next anyway)."""
    argv = [str(helm), "uninstall", RELEASE, "-n", namespace, "--kubeconfig", str(kubeconfig)]
    subprocess.run(argv, capture_output=True, timeout=timeout, check=False)


def value_args(values_files: Sequence[Path] = (), sets: Mapping[str, Any] = {}) -> list[str]:
    """``--values`` for each file; ``--set-string`` for str values, ``--set`` (typed) for the others."""
    args: list[str] = []
    for path in values_files:
        args += ["--values", str(path)]
    for key, value in sets.items():
        if isinstance(value, str):
            args += ["--set-string", f"{key}={value}"]
        else:
            args += ["--set", f"{key}={str(value).lower() if isinstance(value, bool) else value}"]
    return args


def render(
    helm: Path,
    values_files: Sequence[Path] = (),
    sets: Mapping[str, Any] = {},
    *,
    namespace: str = NAMESPACE,
    include_crds: bool = False,
) -> list[Obj]:
    """``helm template`` (hooks and tests included) parsed into objects."""
    args = ["template", RELEASE, str(CHART_DIR), "--namespace", namespace, "--kube-version", KUBE_VERSION]
    if include_crds:
        args.append("--include-crds")
    out = run_helm(helm, *args, *value_args(values_files, sets))
    return [doc for doc in yaml.safe_load_all(out) if doc]


def find(objects: Iterable[Obj], kind: str, name: str | None = None) -> Obj:
    matches = [o for o in objects if o["kind"] == kind and (name is None or o["metadata"]["name"] == name)]
    assert len(matches) == 1, (
        f"expected one {kind} {name or ''}, found {[o['metadata']['name'] for o in matches]}"
    )
    return matches[0]


def kinds(objects: Iterable[Obj]) -> list[str]:
    return sorted(f"{o['kind']}/{o['metadata']['name']}" for o in objects)


def containers(pod_spec: Obj) -> list[Obj]:
    return [*pod_spec.get("initContainers", []), *pod_spec["containers"]]


def pod_spec(obj: Obj) -> Obj | None:
    """The Pod spec inside a Deployment, Job or Pod (None for other kinds)."""
    if obj["kind"] == "Pod":
        spec: Obj = obj["spec"]
        return spec
    if obj["kind"] in ("Deployment", "StatefulSet", "Job", "DaemonSet"):
        template: Obj = obj["spec"]["template"]["spec"]
        return template
    return None


def env_of(container: Obj) -> dict[str, Obj]:
    return {item["name"]: item for item in container.get("env", [])}


def load_yaml(path: Path) -> Any:
    return yaml.safe_load(path.read_text())
