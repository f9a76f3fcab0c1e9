"""The fake kubelet's container mode (``tests/kube/kubelet_podman.py``): Pods of the built ``api`` image
run as real podman containers, as the chart's security context asks, with a projected ServiceAccount
token the API server knows as the Pod's; Pods of other images stay local processes."""

from __future__ import annotations

import base64
import json
import subprocess
import textwrap
from collections.abc import Callable
from typing import Any

import pytest
from kubernetes import client as k8s

from tests.fixtures.kube import ServiceAccountFactory, wait_for
from tests.images import podman
from tests.kube.kubelet import ContainerRun, FakeKubelet
from tests.kube.kubelet_podman import PodmanRuntime
from tests.kube.test_kubelet import EXITS_ON_SIGTERM

pytestmark = pytest.mark.timeout(300)
UID = 10001
Obj = dict[str, Any]

# What the chart gives its Pods (values.yaml: podSecurityContext, securityContext).
POD_SECURITY = {"runAsNonRoot": True, "runAsUser": UID, "runAsGroup": UID, "fsGroup": UID}
CONTAINER_SECURITY = {
    "allowPrivilegeEscalation": False,
    "readOnlyRootFilesystem": True,
    "capabilities": {"drop": ["ALL"]},
}

# Inside the container: who and where it is, what it may write, its token's claims, and who the API
# server takes it for (a SelfSubjectReview with the in-cluster configuration of the kubernetes package).
PROBE = """
    import base64, json, os, pathlib
    from kubernetes import client, config
    sa = pathlib.Path("/var/run/secrets/kubernetes.io/serviceaccount")
    token = (sa / "token").read_text()
    payload = token.split(".")[1]
    claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    def writable(path):
        try:
            pathlib.Path(path).write_text("x")
            return True
        except OSError:
            return False
    config.load_incluster_config()
    review = client.AuthenticationV1Api().create_self_subject_review(client.V1SelfSubjectReview())
    report = {
        "uid": os.getuid(), "gid": os.getgid(), "groups": sorted(os.getgroups()), "cwd": os.getcwd(),
        "hostname": os.uname().nodename, "env": {k: os.environ.get(k) for k in ("GREETING", "POD_NAME",
        "FROM_SECRET", "FROM_RUNTIME", "HOSTNAME", "KUBERNETES_SERVICE_HOST")},
        "claims": claims["kubernetes.io"], "namespace": (sa / "namespace").read_text(),
        "ca": (sa / "ca.crt").read_text().startswith("-----BEGIN CERTIFICATE-----"),
        "root_writable": writable("/probe"), "scratch_writable": writable("/scratch/probe"),
        "token_writable": writable(str(sa / "token")),
        "secret_file": pathlib.Path("/etc/vivid/key").read_text(),
        "user": review.status.user_info.username,
        "pod_name_claim": review.status.user_info.extra["authentication.kubernetes.io/pod-name"],
    }
    print(json.dumps(report), flush=True)
    pathlib.Path("/dev/termination-log").write_text(json.dumps({"ok": True}))
"""


@pytest.fixture(scope="module")
def images() -> podman.Images:
    return podman.built_images()


@pytest.fixture
def runtime() -> PodmanRuntime:
    return PodmanRuntime(env={"FROM_RUNTIME": "beneath the pod's env"})


@pytest.fixture
def kubelet(
    make_fake_kubelet: Callable[..., FakeKubelet], kube_namespace: str, runtime: PodmanRuntime
) -> FakeKubelet:
    return make_fake_kubelet(namespace=kube_namespace, container_runtime=runtime)


def create_pod(core: k8s.CoreV1Api, namespace: str, name: str, container: Obj, **spec: Any) -> None:
    pod: Obj = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name},
        "spec": {"restartPolicy": "Never", "containers": [{"name": "main", **container}], **spec},
    }
    core.create_namespaced_pod(namespace, pod)  # type: ignore[arg-type]  # a dict body is sent as is


def pod_uid(core: k8s.CoreV1Api, namespace: str, name: str) -> str:
    metadata = core.read_namespaced_pod(name, namespace).metadata
    assert metadata is not None and metadata.uid
    return str(metadata.uid)


def pod_phase(core: k8s.CoreV1Api, namespace: str, name: str) -> str | None:
    status = core.read_namespaced_pod_status(name, namespace).status
    return status.phase if status else None


def finished(kubelet: FakeKubelet, name: str, timeout: float = 120) -> ContainerRun:
    (run,) = kubelet.wait_for_runs(pod_name=name, timeout=timeout)
    return run.wait(timeout)


def terminated_state(core: k8s.CoreV1Api, namespace: str, name: str) -> k8s.V1ContainerStateTerminated:
    def probe() -> k8s.V1ContainerStateTerminated | None:
        status = core.read_namespaced_pod_status(name, namespace).status
        statuses = (status.container_statuses if status else None) or []
        return statuses[0].state.terminated if statuses and statuses[0].state else None

    return wait_for(f"pod {name} terminated", probe)


def containers_of(pod_uid: str) -> list[str]:
    done = subprocess.run(
        [
            "podman",
            "ps",
            "--all",
            "--filter",
            f"label=io.kubernetes.pod.uid={pod_uid}",
            "--format",
            "{{.Names}}",
        ],
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
    )
    return done.stdout.split()


def test_a_pod_of_the_api_image_runs_as_its_container(
    kube_api: k8s.ApiClient,
    kube_namespace: str,
    kube_service_account: ServiceAccountFactory,
    kubelet: FakeKubelet,
    images: podman.Images,
) -> None:
    core = k8s.CoreV1Api(kube_api)
    kube_service_account(kube_namespace, "prober")
    core.create_namespaced_secret(
        kube_namespace,
        k8s.V1Secret(
            metadata=k8s.V1ObjectMeta(name="probe"),
            data={
                "FROM_SECRET": base64.b64encode(b"env-from").decode(),
                "key": base64.b64encode(b"k3y").decode(),
            },
        ),
    )
    container = {
        "image": images.api,
        "command": ["python", "-c", textwrap.dedent(PROBE)],
        "workingDir": "/scratch",
        "env": [
            {"name": "GREETING", "value": "hello"},
            {"name": "POD_NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
            {"name": "FROM_RUNTIME", "value": "$(GREETING) from the pod"},
        ],
        "envFrom": [{"secretRef": {"name": "probe"}}],
        "securityContext": CONTAINER_SECURITY,
        "volumeMounts": [
            {"name": "scratch", "mountPath": "/scratch"},
            {"name": "secret", "mountPath": "/etc/vivid"},
        ],
    }
    create_pod(
        core,
        kube_namespace,
        "probe",
        container,
        serviceAccountName="prober",
        securityContext=POD_SECURITY,
        volumes=[
            {"name": "scratch", "emptyDir": {}},
            {"name": "secret", "secret": {"secretName": "probe", "items": [{"key": "key", "path": "key"}]}},
        ],
    )
    run = finished(kubelet, "probe")
    assert run.mode == "container" and run.exit_code == 0, run.output
    report = json.loads(run.output.strip().splitlines()[-1])
    uid = pod_uid(core, kube_namespace, "probe")
    assert report["uid"] == UID and report["gid"] == UID and UID in report["groups"]
    assert report["cwd"] == "/scratch" and report["hostname"] == "probe"
    assert report["env"] == {
        "GREETING": "hello",
        "POD_NAME": "probe",
        "FROM_SECRET": "env-from",
        "FROM_RUNTIME": "hello from the pod",  # the Pod's env over the runtime's
        "HOSTNAME": "probe",
        "KUBERNETES_SERVICE_HOST": "127.0.0.1",
    }
    # The projected token: bound to this Pod, and the API server sees the Pod's name in it.
    assert report["claims"]["pod"] == {"name": "probe", "uid": uid}
    assert report["claims"]["serviceaccount"]["name"] == "prober"
    assert report["namespace"] == kube_namespace and report["ca"]
    assert report["user"] == f"system:serviceaccount:{kube_namespace}:prober"
    assert report["pod_name_claim"] == ["probe"]
    # Read-only root; writable only where a volume is; the token and the secret read-only.
    assert report["root_writable"] is False and report["scratch_writable"] is True
    assert report["token_writable"] is False and report["secret_file"] == "k3y"

    state = terminated_state(core, kube_namespace, "probe")
    assert state.exit_code == 0 and state.reason == "Completed"
    assert json.loads(state.message or "") == {"ok": True}
    assert (state.container_id or "").startswith("podman://")
    assert pod_phase(core, kube_namespace, "probe") == "Succeeded"
    wait_for("the container to be removed", lambda: not containers_of(uid))
    assert kubelet.errors == []


def test_the_images_entrypoint_and_a_process_pod_beside_it(
    kube_api: k8s.ApiClient, kube_namespace: str, kubelet: FakeKubelet, images: podman.Images
) -> None:
    """``args`` alone go to the image's ENTRYPOINT (``vividflow``); an image not in local storage
    runs as a local process, as before."""
    core = k8s.CoreV1Api(kube_api)
    create_pod(core, kube_namespace, "help", {"image": images.api, "args": ["--help"]})
    create_pod(
        core,
        kube_namespace,
        "local",
        {"image": "ghcr.io/example/not-here:1", "command": ["python", "-c", "print('a process')"]},
    )
    help_run, local_run = finished(kubelet, "help"), finished(kubelet, "local")
    assert help_run.mode == "container" and help_run.exit_code == 0
    assert "Usage: vividflow" in help_run.output
    assert local_run.mode == "process" and local_run.exit_code == 0 and "a process" in local_run.output


def test_exit_codes_start_errors_and_refused_users(
    kube_api: k8s.ApiClient, kube_namespace: str, kubelet: FakeKubelet, images: podman.Images
) -> None:
    core = k8s.CoreV1Api(kube_api)
    create_pod(
        core,
        kube_namespace,
        "fails",
        {
            "image": images.api,
            "command": ["python", "-c", "import sys; print('about to fail', file=sys.stderr); sys.exit(3)"],
            "terminationMessagePolicy": "FallbackToLogsOnError",
        },
    )
    create_pod(core, kube_namespace, "no-such-command", {"image": images.api, "command": ["no-such-command"]})
    create_pod(
        core,
        kube_namespace,
        "as-root",
        {"image": images.api, "args": ["--help"], "securityContext": {"runAsUser": 0}},
        securityContext={"runAsNonRoot": True},
    )
    failed = terminated_state(core, kube_namespace, "fails")
    assert failed.exit_code == 3 and failed.reason == "Error" and failed.message == "about to fail"
    start_error = terminated_state(core, kube_namespace, "no-such-command")
    assert start_error.exit_code == 128 and start_error.reason == "StartError"
    assert "executable file not found" in (start_error.message or "")

    def waiting() -> k8s.V1ContainerStateWaiting | None:
        status = core.read_namespaced_pod_status("as-root", kube_namespace).status
        statuses = (status.container_statuses if status else None) or []
        return statuses[0].state.waiting if statuses and statuses[0].state else None

    refused = wait_for("the root container to be refused", waiting)
    assert refused.reason == "CreateContainerConfigError"
    assert "non-root" in (refused.message or "")
    (root_run,) = kubelet.wait_for_runs(pod_name="as-root", started=False)
    assert not root_run.started


def test_deleting_a_pod_stops_its_container(
    kube_api: k8s.ApiClient, kube_namespace: str, kubelet: FakeKubelet, images: podman.Images
) -> None:
    core = k8s.CoreV1Api(kube_api)
    create_pod(
        core,
        kube_namespace,
        "doomed",
        {"image": images.api, "command": ["python", "-c", EXITS_ON_SIGTERM]},
        terminationGracePeriodSeconds=5,
    )
    (run,) = kubelet.wait_for_runs(pod_name="doomed", timeout=60)
    wait_for("the container to start", lambda: "started" in run.output, timeout=60)
    uid = pod_uid(core, kube_namespace, "doomed")
    assert containers_of(uid)
    core.delete_namespaced_pod("doomed", kube_namespace)
    run.wait(60)
    # The stop signal first, as the kubelet sends it; the process exited 0 on it.
    assert run.killed_by == "deletion" and "got SIGTERM" in run.output and run.exit_code == 0
    wait_for("the pod to be removed", lambda: not core.list_namespaced_pod(kube_namespace).items)
    assert not containers_of(uid)
