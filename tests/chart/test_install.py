"""`helm install` of charts/vividflow into the test suite's real API server (RBAC authorization), then
the chart's own ServiceAccounts, with tokens from the TokenRequest API, prove its RBAC rules:

- minimal: a SelfSubjectRulesReview of each ServiceAccount lists exactly the chart's rules (beyond what
  any authenticated user has);
- sufficient, verb by verb: each ServiceAccount does what its component needs and is refused the rest;
- sufficient, for real: the operator (`vividflow operator` with the chart's args and ConfigMap, as its
  Deployment runs it), the API server (cluster mode, the ConfigMap's settings) and the runner (through
  the fake kubelet) each run with their own ServiceAccount's token, and a job submitted through the REST
  API completes.

No Pod of the chart runs (there is no node), so the release is installed with --no-hooks; the migration
hook's command is run locally instead.
"""

from __future__ import annotations

import json
import os
import secrets
import subprocess
import sys
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import yaml
from kubernetes import client as k8s
from kubernetes import watch as k8s_watch
from kubernetes.client.exceptions import ApiException

from tests.chart.chart import CHART_DIR, RELEASE, helm_uninstall, run_helm, value_args
from tests.chart.test_render import EXPECTED_RULES
from tests.fixtures.gcs_emulator import GcsEmulator
from tests.fixtures.kube import api_client_for, create_service_account, install_videojob_crd, wait_for
from tests.kube.cluster_api import cluster_settings, new_user, running_api, submit, wait_status
from tests.kube.controlplane import ControlPlane
from tests.kube.kubelet import FakeKubelet
from tests.ports import free_port
from tests.processes import stop
from vividflow.jobspec import GROUP, PLURAL, VERSION, JobParameters, JobSpec, ModelName, videojob_manifest

FULLNAME = f"{RELEASE}-vividflow"
PEERING_CRD = "kopfpeerings.kopf.dev"
COMPONENTS = ("api", "operator", "runner")

Obj = dict[str, Any]


@dataclass
class Installed:
    plane: ControlPlane
    namespace: str
    notes: str
    bucket: str
    kubeconfigs: dict[str, Path]
    admin: k8s.ApiClient

    def client(self, component: str) -> k8s.ApiClient:
        return api_client_for(self.kubeconfigs[component])


@pytest.fixture(scope="module")
def liveness_port() -> int:
    return free_port()


@pytest.fixture(scope="module")
def installed(
    helm: Path,
    kube_plane: ControlPlane,
    kube_api: k8s.ApiClient,
    gcs_emulator: GcsEmulator,
    tiny_wan_model_dir: Path,
    liveness_port: int,
) -> Iterator[Installed]:
    namespace = f"chart-{secrets.token_hex(3)}"
    kube_plane.ensure_namespace(namespace)
    peering_crd_existed = (
        kube_plane.request(
            "GET", f"/apis/apiextensions.k8s.io/v1/customresourcedefinitions/{PEERING_CRD}", check=False
        )[0]
        == 200
    )
    bucket = gcs_emulator.make_bucket("vivid-chart")
    sets: dict[str, Any] = {
        "gcs.bucket": bucket,
        "operator.livenessPort": liveness_port,
        # The operator run here serves its metrics on a free port, not on the chart's 9090.
        "operator.metricsPort": free_port(),
        # The runner Pods run through the fake kubelet with the tiny Wan model on CPU.
        "models.wan.model": str(tiny_wan_model_dir),
        "models.wan.device": "cpu",
        "runner.gpu.count": 0,
        "runner.backoffLimit": 0,
    }
    notes = run_helm(
        helm,
        "install",
        RELEASE,
        str(CHART_DIR),
        "--namespace",
        namespace,
        "--no-hooks",
        "--timeout",
        "60s",
        *value_args(sets=sets),
        kubeconfig=kube_plane.kubeconfig_path,
    )
    kubeconfigs = {}
    for component in COMPONENTS:
        token = kube_plane.create_service_account_token(namespace, f"{FULLNAME}-{component}", create=False)
        kubeconfigs[component] = kube_plane.make_kubeconfig_for_token(token, name=f"{namespace}-{component}")
    try:
        yield Installed(kube_plane, namespace, notes, bucket, kubeconfigs, kube_api)
    finally:
        helm_uninstall(helm, namespace, kube_plane.kubeconfig_path, timeout=60)
        kube_plane.request("DELETE", f"/api/v1/namespaces/{namespace}", check=False)
        if not peering_crd_existed:  # leave the session's control plane as it was
            kube_plane.request(
                "DELETE",
                f"/apis/apiextensions.k8s.io/v1/customresourcedefinitions/{PEERING_CRD}",
                check=False,
            )


def _get(installed: Installed, path: str) -> Obj:
    _, payload = installed.plane.request("GET", path)
    result: Obj = payload
    return result


# -- the release --------------------------------------------------------------------------------------------


def test_release_objects_exist(installed: Installed, helm: Path) -> None:
    ns = installed.namespace
    status = json.loads(
        run_helm(helm, "status", RELEASE, "-n", ns, "-o", "json", kubeconfig=installed.plane.kubeconfig_path)
    )
    assert status["info"]["status"] == "deployed"
    for name in ("api", "operator"):
        deployment = _get(installed, f"/apis/apps/v1/namespaces/{ns}/deployments/{FULLNAME}-{name}")
        assert deployment["spec"]["template"]["spec"]["serviceAccountName"] == f"{FULLNAME}-{name}"
    _get(installed, f"/api/v1/namespaces/{ns}/services/{FULLNAME}-api")
    _get(installed, f"/api/v1/namespaces/{ns}/configmaps/{FULLNAME}")
    _get(installed, f"/apis/kopf.dev/v1/namespaces/{ns}/kopfpeerings/{FULLNAME}")
    _get(installed, f"/apis/apiextensions.k8s.io/v1/customresourcedefinitions/{PEERING_CRD}")
    _get(installed, f"/apis/apiextensions.k8s.io/v1/customresourcedefinitions/{PLURAL}.{GROUP}")
    rbac = "/apis/rbac.authorization.k8s.io/v1/namespaces"
    for component in COMPONENTS:
        _get(installed, f"/api/v1/namespaces/{ns}/serviceaccounts/{FULLNAME}-{component}")
        role = _get(installed, f"{rbac}/{ns}/roles/{FULLNAME}-{component}")
        assert role["rules"] == EXPECTED_RULES[component]
        _get(installed, f"{rbac}/{ns}/rolebindings/{FULLNAME}-{component}")
    # Hooks were not run, but they are part of the release: the migration Job is there.
    hooks = list(
        yaml.safe_load_all(
            run_helm(helm, "get", "hooks", RELEASE, "-n", ns, kubeconfig=installed.plane.kubeconfig_path)
        )
    )
    assert {h["kind"] for h in hooks if h} == {"Job", "Pod"}


def test_notes_tell_how_to_create_a_key_and_call_the_api(installed: Installed) -> None:
    notes = installed.notes
    exec_api = f"kubectl -n {installed.namespace} exec deploy/{FULLNAME}-api --"
    assert f"{exec_api} vividflow keys create --user you@example.com" in notes
    assert "X-API-Key" in notes and "/api/v1/generate" in notes and "/api/v1/status/" in notes
    assert "get videojobs" in notes


# -- RBAC: minimal -------------------------------------------------------------------------------------------


def _granted(client: k8s.ApiClient, namespace: str) -> set[tuple[str, str, str]]:
    review = k8s.AuthorizationV1Api(client).create_self_subject_rules_review(
        k8s.V1SelfSubjectRulesReview(spec=k8s.V1SelfSubjectRulesReviewSpec(namespace=namespace))
    )
    granted = set()
    assert review.status is not None
    for rule in review.status.resource_rules:
        assert not rule.resource_names, rule
        for group in rule.api_groups or [""]:
            for resource in rule.resources or []:
                granted |= {(group, resource, verb) for verb in rule.verbs}
    return granted


def _triples(rules: list[Obj]) -> set[tuple[str, str, str]]:
    return {
        (g, r, v)
        for rule in rules
        for g in rule["apiGroups"]
        for r in rule["resources"]
        for v in rule["verbs"]
    }


def test_each_service_account_is_granted_exactly_the_charts_rules(installed: Installed) -> None:
    ns = installed.namespace
    token = installed.plane.create_service_account_token(ns, "nobody")  # bound to nothing
    with api_client_for(installed.plane.make_kubeconfig_for_token(token, name=f"{ns}-nobody")) as nobody:
        baseline = _granted(nobody, ns)
    for component in COMPONENTS:
        with installed.client(component) as client:
            assert _granted(client, ns) - baseline == _triples(EXPECTED_RULES[component]), component
        # ... and nothing in any other namespace
        with installed.client(component) as client:
            assert _granted(client, "default") - baseline == set(), component


# -- RBAC: verb by verb ------------------------------------------------------------------------------


def _status(call: Callable[[], Any]) -> int:
    try:
        call()
    except ApiException as error:
        return int(error.status)
    return 200


def _spec(model: ModelName = ModelName.VEO31) -> JobSpec:
    job_id = str(uuid.uuid4())
    return JobSpec(
        created_at=datetime.now(UTC),
        job_id=job_id,
        owner="chart-test",
        model=model,
        prompt="a harbour at dawn",
        input_uri="gs://bucket/in.png",
        output_uri=f"gs://bucket/{job_id}.mp4",
        parameters=JobParameters.for_model(model, {}),
        deadline_seconds=600,
    )


def test_api_service_account(installed: Installed) -> None:
    ns = installed.namespace
    manifest = videojob_manifest(_spec(), ns)
    name = manifest["metadata"]["name"]
    with installed.client("api") as client:
        objects = k8s.CustomObjectsApi(client)
        assert (
            _status(lambda: objects.create_namespaced_custom_object(GROUP, VERSION, ns, PLURAL, manifest))
            == 200
        )
        got: Any = objects.get_namespaced_custom_object(GROUP, VERSION, ns, PLURAL, name)
        assert got["metadata"]["name"] == name
        listed: Any = objects.list_namespaced_custom_object(GROUP, VERSION, ns, PLURAL)
        assert name in [item["metadata"]["name"] for item in listed["items"]]
        watcher: Any = k8s_watch.Watch()  # type: ignore[no-untyped-call]
        events: list[Any] = list(
            watcher.stream(
                objects.list_namespaced_custom_object, GROUP, VERSION, ns, PLURAL, timeout_seconds=1
            )
        )
        assert name in [event["object"]["metadata"]["name"] for event in events]
        patch = {"spec": {"cancelRequested": True}}
        assert (
            _status(lambda: objects.patch_namespaced_custom_object(GROUP, VERSION, ns, PLURAL, name, patch))
            == 200
        )
        # Refused: deleting VideoJobs, writing their status, touching Jobs, Pods or Secrets.
        assert (
            _status(lambda: objects.delete_namespaced_custom_object(GROUP, VERSION, ns, PLURAL, name)) == 403
        )
        status_patch = {"status": {"phase": "Completed"}}
        assert (
            _status(
                lambda: objects.patch_namespaced_custom_object_status(
                    GROUP, VERSION, ns, PLURAL, name, status_patch
                )
            )
            == 403
        )
        batch, core = k8s.BatchV1Api(client), k8s.CoreV1Api(client)
        assert _status(lambda: batch.delete_namespaced_job(name, ns)) == 403
        assert _status(lambda: batch.list_namespaced_job(ns)) == 403
        assert _status(lambda: core.list_namespaced_secret(ns)) == 403
        assert _status(lambda: core.read_namespaced_secret("anything", ns)) == 403
        assert _status(lambda: core.list_namespaced_pod(ns)) == 403
        assert (
            _status(lambda: objects.list_namespaced_custom_object(GROUP, VERSION, "default", PLURAL)) == 403
        )


def test_operator_service_account(installed: Installed) -> None:
    ns = installed.namespace
    manifest = videojob_manifest(_spec(), ns)
    name = manifest["metadata"]["name"]
    k8s.CustomObjectsApi(installed.admin).create_namespaced_custom_object(
        GROUP, VERSION, ns, PLURAL, manifest
    )
    job: Any = {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {"name": name, "labels": {f"{GROUP}/videojob": name}},
        "spec": {
            "suspend": True,
            "template": {
                "spec": {"restartPolicy": "Never", "containers": [{"name": "runner", "image": "x"}]}
            },
        },
    }
    with installed.client("operator") as client:
        objects, batch, core = k8s.CustomObjectsApi(client), k8s.BatchV1Api(client), k8s.CoreV1Api(client)
        listed: Any = objects.list_namespaced_custom_object(GROUP, VERSION, ns, PLURAL)
        assert listed["items"]
        assert (
            _status(
                lambda: objects.patch_namespaced_custom_object_status(
                    GROUP, VERSION, ns, PLURAL, name, {"status": {"phase": "Queued"}}
                )
            )
            == 200
        )
        assert (
            _status(
                lambda: objects.patch_namespaced_custom_object(
                    GROUP,
                    VERSION,
                    ns,
                    PLURAL,
                    name,
                    {"metadata": {"annotations": {f"{GROUP}/touched": "yes"}}},
                )
            )
            == 200
        )
        assert _status(lambda: batch.create_namespaced_job(ns, job)) == 200
        read: Any = batch.read_namespaced_job(name, ns)
        assert read.spec.suspend is True
        assert batch.list_namespaced_job(ns, label_selector=f"{GROUP}/videojob").items
        assert _status(lambda: batch.patch_namespaced_job(name, ns, {"spec": {"suspend": False}})) == 200
        assert _status(lambda: core.list_namespaced_pod(ns, label_selector=f"{GROUP}/videojob")) == 200
        event = k8s.CoreV1Event(
            metadata=k8s.V1ObjectMeta(name=f"{name}.{secrets.token_hex(4)}"),
            involved_object=k8s.V1ObjectReference(
                api_version=f"{GROUP}/{VERSION}", kind="VideoJob", name=name, namespace=ns
            ),
            reason="Test",
            message="from the operator's ServiceAccount",
            type="Normal",
        )
        assert _status(lambda: core.create_namespaced_event(ns, event)) == 200
        assert (
            _status(
                lambda: objects.patch_namespaced_custom_object(
                    "kopf.dev", "v1", ns, "kopfpeerings", FULLNAME, {"status": {"someone": None}}
                )
            )
            == 200
        )
        assert _status(lambda: batch.delete_namespaced_job(name, ns, propagation_policy="Background")) == 200
        # Refused: creating or deleting VideoJobs, deleting Pods, Secrets, other namespaces.
        other = videojob_manifest(_spec(), ns)
        assert (
            _status(lambda: objects.create_namespaced_custom_object(GROUP, VERSION, ns, PLURAL, other)) == 403
        )
        assert (
            _status(lambda: objects.delete_namespaced_custom_object(GROUP, VERSION, ns, PLURAL, name)) == 403
        )
        assert _status(lambda: core.delete_collection_namespaced_pod(ns)) == 403
        assert _status(lambda: core.list_namespaced_secret(ns)) == 403
        assert _status(lambda: batch.list_namespaced_job("default")) == 403


def _runner_pod(installed: Installed, videojob: str, suffix: str = "x7k2q") -> Obj:
    """A Pod as the Job controller makes one for the VideoJob's Job (named <job>-<5 characters>), with
    the runner ServiceAccount; no kubelet runs it."""
    ns = installed.namespace
    pod = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": f"{videojob}-{suffix}", "namespace": ns},
        "spec": {
            "serviceAccountName": f"{FULLNAME}-runner",
            "schedulerName": "nobody",  # stays Pending: the fake kubelet of other tests leaves it alone
            "restartPolicy": "Never",
            "containers": [{"name": "runner", "image": "ghcr.io/studioionique/vividflow-runner:0.1.0"}],
        },
    }
    _, created = installed.plane.request("POST", f"/api/v1/namespaces/{ns}/pods", pod)
    result: Obj = created
    return result


def _runner_token_of(installed: Installed, pod: Obj) -> Path:
    """A kubeconfig with the runner ServiceAccount's token bound to ``pod``, as the kubelet projects it."""
    token = installed.plane.create_service_account_token(
        installed.namespace, f"{FULLNAME}-runner", create=False, bound_pod=pod
    )
    return installed.plane.make_kubeconfig_for_token(token, name=f"{pod['metadata']['name']}-token")


def test_a_runner_may_change_only_its_own_videojobs_progress(installed: Installed) -> None:
    """RBAC lets the runner ServiceAccount patch any VideoJob's status; the chart's admission policy
    narrows that, checked here with real Pod-bound tokens of that ServiceAccount."""
    ns = installed.namespace
    admin = k8s.CustomObjectsApi(installed.admin)
    own, other = (videojob_manifest(_spec(), ns) for _ in range(2))
    own_name, other_name = own["metadata"]["name"], other["metadata"]["name"]
    for manifest in (own, other):
        admin.create_namespaced_custom_object(GROUP, VERSION, ns, PLURAL, manifest)
        # The operator's first status (runners start after it).
        name = manifest["metadata"]["name"]
        first = {"status": {"phase": "Queued", "jobName": name}}
        admin.patch_namespaced_custom_object_status(GROUP, VERSION, ns, PLURAL, name, first)
    pod_token = _runner_token_of(installed, _runner_pod(installed, own_name))

    def patch(objects: k8s.CustomObjectsApi, name: str, status: Obj) -> int:
        return _status(
            lambda: objects.patch_namespaced_custom_object_status(GROUP, VERSION, ns, PLURAL, name, status)
        )

    # The policy takes effect a moment after the install: until then this no-op patch would pass.
    with installed.client("runner") as client:
        unbound = k8s.CustomObjectsApi(client)
        wait_for(
            "the admission policy to be in effect",
            lambda: patch(unbound, own_name, {"status": {"progress": 0}}) == 403,
        )
    with api_client_for(pod_token) as client:
        objects = k8s.CustomObjectsApi(client)
        assert patch(objects, own_name, {"status": {"progress": 40}}) == 200
        forged = "https://evil.example/phish.mp4"
        for status in (
            {"phase": "Completed"},
            {"phase": "Completed", "resultURL": forged},
            {"progress": 50, "errorMessage": "x"},
            {"jobName": "vj-elsewhere"},
            {"kopf": {"progress": {}}},
        ):
            assert patch(objects, own_name, {"status": status}) == 403, status
        assert patch(objects, other_name, {"status": {"progress": 40}}) == 403
        assert patch(objects, other_name, {}) == 403  # an empty patch would answer the whole object
        assert (
            _status(lambda: objects.get_namespaced_custom_object(GROUP, VERSION, ns, PLURAL, own_name)) == 403
        )
        assert _status(lambda: objects.list_namespaced_custom_object(GROUP, VERSION, ns, PLURAL)) == 403
        spec_patch = {"spec": {"prompt": "x"}}
        assert (
            _status(
                lambda: objects.patch_namespaced_custom_object(
                    GROUP, VERSION, ns, PLURAL, own_name, spec_patch
                )
            )
            == 403
        )
        assert _status(lambda: k8s.CoreV1Api(client).list_namespaced_pod(ns)) == 403
    # A token of the ServiceAccount not bound to a Pod names no VideoJob: refused too.
    with installed.client("runner") as client:
        assert patch(k8s.CustomObjectsApi(client), own_name, {"status": {"progress": 60}}) == 403
    # The operator still decides phase and result.
    with installed.client("operator") as client:
        assert patch(k8s.CustomObjectsApi(client), own_name, {"status": {"phase": "Processing"}}) == 200

    stored: Any = admin.get_namespaced_custom_object(GROUP, VERSION, ns, PLURAL, own_name)
    assert stored["status"]["progress"] == 40 and stored["status"]["phase"] == "Processing"
    untouched: Any = admin.get_namespaced_custom_object(GROUP, VERSION, ns, PLURAL, other_name)
    assert (untouched.get("status") or {}).get("progress", 0) == 0


# -- RBAC: the real components, each with its own token ------------------------------------------------------


@pytest.fixture
def operator_process(
    installed: Installed, helm: Path, liveness_port: int, tmp_path: Path
) -> Iterator[tuple[subprocess.Popen[bytes], Path]]:
    """`vividflow operator` as the chart's Deployment runs it: its args, the ConfigMap as env, the
    operator ServiceAccount's token (the liveness probe bound to loopback here)."""
    ns = installed.namespace
    deployment = _get(installed, f"/apis/apps/v1/namespaces/{ns}/deployments/{FULLNAME}-operator")
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    args = [arg.replace("http://0.0.0.0:", "http://127.0.0.1:") for arg in container["args"]]
    config = _get(installed, f"/api/v1/namespaces/{ns}/configmaps/{FULLNAME}")["data"]
    env = {key: value for key, value in os.environ.items() if not key.startswith(("VIVID_", "KUBE"))}
    env.update(config)
    env.update({"KUBECONFIG": str(installed.kubeconfigs["operator"]), "POD_ID": f"{FULLNAME}-operator-test"})
    log_path = tmp_path / "operator.log"
    vividflow = Path(sys.executable).parent / "vividflow"
    with log_path.open("wb") as log:
        process = subprocess.Popen([str(vividflow), *args], env=env, stdout=log, stderr=subprocess.STDOUT)
    try:
        yield process, log_path
    finally:
        stop(process, timeout=15)


def _alive(port: int) -> bool:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=2) as response:
            return bool(response.status == 200)
    except OSError:
        return False


def test_operator_api_and_runner_run_with_the_charts_service_accounts(
    installed: Installed,
    helm: Path,
    operator_process: tuple[subprocess.Popen[bytes], Path],
    make_fake_kubelet: Callable[..., FakeKubelet],
    liveness_port: int,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    ns = installed.namespace
    process, operator_log = operator_process
    wait_for("the operator's liveness probe", lambda: _alive(liveness_port) or process.poll() is not None, 60)
    assert process.poll() is None, operator_log.read_text()[-4000:]

    # The runner: the fake kubelet runs its Pods with a token of the runner ServiceAccount bound to
    # each Pod, as a real kubelet projects it (the chart's admission policy needs the Pod's name).
    kubelet = make_fake_kubelet(namespace=ns)
    kubelet.base_env["STORAGE_EMULATOR_HOST"] = os.environ["STORAGE_EMULATOR_HOST"]
    kubelet.base_env["OMP_NUM_THREADS"] = "1"

    # The migration hook's command, on the API's database.
    database_url = f"sqlite:///{tmp_path / 'api.db'}"
    hooks = [
        h
        for h in yaml.safe_load_all(
            run_helm(helm, "get", "hooks", RELEASE, "-n", ns, kubeconfig=installed.plane.kubeconfig_path)
        )
        if h
    ]
    migrate = next(h for h in hooks if h["kind"] == "Job")["spec"]["template"]["spec"]["containers"][0]
    vividflow = Path(sys.executable).parent / "vividflow"
    env = {k: v for k, v in os.environ.items() if not k.startswith("VIVID_")} | {
        "VIVID_DATABASE_URL": database_url
    }
    subprocess.run([str(vividflow), *migrate["args"]], env=env, check=True, capture_output=True, timeout=120)

    # The API server: the ConfigMap's settings and the API ServiceAccount's token.
    config = _get(installed, f"/api/v1/namespaces/{ns}/configmaps/{FULLNAME}")["data"]
    for key in [k for k in os.environ if k.startswith("VIVID_")]:
        monkeypatch.delenv(key)
    for key, value in config.items():
        monkeypatch.setenv(key, value)
    monkeypatch.setenv("KUBECONFIG", str(installed.kubeconfigs["api"]))
    # The chart's 500/hour per key is too few for polling every 50 ms.
    settings = cluster_settings(
        tmp_path, ns, installed.bucket, database_url=database_url, rate_limits=["1000000/hour"]
    )
    assert settings.migrate_on_start is False
    with running_api(settings) as api:
        headers = new_user(api, "chart@example.com")
        job_id = submit(api, headers)
        body = wait_status(api, headers, job_id, timeout=120)
        assert body["status"] == "completed", body
    (run,) = [run for run in kubelet.runs if run.labels.get(f"{GROUP}/job-id") == job_id]
    assert "could not report progress" not in run.output, run.output[-3000:]
    assert "progress reporting is off" not in run.output

    # The operator made the Job as the chart configured it, and kept its peering and Events.
    jobs: list[Any] = (
        k8s.BatchV1Api(installed.admin)
        .list_namespaced_job(ns, label_selector=f"{GROUP}/job-id={job_id}")
        .items
    )
    assert len(jobs) == 1
    pod = jobs[0].spec.template.spec
    assert pod.service_account_name == f"{FULLNAME}-runner"
    assert pod.containers[0].image == "ghcr.io/studioionique/vividflow-runner:0.1.0"
    assert jobs[0].metadata.owner_references[0].kind == "VideoJob"
    peering = _get(installed, f"/apis/kopf.dev/v1/namespaces/{ns}/kopfpeerings/{FULLNAME}")
    assert f"{FULLNAME}-operator-test" in peering.get("status", {})
    events = k8s.CoreV1Api(installed.admin).list_namespaced_event(ns).items
    assert [e for e in events if e.source and e.source.component == "vividflow-operator"]

    # No request of the three components was refused: the runner's and the API's would have failed the
    # job; the operator's log shows each of its refusals.
    log = operator_log.read_text()
    refusals = [line for line in log.splitlines() if "Forbidden" in line or " 403" in line]
    # Not even kopf's cluster-wide scans of namespaces and CRDs (scanning is disabled): the chart's
    # Roles are namespaced.
    assert refusals == [], log[-4000:]


def test_operator_needs_its_finalizers_rule_where_owner_references_are_enforced(helm: Path) -> None:
    """`videojobs/finalizers: update` is the one rule no request of the test plane needs: kopf.adopt
    sets blockOwnerDeletion, which clusters with the OwnerReferencesPermissionEnforcement admission
    plugin (OpenShift, hardened clusters) allow only to who may update the owner's finalizers."""
    import kopf

    from tests.chart.chart import find, render

    role = find(render(helm), "Role", f"{FULLNAME}-operator")
    rules: list[Obj] = role["rules"]
    without = [rule for rule in rules if rule["resources"] != ["videojobs/finalizers"]]
    assert len(without) == len(rules) - 1
    plugin = "--enable-admission-plugins=OwnerReferencesPermissionEnforcement"
    with ControlPlane(controllers=(), apiserver_args=[plugin]) as plane:
        install_videojob_crd(plane)
        admin = api_client_for(plane.kubeconfig_path)
        for name, granted, expected in (("full", rules, 200), ("lacking", without, 403)):
            ns = f"owner-{name}"
            access = create_service_account(plane, ns, "operator", granted)
            manifest = videojob_manifest(_spec(), ns)
            videojob: Any = k8s.CustomObjectsApi(admin).create_namespaced_custom_object(
                GROUP, VERSION, ns, PLURAL, manifest
            )
            job: Any = {
                "apiVersion": "batch/v1",
                "kind": "Job",
                "metadata": {"name": manifest["metadata"]["name"], "namespace": ns},
                "spec": {
                    "template": {
                        "spec": {"restartPolicy": "Never", "containers": [{"name": "runner", "image": "x"}]}
                    }
                },
            }
            kopf.adopt(job, owner=videojob)
            assert job["metadata"]["ownerReferences"][0]["blockOwnerDeletion"] is True
            with api_client_for(access.kubeconfig) as client:
                batch = k8s.BatchV1Api(client)
                assert _status(lambda: batch.create_namespaced_job(ns, job)) == expected, name  # noqa: B023
        admin.close()  # type: ignore[no-untyped-call]
