"""The fake kubelet with the real Job controller: Pods run as local processes and report like a kubelet's."""

from __future__ import annotations

import base64
import json
import os
import textwrap
import time
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client as k8s

from tests.fixtures.kube import default_base_env, wait_for
from tests.kube.controlplane import ControlPlane, find_bin_dir
from tests.kube.kubelet import ContainerRun, FakeKubelet, python_to_sys_executable

IMAGE = "vividflow-runner:test"


EXITS_ON_SIGTERM = """
import signal, sys, time
def bye(signum, frame):
    print("got SIGTERM", flush=True)
    sys.exit(0)
signal.signal(signal.SIGTERM, bye)
print("started", flush=True)
time.sleep(300)
"""
"""A container's program that says "started", then "got SIGTERM" and exits 0 when it gets one."""


def container(code: str, **fields: Any) -> k8s.V1Container:
    """A container whose command is ``python -c code`` (the kubelet maps python to this interpreter)."""
    return k8s.V1Container(
        name="main", image=IMAGE, command=["python", "-c", textwrap.dedent(code)], **fields
    )


def make_job(
    batch: k8s.BatchV1Api,
    namespace: str,
    name: str,
    main: k8s.V1Container,
    *,
    backoff_limit: int = 0,
    active_deadline_seconds: int | None = None,
) -> k8s.V1Job:
    job = k8s.V1Job(
        metadata=k8s.V1ObjectMeta(name=name),
        spec=k8s.V1JobSpec(
            backoff_limit=backoff_limit,
            active_deadline_seconds=active_deadline_seconds,
            template=k8s.V1PodTemplateSpec(spec=k8s.V1PodSpec(restart_policy="Never", containers=[main])),
        ),
    )
    return batch.create_namespaced_job(namespace, job)


def job_condition(batch: k8s.BatchV1Api, namespace: str, name: str, *types: str) -> k8s.V1JobCondition:
    """Wait for the Job's first condition among ``types`` that is True."""

    def probe() -> k8s.V1JobCondition | None:
        status = batch.read_namespaced_job_status(name, namespace).status
        for condition in (status.conditions if status else None) or []:
            if condition.type in types and condition.status == "True":
                return condition
        return None

    return wait_for(f"job {name} {'/'.join(types)}", probe, timeout=45)


def only_pod(core: k8s.CoreV1Api, namespace: str, job_name: str) -> k8s.V1Pod:
    pods = core.list_namespaced_pod(
        namespace, label_selector=f"batch.kubernetes.io/job-name={job_name}"
    ).items
    assert len(pods) == 1, [p.metadata.name for p in pods if p.metadata]
    return pods[0]


def terminated(pod: k8s.V1Pod) -> k8s.V1ContainerStateTerminated:
    assert pod.status is not None and pod.status.container_statuses
    state = pod.status.container_statuses[0].state
    assert state is not None and state.terminated is not None, state
    return state.terminated


def assert_process_gone(run: ContainerRun) -> None:
    assert run.pid is not None
    with pytest.raises(ProcessLookupError):
        os.kill(run.pid, 0)


def test_job_runs_to_completion_with_termination_message(
    kube_api: k8s.ApiClient, kube_namespace: str, fake_kubelet: FakeKubelet
) -> None:
    batch, core = k8s.BatchV1Api(kube_api), k8s.CoreV1Api(kube_api)
    code = """
        import json, os, sys
        print("greeting=" + os.environ["GREETING"], "pod=" + os.environ["POD_NAME"], flush=True)
        print("ns=" + os.environ["POD_NAMESPACE"], "host=" + os.environ["HOSTNAME"])
        print("outer=" + os.environ["OUTER"], "leaked=" + str("VIVID_BACKEND" in os.environ))
        print("python=" + sys.executable)
        with open(os.environ["VIVID_TERMINATION_LOG"], "w") as log:
            log.write(json.dumps({"ok": True, "resultURL": "gs://bucket/out.mp4"}))
    """
    env = [
        k8s.V1EnvVar(name="GREETING", value="hello"),
        k8s.V1EnvVar(name="OUTER", value="$(GREETING)-world $$(GREETING) $(UNDEFINED)"),
        k8s.V1EnvVar(
            name="POD_NAME",
            value_from=k8s.V1EnvVarSource(field_ref=k8s.V1ObjectFieldSelector(field_path="metadata.name")),
        ),
        k8s.V1EnvVar(
            name="POD_NAMESPACE",
            value_from=k8s.V1EnvVarSource(
                field_ref=k8s.V1ObjectFieldSelector(field_path="metadata.namespace")
            ),
        ),
    ]
    os.environ["VIVID_BACKEND"] = "kubernetes"  # the test process's settings must not leak into pods
    try:
        make_job(batch, kube_namespace, "hello", container(code, env=env))
        complete = job_condition(batch, kube_namespace, "hello", "Complete", "Failed")
    finally:
        del os.environ["VIVID_BACKEND"]
    assert complete.type == "Complete"

    pod = only_pod(core, kube_namespace, "hello")
    assert pod.spec is not None and pod.status is not None and pod.metadata is not None
    assert pod.spec.node_name == fake_kubelet.node_name
    assert pod.status.phase == "Succeeded"
    state = terminated(pod)
    assert state.exit_code == 0 and state.reason == "Completed"
    assert json.loads(state.message or "") == {"ok": True, "resultURL": "gs://bucket/out.mp4"}
    assert state.started_at is not None and state.finished_at is not None
    assert state.started_at <= state.finished_at

    (run,) = fake_kubelet.wait_for_runs(job_name="hello")
    run.wait()
    name = pod.metadata.name
    assert f"greeting=hello pod={name}" in run.output
    assert f"ns={kube_namespace} host={name}" in run.output
    # $(VAR) expansion as Kubernetes does it: defined names replaced, $$ escapes, undefined kept.
    assert "outer=hello-world $(GREETING) $(UNDEFINED) leaked=False" in run.output
    assert f"python={os.path.realpath(run.argv[0])}" in run.output or f"python={run.argv[0]}" in run.output
    assert run.exit_code == 0 and run.killed_by is None
    assert fake_kubelet.errors == []

    node = core.read_node(fake_kubelet.node_name)
    assert node.status is not None
    assert any(c.type == "Ready" and c.status == "True" for c in node.status.conditions or [])


def test_failing_command_fails_the_job(
    kube_api: k8s.ApiClient, kube_namespace: str, fake_kubelet: FakeKubelet
) -> None:
    batch, core = k8s.BatchV1Api(kube_api), k8s.CoreV1Api(kube_api)
    code = """
        import os, sys
        print("about to fail", file=sys.stderr)
        sys.exit(3)
    """
    make_job(
        batch, kube_namespace, "broken", container(code, termination_message_policy="FallbackToLogsOnError")
    )
    failed = job_condition(batch, kube_namespace, "broken", "Complete", "Failed")
    assert failed.type == "Failed" and failed.reason == "BackoffLimitExceeded"

    pod = only_pod(core, kube_namespace, "broken")
    assert pod.status is not None and pod.status.phase == "Failed"
    state = terminated(pod)
    assert state.exit_code == 3 and state.reason == "Error"
    # No termination log written: FallbackToLogsOnError reports the output's tail.
    assert state.message == "about to fail"


def test_job_deadline_kills_the_process(
    kube_api: k8s.ApiClient, kube_namespace: str, fake_kubelet: FakeKubelet
) -> None:
    batch, core = k8s.BatchV1Api(kube_api), k8s.CoreV1Api(kube_api)
    code = """
        import time
        print("sleeping", flush=True)
        time.sleep(120)
    """
    make_job(batch, kube_namespace, "slow", container(code), active_deadline_seconds=2)
    (run,) = fake_kubelet.wait_for_runs(job_name="slow")
    failed = job_condition(batch, kube_namespace, "slow", "Complete", "Failed")
    assert failed.type == "Failed" and failed.reason == "DeadlineExceeded"

    # The Job controller deleted the pod; the kubelet killed the process and finished the deletion.
    run.wait()
    assert run.killed_by == "deletion" and run.exit_code == 128 + 15 and run.reason == "Error"
    assert "sleeping" in run.output
    assert_process_gone(run)
    wait_for(
        "the pod to be removed",
        lambda: (
            not core.list_namespaced_pod(
                kube_namespace, label_selector="batch.kubernetes.io/job-name=slow"
            ).items
        ),
    )


def test_deleting_a_job_kills_its_process(
    kube_api: k8s.ApiClient, kube_namespace: str, fake_kubelet: FakeKubelet
) -> None:
    batch, core = k8s.BatchV1Api(kube_api), k8s.CoreV1Api(kube_api)
    make_job(batch, kube_namespace, "doomed", container(EXITS_ON_SIGTERM))
    (run,) = fake_kubelet.wait_for_runs(job_name="doomed")
    wait_for("the process to start", lambda: "started" in run.output)

    def running() -> k8s.V1Pod | None:
        pod = only_pod(core, kube_namespace, "doomed")
        return pod if pod.status is not None and pod.status.phase == "Running" else None

    pod = wait_for("the pod to be Running", running)
    assert pod.status is not None
    assert pod.status.container_statuses and pod.status.container_statuses[0].ready
    assert any(c.type == "Ready" and c.status == "True" for c in pod.status.conditions or [])

    batch.delete_namespaced_job("doomed", kube_namespace, propagation_policy="Background")
    run.wait()
    # SIGTERM first, as the kubelet does; the process exited 0 on it.
    assert run.killed_by == "deletion" and "got SIGTERM" in run.output and run.exit_code == 0
    assert_process_gone(run)
    wait_for("the pod to be removed", lambda: not core.list_namespaced_pod(kube_namespace).items)


def test_env_from_secret_and_config_map_reaches_the_process(
    kube_api: k8s.ApiClient, kube_namespace: str, fake_kubelet: FakeKubelet
) -> None:
    batch, core = k8s.BatchV1Api(kube_api), k8s.CoreV1Api(kube_api)
    core.create_namespaced_secret(
        kube_namespace,
        k8s.V1Secret(
            metadata=k8s.V1ObjectMeta(name="runner-env"),
            data={"VIVID_VERTEX_API_KEY": base64.b64encode(b"s3cret-key").decode()},
            string_data={"VIVID_GCS_BUCKET": "results"},
        ),
    )
    core.create_namespaced_config_map(
        kube_namespace, k8s.V1ConfigMap(metadata=k8s.V1ObjectMeta(name="settings"), data={"mode": "cluster"})
    )
    code = """
        import os
        for name in ("VIVID_VERTEX_API_KEY", "VIVID_GCS_BUCKET", "TOKEN", "MODE", "CFG_mode", "ABSENT"):
            print(name, "=", os.environ.get(name, "<unset>"))
    """
    env = [
        k8s.V1EnvVar(
            name="TOKEN",
            value_from=k8s.V1EnvVarSource(
                secret_key_ref=k8s.V1SecretKeySelector(name="runner-env", key="VIVID_VERTEX_API_KEY")
            ),
        ),
        k8s.V1EnvVar(
            name="MODE",
            value_from=k8s.V1EnvVarSource(
                config_map_key_ref=k8s.V1ConfigMapKeySelector(name="settings", key="mode")
            ),
        ),
        k8s.V1EnvVar(
            name="ABSENT",
            value_from=k8s.V1EnvVarSource(
                secret_key_ref=k8s.V1SecretKeySelector(name="no-such-secret", key="x", optional=True)
            ),
        ),
    ]
    env_from = [
        k8s.V1EnvFromSource(secret_ref=k8s.V1SecretEnvSource(name="runner-env")),
        k8s.V1EnvFromSource(prefix="CFG_", config_map_ref=k8s.V1ConfigMapEnvSource(name="settings")),
    ]
    make_job(batch, kube_namespace, "secretive", container(code, env=env, env_from=env_from))
    assert job_condition(batch, kube_namespace, "secretive", "Complete", "Failed").type == "Complete"
    (run,) = fake_kubelet.wait_for_runs(job_name="secretive")
    output = run.wait().output
    assert "VIVID_VERTEX_API_KEY = s3cret-key" in output
    assert "VIVID_GCS_BUCKET = results" in output
    assert "TOKEN = s3cret-key" in output
    assert "MODE = cluster" in output and "CFG_mode = cluster" in output
    assert "ABSENT = <unset>" in output


def test_missing_secret_holds_the_container_until_it_exists(
    kube_api: k8s.ApiClient, kube_namespace: str, fake_kubelet: FakeKubelet
) -> None:
    core = k8s.CoreV1Api(kube_api)
    pod = k8s.V1Pod(
        metadata=k8s.V1ObjectMeta(name="waiter"),
        spec=k8s.V1PodSpec(
            restart_policy="Never",
            containers=[
                container(
                    "import os; print('key', os.environ['KEY'])",
                    env_from=[k8s.V1EnvFromSource(secret_ref=k8s.V1SecretEnvSource(name="late"))],
                )
            ],
        ),
    )
    core.create_namespaced_pod(kube_namespace, pod)

    def waiting_reason() -> str | None:
        status = core.read_namespaced_pod_status("waiter", kube_namespace).status
        statuses = (status.container_statuses if status else None) or []
        waiting = statuses[0].state.waiting if statuses and statuses[0].state else None
        return f"{waiting.reason}: {waiting.message}" if waiting else None

    assert wait_for("CreateContainerConfigError", waiting_reason) == (
        'CreateContainerConfigError: secret "late" not found'
    )
    core.create_namespaced_secret(
        kube_namespace, k8s.V1Secret(metadata=k8s.V1ObjectMeta(name="late"), string_data={"KEY": "now"})
    )
    (run,) = fake_kubelet.wait_for_runs(pod_name="waiter")
    assert run.wait().exit_code == 0 and "key now" in run.output
    final = core.read_namespaced_pod_status("waiter", kube_namespace)
    assert final.status is not None and final.status.phase == "Succeeded"


def test_image_pull_error_never_runs_and_deletion_finishes(
    kube_api: k8s.ApiClient, kube_namespace: str, fake_kubelet: FakeKubelet
) -> None:
    batch, core = k8s.BatchV1Api(kube_api), k8s.CoreV1Api(kube_api)
    fake_kubelet.image_pull_errors.add("registry.example/missing:1")
    main = k8s.V1Container(name="main", image="registry.example/missing:1", command=["python", "-c", "1"])
    make_job(batch, kube_namespace, "unpullable", main)

    def waiting() -> str | None:
        pods = core.list_namespaced_pod(kube_namespace).items
        status = pods[0].status if pods else None
        statuses = (status.container_statuses if status else None) or []
        state = statuses[0].state if statuses else None
        if state and state.waiting and state.waiting.reason == "ImagePullBackOff":
            return state.waiting.message
        return None

    assert wait_for("ImagePullBackOff", waiting) == 'Back-off pulling image "registry.example/missing:1"'
    pod = only_pod(core, kube_namespace, "unpullable")
    assert pod.status is not None and pod.status.phase == "Pending"
    (run,) = fake_kubelet.wait_for_runs(job_name="unpullable", started=False)
    assert not run.started and run.waiting_reason == "ImagePullBackOff"

    batch.delete_namespaced_job("unpullable", kube_namespace, propagation_policy="Background")
    wait_for("the pod to be removed", lambda: not core.list_namespaced_pod(kube_namespace).items)
    assert run.wait().reason == "ContainerStatusUnknown" and not run.started


def test_pod_deadline_and_oom_kill(
    kube_api: k8s.ApiClient, kube_namespace: str, fake_kubelet: FakeKubelet
) -> None:
    core = k8s.CoreV1Api(kube_api)

    def bare_pod(name: str, code: str, deadline: int | None = None) -> None:
        spec = k8s.V1PodSpec(
            restart_policy="Never", containers=[container(code)], active_deadline_seconds=deadline
        )
        core.create_namespaced_pod(kube_namespace, k8s.V1Pod(metadata=k8s.V1ObjectMeta(name=name), spec=spec))

    bare_pod("sleeper", "import time; time.sleep(120)", deadline=1)
    bare_pod("hog", "import os, signal; os.kill(os.getpid(), signal.SIGKILL)")
    sleeper, hog = (fake_kubelet.wait_for_runs(pod_name=name)[0].wait() for name in ("sleeper", "hog"))

    assert sleeper.killed_by == "deadline"
    assert_process_gone(sleeper)
    status = core.read_namespaced_pod_status("sleeper", kube_namespace).status
    assert status is not None and status.phase == "Failed" and status.reason == "DeadlineExceeded"

    # A SIGKILL the kubelet did not send reads as the kernel's OOM killer.
    assert hog.killed_by is None and hog.exit_code == 137 and hog.reason == "OOMKilled"
    state = terminated(core.read_namespaced_pod_status("hog", kube_namespace))
    assert state.reason == "OOMKilled" and state.exit_code == 137


def test_stop_kills_processes_and_fails_their_pods(
    kube_api: k8s.ApiClient, kube_namespace: str, make_fake_kubelet: Any
) -> None:
    core = k8s.CoreV1Api(kube_api)
    kubelet: FakeKubelet = make_fake_kubelet(namespace=kube_namespace)
    spec = k8s.V1PodSpec(restart_policy="Never", containers=[container("import time; time.sleep(120)")])
    core.create_namespaced_pod(kube_namespace, k8s.V1Pod(metadata=k8s.V1ObjectMeta(name="orphan"), spec=spec))
    (run,) = kubelet.wait_for_runs(pod_name="orphan")
    kubelet.stop()
    assert run.finished and run.killed_by == "stop"
    assert_process_gone(run)
    status = core.read_namespaced_pod_status("orphan", kube_namespace).status
    assert status is not None and status.phase == "Failed"

    # A new kubelet on the same node lists the finished pod and leaves it alone.
    again: FakeKubelet = make_fake_kubelet(namespace=kube_namespace)
    assert again.synced.is_set() and again.runs == [] and again.errors == []


def test_an_expired_watch_relists(tmp_path: Path) -> None:
    """On a control plane without watch cache that compacts etcd every second, a rewatch from an old
    resourceVersion answers 410 Gone: the kubelet lists again and keeps running new pods."""
    bin_dir = find_bin_dir()
    if bin_dir is None:
        pytest.fail("kube binaries not built: run `make test` or hack/kubebin/build.sh", pytrace=False)
    args = ["--watch-cache=false", "--etcd-compaction-interval=1s"]
    with ControlPlane(bin_dir, controllers=(), apiserver_args=args) as plane:
        plane.ensure_namespace("quiet")
        plane.ensure_namespace("busy")
        kubelet = FakeKubelet(
            plane.kubeconfig_path,
            namespace="quiet",
            base_env=default_base_env(),
            command_rewriter=python_to_sys_executable,
            work_dir=tmp_path,
            watch_timeout_seconds=1,
        )
        with kubelet:
            # Writes elsewhere move etcd's revision on; compaction drops the quiet namespace's last one.
            for i in range(40):
                plane.request("POST", "/api/v1/namespaces/busy/configmaps", {"metadata": {"name": f"c{i}"}})
                time.sleep(0.1)
                if kubelet.expired:
                    break
            wait_for("a 410 Gone", lambda: kubelet.expired, timeout=10)
            # The relist follows the 410 (the flag is set first): wait for it rather than race it.
            wait_for("a relist after the 410", lambda: kubelet.lists >= 2, timeout=10)
            assert kubelet.errors == []
            spec = {
                "restartPolicy": "Never",
                "containers": [{"name": "c", "image": IMAGE, "command": ["true"]}],
            }
            plane.request(
                "POST", "/api/v1/namespaces/quiet/pods", {"metadata": {"name": "late"}, "spec": spec}
            )
            (run,) = kubelet.wait_for_runs(pod_name="late")
            assert run.wait().exit_code == 0
