"""What an operator of the cluster sees: the real kubectl (and helm) against the test control plane."""

from __future__ import annotations

import re
import subprocess
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from kubernetes import client as k8s

from tests.kube.controlplane import ControlPlane
from vividflow.jobspec import (
    GROUP,
    PLURAL,
    VERSION,
    FailureReason,
    JobParameters,
    JobSpec,
    ModelName,
    VideoJobStatus,
    videojob_manifest,
    videojob_name,
)


def job_spec(model: ModelName) -> JobSpec:
    job_id = str(uuid.uuid4())
    return JobSpec(
        job_id=job_id,
        owner="user-1",
        model=model,
        prompt="a cat surfing a wave",
        input_uri="gs://inputs/cat.png",
        parameters=JobParameters.for_model(model, {}),
        output_uri=f"gs://results/videos/{job_id}.mp4",
        created_at=datetime.now(UTC),
    )


def create_videojob(api: k8s.ApiClient, namespace: str, spec: JobSpec, status: VideoJobStatus) -> str:
    custom = k8s.CustomObjectsApi(api)
    custom.create_namespaced_custom_object(
        GROUP, VERSION, namespace, PLURAL, videojob_manifest(spec, namespace)
    )
    name = videojob_name(spec.job_id)
    body = {"status": status.model_dump(mode="json", by_alias=True, exclude_none=True)}
    custom.patch_namespaced_custom_object_status(GROUP, VERSION, namespace, PLURAL, name, body)
    return name


def run_tool(tool: Path, *args: str, kubeconfig: Path, tmp_path: Path) -> str:
    env = {"PATH": "/usr/bin:/bin", "HOME": str(tmp_path), "KUBECONFIG": str(kubeconfig)}
    proc = subprocess.run(
        [str(tool), *args], env=env, capture_output=True, text=True, timeout=60, check=False
    )
    assert proc.returncode == 0, f"{tool.name} {' '.join(args)} -> {proc.returncode}\n{proc.stderr}"
    assert "warning" not in proc.stderr.lower(), proc.stderr
    return proc.stdout


def table(output: str) -> list[dict[str, str]]:
    """kubectl's table output as one dict per row, keyed by column header."""
    lines = [line for line in output.splitlines() if line.strip()]
    header = lines[0]
    starts = [match.start() for match in re.finditer(r"\S+", header)]
    names = header.split()
    rows = []
    for line in lines[1:]:
        cells = [line[start:end].strip() for start, end in zip(starts, [*starts[1:], None], strict=True)]
        rows.append(dict(zip(names, cells, strict=True)))
    return rows


def without_age(rows: list[dict[str, str]]) -> list[dict[str, str]]:
    return [{k: v for k, v in row.items() if k != "AGE"} for row in rows]


def test_kubectl_shows_videojob_columns(
    kube_plane: ControlPlane, kube_api: k8s.ApiClient, kube_namespace: str, kubectl: Path, tmp_path: Path
) -> None:
    processing = create_videojob(
        kube_api,
        kube_namespace,
        job_spec(ModelName.WAN21),
        VideoJobStatus(phase="Processing", progress=40, duration="1m5s"),
    )
    failed_spec = job_spec(ModelName.VEO31)
    failed = create_videojob(
        kube_api,
        kube_namespace,
        failed_spec,
        VideoJobStatus(
            phase="Failed",
            progress=0,
            duration="12s",
            reason=FailureReason.OUT_OF_MEMORY,
            error_message="The GPU ran out of memory.",
            job_name=videojob_name(failed_spec.job_id),
        ),
    )

    def get(*args: str) -> str:
        return run_tool(
            kubectl,
            "get",
            *args,
            "-n",
            kube_namespace,
            kubeconfig=kube_plane.kubeconfig_path,
            tmp_path=tmp_path,
        )

    output = get("videojobs")
    assert output.splitlines()[0].split() == ["NAME", "STATUS", "MODEL", "PROGRESS", "DURATION", "AGE"]
    rows: dict[str, Any] = {row["NAME"]: row for row in table(output)}
    assert set(rows) == {processing, failed}
    assert {k: v for k, v in rows[processing].items() if k != "AGE"} == {
        "NAME": processing,
        "STATUS": "Processing",
        "MODEL": "wan2.1",
        "PROGRESS": "40",
        "DURATION": "1m5s",
    }
    assert re.fullmatch(r"\d+s", rows[processing]["AGE"]), rows[processing]["AGE"]
    assert (rows[failed]["STATUS"], rows[failed]["MODEL"], rows[failed]["DURATION"]) == (
        "Failed",
        "veo3.1",
        "12s",
    )

    # The short name, and one object by name.
    assert without_age(table(get("vj"))) == without_age(table(output))
    (single,) = table(get("vj", processing))
    assert single["STATUS"] == "Processing" and single["PROGRESS"] == "40"

    wide = get("vj", "-o", "wide")
    assert wide.splitlines()[0].split() == [
        "NAME",
        "STATUS",
        "MODEL",
        "PROGRESS",
        "DURATION",
        "AGE",
        "REASON",
        "JOB",
    ]
    wide_rows = {row["NAME"]: row for row in table(wide)}
    # A CRD column whose field is absent prints empty (not <none> as built-in types do).
    assert (wide_rows[processing]["REASON"], wide_rows[processing]["JOB"]) == ("", "")
    assert (wide_rows[failed]["REASON"], wide_rows[failed]["JOB"]) == ("out_of_memory", failed)


def test_helm_reaches_the_cluster(
    kube_plane: ControlPlane, kube_namespace: str, helm: Path, tmp_path: Path
) -> None:
    version = run_tool(helm, "version", "--short", kubeconfig=kube_plane.kubeconfig_path, tmp_path=tmp_path)
    assert version.startswith("v4.1.")
    # helm 4 authenticates with the admin client certificate and lists (no) releases in the namespace.
    listing = run_tool(
        helm,
        "list",
        "-n",
        kube_namespace,
        "-o",
        "json",
        kubeconfig=kube_plane.kubeconfig_path,
        tmp_path=tmp_path,
    )
    assert listing.strip() == "[]"
