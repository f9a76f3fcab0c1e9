"""The test control plane itself: real etcd + kube-apiserver + kube-controller-manager.

Skipped unless the binaries are built (``hack/kubebin/build.sh``; 10-25 minutes cold, then cached).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TypeVar

import pytest

from tests.fixtures.kube import wait_for
from tests.kube.controlplane import ControlPlane, ControlPlaneError, find_bin_dir

kubernetes = pytest.importorskip("kubernetes")
from kubernetes import client as k8s  # noqa: E402
from kubernetes import config as k8s_config  # noqa: E402
from kubernetes.client.exceptions import ApiException  # noqa: E402

T = TypeVar("T")

GROUP = "selftest.vividflow.dev"
NAMESPACE = "plane-selftest"


def _client(kubeconfig: Path) -> k8s.ApiClient:
    # A client of its own, so the tests never touch the process-wide default configuration.
    api_client: k8s.ApiClient = k8s_config.new_client_from_config(  # type: ignore[no-untyped-call]
        config_file=str(kubeconfig)
    )
    return api_client


@pytest.fixture(scope="module")
def plane() -> Iterator[ControlPlane]:
    bin_dir = find_bin_dir()
    if bin_dir is None:
        pytest.skip("kube binaries not built: run hack/kubebin/build.sh")
    with ControlPlane(bin_dir) as started:
        yield started


@pytest.fixture(scope="module")
def api(plane: ControlPlane) -> Iterator[k8s.ApiClient]:
    api_client = _client(plane.kubeconfig_path)
    with api_client:
        k8s.CoreV1Api(api_client).create_namespace(k8s.V1Namespace(metadata=k8s.V1ObjectMeta(name=NAMESPACE)))
        yield api_client


def test_startup_and_version(plane: ControlPlane, api: k8s.ApiClient) -> None:
    assert plane.startup_seconds is not None and plane.startup_seconds < 60
    info = k8s.VersionApi(api).get_code()
    assert info.git_version.startswith("v1.") and "master" not in info.git_version
    assert plane.server_url.startswith("https://127.0.0.1:")
    assert plane.ca_path.is_file()


def test_custom_resource_with_status_subresource(api: k8s.ApiClient) -> None:
    crd = {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": f"widgets.{GROUP}"},
        "spec": {
            "group": GROUP,
            "scope": "Namespaced",
            "names": {"plural": "widgets", "singular": "widget", "kind": "Widget"},
            "versions": [
                {
                    "name": "v1",
                    "served": True,
                    "storage": True,
                    "subresources": {"status": {}},
                    "schema": {
                        "openAPIV3Schema": {
                            "type": "object",
                            "properties": {
                                "spec": {"type": "object", "properties": {"size": {"type": "integer"}}},
                                "status": {"type": "object", "x-kubernetes-preserve-unknown-fields": True},
                            },
                        }
                    },
                }
            ],
        },
    }
    ext = k8s.ApiextensionsV1Api(api)
    ext.create_custom_resource_definition(crd)  # type: ignore[arg-type]  # a dict body is sent as is

    def established() -> bool:
        status = ext.read_custom_resource_definition(f"widgets.{GROUP}").status
        conditions = (status.conditions if status else None) or []
        return any(c.type == "Established" and c.status == "True" for c in conditions)

    wait_for("CRD Established", established)
    custom = k8s.CustomObjectsApi(api)
    body = {"apiVersion": f"{GROUP}/v1", "kind": "Widget", "metadata": {"name": "w1"}, "spec": {"size": 3}}
    created = wait_for(
        "custom object created",
        lambda: _ignore_404(
            lambda: custom.create_namespaced_custom_object(GROUP, "v1", NAMESPACE, "widgets", body)
        ),
    )
    assert isinstance(created, dict) and created["metadata"]["generation"] == 1
    # Status goes through the subresource only and does not bump the generation.
    custom.patch_namespaced_custom_object_status(
        GROUP, "v1", NAMESPACE, "widgets", "w1", {"status": {"phase": "Ready"}}
    )
    obj = custom.get_namespaced_custom_object(GROUP, "v1", NAMESPACE, "widgets", "w1")
    assert isinstance(obj, dict)
    assert obj["status"] == {"phase": "Ready"}
    assert obj["metadata"]["generation"] == 1
    custom.patch_namespaced_custom_object(GROUP, "v1", NAMESPACE, "widgets", "w1", {"status": {"phase": "X"}})
    obj = custom.get_namespaced_custom_object(GROUP, "v1", NAMESPACE, "widgets", "w1")
    assert isinstance(obj, dict) and obj["status"] == {"phase": "Ready"}


def _ignore_404(call: Callable[[], T]) -> T | None:
    try:
        return call()
    except ApiException as err:  # the new resource is briefly unknown to the API handler
        if err.status == 404:
            return None
        raise


def test_job_controller_and_garbage_collector(api: k8s.ApiClient) -> None:
    batch, core = k8s.BatchV1Api(api), k8s.CoreV1Api(api)
    job = k8s.V1Job(
        metadata=k8s.V1ObjectMeta(name="hello"),
        spec=k8s.V1JobSpec(
            backoff_limit=0,
            template=k8s.V1PodTemplateSpec(
                spec=k8s.V1PodSpec(
                    restart_policy="Never",
                    containers=[k8s.V1Container(name="main", image="busybox", command=["true"])],
                )
            ),
        ),
    )
    created = batch.create_namespaced_job(NAMESPACE, job)
    assert created.metadata is not None
    selector = f"batch.kubernetes.io/controller-uid={created.metadata.uid}"

    pods = wait_for(
        "the Job controller to create a pod",
        lambda: core.list_namespaced_pod(NAMESPACE, label_selector=selector).items,
    )
    assert len(pods) == 1
    pod = pods[0]
    assert pod.metadata is not None and pod.status is not None and pod.spec is not None
    (owner,) = pod.metadata.owner_references or []
    assert owner.kind == "Job" and owner.name == "hello" and owner.controller
    assert pod.status.phase == "Pending" and not pod.spec.node_name
    assert "batch.kubernetes.io/job-tracking" in (pod.metadata.finalizers or [])

    # batch/v1 Jobs default to orphaning their pods; Background lets the garbage collector remove them.
    batch.delete_namespaced_job("hello", NAMESPACE, propagation_policy="Background")
    wait_for(
        "the garbage collector to delete the pod",
        lambda: not core.list_namespaced_pod(NAMESPACE, label_selector=selector).items,
    )


def test_service_account_token_is_limited_by_rbac(plane: ControlPlane) -> None:
    token = plane.create_service_account_token(NAMESPACE, "reader")
    path = plane.make_kubeconfig_for_token(token)
    with _client(path) as limited:
        core = k8s.CoreV1Api(limited)
        with pytest.raises(ApiException) as denied:
            core.list_namespaced_pod(NAMESPACE)
        assert denied.value.status == 403
        assert "system:serviceaccount:plane-selftest:reader" in str(denied.value.body)

        plane.request(
            "POST",
            f"/apis/rbac.authorization.k8s.io/v1/namespaces/{NAMESPACE}/roles",
            {
                "apiVersion": "rbac.authorization.k8s.io/v1",
                "kind": "Role",
                "metadata": {"name": "pod-reader"},
                "rules": [{"apiGroups": [""], "resources": ["pods"], "verbs": ["get", "list"]}],
            },
        )
        plane.request(
            "POST",
            f"/apis/rbac.authorization.k8s.io/v1/namespaces/{NAMESPACE}/rolebindings",
            {
                "apiVersion": "rbac.authorization.k8s.io/v1",
                "kind": "RoleBinding",
                "metadata": {"name": "reader"},
                "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "pod-reader"},
                "subjects": [{"kind": "ServiceAccount", "name": "reader", "namespace": NAMESPACE}],
            },
        )
        wait_for("RBAC to allow listing pods", lambda: _allowed(lambda: core.list_namespaced_pod(NAMESPACE)))
        with pytest.raises(ApiException) as still_denied:
            core.list_namespaced_secret(NAMESPACE)
        assert still_denied.value.status == 403


def _allowed(call: Callable[[], object]) -> bool:
    try:
        call()
    except ApiException as err:
        if err.status == 403:
            return False
        raise
    return True


def test_stop_removes_everything(plane: ControlPlane) -> None:
    other = ControlPlane(find_bin_dir(), controllers=())
    with other:
        directory = other.dir
        processes = [c.process for c in other._components]
        status, body = other.request("GET", "/version")
        assert status == 200 and body["gitVersion"].startswith("v1.")
    assert not directory.exists()
    assert all(p.poll() is not None for p in processes)


def test_failed_start_cleans_up(plane: ControlPlane) -> None:
    broken = ControlPlane(find_bin_dir(), controllers=(), apiserver_args=["--no-such-flag"], start_timeout=20)
    with pytest.raises(ControlPlaneError, match="kube-apiserver exited") as failure:
        broken.start()
    assert "no-such-flag" in str(failure.value)
    assert broken._dir is None and not broken._components
