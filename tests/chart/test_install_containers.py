"""End to end with the built images: `helm install` of charts/vividflow into a control plane of its own
(the suite's controllers plus the Deployment and ReplicaSet controllers), every Pod of the release a
real container of the built images (the fake kubelet's container mode, ``tests/kube/kubelet_podman.py``):
the migration hook Job, the API server and the operator from the ``api`` image, the runner Job of a
veo3.1 job from the ``runner-veo`` image, and `helm test`'s Pod.

The containers share the host's network, so they reach the suite's PostgreSQL, GCS emulator and fake
Vertex AI on loopback, and the API server listens on the host's port 8000 (the chart's container port).
"""

from __future__ import annotations

import io
import json
import secrets
import socket
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from kubernetes import client as k8s
from PIL import Image

from tests.chart.chart import CHART_DIR, NAMESPACE, RELEASE, helm_uninstall, run_helm, value_args
from tests.fixtures.fake_vertex import FakeVertex
from tests.fixtures.gcs_emulator import GcsEmulator
from tests.fixtures.kube import PLANE_CONTROLLERS, api_client_for, wait_for
from tests.images import podman
from tests.kube.controlplane import ControlPlane, find_bin_dir
from tests.kube.kubelet import ContainerRun, FakeKubelet
from tests.kube.kubelet_podman import PodmanRuntime
from tests.ports import free_port
from vividflow.jobspec import GROUP, PLURAL, VERSION, videojob_name

pytestmark = pytest.mark.timeout(900)

FULLNAME = f"{RELEASE}-vividflow"
API_PORT = 8000  # the chart's container port, on the host's network here
CONTROLLERS = (*PLANE_CONTROLLERS, "deployment-controller", "replicaset-controller")
COMPONENT = "app.kubernetes.io/component"


@dataclass
class Release:
    plane: ControlPlane
    kubelet: FakeKubelet
    admin: k8s.ApiClient
    bucket: str
    images: podman.Images
    install_seconds: float

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{API_PORT}"

    def runs(self, component: str) -> list[ContainerRun]:
        return [run for run in self.kubelet.runs if run.labels.get(COMPONENT) == component]


def _port_is_free(port: int) -> bool:
    with socket.socket() as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind(("0.0.0.0", port))
        except OSError:
            return False
    return True


def _secret(name: str, data: dict[str, str]) -> k8s.V1Secret:
    return k8s.V1Secret(metadata=k8s.V1ObjectMeta(name=name), string_data=data)


@pytest.fixture(scope="module")
def release(
    helm: Path,
    gcs_emulator: GcsEmulator,
    fake_vertex: FakeVertex,
    postgres_server_url: str,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Release]:
    images = podman.built_images()
    bin_dir = find_bin_dir()
    if bin_dir is None:
        pytest.fail("no kube binaries: run hack/kubebin/build.sh (make test does)", pytrace=False)
    if not _port_is_free(API_PORT):
        pytest.fail(f"port {API_PORT} is taken: the API container listens there on the host's network")
    from tests.fixtures.services import temporary_database

    work = tmp_path_factory.mktemp("chart-containers")
    with (
        temporary_database(postgres_server_url) as database_url,
        ControlPlane(bin_dir, controllers=CONTROLLERS) as plane,
        api_client_for(plane.kubeconfig_path) as admin,
    ):
        plane.ensure_namespace(NAMESPACE)
        core = k8s.CoreV1Api(admin)
        core.create_namespaced_secret(NAMESPACE, _secret("vividflow-database", {"url": database_url}))
        core.create_namespaced_secret(
            NAMESPACE, _secret("runner-env", {"VIVID_VERTEX_API_KEY": fake_vertex.api_key})
        )
        bucket = gcs_emulator.make_bucket(f"vivid-containers-{secrets.token_hex(3)}")
        api_repository, api_tag = images.api.rsplit(":", 1)
        runner_repository, runner_tag = images.runner_veo.rsplit(":", 1)
        sets: dict[str, Any] = {
            "images.api.repository": api_repository,
            "images.api.tag": api_tag,
            "images.api.pullPolicy": "Never",
            "images.runner.repository": runner_repository,
            "images.runner.tag": runner_tag,
            "gcs.bucket": bucket,
            "api.replicas": 1,  # one listener on the host's port
            "api.service.port": API_PORT,  # Services resolve to 127.0.0.1: port = target port
            "api.rateLimits": "{1000000/hour}",
            "api.env.STORAGE_EMULATOR_HOST": gcs_emulator.endpoint,
            "operator.livenessPort": free_port(),
            "operator.metricsPort": free_port(),
            "vertex.project": fake_vertex.project,
            "vertex.location": fake_vertex.location,
            "vertex.baseURL": fake_vertex.base_url,
            "runner.envSecret": "runner-env",
            "runner.env.STORAGE_EMULATOR_HOST": gcs_emulator.endpoint,
            "runner.env.VIVID_VEO_POLL_INITIAL_SECONDS": "0.05",
            "runner.env.VIVID_VEO_POLL_MAX_SECONDS": "0.05",
            "runner.backoffLimit": 0,
        }
        kubelet = FakeKubelet(
            plane.kubeconfig_path,
            namespace=NAMESPACE,
            container_runtime=PodmanRuntime(),
            work_dir=work / "kubelet",
            max_grace_seconds=10.0,
        )
        with kubelet:
            started = time.monotonic()
            # --wait: the migration hook Job completes, then both Deployments are available.
            run_helm(
                helm,
                "install",
                RELEASE,
                str(CHART_DIR),
                "--namespace",
                NAMESPACE,
                "--wait",
                "--timeout",
                "5m",
                *value_args(sets=sets),
                kubeconfig=plane.kubeconfig_path,
                timeout=360,
            )
            try:
                yield Release(plane, kubelet, admin, bucket, images, time.monotonic() - started)
            finally:
                helm_uninstall(helm, NAMESPACE, plane.kubeconfig_path)


def _api_ready(release: Release) -> bool:
    try:
        return httpx.get(f"{release.base_url}/readyz", timeout=5).status_code == 200
    except httpx.HTTPError:
        return False


def test_the_releases_pods_are_containers_of_the_built_images(release: Release) -> None:
    wait_for("the API container's /readyz", lambda: _api_ready(release), timeout=120)
    (migrate,) = release.runs("migrate")
    assert migrate.mode == "container" and migrate.exit_code == 0, migrate.output[-3000:]
    assert migrate.image == release.images.api
    for component in ("api", "operator"):
        (run,) = release.runs(component)
        assert run.mode == "container" and run.image == release.images.api, component
        assert run.started and not run.finished, run.output[-3000:]
        assert (run.container_id or "").startswith("podman://")
        # As the chart's security contexts say: uid/gid 10001, read-only root, no capabilities.
        inspected = subprocess.run(
            ["podman", "container", "inspect", (run.container_id or "").removeprefix("podman://")],
            capture_output=True,
            text=True,
            timeout=60,
            check=True,
        )
        (details,) = json.loads(inspected.stdout)
        assert details["Config"]["User"] == "10001:10001", component
        assert details["HostConfig"]["ReadonlyRootfs"] is True, component
        assert details["EffectiveCaps"] in (None, []), component
        mounts = {mount["Destination"] for mount in details["Mounts"]}
        assert {"/tmp", "/var/run/secrets/kubernetes.io/serviceaccount"} <= mounts, component
    assert release.kubelet.errors == []
    print(f"helm install --wait with real containers: {release.install_seconds:.1f} s")


def test_a_veo_job_through_the_api_completes_in_a_runner_veo_container(
    release: Release, fake_vertex: FakeVertex, gcs_emulator: GcsEmulator
) -> None:
    fake_vertex.set_scenario(polls=2)
    wait_for("the API container's /readyz", lambda: _api_ready(release), timeout=120)
    (api,) = release.runs("api")
    # `kubectl exec deploy/vf-vividflow-api -- vividflow keys create`, as the chart's NOTES say.
    assert api.container_id is not None
    container = api.container_id.removeprefix("podman://")
    created = subprocess.run(
        ["podman", "exec", container, "vividflow", "keys", "create", "--user", "e2e@example.com"],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    headers = {"X-API-Key": created.stdout.strip().splitlines()[-1]}
    image = io.BytesIO()
    Image.new("RGB", (64, 48), (30, 90, 160)).save(image, format="PNG")
    response = httpx.post(
        f"{release.base_url}/api/v1/generate",
        headers=headers,
        data={"prompt": "a paper boat on a pond", "model": "veo3.1"},
        files={"image": ("in.png", image.getvalue(), "image/png")},
        timeout=60,
    )
    assert response.status_code == 202, response.text
    job_id = response.json()["job_id"]

    def final() -> dict[str, Any] | None:
        body: dict[str, Any] = httpx.get(
            f"{release.base_url}/api/v1/status/{job_id}", headers=headers, timeout=10
        ).json()
        return body if body["status"] in ("completed", "failed", "cancelled") else None

    body = wait_for(f"job {job_id} to end", final, timeout=300, interval=0.5)
    runners = [run for run in release.kubelet.runs if run.labels.get(f"{GROUP}/job-id") == job_id]
    assert body["status"] == "completed", (body, [run.output[-3000:] for run in runners])
    (runner,) = runners
    assert runner.mode == "container" and runner.image == release.images.runner_veo
    assert runner.exit_code == 0 and runner.reason == "Completed"
    # Progress went onto the VideoJob with the runner's projected token: the chart's admission policy
    # let it through because the token carries this Pod's name.
    assert "could not report progress" not in runner.output, runner.output[-3000:]
    assert "progress reporting is off" not in runner.output
    videojob: Any = k8s.CustomObjectsApi(release.admin).get_namespaced_custom_object(
        GROUP, VERSION, NAMESPACE, PLURAL, videojob_name(job_id)
    )
    assert videojob["status"]["phase"] == "Completed"
    assert len(fake_vertex.submits) == 1
    assert json.loads(runner.message or "{}").get("ok") is True  # its termination message
    # Nothing the operator asked of the API server with its projected token was refused.
    (operator,) = release.runs("operator")
    refusals = [line for line in operator.output.splitlines() if "Forbidden" in line or " 403" in line]
    assert refusals == [], operator.output[-4000:]
    video = gcs_emulator.client().bucket(release.bucket).get_blob(f"videos/{job_id}.mp4")
    assert video is not None and (video.size or 0) > 0


def test_helm_test_passes(release: Release, helm: Path) -> None:
    wait_for("the API container's /readyz", lambda: _api_ready(release), timeout=120)
    out = run_helm(
        helm,
        "test",
        RELEASE,
        "-n",
        NAMESPACE,
        "--timeout",
        "3m",
        kubeconfig=release.plane.kubeconfig_path,
        timeout=240,
    )
    assert "Phase:          Succeeded" in out or "Succeeded" in out, out
    (tested,) = release.runs("test")
    assert tested.mode == "container" and tested.exit_code == 0, tested.output[-3000:]
    assert "/healthz 200" in tested.output
