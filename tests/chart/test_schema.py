"""values.schema.json (and the chart's cross-value checks) turn bad values into a failed install.

Each case renders the chart with one bad value through the real helm; helm validates the values
against the schema before rendering, exactly as `helm install` and `helm upgrade` do.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import jsonschema
import pytest

from tests.chart.chart import CHART_DIR, CI_VALUES_DIR, HelmError, load_yaml, render

SCHEMA_PATH = CHART_DIR / "values.schema.json"

BAD_VALUES: list[tuple[dict[str, Any], str]] = [
    ({"images.api.pullPolicy": "Sometimes"}, "pullPolicy"),
    ({"images.runner.digest": "md5:abc"}, "digest"),
    ({"images.api.tag": "has space"}, "tag"),
    ({"gcs.bucket": "gs://my-bucket"}, "bucket"),
    ({"gcs.signedURLExpirySeconds": 700000}, "signedURLExpirySeconds"),
    ({"api.replicas": -1}, "replicas"),
    ({"api.replicas": "two"}, "replicas"),
    ({"api.service.type": "ExternalName"}, "type"),
    ({"api.service.port": 70000}, "port"),
    ({"api.rateLimits[0]": "lots"}, "rateLimits"),
    ({"api.publicURL": "ftp://x"}, "publicURL"),
    ({"api.resultRetentionDays": -1}, "resultRetentionDays"),
    ({"api.maxStreamsPerUser": 0}, "maxStreamsPerUser"),
    ({"api.env.bad-name": "x"}, "bad-name"),
    ({"api.resources.requests.memory": "lots"}, "memory"),
    ({"api.unknownKey": "x"}, "unknownKey"),
    ({"operator.replicas": 6}, "replicas"),
    ({"operator.livenessPort": 80}, "livenessPort"),
    ({"runner.gpu.count": -1}, "count"),
    ({"runner.gpu.resourceName": "not a resource"}, "resourceName"),
    ({"runner.gpu.tolerations[0].operator": "Maybe"}, "operator"),
    ({"runner.backoffLimit": 1.5}, "backoffLimit"),
    ({"runner.deadlineSeconds": 0}, "deadlineSeconds"),
    ({"runner.modelCache.mountPath": "models"}, "mountPath"),
    ({"runner.kueue.queueName": "Not_A_Name"}, "queueName"),
    ({"runner.command": "python -m vividflow.runner"}, "command"),
    ({"database.existingSecret": ""}, "database"),
    ({"database.bundled.enabled": True, "database.bundled.password": "p@ss word"}, "password"),
    ({"redis.url": "http://cache:6379"}, "url"),
    ({"models.wan.device": "tpu"}, "device"),
    ({"extraConfig.NOT_VIVID": "x"}, "NOT_VIVID"),
    ({"migrations.backoffLimit": -2}, "backoffLimit"),
]

# Checks across values, done by the templates (`fail`) since each value alone is fine.
BAD_COMBINATIONS: list[tuple[dict[str, Any], str]] = [
    ({"runner.kueue.queueName": "gpu", "runner.concurrency.maxRunningGpuJobs": 2}, "not both"),
    ({"runner.kueue.localQueue.create": True, "runner.kueue.localQueue.clusterQueue": "cq"}, "queueName"),
    ({"runner.kueue.queueName": "gpu", "runner.kueue.localQueue.create": True}, "clusterQueue"),
    ({"gcsEmulator.enabled": True}, "gcs.bucket"),
    ({"gcs.signedURLs": True}, "credentialsSecret"),
    ({"api.autoscaling.enabled": True, "api.autoscaling.targetCPUUtilizationPercentage": 0}, "metric"),
    ({"operator.peering.enabled": False, "operator.replicas": 2}, "peering"),
    (
        {"api.autoscaling.enabled": True, "api.autoscaling.minReplicas": 5, "api.autoscaling.maxReplicas": 2},
        "minReplicas",
    ),
]


@pytest.mark.parametrize(("sets", "fragment"), BAD_VALUES, ids=[next(iter(s)) for s, _ in BAD_VALUES])
def test_schema_rejects(helm: Path, sets: dict[str, Any], fragment: str) -> None:
    with pytest.raises(HelmError) as failure:
        render(helm, sets=sets)
    message = str(failure.value)
    assert "schema" in message.lower(), message
    assert fragment in message, message


@pytest.mark.parametrize(
    ("sets", "fragment"), BAD_COMBINATIONS, ids=[" ".join(s) for s, _ in BAD_COMBINATIONS]
)
def test_templates_reject(helm: Path, sets: dict[str, Any], fragment: str) -> None:
    with pytest.raises(HelmError, match=fragment):
        render(helm, sets=sets)


def test_shipped_values_files_pass_the_schema() -> None:
    schema = json.loads(SCHEMA_PATH.read_text())
    jsonschema.Draft7Validator.check_schema(schema)
    defaults = load_yaml(CHART_DIR / "values.yaml")
    jsonschema.validate(defaults, schema)
    for path in sorted(CI_VALUES_DIR.glob("*.yaml")):
        merged = _merge(defaults, load_yaml(path))
        jsonschema.validate(merged, schema)


def test_every_value_is_in_the_schema_and_documented() -> None:
    """values.yaml and the schema name the same keys, and every key in values.yaml has a comment."""
    schema = json.loads(SCHEMA_PATH.read_text())
    defaults = load_yaml(CHART_DIR / "values.yaml")

    def walk(values: Any, node: dict[str, Any], path: str) -> None:
        if not isinstance(values, dict) or not values or "properties" not in node:
            return
        assert set(values) == set(node["properties"]), (
            f"{path or 'top level'}: {set(values) ^ set(node['properties'])}"
        )
        for key, value in values.items():
            walk(value, node["properties"][key], f"{path}.{key}".lstrip("."))

    walk(defaults, schema, "")
    # Every key has a comment right above it, except the fields of list items and resources blocks.
    lines = (CHART_DIR / "values.yaml").read_text().splitlines()
    undocumented = []
    for index, line in enumerate(lines):
        stripped = line.strip()
        if (
            not stripped
            or stripped.startswith(("#", "-"))
            or not line.rstrip().split("#")[0].rstrip().count(":")
        ):
            continue
        key = stripped.split(":")[0]
        if key in UNCOMMENTED_KEYS:
            continue
        if not lines[index - 1].strip().startswith("#"):
            undocumented.append(f"line {index + 1}: {key}")
    assert not undocumented, f"values.yaml keys without a comment: {undocumented}"


UNCOMMENTED_KEYS = {
    # resources blocks and list items, explained by the comment of their parent
    *("requests", "limits", "paths", "path", "pathType", "type", "drop"),
    # the default (pod) securityContext, a documented value of its own
    *("runAsNonRoot", "runAsUser", "runAsGroup", "fsGroup", "seccompProfile"),
    *("allowPrivilegeEscalation", "readOnlyRootFilesystem", "capabilities"),
}


def _merge(base: Any, override: Any) -> Any:
    if isinstance(base, dict) and isinstance(override, dict):
        merged = dict(base)
        for key, value in override.items():
            merged[key] = _merge(base.get(key), value)
        return merged
    return override
