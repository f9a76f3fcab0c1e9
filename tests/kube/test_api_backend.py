"""The API's Kubernetes backend against a real API server, with the operator played by hand: the
test patches VideoJob status as the operator would and checks what the REST API answers.

The API authenticates as a ServiceAccount allowed only ``API_RULES`` (videojobs create, get, list,
watch, patch in its namespace), so these tests also prove that Role is enough.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import closing
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from kubernetes import client as k8s

from tests.api.conftest import app_state
from tests.fixtures.gcs_emulator import GcsEmulator
from tests.fixtures.kube import (
    ServiceAccountAccess,
    ServiceAccountFactory,
    api_client_for,
    create_service_account,
    install_videojob_crd,
    wait_for,
)
from tests.kube.cluster_api import (
    API_RULES,
    TINY_WAN,
    backend,
    cluster_settings,
    kubeconfig_via,
    new_user,
    output_url,
    ready,
    running_api,
    set_status,
    status_of,
    submit,
    videojob,
    videojobs,
    wait_status,
)
from tests.kube.controlplane import ControlPlane, find_bin_dir
from tests.tcp_proxy import TcpProxy
from vividflow.apiserver.app import create_app
from vividflow.apiserver.backends.kubernetes import ClusterModeError, KubernetesBackend
from vividflow.apiserver.services import jobs
from vividflow.jobspec import (
    GROUP,
    LABEL_JOB_ID,
    LABEL_MODEL,
    LABEL_OWNER,
    PLURAL,
    VERSION,
    JobSpec,
    WanParams,
    videojob_name,
)
from vividflow.settings import Settings

METRICS = {"spinUpTime": 1.5, "generationTime": 12.25, "totalTime": 15.0, "uploadTime": 0.5}


@pytest.fixture
def bucket(gcs_emulator: GcsEmulator) -> str:
    return gcs_emulator.make_bucket("vivid-cluster")


@pytest.fixture
def api_access(kube_service_account: ServiceAccountFactory, kube_namespace: str) -> ServiceAccountAccess:
    return kube_service_account(kube_namespace, "vividflow-api", API_RULES)


@pytest.fixture
def settings(
    tmp_path: Path,
    kube_namespace: str,
    bucket: str,
    api_access: ServiceAccountAccess,
    monkeypatch: pytest.MonkeyPatch,
) -> Settings:
    monkeypatch.setenv("KUBECONFIG", str(api_access.kubeconfig))
    return cluster_settings(tmp_path, kube_namespace, bucket)


@pytest.fixture
def api(settings: Settings) -> Iterator[TestClient]:
    with running_api(settings) as client:
        wait_for("the backend's first list", lambda: ready(client))
        yield client


def one_videojob(kube_api: k8s.ApiClient, namespace: str, job_id: str) -> dict[str, Any]:
    found = wait_for("the VideoJob", lambda: videojobs(kube_api, namespace))
    assert [item["metadata"]["name"] for item in found] == [videojob_name(job_id)]
    return found[0]


def names(kube_api: k8s.ApiClient, namespace: str) -> list[str]:
    return sorted(item["metadata"]["name"] for item in videojobs(kube_api, namespace))


def test_cluster_mode_needs_a_bucket(tmp_path: Path) -> None:
    settings = cluster_settings(tmp_path, "default", "unused", gcs_bucket=None)
    with pytest.raises(ClusterModeError, match="VIVID_GCS_BUCKET"), TestClient(create_app(settings)):
        pass


def test_a_submitted_job_becomes_exactly_one_videojob(
    api: TestClient,
    settings: Settings,
    kube_api: k8s.ApiClient,
    kube_namespace: str,
    bucket: str,
    gcs_emulator: GcsEmulator,
) -> None:
    headers = new_user(api, "kate@example.com")
    job_id = submit(api, headers)
    created = one_videojob(kube_api, kube_namespace, job_id)

    with app_state(api).session_factory() as session:
        job = jobs.get_job(session, job_id)
        assert job is not None
        expected = jobs.job_spec(job, settings.job_deadline_seconds)
    assert created["metadata"]["labels"] == {
        LABEL_JOB_ID: job_id,
        LABEL_OWNER: job.user_id,
        LABEL_MODEL: "wan2.1",
    }
    spec = JobSpec.model_validate(created["spec"])
    assert spec == expected and not spec.cancel_requested
    assert spec.params == WanParams.model_validate(TINY_WAN)
    assert spec.input_uri == f"gs://{bucket}/inputs/{job_id}.png"
    assert spec.output_uri == f"gs://{bucket}/videos/{job_id}.mp4"
    assert gcs_emulator.client().bucket(bucket).blob(f"inputs/{job_id}.png").exists()  # the Job can read it

    # Creating is idempotent: the request path, a resync and a restart may all try.
    backend(api).submitted(job_id)
    backend(api).reconcile()
    assert len(videojobs(kube_api, kube_namespace)) == 1
    assert status_of(api, headers, job_id)["status"] == "queued"


def test_videojob_status_flows_to_status_history_and_usage(
    api: TestClient, kube_api: k8s.ApiClient, kube_namespace: str
) -> None:
    headers = new_user(api, "paul@example.com")
    job_id = submit(api, headers)
    one_videojob(kube_api, kube_namespace, job_id)

    started = "2026-01-02T03:04:05Z"
    # kopf keeps its own fields in the status: they must not break the mirror.
    set_status(kube_api, kube_namespace, job_id, phase="Processing", progress=40, startTime=started, kopf={})
    wait_status(api, headers, job_id, {"processing"}, check=lambda body: body["progress"] == 40)
    seen: list[int] = []

    def at_70(body: dict[str, Any]) -> bool:
        seen.append(body["progress"])
        return bool(body["progress"] == 70)

    for progress in (20, 70):  # a stale lower value never lowers the progress
        set_status(kube_api, kube_namespace, job_id, progress=progress)
    wait_status(api, headers, job_id, {"processing"}, check=at_70)
    assert min(seen) >= 40

    result_url = output_url(app_state(api).settings.gcs_bucket or "", job_id)
    set_status(
        kube_api,
        kube_namespace,
        job_id,
        phase="Completed",
        progress=100,
        resultURL=result_url,
        metrics=METRICS,
        completionTime="2026-01-02T03:04:20Z",
    )
    body = wait_status(api, headers, job_id)
    assert body["status"] == "completed" and body["result_url"] == result_url
    assert body["metrics"] == {
        "spin_up_time": 1.5,
        "generation_time": 12.25,
        "total_time": 15.0,
        "upload_time": 0.5,
    }
    with app_state(api).session_factory() as session:
        job = jobs.get_job(session, job_id)
        assert job is not None and job.run_seconds == 15.0  # startTime to completionTime

    history = api.get("/api/v1/history", headers=headers).json()
    assert history["jobs"][0]["status"] == "completed" and history["jobs"][0]["result_url"] == result_url
    usage = api.get("/api/v1/usage", headers=headers).json()
    assert usage["completed_jobs"] == 1 and usage["processing_jobs"] == 0

    # A terminal job never moves again. Events arrive in order, so once a later job's change is
    # mirrored, this one's was handled too.
    set_status(kube_api, kube_namespace, job_id, phase="Failed", errorMessage="late", reason="internal")
    barrier = submit(api, headers)
    wait_for("the second VideoJob", lambda: len(videojobs(kube_api, kube_namespace)) == 2)
    set_status(kube_api, kube_namespace, barrier, phase="Processing", progress=5)
    wait_status(api, headers, barrier, {"processing"})
    assert status_of(api, headers, job_id) == body


STARTED = "2026-01-02T03:04:05Z"


@pytest.mark.parametrize(
    ("status", "expected", "refunded"),
    [
        (
            {"phase": "Failed", "reason": "invalid_input", "errorMessage": "The input image is not a PNG."},
            {
                "status": "failed",
                "failure_reason": "invalid_input",
                "error_message": "The input image is not a PNG.",
            },
            False,
        ),
        (
            {
                "phase": "Failed",
                "reason": "timeout",
                "errorMessage": "The job did not finish within 2 s.",
                "startTime": STARTED,
            },
            {
                "status": "failed",
                "failure_reason": "timeout",
                "error_message": "The job did not finish within 2 s.",
            },
            False,
        ),
        (
            {"phase": "Failed", "reason": "image_pull_failed", "errorMessage": "The job could not start."},
            {"status": "failed", "failure_reason": "image_pull_failed"},
            True,
        ),
        # An administrator's cancel of a running job (spec.cancelRequested), as the operator reports it.
        ({"phase": "Cancelled", "reason": "cancelled", "startTime": STARTED}, {"status": "cancelled"}, True),
    ],
    ids=["invalid-input", "timeout", "image-pull", "cancelled"],
)
def test_failures_flow_with_their_message_and_refund(
    api: TestClient,
    kube_api: k8s.ApiClient,
    kube_namespace: str,
    status: dict[str, Any],
    expected: dict[str, str],
    refunded: bool,
) -> None:
    headers = new_user(api, "fay@example.com")
    job_id = submit(api, headers)
    one_videojob(kube_api, kube_namespace, job_id)
    set_status(kube_api, kube_namespace, job_id, **status)
    body = wait_status(api, headers, job_id)
    assert {key: body.get(key) for key in expected} == expected
    usage = api.get("/api/v1/usage", headers=headers).json()
    assert usage["credits_remaining"] == usage["daily_limit"] - (0 if refunded else 1)


def test_cancel_requests_it_on_the_videojob(
    api: TestClient, kube_api: k8s.ApiClient, kube_namespace: str
) -> None:
    headers = new_user(api, "carl@example.com")
    job_id = submit(api, headers)
    one_videojob(kube_api, kube_namespace, job_id)

    response = api.post(f"/api/v1/cancel/{job_id}", headers=headers)
    assert response.status_code == 200, response.text
    assert videojob(kube_api, kube_namespace, job_id)["spec"]["cancelRequested"] is True
    set_status(
        kube_api, kube_namespace, job_id, phase="Cancelled", reason="cancelled"
    )  # the operator's answer
    assert status_of(api, headers, job_id)["status"] == "cancelled"
    usage = api.get("/api/v1/usage", headers=headers).json()
    assert usage["cancelled_jobs"] == 1 and usage["credits_remaining"] == usage["daily_limit"]  # refunded
    assert api.post(f"/api/v1/cancel/{job_id}", headers=headers).status_code == 409


def test_watches_that_time_out_are_renewed_without_losing_events(
    api: TestClient, kube_api: k8s.ApiClient, kube_namespace: str
) -> None:
    state = app_state(api)
    state.backend.stop()
    state.backend = KubernetesBackend(state.settings, state.session_factory, watch_timeout_seconds=1)
    state.backend.start()  # the app's shutdown stops it
    mirror = backend(api).mirror
    wait_for("the new backend", lambda: ready(api))

    headers = new_user(api, "tom@example.com")
    job_id = submit(api, headers)
    one_videojob(kube_api, kube_namespace, job_id)
    for progress in (10, 20, 30):
        time.sleep(1.1)  # each change lands in a later watch request than the one before
        set_status(kube_api, kube_namespace, job_id, phase="Processing", progress=progress)
        wait_status(
            api, headers, job_id, {"processing"}, check=lambda body, p=progress: body["progress"] == p
        )
    set_status(
        kube_api, kube_namespace, job_id, phase="Completed", resultURL="https://r/t.mp4", metrics=METRICS
    )
    assert wait_status(api, headers, job_id)["status"] == "completed"
    assert mirror.watches >= 4 and mirror.lists == 1  # renewed from the last version, never relisted


def test_an_api_restart_loses_no_transition(
    settings: Settings, kube_api: k8s.ApiClient, kube_namespace: str
) -> None:
    with running_api(settings) as api:
        headers = new_user(api, "rita@example.com")
        job_id = submit(api, headers)
        one_videojob(kube_api, kube_namespace, job_id)
        set_status(kube_api, kube_namespace, job_id, phase="Processing", progress=10)
        wait_status(api, headers, job_id, {"processing"})

    assert not [
        thread.name for thread in threading.enumerate() if thread.name.startswith("vividflow-videojob")
    ]
    # While the API is down, the job finishes.
    set_status(
        kube_api,
        kube_namespace,
        job_id,
        phase="Completed",
        progress=100,
        resultURL="https://r/x.mp4",
        metrics=METRICS,
    )

    with running_api(settings) as api:
        body = wait_status(api, headers, job_id, timeout=10)
        # A result URL that is not the job's own output is replaced by the output's URL.
        assert body["status"] == "completed"
        assert body["result_url"] == output_url(settings.gcs_bucket or "", job_id)
        usage = api.get("/api/v1/usage", headers=headers).json()
        assert (
            usage["total_jobs"],
            usage["completed_jobs"],
            usage["daily_limit"] - usage["credits_remaining"],
        ) == (1, 1, 1)


@pytest.fixture
def proxy(kube_plane: ControlPlane) -> Iterator[TcpProxy]:
    with TcpProxy(int(kube_plane.server_url.rsplit(":", 1)[1]), scheme="https") as started:
        yield started


@pytest.fixture
def proxied_settings(
    settings: Settings,
    api_access: ServiceAccountAccess,
    proxy: TcpProxy,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> Settings:
    """The same settings, with the API reaching Kubernetes through ``proxy``."""
    monkeypatch.setenv(
        "KUBECONFIG", str(kubeconfig_via(api_access.kubeconfig, proxy.url, tmp_path / "proxied"))
    )
    return settings


def test_jobs_accepted_while_kubernetes_is_unreachable_get_their_videojob(
    proxied_settings: Settings, proxy: TcpProxy, kube_api: k8s.ApiClient, kube_namespace: str
) -> None:
    proxy.cut()
    with running_api(proxied_settings) as api:
        headers = new_user(api, "otto@example.com")
        orphan = submit(api, headers)  # the DB commit happened; the VideoJob could not be created
        assert not ready(api)
    # The API went away before it could create the VideoJob.
    assert videojobs(kube_api, kube_namespace) == []

    with running_api(proxied_settings) as api:
        waiting = submit(api, headers)
        dropped = submit(api, headers)
        assert api.post(f"/api/v1/cancel/{dropped}", headers=headers).status_code == 200
        time.sleep(0.5)
        assert not ready(api) and videojobs(kube_api, kube_namespace) == []
        proxy.restore()
        wait_for("the backend to recover", lambda: ready(api), timeout=15)
        expected = sorted(map(videojob_name, (orphan, waiting)))
        wait_for("both VideoJobs", lambda: names(kube_api, kube_namespace) == expected)
        assert [status_of(api, headers, job)["status"] for job in (orphan, waiting, dropped)] == [
            "queued",
            "queued",
            "cancelled",
        ]


def test_a_cancel_that_could_not_be_sent_is_sent_later(
    proxied_settings: Settings, proxy: TcpProxy, kube_api: k8s.ApiClient, kube_namespace: str
) -> None:
    with running_api(proxied_settings) as api:
        headers = new_user(api, "cleo@example.com")
        job_id = submit(api, headers)
        one_videojob(kube_api, kube_namespace, job_id)
        proxy.cut()
        assert api.post(f"/api/v1/cancel/{job_id}", headers=headers).status_code == 200
        assert videojob(kube_api, kube_namespace, job_id)["spec"].get("cancelRequested") is not True
        proxy.restore()
        wait_for(
            "the cancel to reach the VideoJob",
            lambda: videojob(kube_api, kube_namespace, job_id)["spec"].get("cancelRequested"),
            timeout=15,
        )


def test_history_and_usage_outlive_videojob_cleanup(
    api: TestClient, kube_api: k8s.ApiClient, kube_namespace: str
) -> None:
    headers = new_user(api, "hugo@example.com")
    done, failed = submit(api, headers), submit(api, headers)
    wait_for("both VideoJobs", lambda: len(videojobs(kube_api, kube_namespace)) == 2)
    set_status(
        kube_api, kube_namespace, done, phase="Completed", resultURL="https://r/d.mp4", metrics=METRICS
    )
    set_status(kube_api, kube_namespace, failed, phase="Failed", reason="internal", errorMessage="boom")
    wait_status(api, headers, failed)
    wait_status(api, headers, done)
    custom = k8s.CustomObjectsApi(kube_api)
    for job_id in (done, failed):
        custom.delete_namespaced_custom_object(GROUP, VERSION, kube_namespace, PLURAL, videojob_name(job_id))
    wait_for("the VideoJobs to go", lambda: not videojobs(kube_api, kube_namespace))
    backend(api).reconcile()
    backend(api).reconcile()

    history = api.get("/api/v1/history", headers=headers).json()["jobs"]
    assert [(item["job_id"], item["status"]) for item in history] == [(failed, "failed"), (done, "completed")]
    assert status_of(api, headers, failed)["error_message"] == "boom"
    usage = api.get("/api/v1/usage", headers=headers).json()
    assert (usage["total_jobs"], usage["completed_jobs"], usage["failed_jobs"]) == (2, 1, 1)


def _delete_videojob(kube_api: k8s.ApiClient, namespace: str, job_id: str) -> None:
    k8s.CustomObjectsApi(kube_api).delete_namespaced_custom_object(
        GROUP, VERSION, namespace, PLURAL, videojob_name(job_id)
    )


@pytest.mark.parametrize("phase", ["Queued", "Processing"])
def test_deleting_a_videojob_cancels_its_job_at_once_with_a_refund(
    api: TestClient, kube_api: k8s.ApiClient, kube_namespace: str, phase: str
) -> None:
    """`kubectl delete videojob` is a cancel: settled from the DELETED event within seconds, the credit
    back, and the VideoJob never made again."""
    headers = new_user(api, "vic@example.com")
    job_id = submit(api, headers)
    one_videojob(kube_api, kube_namespace, job_id)
    if phase == "Processing":
        set_status(kube_api, kube_namespace, job_id, phase="Processing", progress=30)
        wait_status(api, headers, job_id, {"processing"})
    _delete_videojob(kube_api, kube_namespace, job_id)

    body = wait_status(api, headers, job_id, timeout=15)
    assert body["status"] == "cancelled"
    usage = api.get("/api/v1/usage", headers=headers).json()
    assert usage["cancelled_jobs"] == 1 and usage["credits_remaining"] == usage["daily_limit"]
    backend(api).reconcile()  # the job is not queued again: no VideoJob is made for it
    assert videojobs(kube_api, kube_namespace) == []
    assert status_of(api, headers, job_id)["status"] == "cancelled"


def test_a_job_that_finished_while_the_api_was_down_is_settled_from_its_video(
    settings: Settings, kube_api: k8s.ApiClient, kube_namespace: str, gcs_emulator: GcsEmulator
) -> None:
    """The API was down while the jobs ended and their VideoJobs were deleted: on restart, the one whose
    video is in the bucket is completed, the other cancelled (and refunded)."""
    bucket = settings.gcs_bucket or ""
    with running_api(settings) as api:
        headers = new_user(api, "wes@example.com")
        finished, lost = submit(api, headers), submit(api, headers)
        wait_for("both VideoJobs", lambda: len(videojobs(kube_api, kube_namespace)) == 2)
        for job_id in (finished, lost):
            set_status(kube_api, kube_namespace, job_id, phase="Processing", progress=10)
            wait_status(api, headers, job_id, {"processing"})

    gcs_emulator.put(bucket, f"videos/{finished}.mp4", b"\x00\x00\x00\x18ftypmp42 a finished video")
    for job_id in (finished, lost):
        _delete_videojob(kube_api, kube_namespace, job_id)
    wait_for("the VideoJobs to go", lambda: not videojobs(kube_api, kube_namespace))

    with running_api(settings) as api:
        done = wait_status(api, headers, finished, timeout=15)
        assert done["status"] == "completed" and done["result_url"] == output_url(bucket, finished)
        assert wait_status(api, headers, lost, timeout=15)["status"] == "cancelled"
        usage = api.get("/api/v1/usage", headers=headers).json()
        assert usage["credits_remaining"] == usage["daily_limit"] - 1  # only the finished one is paid


def test_a_status_the_operator_did_not_record_is_not_believed(
    api: TestClient, kube_api: k8s.ApiClient, kube_namespace: str
) -> None:
    """A runner that writes another job's status (without the admission policy to stop it) cannot
    finish it, nor point it at another video."""
    headers = new_user(api, "nina@example.com")
    victim = submit(api, headers)
    one_videojob(kube_api, kube_namespace, victim)
    phish = "https://evil.example/phish.mp4"
    set_status(kube_api, kube_namespace, victim, as_operator=False, phase="Completed", resultURL=phish)
    barrier = submit(api, headers)  # events arrive in order: once this one is mirrored, so was that
    wait_for("the second VideoJob", lambda: len(videojobs(kube_api, kube_namespace)) == 2)
    set_status(kube_api, kube_namespace, barrier, phase="Processing", progress=5)
    wait_status(api, headers, barrier, {"processing"})
    assert status_of(api, headers, victim)["status"] == "queued"

    # The operator's own verdict is believed, with the job's own output as its result.
    set_status(kube_api, kube_namespace, victim, phase="Completed", resultURL=phish, metrics=METRICS)
    body = wait_status(api, headers, victim)
    assert body["status"] == "completed"
    assert body["result_url"] == output_url(app_state(api).settings.gcs_bucket or "", victim)
    history = api.get("/api/v1/history", headers=headers).json()["jobs"]
    assert phish not in str(history)


# -- watch expiry: a control plane of its own, without watch cache and compacting every second, so a
# -- watch resumed from a version older than a second or two answers 410 Gone.


@pytest.fixture(scope="module")
def compacting_plane() -> Iterator[ControlPlane]:
    bin_dir = find_bin_dir()
    if bin_dir is None:
        pytest.fail("kube binaries not built: run hack/kubebin/build.sh", pytrace=False)
    args = ["--watch-cache=false", "--etcd-compaction-interval=1s"]
    with ControlPlane(bin_dir, controllers=(), apiserver_args=args) as plane:
        install_videojob_crd(plane)
        yield plane


def test_a_watch_that_expired_during_an_outage_relists_and_loses_no_transition(
    compacting_plane: ControlPlane, tmp_path: Path, bucket: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    namespace = "expiry"
    compacting_plane.ensure_namespace(namespace)
    access = create_service_account(compacting_plane, namespace, "vividflow-api", API_RULES)
    port = int(compacting_plane.server_url.rsplit(":", 1)[1])
    with (
        TcpProxy(port, scheme="https") as proxy,
        closing(api_client_for(compacting_plane.kubeconfig_path)) as admin,
    ):
        monkeypatch.setenv(
            "KUBECONFIG", str(kubeconfig_via(access.kubeconfig, proxy.url, tmp_path / "proxied"))
        )
        with running_api(cluster_settings(tmp_path, namespace, bucket)) as api:
            headers = new_user(api, "eve@example.com")
            job_id = submit(api, headers)
            one_videojob(admin, namespace, job_id)
            wait_for("the backend's watch", lambda: ready(api))
            mirror = backend(api).mirror

            proxy.cut()
            wait_for("the outage to show in /readyz", lambda: not ready(api))
            set_status(admin, namespace, job_id, phase="Processing", progress=50)
            set_status(
                admin,
                namespace,
                job_id,
                phase="Completed",
                progress=100,
                resultURL="https://r/e.mp4",
                metrics=METRICS,
            )
            time.sleep(3)  # two compactions: the watch's last resourceVersion is gone from etcd
            assert status_of(api, headers, job_id)["status"] == "queued"
            expired, lists = mirror.expired, mirror.lists

            proxy.restore()
            body = wait_status(api, headers, job_id, timeout=20)
            assert body["status"] == "completed" and body["result_url"] == output_url(bucket, job_id)
            assert mirror.expired > expired and mirror.lists > lists  # 410 Gone, then a relist
            wait_for("the backend to be ready again", lambda: ready(api))
