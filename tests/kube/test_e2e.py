"""Cluster mode end to end, every part real: the REST API (Kubernetes backend, as a ServiceAccount
allowed only its Role) creates a VideoJob; the operator (``vividflow operator`` in a process of its
own) makes a batch/v1 Job; the real Job controller makes a Pod; the fake kubelet runs its container
command, ``python -m vividflow.runner``, as a real process (the runner reports progress onto the
VideoJob as a ServiceAccount allowed only ``videojobs/status`` patch) against the GCS emulator and
the tiny Wan model or the fake Vertex AI; status flows back Pod -> Job -> VideoJob -> the API's DB.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient
from kubernetes import client as k8s
from kubernetes.client.exceptions import ApiException

from tests.api.conftest import image_bytes
from tests.fixtures.fake_vertex import FakeVertex, Scenario
from tests.fixtures.gcs_emulator import GcsEmulator
from tests.fixtures.kube import ServiceAccountFactory, wait_for
from tests.kube.cluster_api import (
    API_RULES,
    cluster_settings,
    new_user,
    ready,
    running_api,
    status_of,
    submit,
    videojob,
    wait_status,
)
from tests.kube.controlplane import ControlPlane
from tests.kube.kubelet import FakeKubelet
from tests.ports import free_port
from tests.served_app import StreamEvent, assert_life_in_order, follow, serving, status_events, stream
from tests.served_app import new_key as stream_key
from tests.served_app import submit as stream_submit
from vividflow.jobspec import GROUP, videojob_name
from vividflow.runner.video import probe_mp4
from vividflow.settings import Settings

RUNNER_RULES: list[dict[str, Any]] = [
    {"apiGroups": [GROUP], "resources": ["videojobs/status"], "verbs": ["patch"]}
]
BUCKET = "vivid-e2e"
VEO_POLL_SECONDS = 0.05


class Operator:
    """``vividflow operator`` as a process of its own, so a test can kill and restart it."""

    def __init__(self, env: dict[str, str], namespace: str, log_path: Path) -> None:
        self.env, self.namespace, self.log_path = env, namespace, log_path
        self.process: subprocess.Popen[bytes] | None = None
        self.metrics_port = free_port()

    def start(self) -> None:
        command = [
            *(sys.executable, "-m", "vividflow.cli", "operator", "--namespace", self.namespace),
            *("--metrics-port", str(self.metrics_port)),
        ]
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(
                command, env=self.env, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL
            )

    def stop(self, sig: signal.Signals = signal.SIGTERM) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        self.process.send_signal(sig)
        try:
            self.process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")[-4000:]


@dataclass
class Cluster:
    namespace: str
    admin: k8s.ApiClient
    kubelet: FakeKubelet
    operator: Operator
    settings: Settings
    """The API's settings (it reaches Kubernetes with ``KUBECONFIG``, set to its ServiceAccount)."""
    hold_pods: bool = False
    """While true the fake kubelet leaves new Pods unscheduled (the job stays queued)."""

    def job_exists(self, job_id: str) -> bool:
        try:
            k8s.BatchV1Api(self.admin).read_namespaced_job(videojob_name(job_id), self.namespace)
        except ApiException as error:
            if error.status == 404:
                return False
            raise
        return True


@pytest.fixture
def cluster(
    kube_plane: ControlPlane,
    kube_namespace: str,
    kube_api: k8s.ApiClient,
    kube_service_account: ServiceAccountFactory,
    make_fake_kubelet: Any,
    gcs_emulator: GcsEmulator,
    fake_vertex: FakeVertex,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> Iterator[Cluster]:
    namespace = kube_namespace
    api_access = kube_service_account(namespace, "vividflow-api", API_RULES)
    runner_access = kube_service_account(namespace, "vividflow-runner", RUNNER_RULES)
    monkeypatch.setenv("KUBECONFIG", str(api_access.kubeconfig))
    settings = cluster_settings(tmp_path, namespace, gcs_emulator.make_bucket(BUCKET))

    # What the runner image and its Secret would provide, passed the way the chart does (runner env).
    runner_env = {
        "STORAGE_EMULATOR_HOST": gcs_emulator.endpoint,
        "OMP_NUM_THREADS": "1",
        **fake_vertex.settings_env(poll_initial=VEO_POLL_SECONDS, poll_max=VEO_POLL_SECONDS),
    }
    environment = {k: v for k, v in os.environ.items() if not k.startswith("VIVID_")}
    operator_env = {
        **environment,
        "KUBECONFIG": str(kube_plane.kubeconfig_path),
        "VIVID_KUBE_NAMESPACE": namespace,
        "VIVID_RUNNER_ENV": json.dumps(runner_env),
        "VIVID_JOB_BACKOFF_LIMIT": "0",
        "VIVID_OPERATOR_RESYNC_SECONDS": "5",
    }
    operator = Operator(operator_env, namespace, tmp_path / "operator.log")
    holder: list[Cluster] = []
    kubelet = make_fake_kubelet(namespace=namespace, schedule=lambda pod: not holder[0].hold_pods)
    kubelet.base_env["KUBECONFIG"] = str(runner_access.kubeconfig)  # stands in for the token mount
    found = Cluster(namespace, kube_api, kubelet, operator, settings)
    holder.append(found)
    operator.start()
    try:
        yield found
    finally:
        operator.stop()
        print(f"--- operator log (tail) ---\n{operator.log()}")


@pytest.fixture
def api(cluster: Cluster) -> Iterator[TestClient]:
    with running_api(cluster.settings) as client:
        wait_for("the API's backend", lambda: ready(client))
        yield client


def download(gcs_emulator: GcsEmulator, job_id: str, destination: Path) -> Path:
    gcs_emulator.client().bucket(BUCKET).blob(f"videos/{job_id}.mp4").download_to_filename(str(destination))
    return destination


@pytest.mark.slow
def test_a_wan_job_completes_with_a_real_mp4(
    cluster: Cluster, api: TestClient, tiny_wan_model_dir: Path, gcs_emulator: GcsEmulator, tmp_path: Path
) -> None:
    cluster.kubelet.base_env["VIVID_WAN_MODEL"] = str(tiny_wan_model_dir)
    headers = new_user(api, "wanda@example.com")
    job_id = submit(api, headers, "wan2.1")
    body = wait_status(api, headers, job_id, timeout=180)

    assert body["status"] == "completed", (body, cluster.kubelet.runs[-1].output[-3000:])
    assert body["result_url"] == f"https://storage.googleapis.com/{BUCKET}/videos/{job_id}.mp4"
    metrics = body["metrics"]
    assert metrics["total_time"] >= metrics["generation_time"] > 0
    video = probe_mp4(download(gcs_emulator, job_id, tmp_path / "out.mp4"))
    assert (video.frames, video.width, video.height) == (9, 32, 32)

    (run,) = cluster.kubelet.runs
    assert run.exit_code == 0 and run.argv[:3] == [sys.executable, "-m", "vividflow.runner"]
    status = videojob(cluster.admin, cluster.namespace, job_id)["status"]
    assert status["phase"] == "Completed" and status["progress"] == 100  # the runner's last report
    history = api.get("/api/v1/history", headers=headers).json()["jobs"]
    assert [(item["job_id"], item["status"]) for item in history] == [(job_id, "completed")]


def test_a_failing_job_reports_the_runners_message(
    cluster: Cluster, api: TestClient, fake_vertex: FakeVertex
) -> None:
    fake_vertex.set_scenario(outcome="rai")
    headers = new_user(api, "felix@example.com")
    job_id = submit(api, headers, "veo3.1")
    body = wait_status(api, headers, job_id, timeout=60)

    assert body["status"] == "failed", body
    assert "safety" in body["error_message"].lower() and "Traceback" not in body["error_message"]
    status = videojob(cluster.admin, cluster.namespace, job_id)["status"]
    assert (body["error_message"], body["failure_reason"]) == (status["errorMessage"], status["reason"])
    assert cluster.kubelet.runs[0].exit_code not in (None, 0)


def test_prefer_wait_answers_the_final_status(
    cluster: Cluster, api: TestClient, fake_vertex: FakeVertex
) -> None:
    fake_vertex.set_scenario(polls=1)
    headers = {**new_user(api, "walt@example.com"), "Prefer": "wait=60"}
    response = api.post(
        "/api/v1/generate",
        headers=headers,
        data={"prompt": "p", "model": "veo3.1"},
        files={"image": ("in.png", image_bytes(), "image/png")},
    )
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["status"] == "completed" and body["result_url"].endswith(".mp4") and "metrics" in body


def test_cancelling_a_queued_job_removes_its_job(cluster: Cluster, api: TestClient) -> None:
    cluster.hold_pods = True
    headers = new_user(api, "cora@example.com")
    job_id = submit(api, headers, "veo3.1")
    wait_for("the runner Job", lambda: cluster.job_exists(job_id))
    assert status_of(api, headers, job_id)["status"] == "queued"

    assert api.post(f"/api/v1/cancel/{job_id}", headers=headers).status_code == 200
    wait_for("the Job to be deleted", lambda: not cluster.job_exists(job_id))
    wait_for(
        "the VideoJob to be Cancelled",
        lambda: (
            videojob(cluster.admin, cluster.namespace, job_id).get("status", {}).get("phase") == "Cancelled"
        ),
    )
    assert status_of(api, headers, job_id)["status"] == "cancelled"
    assert cluster.kubelet.runs == []
    usage = api.get("/api/v1/usage", headers=headers).json()
    assert usage["cancelled_jobs"] == 1 and usage["credits_remaining"] == usage["daily_limit"]


def test_a_job_past_its_deadline_fails_with_timeout(cluster: Cluster, fake_vertex: FakeVertex) -> None:
    fake_vertex.set_scenario(outcome="never")
    settings = cluster.settings.model_copy(update={"job_deadline_seconds": 3})
    with running_api(settings) as api:
        headers = new_user(api, "tim@example.com")
        job_id = submit(api, headers, "veo3.1")
        body = wait_status(api, headers, job_id, timeout=60)
    assert body["status"] == "failed" and body["failure_reason"] == "timeout", body
    (run,) = cluster.kubelet.runs
    assert run.killed_by == "deletion"  # the Job controller deleted the Pod at the deadline


def test_an_operator_restart_mid_job_still_completes(
    cluster: Cluster, api: TestClient, fake_vertex: FakeVertex
) -> None:
    fake_vertex.set_scenario(polls=40)  # ~2 s of polling
    headers = new_user(api, "olga@example.com")
    job_id = submit(api, headers, "veo3.1")
    wait_status(api, headers, job_id, {"processing"}, timeout=60)

    cluster.operator.stop()  # the job finishes while no operator runs
    (run,) = cluster.kubelet.runs
    assert run.wait(timeout=60).exit_code == 0
    assert status_of(api, headers, job_id)["status"] == "processing"
    cluster.operator.start()

    body = wait_status(api, headers, job_id, timeout=60)
    assert body["status"] == "completed" and body["result_url"].endswith(f"/videos/{job_id}.mp4")
    assert len(fake_vertex.submits) == 1 and len(cluster.kubelet.runs) == 1  # not run twice


def test_an_api_restart_mid_job_still_completes(
    cluster: Cluster, fake_vertex: FakeVertex, gcs_emulator: GcsEmulator, tmp_path: Path
) -> None:
    fake_vertex.set_scenario(polls=40)
    with running_api(cluster.settings) as api:
        headers = new_user(api, "ada@example.com")
        job_id = submit(api, headers, "veo3.1")
        wait_status(api, headers, job_id, {"processing"}, timeout=60)

    (run,) = cluster.kubelet.runs  # the API is down while the job ends
    assert run.wait(timeout=60).exit_code == 0
    wait_for(
        "the VideoJob to complete",
        lambda: (
            videojob(cluster.admin, cluster.namespace, job_id).get("status", {}).get("phase") == "Completed"
        ),
    )

    with running_api(cluster.settings) as api:
        body = wait_status(api, headers, job_id, timeout=15)
        assert body["status"] == "completed"
        assert probe_mp4(download(gcs_emulator, job_id, tmp_path / "veo.mp4")).frames > 0
        history = api.get("/api/v1/history", headers=headers).json()["jobs"]
        assert [(item["job_id"], item["status"], item["result_url"]) for item in history] == [
            (job_id, "completed", body["result_url"])
        ]
        usage = api.get("/api/v1/usage", headers=headers).json()
        assert (usage["total_jobs"], usage["completed_jobs"], usage["processing_jobs"]) == (1, 1, 0)
        assert usage["daily_limit"] - usage["credits_remaining"] == 1


def test_a_stream_follows_a_wan_job_through_the_cluster_and_resumes(
    cluster: Cluster, tiny_wan_model_dir: Path
) -> None:
    """Events come from the API's VideoJob mirror: the runner's progress on the VideoJob, the
    operator's phases; the stream is served by real uvicorn."""
    cluster.kubelet.base_env["VIVID_WAN_MODEL"] = str(tiny_wan_model_dir)
    with serving(cluster.settings) as (url, state):
        wait_for("the API's backend", state.backend.is_ready)
        headers = stream_key(state, "sven@example.com")
        job_id = stream_submit(url, headers, "wan2.1", width=32, height=32, length=9, steps=4, seed=7)
        seen: list[StreamEvent] = []
        with stream(url, headers, job_id, **{"Last-Event-ID": "0"}) as response:
            for event in status_events(response):
                seen.append(event)
                if event.data and event.data["status"] == "processing":
                    break  # drop the connection mid-job
        events = seen + follow(url, headers, job_id, last_event_id=seen[-1].id)
        assert_life_in_order(events)
        final = events[-1].data or {}
        assert final["status"] == "completed", (final, cluster.kubelet.runs[-1].output[-2000:])
        assert final["result_url"] == f"https://storage.googleapis.com/{BUCKET}/videos/{job_id}.mp4"
        assert final == httpx.get(f"{url}/api/v1/status/{job_id}", headers=headers).json()


def test_a_running_job_is_cancelled_through_the_cluster(
    cluster: Cluster, api: TestClient, fake_vertex: FakeVertex, gcs_emulator: GcsEmulator
) -> None:
    held = threading.Event()
    fake_vertex.set_scenario(Scenario(until=held))
    try:
        headers = new_user(api, "cass@example.com")
        job_id = submit(api, headers, "veo3.1")
        wait_status(api, headers, job_id, {"processing"}, timeout=60)
        wait_for("the runner to poll Veo", lambda: len(fake_vertex.polls) >= 2)
        assert api.post(f"/api/v1/cancel/{job_id}", headers=headers).status_code == 409

        response = api.post(f"/api/v1/cancel/{job_id}?running=true", headers=headers)
        assert response.status_code == 200, response.text
        assert status_of(api, headers, job_id)["status"] == "cancelled"
        usage = api.get("/api/v1/usage", headers=headers).json()
        assert usage["credits_remaining"] == usage["daily_limit"] and usage["cancelled_jobs"] == 1

        # The operator deletes the Job: the Pod gets SIGTERM and the runner stops at its next poll.
        (run,) = cluster.kubelet.runs
        assert run.wait(timeout=60).killed_by == "deletion"
        wait_for("the Job to be deleted", lambda: not cluster.job_exists(job_id))
        phase = videojob(cluster.admin, cluster.namespace, job_id)["status"]["phase"]
        assert phase == "Cancelled"
        held.set()  # Veo would finish now; nothing may be written for the cancelled job
        assert not gcs_emulator.client().bucket(BUCKET).blob(f"videos/{job_id}.mp4").exists()
        assert status_of(api, headers, job_id)["status"] == "cancelled"
    finally:
        held.set()
