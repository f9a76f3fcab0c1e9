"""charts/vividflow rendered by the real helm: lint, Kubernetes 1.35 schemas (strict), CRDs, RBAC, settings.

Each values set the project ships is rendered once per module: the defaults, the GPU + Kueue file
(charts/vividflow/ci/gpu-kueue-values.yaml) and the kind dev loop's file (ci/kind-values.yaml).
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate
import pytest
from typer.testing import CliRunner

from tests.chart.chart import (
    CHART_DIR,
    GPU_KUEUE_VALUES,
    KIND_VALUES,
    KUBE_VERSION,
    NAMESPACE,
    RELEASE,
    Obj,
    containers,
    env_of,
    find,
    load_yaml,
    pod_spec,
    render,
    run_helm,
)
from tests.kube.controlplane import REPO_ROOT
from vividflow.cli import app
from vividflow.jobspec import GROUP
from vividflow.settings import Settings

FULLNAME = f"{RELEASE}-vividflow"
CASES: dict[str, list[Path]] = {"default": [], "gpu-kueue": [GPU_KUEUE_VALUES], "kind": [KIND_VALUES]}
#: Kinds that are not built into Kubernetes: validated against their CRDs instead.
CUSTOM_KINDS = {"KopfPeering", "LocalQueue"}

EXPECTED_RULES: dict[str, list[Obj]] = {
    "api": [
        {
            "apiGroups": [GROUP],
            "resources": ["videojobs"],
            "verbs": ["create", "get", "list", "watch", "patch"],
        }
    ],
    "operator": [
        {"apiGroups": [GROUP], "resources": ["videojobs"], "verbs": ["get", "list", "watch", "patch"]},
        {"apiGroups": [GROUP], "resources": ["videojobs/status"], "verbs": ["patch"]},
        {"apiGroups": [GROUP], "resources": ["videojobs/finalizers"], "verbs": ["update"]},
        {
            "apiGroups": ["batch"],
            "resources": ["jobs"],
            "verbs": ["get", "list", "watch", "create", "patch", "delete"],
        },
        {"apiGroups": [""], "resources": ["pods"], "verbs": ["get", "list", "watch"]},
        {"apiGroups": [""], "resources": ["events"], "verbs": ["create"]},
        {
            "apiGroups": ["kopf.dev"],
            "resources": ["kopfpeerings"],
            "verbs": ["get", "list", "watch", "patch"],
        },
    ],
    "runner": [{"apiGroups": [GROUP], "resources": ["videojobs/status"], "verbs": ["patch"]}],
}


@pytest.fixture(scope="module", params=sorted(CASES))
def case(request: pytest.FixtureRequest) -> str:
    name: str = request.param
    return name


@pytest.fixture(scope="module")
def rendered_cases(helm: Path) -> dict[str, list[Obj]]:
    return {name: render(helm, files) for name, files in CASES.items()}


@pytest.fixture(scope="module")
def rendered(rendered_cases: dict[str, list[Obj]], case: str) -> list[Obj]:
    return rendered_cases[case]


@pytest.fixture(scope="module")
def default(rendered_cases: dict[str, list[Obj]]) -> list[Obj]:
    return rendered_cases["default"]


def configmap_settings(objects: list[Obj], monkeypatch: pytest.MonkeyPatch) -> Settings:
    """The Settings that a container with the chart's ConfigMap as envFrom sees."""
    for name in list(Settings.model_fields):
        monkeypatch.delenv(f"VIVID_{name.upper()}", raising=False)
    for key, value in find(objects, "ConfigMap", FULLNAME)["data"].items():
        monkeypatch.setenv(key, value)
    return Settings()


# -- helm lint / template -----------------------------------------------------------------------------


def test_helm_lint(helm: Path, case: str) -> None:
    files = [arg for path in CASES[case] for arg in ("--values", str(path))]
    out = run_helm(helm, "lint", str(CHART_DIR), "--strict", "--kube-version", KUBE_VERSION, *files)
    assert "1 chart(s) linted, 0 chart(s) failed" in out


def test_manifests_are_valid_kubernetes_1_35_objects(rendered: list[Obj]) -> None:
    checked = 0
    for obj in rendered:
        if obj["kind"] in CUSTOM_KINDS:
            continue
        try:
            kubernetes_validate.validate(obj, KUBE_VERSION, strict=True)
        except kubernetes_validate.ValidationError as error:
            pytest.fail(f"{obj['kind']}/{obj['metadata']['name']}: {error.message} at {list(error.path)}")
        checked += 1
    assert checked >= 12


def test_the_validator_rejects_unknown_fields(default: list[Obj]) -> None:
    """Guard against a silently lenient validator: --strict must catch a misspelt field."""
    deployment = json.loads(json.dumps(find(default, "Deployment", f"{FULLNAME}-api")))
    deployment["spec"]["template"]["spec"]["containers"][0]["livenessProbes"] = {}
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(deployment, KUBE_VERSION, strict=True)


def test_custom_resources_match_their_crds(rendered: list[Obj], case: str) -> None:
    crd = load_yaml(CHART_DIR / "crds" / "kopfpeering.yaml")
    schema = crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    custom = [obj for obj in rendered if obj["kind"] in CUSTOM_KINDS]
    for obj in custom:
        if obj["kind"] == "KopfPeering":
            assert obj["apiVersion"] == f"{crd['spec']['group']}/{crd['spec']['versions'][0]['name']}"
            jsonschema.validate(obj, schema)
        else:  # Kueue's LocalQueue: only its documented shape
            assert obj["apiVersion"].startswith("kueue.x-k8s.io/v1")
            assert set(obj["spec"]) == {"clusterQueue"}
    assert sorted(o["kind"] for o in custom) == (
        ["KopfPeering", "LocalQueue"] if case == "gpu-kueue" else ["KopfPeering"]
    )


def test_chart_crd_is_the_top_level_crd() -> None:
    assert (CHART_DIR / "crds" / "videojob.yaml").read_bytes() == (
        REPO_ROOT / "crds" / "videojob.yaml"
    ).read_bytes()


def test_chart_crds_are_valid(helm: Path) -> None:
    crds = [obj for obj in render(helm, include_crds=True) if obj["kind"] == "CustomResourceDefinition"]
    assert sorted(c["metadata"]["name"] for c in crds) == ["kopfpeerings.kopf.dev", f"videojobs.{GROUP}"]
    for crd in crds:
        kubernetes_validate.validate(crd, KUBE_VERSION, strict=True)


# -- RBAC ---------------------------------------------------------------------------------------------


def test_rbac_is_three_namespaced_least_privilege_roles(default: list[Obj]) -> None:
    assert not [o for o in default if o["kind"] in ("ClusterRole", "ClusterRoleBinding")]
    for component, rules in EXPECTED_RULES.items():
        role = find(default, "Role", f"{FULLNAME}-{component}")
        assert role["rules"] == rules, component
        binding = find(default, "RoleBinding", f"{FULLNAME}-{component}")
        assert binding["roleRef"] == {
            "apiGroup": "rbac.authorization.k8s.io",
            "kind": "Role",
            "name": role["metadata"]["name"],
        }
        assert binding["subjects"] == [
            {"kind": "ServiceAccount", "name": f"{FULLNAME}-{component}", "namespace": NAMESPACE}
        ]
        find(default, "ServiceAccount", f"{FULLNAME}-{component}")
    for role in (o for o in default if o["kind"] == "Role"):
        for rule in role["rules"]:
            assert "*" not in rule["verbs"] + rule["resources"] + rule["apiGroups"]
            assert "resourceNames" not in rule


def test_the_runner_status_policy_guards_every_status_field_but_progress(default: list[Obj]) -> None:
    name = f"{FULLNAME}-{NAMESPACE}-runner-status"
    policy = find(default, "ValidatingAdmissionPolicy", name)["spec"]
    runner = f"system:serviceaccount:{NAMESPACE}:{FULLNAME}-runner"
    assert [c["expression"] for c in policy["matchConditions"]] == [
        f"request.userInfo.username == '{runner}'"
    ]
    assert policy["failurePolicy"] == "Fail"
    own, *fields = policy["validations"]
    assert "variables.podName.startsWith(object.metadata.name + '-')" in own["expression"]
    guarded = {re.fullmatch(r".*not status\.(\w+)\.", v["message"]).group(1) for v in fields}  # type: ignore[union-attr]
    crd = load_yaml(REPO_ROOT / "crds" / "videojob.yaml")
    status = crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["status"]["properties"]
    assert guarded == set(status) - {"progress"}
    binding = find(default, "ValidatingAdmissionPolicyBinding", name)["spec"]
    assert binding["policyName"] == name and binding["validationActions"] == ["Deny"]
    assert binding["matchResources"]["namespaceSelector"] == {
        "matchLabels": {"kubernetes.io/metadata.name": NAMESPACE}
    }


def test_the_runner_status_policy_can_be_left_out(helm: Path) -> None:
    objects = render(helm, sets={"runner.statusPolicy.enabled": False})
    assert not [o for o in objects if o["kind"].startswith("ValidatingAdmissionPolicy")]


def test_the_api_gets_vertex_settings_and_its_env_secret(helm: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Prompt enhancement runs in the API: it needs the Vertex AI settings (and a key, when one is used)."""
    sets = {
        "vertex.project": "demo-project",
        "vertex.baseURL": "http://fake-vertex",
        "api.envSecret": "api-extra",
    }
    objects = render(helm, sets=sets)
    settings = configmap_settings(objects, monkeypatch)
    assert settings.vertex_project == "demo-project" and settings.vertex_base_url == "http://fake-vertex"
    api = find(objects, "Deployment", f"{FULLNAME}-api")["spec"]["template"]["spec"]["containers"][0]
    assert {"secretRef": {"name": "api-extra"}} in api["envFrom"]
    default_api = find(render(helm), "Deployment", f"{FULLNAME}-api")["spec"]["template"]["spec"][
        "containers"
    ][0]
    assert all("secretRef" not in source for source in default_api["envFrom"])


def test_no_peering_rule_when_standalone(helm: Path) -> None:
    objects = render(helm, sets={"operator.peering.enabled": False})
    role = find(objects, "Role", f"{FULLNAME}-operator")
    assert role["rules"] == EXPECTED_RULES["operator"][:-1]
    assert not [o for o in objects if o["kind"] == "KopfPeering"]
    deployment = find(objects, "Deployment", f"{FULLNAME}-operator")
    assert deployment["spec"]["strategy"] == {"type": "Recreate"}
    assert "--standalone" in deployment["spec"]["template"]["spec"]["containers"][0]["args"]


# -- settings and commands ----------------------------------------------------------------------------


def test_configmap_is_what_the_settings_read(
    rendered: list[Obj], case: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings = configmap_settings(rendered, monkeypatch)
    assert settings.backend == "kubernetes"
    assert settings.kube_namespace == NAMESPACE
    assert settings.migrate_on_start is False
    assert settings.runner_service_account == f"{FULLNAME}-runner"
    assert settings.runner_command == ["python", "-m", "vividflow.runner"]
    values = load_yaml(CHART_DIR / "values.yaml")
    for path in CASES[case]:
        values = _merge(values, load_yaml(path))
    runner = values["runner"]
    assert settings.gpu_count == runner["gpu"]["count"]
    assert settings.gpu_node_selector == runner["gpu"]["nodeSelector"]
    assert settings.gpu_tolerations == runner["gpu"]["tolerations"]
    assert settings.job_backoff_limit == runner["backoffLimit"]
    assert settings.job_ttl_seconds == runner["ttlSecondsAfterFinished"]
    assert settings.job_deadline_seconds == runner["deadlineSeconds"]
    assert settings.kueue_queue == (runner["kueue"]["queueName"] or None)
    assert settings.model_cache_pvc == (runner["modelCache"]["claimName"] or None)
    assert settings.rate_limits == values["api"]["rateLimits"]
    assert settings.auth_failure_limits == values["api"]["authFailureLimits"]
    assert settings.max_keys_per_user == values["api"]["maxKeysPerUser"]
    assert settings.max_body_bytes == values["api"]["maxBodyBytes"]
    assert settings.max_url_fetches_per_user == values["api"]["maxURLFetchesPerUser"]
    assert settings.max_streams_per_user == values["api"]["maxStreamsPerUser"]
    assert settings.result_retention_days == values["api"]["resultRetentionDays"]
    web = values["api"]["web"]
    assert settings.web_enabled == web["enabled"]
    assert settings.web_auth_limits == web["authLimits"]
    assert settings.web_generate_limits == web["generateLimits"]
    assert settings.enhance_limits == web["enhanceLimits"]
    assert settings.enhance_model == web["enhanceModel"]
    assert settings.vertex_location == values["vertex"]["location"]
    assert settings.vertex_project == (values["vertex"]["project"] or None)
    connections = values["api"]["connections"]
    assert settings.max_header_bytes == connections["maxHeaderBytes"]
    assert settings.header_timeout_seconds == connections["headerTimeoutSeconds"]
    assert settings.body_idle_timeout_seconds == connections["bodyIdleTimeoutSeconds"]
    assert settings.body_timeout_seconds == connections["bodyTimeoutSeconds"]
    assert settings.max_connections == connections["maxConnections"]
    assert settings.forwarded_allow_ips == connections["forwardedAllowIps"]
    assert settings.image_pull_grace_seconds == runner["imagePullGraceSeconds"]
    assert settings.gcs_bucket == values["gcs"]["bucket"]
    # What runner Pods get (the operator passes VIVID_RUNNER_ENV and nothing else of its own).
    for key, value in settings.runner_env.items():
        monkeypatch.setenv(key, value)
    runner_settings = Settings()
    assert runner_settings.wan_model == values["models"]["wan"]["model"]
    assert runner_settings.veo_model == values["models"]["veo"]["model"]
    assert runner_settings.vertex_location == values["vertex"]["location"]
    assert runner_settings.gcs_signed_urls == values["gcs"]["signedURLs"]
    if case == "gpu-kueue":
        assert settings.runner_image.startswith("registry.example.com/vividflow/runner@sha256:")
        assert settings.gcs_credentials_secret == "vividflow-google"
        assert settings.runner_env_secret == "vividflow-runner-secrets"
        assert settings.gpu_priority_class == "vividflow-gpu"
    if case == "kind":
        assert settings.runner_env["STORAGE_EMULATOR_HOST"] == f"http://{FULLNAME}-gcs.{NAMESPACE}.svc:4443"
        assert runner_settings.wan_device == "cpu"


def _merge(base: Any, override: Any) -> Any:
    if isinstance(base, dict) and isinstance(override, dict):
        return {key: _merge(base.get(key), value) for key, value in override.items()} | {
            key: value for key, value in base.items() if key not in override
        }
    return override


def _accepted_by_the_cli(args: list[str]) -> str:
    """``vividflow ARGS --help``: click parses every option before it prints the help, so an unknown
    command or option fails here. Returns the help text (of the leaf command)."""
    result = CliRunner().invoke(app, [*args, "--help"])
    assert result.exit_code == 0, f"vividflow {' '.join(args)}: {result.output}"
    return result.output


def test_container_commands_are_real_cli_commands(
    rendered: list[Obj], monkeypatch: pytest.MonkeyPatch
) -> None:
    api = find(rendered, "Deployment", f"{FULLNAME}-api")["spec"]["template"]["spec"]["containers"][0]
    assert "Serve the API" in _accepted_by_the_cli(api["args"])
    migrate = find(rendered, "Job", f"{FULLNAME}-migrate")["spec"]["template"]["spec"]["containers"][0]
    assert "Apply all database migrations" in _accepted_by_the_cli(migrate["args"])
    operator = find(rendered, "Deployment", f"{FULLNAME}-operator")["spec"]["template"]["spec"]["containers"][
        0
    ]
    # The operator's command line, parsed for real: what `vividflow operator` hands to the operator.
    calls: list[dict[str, Any]] = []
    monkeypatch.setattr("vividflow.operator.main.run", lambda settings, **kwargs: calls.append(kwargs))
    result = CliRunner().invoke(app, operator["args"])
    assert result.exit_code == 0, result.output
    assert calls == [
        {
            "namespaces": [NAMESPACE],
            "liveness": "http://0.0.0.0:8080/healthz",
            "peering": FULLNAME,
            "priority": None,
            "workers": 8,
            "verbose": False,
            "metrics_port": 9090,
        }
    ]


def test_probes(rendered: list[Obj]) -> None:
    api = find(rendered, "Deployment", f"{FULLNAME}-api")["spec"]["template"]["spec"]["containers"][0]
    assert api["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "http"}
    assert api["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "http"}
    assert {"name": "http", "containerPort": 8000, "protocol": "TCP"} in api["ports"]
    operator = find(rendered, "Deployment", f"{FULLNAME}-operator")["spec"]["template"]["spec"]["containers"][
        0
    ]
    probe = operator["livenessProbe"]["httpGet"]
    port = next(p["containerPort"] for p in operator["ports"] if p["name"] == probe["port"])
    assert f"--liveness=http://0.0.0.0:{port}{probe['path']}" in operator["args"]
    assert env_of(operator)["POD_ID"]["valueFrom"] == {"fieldRef": {"fieldPath": "metadata.name"}}


def test_every_pod_is_hardened_and_sized(rendered: list[Obj]) -> None:
    pods = [(obj, spec) for obj in rendered if (spec := pod_spec(obj)) is not None]
    assert len(pods) >= 4
    for obj, spec in pods:
        where = f"{obj['kind']}/{obj['metadata']['name']}"
        assert spec["securityContext"]["runAsNonRoot"] is True, where
        assert spec["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}, where
        for container in containers(spec):
            assert container["securityContext"]["allowPrivilegeEscalation"] is False, where
            assert container["securityContext"]["capabilities"] == {"drop": ["ALL"]}, where
            if "resources" in container:
                assert container["resources"]["requests"]["memory"], where
                assert container["resources"]["limits"]["memory"], where
            else:
                assert container["name"] == "bucket", where  # the emulator's one-shot mkdir
            assert not container["image"].endswith(":latest"), where
        if obj["metadata"]["name"].endswith(("-migrate", "-test-healthz", "-postgresql", "-redis", "-gcs")):
            assert spec["automountServiceAccountToken"] is False, where


# -- the database, migrations and the other values sets ------------------------------------------------


def test_migrations_run_in_a_hook_job_before_the_api(rendered: list[Obj], case: str) -> None:
    job = find(rendered, "Job", f"{FULLNAME}-migrate")
    hook = job["metadata"]["annotations"]["helm.sh/hook"]
    assert hook == ("post-install,pre-upgrade" if case == "kind" else "pre-install,pre-upgrade")
    migrate = job["spec"]["template"]["spec"]["containers"][0]
    api = find(rendered, "Deployment", f"{FULLNAME}-api")["spec"]["template"]["spec"]["containers"][0]
    assert env_of(migrate)["VIVID_DATABASE_URL"] == env_of(api)["VIVID_DATABASE_URL"]
    secret = env_of(api)["VIVID_DATABASE_URL"]["valueFrom"]["secretKeyRef"]
    if case == "kind":
        assert secret == {"name": f"{FULLNAME}-postgresql", "key": "url"}
        bundled = find(rendered, "Secret", f"{FULLNAME}-postgresql")["stringData"]["url"]
        assert bundled.startswith("postgresql+psycopg://vividflow:") and bundled.endswith(
            f"@{FULLNAME}-postgresql:5432/vividflow"
        )
    else:
        assert secret == {"name": "vividflow-database", "key": "url"}


def test_without_the_hook_the_api_migrates_on_start(helm: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    objects = render(helm, sets={"migrations.enabled": False})
    assert not [o for o in objects if o["kind"] == "Job"]
    assert configmap_settings(objects, monkeypatch).migrate_on_start is True


@pytest.mark.parametrize("days", [0, 7])
def test_result_retention_days(helm: Path, days: float, monkeypatch: pytest.MonkeyPatch) -> None:
    """0 (keep forever) reaches the API as 0, not as the default: the template must not use `default`."""
    objects = render(helm, sets={"api.resultRetentionDays": days})
    assert configmap_settings(objects, monkeypatch).result_retention_days == days


@pytest.mark.parametrize(
    ("sets", "expected"),
    [
        ({}, None),
        ({"redis.url": "redis://cache:6379/0"}, {"value": "redis://cache:6379/0"}),
        (
            {"redis.existingSecret": "r", "redis.url": "redis://ignored"},
            {"valueFrom": {"secretKeyRef": {"name": "r", "key": "url"}}},
        ),
        ({"redis.bundled.enabled": True}, {"value": f"redis://{FULLNAME}-redis:6379/0"}),
    ],
)
def test_redis_url(helm: Path, sets: dict[str, Any], expected: Obj | None) -> None:
    api = find(render(helm, sets=sets), "Deployment", f"{FULLNAME}-api")["spec"]["template"]["spec"][
        "containers"
    ][0]
    found = env_of(api).get("VIVID_REDIS_URL")
    assert (None if found is None else {k: v for k, v in found.items() if k != "name"}) == expected


def test_gpu_kueue_values(rendered_cases: dict[str, list[Obj]]) -> None:
    objects = rendered_cases["gpu-kueue"]
    queue = find(objects, "LocalQueue", "vividflow-gpu")
    assert queue["spec"] == {"clusterQueue": "gpu-cluster-queue"}
    assert "replicas" not in find(objects, "Deployment", f"{FULLNAME}-api")["spec"]  # the HPA owns it
    hpa = find(objects, "HorizontalPodAutoscaler", f"{FULLNAME}-api")
    assert hpa["spec"]["scaleTargetRef"]["name"] == f"{FULLNAME}-api"
    find(objects, "PodDisruptionBudget", f"{FULLNAME}-api")
    ingress = find(objects, "Ingress", f"{FULLNAME}-api")
    assert ingress["spec"]["rules"][0]["http"]["paths"][0]["backend"]["service"]["name"] == f"{FULLNAME}-api"
    api_pod = find(objects, "Deployment", f"{FULLNAME}-api")["spec"]["template"]["spec"]
    api = api_pod["containers"][0]
    assert env_of(api)["GOOGLE_APPLICATION_CREDENTIALS"]["value"] == "/var/run/secrets/vividflow/gcs/key.json"
    assert {"name": "google-credentials", "secret": {"secretName": "vividflow-google"}} in api_pod["volumes"]


def test_kind_values_run_everything_in_the_cluster(rendered_cases: dict[str, list[Obj]]) -> None:
    objects = rendered_cases["kind"]
    for component in ("postgresql", "redis", "gcs"):
        find(objects, "Deployment", f"{FULLNAME}-{component}")
        find(objects, "Service", f"{FULLNAME}-{component}")
    api = find(objects, "Deployment", f"{FULLNAME}-api")["spec"]["template"]["spec"]["containers"][0]
    assert env_of(api)["STORAGE_EMULATOR_HOST"]["value"] == f"http://{FULLNAME}-gcs.{NAMESPACE}.svc:4443"
    # The tiny model of the kind values is where the runner-dev image puts it.
    dockerfile = (REPO_ROOT / "Dockerfile").read_text()
    assert f"ENV VIVID_WAN_MODEL={load_yaml(KIND_VALUES)['models']['wan']['model']}" in dockerfile


def test_operator_deployment(default: list[Obj]) -> None:
    deployment = find(default, "Deployment", f"{FULLNAME}-operator")
    assert deployment["spec"]["replicas"] == 1
    assert deployment["spec"]["strategy"]["type"] == "RollingUpdate"  # peering: replicas take turns
    spec = deployment["spec"]["template"]["spec"]
    assert spec["serviceAccountName"] == f"{FULLNAME}-operator"
    assert spec["containers"][0]["image"] == "ghcr.io/studioionique/vividflow-api:0.1.0"
    peering = find(default, "KopfPeering", FULLNAME)
    assert peering["metadata"].get("namespace") is None  # the release namespace


def test_config_change_rolls_the_pods(helm: Path, default: list[Obj]) -> None:
    changed = render(helm, sets={"runner.backoffLimit": 5})
    for name in ("api", "operator"):
        before = find(default, "Deployment", f"{FULLNAME}-{name}")["spec"]["template"]["metadata"][
            "annotations"
        ]
        after = find(changed, "Deployment", f"{FULLNAME}-{name}")["spec"]["template"]["metadata"][
            "annotations"
        ]
        assert before["checksum/config"] != after["checksum/config"]
