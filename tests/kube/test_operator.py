"""The operator against a real API server, the real Job controller and garbage collector, and the fake
kubelet (tests/kube/kubelet.py), run by kopf's own KopfRunner.

The runner is a small ``python -c`` script (``FAKE_RUNNER``) steered by words in the job's prompt, so
each test takes seconds; one test runs the real runner CLI. Each operator gets a fresh registry
(``build_registry``) and logs in with the kubeconfig given to it, never the process's defaults.
"""

from __future__ import annotations

import json
import time
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import kopf
import pytest
from kopf.testing import KopfRunner
from kubernetes import client as k8s
from kubernetes.client.exceptions import ApiException

from tests.fixtures.kube import ServiceAccountFactory, api_client_for, install_videojob_crd, wait_for
from tests.kube.controlplane import REPO_ROOT, ControlPlane
from tests.kube.kubelet import FakeKubelet
from vividflow.jobspec import (
    ANNOTATION_OUTCOME,
    GROUP,
    LABEL_JOB_ID,
    LABEL_MODEL,
    LABEL_VIDEOJOB,
    PLURAL,
    VERSION,
    JobParameters,
    JobSpec,
    ModelName,
    videojob_manifest,
    videojob_name,
)
from vividflow.kube.client import Kube
from vividflow.kube.config import load_configuration
from vividflow.operator.controller import Controller
from vividflow.operator.handlers import build_registry
from vividflow.operator.jobs import KUEUE_QUEUE_LABEL
from vividflow.operator.main import create_controller
from vividflow.runner.progress import ProgressReporter
from vividflow.settings import Settings

FAKE_RUNNER = r"""
import json, os, pathlib, signal, sys, time
spec = json.loads(sys.argv[sys.argv.index("--spec-json") + 1])
log = pathlib.Path(os.environ["VIVID_TERMINATION_LOG"])
def finish(code, **result):
    log.write_text(json.dumps(result))
    sys.exit(code)
for word in spec["prompt"].split():
    name, _, value = word.partition("=")
    if name == "progress":
        from vividflow.runner.progress import progress_reporter
        from vividflow.settings import Settings
        reporter = progress_reporter(Settings())
        for percent in value.split(","):
            reporter(int(percent))
        reporter.close()
    elif name == "gate":
        gate = pathlib.Path(os.environ["GATE_DIR"]) / os.environ["VIVID_VIDEOJOB_NAME"]
        while not gate.exists():
            time.sleep(0.05)
    elif name == "sleep":
        time.sleep(float(value))
    elif name == "oom":
        os.kill(os.getpid(), signal.SIGKILL)
    elif name == "fail":
        finish(1, ok=False, reason="upstream_error", errorMessage="Veo refused the prompt.")
    elif name == "crash":
        print("Traceback (most recent call last): RuntimeError: boom", file=sys.stderr)
        sys.exit(5)
    elif name == "noload":
        finish(3, ok=False, reason="model_load_failed", errorMessage="The Wan weights are missing.")
finish(0, ok=True, resultURL="https://results.example/" + spec["jobID"] + ".mp4",
       outputURI=spec["outputURI"],
       metrics={"spinUpTime": 0.1, "generationTime": 0.2, "totalTime": 0.5, "uploadTime": 0.05})
"""
RUNNER_IMAGE = "vividflow-runner:test"
TINY_WAN = {"width": 32, "height": 32, "length": 5, "steps": 1}
Json = dict[str, Any]


# ---------------------------------------------------------------------------------------------------
# Helpers
# ---------------------------------------------------------------------------------------------------


def operator_settings(namespace: str, gate_dir: Path, **overrides: Any) -> Settings:
    values: dict[str, Any] = {
        "kube_namespace": namespace,
        "runner_image": RUNNER_IMAGE,
        "runner_command": ["python", "-c", FAKE_RUNNER],
        "runner_service_account": None,
        "runner_env": {"GATE_DIR": str(gate_dir)},
        "job_backoff_limit": 0,
        "job_ttl_seconds": 600,
        "operator_resync_seconds": 5.0,
    }
    values.update(overrides)
    return Settings(**values)


@contextmanager
def running_operator(
    kubeconfig: Path,
    namespace: str,
    settings: Settings,
    *,
    image_pull_grace: float | None = 60.0,
    liveness: str | None = None,
    peering: tuple[str, int] | None = None,
) -> Iterator[Controller]:
    """kopf running our handlers for ``namespace`` in a thread (KopfRunner), with a fresh registry;
    standalone, or with ``peering`` (name, priority)."""
    controller = create_controller(
        settings, kubeconfig=kubeconfig, workers=4, image_pull_grace=image_pull_grace
    )
    args = ["run", "--namespace", namespace]
    if peering is None:
        args.append("--standalone")
    else:
        args += ["--peering", peering[0], "--priority", str(peering[1])]
    if liveness:
        args += ["--liveness", liveness]
    with KopfRunner(
        args, registry=build_registry(controller), settings=kopf.OperatorSettings(), timeout=30
    ) as runner:
        wait_for("the operator to start", lambda: controller.queue.alive, timeout=30)
        yield controller
    assert runner.exit_code == 0, runner.output
    assert runner.exception is None


def make_spec(model: str = "veo3.1", prompt: str = "ok", *, deadline: int = 300) -> JobSpec:
    job_id = str(uuid.uuid4())
    name = ModelName(model)
    return JobSpec(
        job_id=job_id,
        owner="user-1",
        model=name,
        prompt=prompt,
        input_uri="gs://vivid-in/inputs/cat.png",
        parameters=JobParameters.for_model(name, TINY_WAN if name is ModelName.WAN21 else {}),
        output_uri=f"gs://vivid-out/videos/{job_id}.mp4",
        deadline_seconds=deadline,
        created_at=datetime.now(UTC),
    )


def create_videojob(api: k8s.ApiClient, namespace: str, spec: JobSpec) -> str:
    custom = k8s.CustomObjectsApi(api)
    custom.create_namespaced_custom_object(
        GROUP, VERSION, namespace, PLURAL, videojob_manifest(spec, namespace)
    )
    return videojob_name(spec.job_id)


def get_videojob(api: k8s.ApiClient, namespace: str, name: str) -> Json:
    body = k8s.CustomObjectsApi(api).get_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, name)
    assert isinstance(body, dict)
    return body


def wait_phase(api: k8s.ApiClient, namespace: str, name: str, phase: str, timeout: float = 30.0) -> Json:
    def reached() -> Json | None:
        body = get_videojob(api, namespace, name)
        return body if (body.get("status") or {}).get("phase") == phase else None

    try:
        return wait_for(f"VideoJob {name} {phase}", reached, timeout)
    except AssertionError as timeout_error:
        status = get_videojob(api, namespace, name).get("status")
        raise AssertionError(f"VideoJob {name} not {phase}: {status}") from timeout_error


def get_job(plane: ControlPlane, namespace: str, name: str) -> Json | None:
    status, body = plane.request("GET", f"/apis/batch/v1/namespaces/{namespace}/jobs/{name}", check=False)
    if status == 404:
        return None
    assert status == 200, body
    job: Json = body
    return job


def pods_of(plane: ControlPlane, namespace: str, name: str) -> list[Json]:
    _, body = plane.request(
        "GET", f"/api/v1/namespaces/{namespace}/pods?labelSelector={LABEL_VIDEOJOB}%3D{name}"
    )
    pods: list[Json] = body["items"]
    return pods


def jobs_in(plane: ControlPlane, namespace: str) -> list[Json]:
    _, body = plane.request(
        "GET", f"/apis/batch/v1/namespaces/{namespace}/jobs?labelSelector={LABEL_VIDEOJOB}"
    )
    jobs: list[Json] = body["items"]
    return jobs


def events_of(api: k8s.ApiClient, namespace: str, name: str) -> list[tuple[str, str, str]]:
    """The Events on VideoJob ``name``, oldest first."""
    selector = f"involvedObject.name={name},involvedObject.kind=VideoJob"
    events = k8s.CoreV1Api(api).list_namespaced_event(namespace, field_selector=selector).items
    ordered = sorted(events, key=lambda e: e.event_time or datetime.min.replace(tzinfo=UTC))
    return [(e.type or "", e.reason or "", e.message or "") for e in ordered]


def wait_event(api: k8s.ApiClient, namespace: str, name: str, reason: str) -> list[tuple[str, str, str]]:
    """The VideoJob's Events once one with ``reason`` is among them (an Event follows its status write)."""
    return wait_for(
        f"a {reason} event on {name}",
        lambda: (
            (events := events_of(api, namespace, name)) and any(r == reason for _, r, _ in events) and events
        ),
    )


def condition(status: Json, type_: str) -> Json:
    return next(c for c in status["conditions"] if c["type"] == type_)


def open_gate(gate_dir: Path, name: str) -> None:
    (gate_dir / name).touch()


# ---------------------------------------------------------------------------------------------------
# Fixtures
# ---------------------------------------------------------------------------------------------------


@pytest.fixture
def gate_dir(tmp_path: Path) -> Path:
    path = tmp_path / "gates"
    path.mkdir()
    return path


@pytest.fixture
def settings(kube_namespace: str, gate_dir: Path) -> Settings:
    return operator_settings(kube_namespace, gate_dir)


@pytest.fixture
def operator(kube_kubeconfig: Path, kube_namespace: str, settings: Settings) -> Iterator[Controller]:
    with running_operator(kube_kubeconfig, kube_namespace, settings) as controller:
        yield controller


# ---------------------------------------------------------------------------------------------------
# Tests
# ---------------------------------------------------------------------------------------------------


def test_creates_one_owned_job_per_videojob_and_survives_restarts(
    kube_plane: ControlPlane,
    kube_api: k8s.ApiClient,
    kube_kubeconfig: Path,
    kube_namespace: str,
    gate_dir: Path,
) -> None:
    settings = operator_settings(
        kube_namespace,
        gate_dir,
        runner_service_account="vividflow-runner",
        runner_env_secret="vivid-runner-env",
        gcs_credentials_secret="vivid-gcs-key",
        gpu_node_selector={"cloud.google.com/gke-accelerator": "nvidia-l4"},
        gpu_tolerations=[{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}],
        gpu_priority_class="gpu-batch",
        model_cache_pvc="wan-cache",
        job_backoff_limit=2,
    )
    wan, veo = make_spec("wan2.1", deadline=900), make_spec("veo3.1", deadline=120)
    liveness = "http://127.0.0.1:18573/healthz"
    with running_operator(kube_kubeconfig, kube_namespace, settings, liveness=liveness):
        wan_name = create_videojob(kube_api, kube_namespace, wan)
        veo_name = create_videojob(kube_api, kube_namespace, veo)
        wan_job = wait_for("the wan2.1 Job", lambda: get_job(kube_plane, kube_namespace, wan_name))
        veo_job = wait_for("the veo3.1 Job", lambda: get_job(kube_plane, kube_namespace, veo_name))
        queued = wait_phase(kube_api, kube_namespace, wan_name, "Queued")
        with urllib.request.urlopen(liveness, timeout=5) as response:
            health = json.loads(response.read())
    assert health["reconciler"]["errors"] == 0 and health["reconciler"]["videojobs"] == 2

    videojob = get_videojob(kube_api, kube_namespace, wan_name)
    for job, vj, spec in ((wan_job, videojob, wan), (veo_job, None, veo)):
        labels = {
            LABEL_VIDEOJOB: videojob_name(spec.job_id),
            LABEL_JOB_ID: spec.job_id,
            LABEL_MODEL: spec.model.value,
        }
        assert labels.items() <= job["metadata"]["labels"].items()
        assert labels.items() <= job["spec"]["template"]["metadata"]["labels"].items()
        (owner,) = job["metadata"]["ownerReferences"]
        assert (
            owner["kind"] == "VideoJob"
            and owner["name"] == videojob_name(spec.job_id)
            and owner["controller"]
        )
        if vj is not None:
            assert owner["uid"] == vj["metadata"]["uid"]
        assert job["spec"]["activeDeadlineSeconds"] == spec.deadline_seconds
        assert job["spec"]["backoffLimit"] == 2 and job["spec"]["ttlSecondsAfterFinished"] == 600
        rules = job["spec"]["podFailurePolicy"]["rules"]
        assert rules[0]["action"] == "Ignore" and rules[0]["onPodConditions"][0]["type"] == "DisruptionTarget"
        assert rules[1]["action"] == "FailJob" and rules[1]["onExitCodes"]["values"] == [2, 3, 4, 137]
        pod = job["spec"]["template"]["spec"]
        assert pod["restartPolicy"] == "Never" and pod["serviceAccountName"] == "vividflow-runner"
        (container,) = pod["containers"]
        assert container["image"] == RUNNER_IMAGE
        assert container["terminationMessagePolicy"] == "FallbackToLogsOnError"
        assert container["command"][:3] == ["python", "-c", FAKE_RUNNER]
        assert container["command"][3] == "--spec-json"
        assert JobSpec.model_validate_json(container["command"][4]) == spec
        env = {e["name"]: e.get("value") for e in container["env"]}
        assert env["VIVID_VIDEOJOB_NAME"] == videojob_name(spec.job_id)
        assert env["VIVID_VIDEOJOB_NAMESPACE"] == kube_namespace
        assert env["GATE_DIR"] == str(gate_dir)
        assert env["GOOGLE_APPLICATION_CREDENTIALS"].endswith("/key.json")
        assert container["envFrom"] == [{"secretRef": {"name": "vivid-runner-env"}}]
    wan_pod, veo_pod = wan_job["spec"]["template"]["spec"], veo_job["spec"]["template"]["spec"]
    assert wan_pod["containers"][0]["resources"]["limits"] == {"nvidia.com/gpu": "1"}
    assert wan_pod["nodeSelector"] == {"cloud.google.com/gke-accelerator": "nvidia-l4"}
    assert wan_pod["tolerations"][0]["key"] == "nvidia.com/gpu"
    assert wan_pod["priorityClassName"] == "gpu-batch"
    assert {"name": "model-cache", "persistentVolumeClaim": {"claimName": "wan-cache"}} in wan_pod["volumes"]
    assert {e["name"]: e.get("value") for e in wan_pod["containers"][0]["env"]}["HF_HOME"] == "/models"
    assert "resources" not in veo_pod["containers"][0] or not veo_pod["containers"][0]["resources"]
    assert "nodeSelector" not in veo_pod and "priorityClassName" not in veo_pod
    assert [v["name"] for v in veo_pod["volumes"]] == ["gcs-credentials"]

    status = queued["status"]
    assert status["jobName"] == wan_name and status["observedGeneration"] == 1 and status["progress"] == 0
    assert condition(status, "Started")["status"] == "False"
    assert condition(status, "Finished")["status"] == "False"
    # The VideoJob stays kopf-free: no finalizer, no kopf annotations or status fields.
    assert not videojob["metadata"].get("finalizers")
    assert not any("kopf" in key for key in (videojob["metadata"].get("annotations") or {}))
    assert "kopf" not in videojob["status"]

    # Two restarts later: still exactly one Job per VideoJob, the same one, and nothing rewritten.
    versions = {
        n: get_videojob(kube_api, kube_namespace, n)["metadata"]["resourceVersion"]
        for n in (wan_name, veo_name)
    }
    for _ in range(2):
        with running_operator(kube_kubeconfig, kube_namespace, settings) as controller:
            wait_for(
                "the restarted operator to see both",
                lambda: controller.queue.handled >= 2 and controller.queue.idle(),
            )
            time.sleep(0.5)
    jobs = jobs_in(kube_plane, kube_namespace)
    assert sorted(j["metadata"]["uid"] for j in jobs) == sorted(
        [wan_job["metadata"]["uid"], veo_job["metadata"]["uid"]]
    )
    for name, version in versions.items():
        assert get_videojob(kube_api, kube_namespace, name)["metadata"]["resourceVersion"] == version
        # Queued is where a VideoJob starts: its one Event says its Job was made, once, restarts or not.
        created = ("Normal", "JobCreated", f"Created the runner Job {name}.")
        assert events_of(kube_api, kube_namespace, name) == [created]


def test_runner_success_completes_with_result_and_metrics(
    kube_api: k8s.ApiClient,
    kube_namespace: str,
    operator: Controller,
    fake_kubelet: FakeKubelet,
    gate_dir: Path,
) -> None:
    spec = make_spec("wan2.1", "gate")
    name = create_videojob(kube_api, kube_namespace, spec)
    (run,) = fake_kubelet.wait_for_runs(job_name=name)
    processing = wait_phase(kube_api, kube_namespace, name, "Processing")["status"]
    assert processing["startTime"] and condition(processing, "Started")["status"] == "True"
    assert "completionTime" not in processing and "resultURL" not in processing
    open_gate(gate_dir, name)
    run.wait()

    status = wait_phase(kube_api, kube_namespace, name, "Completed")["status"]
    assert status["resultURL"] == f"https://results.example/{spec.job_id}.mp4"
    assert status["metrics"] == {
        "spinUpTime": 0.1,
        "generationTime": 0.2,
        "totalTime": 0.5,
        "uploadTime": 0.05,
    }
    assert status["progress"] == 100 and "reason" not in status and "errorMessage" not in status
    assert status["startTime"] <= status["completionTime"]
    assert status["duration"].endswith("s") and status["jobName"] == name
    assert condition(status, "Finished") | {"status": "True", "reason": "Completed"} == condition(
        status, "Finished"
    )
    reasons = [reason for _, reason, _ in wait_event(kube_api, kube_namespace, name, "Completed")]
    assert reasons == ["JobCreated", "Started", "Completed"]
    assert run.env["VIVID_VIDEOJOB_NAME"] == name and run.exit_code == 0


@pytest.mark.parametrize(
    ("model", "prompt", "reason", "message", "exit_code", "runs"),
    [
        # Veo refusing may pass on another try: the Job controller retries (after its 10 s backoff).
        ("veo3.1", "fail", "upstream_error", "Veo refused the prompt.", 1, 2),
        # A model that does not load will not load again: one GPU Pod, not backoffLimit + 1 of them.
        ("wan2.1", "noload", "model_load_failed", "The Wan weights are missing.", 3, 1),
    ],
    ids=["retried", "not-retried"],
)
def test_runner_failures_are_retried_only_when_another_try_can_help(
    kube_api: k8s.ApiClient,
    kube_kubeconfig: Path,
    kube_namespace: str,
    fake_kubelet: FakeKubelet,
    gate_dir: Path,
    model: str,
    prompt: str,
    reason: str,
    message: str,
    exit_code: int,
    runs: int,
) -> None:
    settings = operator_settings(kube_namespace, gate_dir, job_backoff_limit=1)
    with running_operator(kube_kubeconfig, kube_namespace, settings):
        name = create_videojob(kube_api, kube_namespace, make_spec(model, prompt))
        status = wait_phase(kube_api, kube_namespace, name, "Failed", timeout=40)["status"]
    assert status["reason"] == reason and status["errorMessage"] == message
    assert len(fake_kubelet.runs) == runs and all(run.exit_code == exit_code for run in fake_kubelet.runs)
    pascal = "".join(part.capitalize() for part in reason.split("_"))
    assert condition(status, "Finished")["reason"] == pascal
    events = events_of(kube_api, kube_namespace, name)
    assert ("Warning", "Failed", f"{reason}: {message}") in events


def test_invalid_input_fails_at_once_through_the_pod_failure_policy(
    kube_api: k8s.ApiClient,
    kube_kubeconfig: Path,
    kube_namespace: str,
    fake_kubelet: FakeKubelet,
    gate_dir: Path,
    tmp_path: Path,
) -> None:
    # The real runner: an input that does not exist is invalid input, exit code 2.
    settings = operator_settings(
        kube_namespace, gate_dir, runner_command=["python", "-m", "vividflow.runner"], job_backoff_limit=3
    )
    spec = make_spec("veo3.1").model_copy(update={"input_uri": str(tmp_path / "missing.png")})
    with running_operator(kube_kubeconfig, kube_namespace, settings):
        name = create_videojob(kube_api, kube_namespace, spec)
        status = wait_phase(kube_api, kube_namespace, name, "Failed", timeout=40)["status"]
    assert status["reason"] == "invalid_input"
    assert "missing.png" in status["errorMessage"]
    (run,) = fake_kubelet.runs  # no retry despite backoffLimit 3
    assert run.exit_code == 2


def test_crash_and_oom_are_reported_from_the_pod(
    kube_api: k8s.ApiClient, kube_namespace: str, operator: Controller, fake_kubelet: FakeKubelet
) -> None:
    crash = create_videojob(kube_api, kube_namespace, make_spec("veo3.1", "crash"))
    oom = create_videojob(kube_api, kube_namespace, make_spec("wan2.1", "oom"))
    crashed = wait_phase(kube_api, kube_namespace, crash, "Failed")["status"]
    assert crashed["reason"] == "worker_crashed"
    # The user gets a sentence; the log tail is for operators (the condition and the Failed event).
    assert crashed["errorMessage"] == (
        "The runner stopped unexpectedly (exit code 5). Please submit the job again."
    )
    assert "RuntimeError: boom" in condition(crashed, "Finished")["message"]
    failed = [
        m for _, reason, m in wait_event(kube_api, kube_namespace, crash, "Failed") if reason == "Failed"
    ]
    assert len(failed) == 1 and "RuntimeError: boom" in failed[0]
    oomed = wait_phase(kube_api, kube_namespace, oom, "Failed")["status"]
    assert oomed["reason"] == "out_of_memory" and "OOMKilled" in oomed["errorMessage"]


def test_a_status_written_behind_the_operators_back_is_decided_again(
    kube_api: k8s.ApiClient,
    kube_namespace: str,
    operator: Controller,
    fake_kubelet: FakeKubelet,
    gate_dir: Path,
) -> None:
    """Without the admission policy, a runner could write another job's status: the operator takes
    phase and result only from the Job and the runner's termination message."""
    spec = make_spec("veo3.1", "gate")
    name = create_videojob(kube_api, kube_namespace, spec)
    wait_phase(kube_api, kube_namespace, name, "Processing")
    forged = {"status": {"phase": "Completed", "resultURL": "https://evil.example/phish.mp4"}}
    k8s.CustomObjectsApi(kube_api).patch_namespaced_custom_object_status(
        GROUP, VERSION, kube_namespace, PLURAL, name, forged
    )
    processing = wait_phase(kube_api, kube_namespace, name, "Processing")
    assert "resultURL" not in processing["status"]
    assert ANNOTATION_OUTCOME not in (processing["metadata"].get("annotations") or {})

    open_gate(gate_dir, name)
    done = wait_phase(kube_api, kube_namespace, name, "Completed")
    assert done["status"]["resultURL"] == f"https://results.example/{spec.job_id}.mp4"
    assert done["metadata"]["annotations"][ANNOTATION_OUTCOME] == "Completed"


def test_deadline_fails_with_timeout(
    kube_plane: ControlPlane,
    kube_api: k8s.ApiClient,
    kube_namespace: str,
    operator: Controller,
    fake_kubelet: FakeKubelet,
) -> None:
    name = create_videojob(kube_api, kube_namespace, make_spec("veo3.1", "sleep=60", deadline=2))
    (run,) = fake_kubelet.wait_for_runs(job_name=name)
    wait_phase(kube_api, kube_namespace, name, "Processing")
    status = wait_phase(kube_api, kube_namespace, name, "Failed", timeout=30)["status"]
    assert status["reason"] == "timeout"
    assert status["errorMessage"] == "The job did not finish within its deadline of 2 seconds."
    run.wait(15)
    assert run.killed_by == "deletion"


def test_cancel_deletes_job_and_pods(
    kube_plane: ControlPlane,
    kube_api: k8s.ApiClient,
    kube_namespace: str,
    operator: Controller,
    fake_kubelet: FakeKubelet,
) -> None:
    running = create_videojob(kube_api, kube_namespace, make_spec("veo3.1", "sleep=120"))
    (run,) = fake_kubelet.wait_for_runs(job_name=running)
    wait_phase(kube_api, kube_namespace, running, "Processing")
    custom = k8s.CustomObjectsApi(kube_api)
    custom.patch_namespaced_custom_object(
        GROUP, VERSION, kube_namespace, PLURAL, running, {"spec": {"cancelRequested": True}}
    )
    status = wait_phase(kube_api, kube_namespace, running, "Cancelled")["status"]
    assert status["reason"] == "cancelled" and status["completionTime"]
    wait_for("the Job deleted", lambda: get_job(kube_plane, kube_namespace, running) is None)
    wait_for("the Pod deleted", lambda: not pods_of(kube_plane, kube_namespace, running), timeout=20)
    assert run.wait(15).killed_by == "deletion"
    cancelled = wait_event(kube_api, kube_namespace, running, "Cancelled")
    assert ("Normal", "Cancelled", "The job was cancelled.") in cancelled
    # Cancelled is sticky: nothing brings the Job back.
    operator.resync()
    time.sleep(1)
    assert get_job(kube_plane, kube_namespace, running) is None
    assert get_videojob(kube_api, kube_namespace, running)["status"]["phase"] == "Cancelled"


def test_deleting_a_videojob_garbage_collects_its_job_and_pods(
    kube_plane: ControlPlane,
    kube_api: k8s.ApiClient,
    kube_namespace: str,
    operator: Controller,
    fake_kubelet: FakeKubelet,
) -> None:
    name = create_videojob(kube_api, kube_namespace, make_spec("veo3.1", "sleep=120"))
    (run,) = fake_kubelet.wait_for_runs(job_name=name)
    k8s.CustomObjectsApi(kube_api).delete_namespaced_custom_object(
        GROUP, VERSION, kube_namespace, PLURAL, name
    )
    wait_for(
        "the Job garbage-collected", lambda: get_job(kube_plane, kube_namespace, name) is None, timeout=30
    )
    wait_for("the Pod garbage-collected", lambda: not pods_of(kube_plane, kube_namespace, name), timeout=30)
    assert run.wait(15).killed_by == "deletion"


def test_operator_restart_mid_job_converges_without_duplicates(
    kube_plane: ControlPlane,
    kube_api: k8s.ApiClient,
    kube_kubeconfig: Path,
    kube_namespace: str,
    settings: Settings,
    fake_kubelet: FakeKubelet,
    gate_dir: Path,
) -> None:
    with running_operator(kube_kubeconfig, kube_namespace, settings):
        running = create_videojob(kube_api, kube_namespace, make_spec("veo3.1", "gate"))
        (run,) = fake_kubelet.wait_for_runs(job_name=running)
        wait_phase(kube_api, kube_namespace, running, "Processing")
    # While no operator runs: the job finishes, and another one is submitted.
    open_gate(gate_dir, running)
    run.wait()
    wait_for(
        "the Job to complete",
        lambda: any(
            c["type"] == "Complete"
            for c in (get_job(kube_plane, kube_namespace, running) or {})
            .get("status", {})
            .get("conditions", [])
        ),
    )
    later = create_videojob(kube_api, kube_namespace, make_spec("veo3.1", "ok"))
    assert get_videojob(kube_api, kube_namespace, running)["status"]["phase"] == "Processing"

    with running_operator(kube_kubeconfig, kube_namespace, settings):
        done = wait_phase(kube_api, kube_namespace, running, "Completed")["status"]
        wait_phase(kube_api, kube_namespace, later, "Completed")
    assert done["resultURL"].endswith(".mp4")
    assert len(fake_kubelet.wait_for_runs(2)) == 2  # one run each: nothing ran twice
    assert len(jobs_in(kube_plane, kube_namespace)) == 2
    reasons = [reason for _, reason, _ in events_of(kube_api, kube_namespace, running)]
    assert reasons.count("Started") == 1 and reasons.count("Completed") == 1


def test_a_job_deleted_behind_the_operators_back_fails_the_videojob(
    kube_plane: ControlPlane, kube_api: k8s.ApiClient, kube_namespace: str, operator: Controller
) -> None:
    name = create_videojob(kube_api, kube_namespace, make_spec("veo3.1"))
    wait_for("the Job", lambda: get_job(kube_plane, kube_namespace, name))
    wait_phase(kube_api, kube_namespace, name, "Queued")
    kube_plane.request(
        "DELETE",
        f"/apis/batch/v1/namespaces/{kube_namespace}/jobs/{name}",
        {"propagationPolicy": "Background"},
    )
    status = wait_phase(kube_api, kube_namespace, name, "Failed")["status"]
    assert status["reason"] == "interrupted" and name in status["errorMessage"]
    time.sleep(0.5)
    assert get_job(kube_plane, kube_namespace, name) is None  # not run a second time


def test_gpu_concurrency_limit_holds_jobs_suspended_in_order(
    kube_plane: ControlPlane,
    kube_api: k8s.ApiClient,
    kube_kubeconfig: Path,
    kube_namespace: str,
    fake_kubelet: FakeKubelet,
    gate_dir: Path,
) -> None:
    settings = operator_settings(kube_namespace, gate_dir, max_running_gpu_jobs=1)
    with running_operator(kube_kubeconfig, kube_namespace, settings):
        first = create_videojob(kube_api, kube_namespace, make_spec("wan2.1", "gate"))
        second = create_videojob(kube_api, kube_namespace, make_spec("wan2.1", "gate"))
        veo = create_videojob(kube_api, kube_namespace, make_spec("veo3.1", "ok"))
        fake_kubelet.wait_for_runs(job_name=first)
        wait_phase(kube_api, kube_namespace, veo, "Completed")  # no GPU: not limited
        held = wait_phase(kube_api, kube_namespace, second, "Queued")["status"]
        assert condition(held, "Started")["reason"] == "WaitingForCapacity"
        created = ("Normal", "JobCreated", f"Created the runner Job {second}, suspended until admitted.")
        waiting = ("Normal", "WaitingForCapacity", "The job is waiting for a free GPU slot.")
        assert wait_event(kube_api, kube_namespace, second, "WaitingForCapacity") == [created, waiting]
        assert (get_job(kube_plane, kube_namespace, second) or {})["spec"]["suspend"] is True
        assert not pods_of(kube_plane, kube_namespace, second)

        open_gate(gate_dir, first)
        wait_phase(kube_api, kube_namespace, first, "Completed")
        fake_kubelet.wait_for_runs(job_name=second)
        assert (get_job(kube_plane, kube_namespace, second) or {})["spec"]["suspend"] is False
        admitted = wait_event(kube_api, kube_namespace, second, "Admitted")
        assert admitted[:2] == [created, waiting] and admitted[2][:2] == ("Normal", "Admitted")
        wait_phase(kube_api, kube_namespace, second, "Processing")
        open_gate(gate_dir, second)
        wait_phase(kube_api, kube_namespace, second, "Completed")
    first_run, second_run = (fake_kubelet.wait_for_runs(job_name=n)[0] for n in (first, second))
    assert first_run.finished_at is not None and second_run.started_at is not None
    assert first_run.finished_at <= second_run.started_at  # never two at once


def test_kueue_mode_labels_and_suspends_and_leaves_admission_to_kueue(
    kube_plane: ControlPlane,
    kube_api: k8s.ApiClient,
    kube_kubeconfig: Path,
    kube_namespace: str,
    gate_dir: Path,
) -> None:
    settings = operator_settings(kube_namespace, gate_dir, kueue_queue="gpu-queue")
    with running_operator(kube_kubeconfig, kube_namespace, settings):
        wan = create_videojob(kube_api, kube_namespace, make_spec("wan2.1"))
        veo = create_videojob(kube_api, kube_namespace, make_spec("veo3.1"))
        status = wait_phase(kube_api, kube_namespace, wan, "Queued")["status"]
        wait_for("the veo3.1 Job", lambda: get_job(kube_plane, kube_namespace, veo))
        time.sleep(1)
        job = get_job(kube_plane, kube_namespace, wan)
    assert job is not None and job["spec"]["suspend"] is True
    assert job["metadata"]["labels"][KUEUE_QUEUE_LABEL] == "gpu-queue"
    assert condition(status, "Started")["reason"] == "WaitingForAdmission"
    veo_job = get_job(kube_plane, kube_namespace, veo)
    assert veo_job is not None and veo_job["spec"]["suspend"] is False
    assert KUEUE_QUEUE_LABEL not in veo_job["metadata"]["labels"]


def test_image_pull_errors_fail_after_a_grace_period(
    kube_plane: ControlPlane,
    kube_api: k8s.ApiClient,
    kube_kubeconfig: Path,
    kube_namespace: str,
    settings: Settings,
    fake_kubelet: FakeKubelet,
) -> None:
    fake_kubelet.image_pull_errors.add(RUNNER_IMAGE)
    fake_kubelet.pull_backoff_seconds = 0.5
    settings = settings.model_copy(update={"image_pull_grace_seconds": 10.0})
    with running_operator(kube_kubeconfig, kube_namespace, settings, image_pull_grace=None):
        name = create_videojob(kube_api, kube_namespace, make_spec("veo3.1"))
        fake_kubelet.wait_for_runs(job_name=name, started=False)

        def backing_off() -> Json | None:
            status = get_videojob(kube_api, kube_namespace, name).get("status") or {}
            started = next((c for c in status.get("conditions", []) if c["type"] == "Started"), {})
            return status if started.get("reason") == "ImagePullBackOff" else None

        # While it lasts, the VideoJob says why it waits.
        waiting = wait_for("the VideoJob to show ImagePullBackOff", backing_off, timeout=20)
        assert waiting["phase"] == "Queued" and RUNNER_IMAGE in condition(waiting, "Started")["message"]
        status = wait_phase(kube_api, kube_namespace, name, "Failed", timeout=30)["status"]
        wait_for("the Job deleted", lambda: get_job(kube_plane, kube_namespace, name) is None)
    assert status["reason"] == "image_pull_failed"
    assert status["errorMessage"] == "The job could not start: the runner image could not be pulled."
    assert RUNNER_IMAGE in condition(status, "Finished")["message"]
    events = events_of(kube_api, kube_namespace, name)
    assert [reason for kind, reason, _ in events if kind == "Warning"][:1] in (
        ["ErrImagePull"],
        ["ImagePullBackOff"],
    )
    assert any(reason == "Failed" and RUNNER_IMAGE in message for _, reason, message in events)


RUNNER_RULES: list[dict[str, Any]] = [
    {"apiGroups": [GROUP], "resources": [f"{PLURAL}/status"], "verbs": ["patch"]}
]
"""All a runner Pod's ServiceAccount may do (the Helm chart's Role for it)."""


def _status_code(call: Callable[[], object]) -> int:
    try:
        call()
    except ApiException as error:
        return int(error.status or 0)
    return 200


def test_runner_reports_progress_with_a_service_account_that_can_do_nothing_else(
    kube_api: k8s.ApiClient,
    kube_namespace: str,
    kube_service_account: ServiceAccountFactory,
    operator: Controller,
    fake_kubelet: FakeKubelet,
    gate_dir: Path,
) -> None:
    runner_sa = kube_service_account(kube_namespace, "vividflow-runner", RUNNER_RULES)
    fake_kubelet.base_env["KUBECONFIG"] = str(runner_sa.kubeconfig)
    name = create_videojob(kube_api, kube_namespace, make_spec("wan2.1", "progress=10,40 gate"))
    wait_for(
        "progress 40 from the runner",
        lambda: (get_videojob(kube_api, kube_namespace, name).get("status") or {}).get("progress") == 40,
    )
    assert get_videojob(kube_api, kube_namespace, name)["status"]["phase"] == "Processing"

    # The same token, by hand: it may patch the status and nothing else.

    with api_client_for(runner_sa.kubeconfig) as limited:
        custom, core = k8s.CustomObjectsApi(limited), k8s.CoreV1Api(limited)
        assert (
            _status_code(
                lambda: custom.get_namespaced_custom_object(GROUP, VERSION, kube_namespace, PLURAL, name)
            )
            == 403
        )
        assert (
            _status_code(lambda: custom.list_namespaced_custom_object(GROUP, VERSION, kube_namespace, PLURAL))
            == 403
        )
        patch_spec = {"spec": {"prompt": "something else"}}
        assert (
            _status_code(
                lambda: custom.patch_namespaced_custom_object(
                    GROUP, VERSION, kube_namespace, PLURAL, name, patch_spec
                )
            )
            == 403
        )
        assert (
            _status_code(
                lambda: custom.delete_namespaced_custom_object(GROUP, VERSION, kube_namespace, PLURAL, name)
            )
            == 403
        )
        assert _status_code(lambda: core.list_namespaced_pod(kube_namespace)) == 403
        assert _status_code(lambda: core.list_namespaced_secret(kube_namespace)) == 403
        assert _status_code(lambda: k8s.BatchV1Api(limited).list_namespaced_job(kube_namespace)) == 403

    # Never backwards: a reporter that starts again from 0 (a retried Pod) does not lower it.
    configuration = load_configuration(runner_sa.kubeconfig)
    again = ProgressReporter(Kube(configuration), kube_namespace, name, min_interval=0.0)
    again(20)
    again.close()
    assert again.sent == 20 and get_videojob(kube_api, kube_namespace, name)["status"]["progress"] == 40
    more = ProgressReporter(Kube(configuration), kube_namespace, name, min_interval=0.0)
    more(70)
    more.close()
    assert get_videojob(kube_api, kube_namespace, name)["status"]["progress"] == 70

    open_gate(gate_dir, name)
    assert wait_phase(kube_api, kube_namespace, name, "Completed")["status"]["progress"] == 100
    late = ProgressReporter(Kube(configuration), kube_namespace, name, min_interval=0.0)
    late(99)
    late.close()
    final = get_videojob(kube_api, kube_namespace, name)["status"]
    assert final["phase"] == "Completed" and final["progress"] == 100


def test_peering_keeps_one_replica_active_and_hands_over(
    kube_plane: ControlPlane,
    kube_api: k8s.ApiClient,
    kube_kubeconfig: Path,
    kube_namespace: str,
    settings: Settings,
) -> None:
    install_videojob_crd(kube_plane, REPO_ROOT / "charts" / "vividflow" / "crds" / "kopfpeering.yaml")
    peering = {"apiVersion": "kopf.dev/v1", "kind": "KopfPeering", "metadata": {"name": "vividflow"}}
    kube_plane.request("POST", f"/apis/kopf.dev/v1/namespaces/{kube_namespace}/kopfpeerings", peering)
    with running_operator(kube_kubeconfig, kube_namespace, settings, peering=("vividflow", 10)) as standby:
        with running_operator(kube_kubeconfig, kube_namespace, settings, peering=("vividflow", 20)) as active:
            path = f"/apis/kopf.dev/v1/namespaces/{kube_namespace}/kopfpeerings/vividflow"
            wait_for(
                "both replicas in the peering",
                lambda: len(kube_plane.request("GET", path)[1].get("status") or {}) == 2,
            )
            time.sleep(0.5)  # the standby sees the higher priority on its peering watch and pauses
            first = create_videojob(kube_api, kube_namespace, make_spec("veo3.1"))
            wait_phase(kube_api, kube_namespace, first, "Queued")
            time.sleep(1)
            assert active.queue.handled > 0 and standby.queue.handled == 0  # the standby is paused
        # The active replica left the peering: the standby resumes and takes over.
        second = create_videojob(kube_api, kube_namespace, make_spec("veo3.1"))
        wait_for("the standby to take over", lambda: get_job(kube_plane, kube_namespace, second), timeout=30)
        assert standby.queue.handled > 0
    assert len(jobs_in(kube_plane, kube_namespace)) == 2
