"""crds/videojob.yaml is the one generated from the job spec and status models."""

from __future__ import annotations

from pathlib import Path

import yaml

from vividflow.crd import render, videojob_crd
from vividflow.jobspec import JobSpec, VideoJobStatus

ROOT = Path(__file__).resolve().parents[1]


def test_committed_crd_is_current() -> None:
    assert (ROOT / "crds" / "videojob.yaml").read_text() == render(), (
        "run: vividflow crd > crds/videojob.yaml"
    )


def test_schema_is_structural_and_complete() -> None:
    version = videojob_crd()["spec"]["versions"][0]
    schema = version["schema"]["openAPIV3Schema"]
    text = yaml.safe_dump(schema)
    assert "$ref" not in text and "anyOf" not in text and "title" not in text
    spec, status = schema["properties"]["spec"], schema["properties"]["status"]
    assert set(spec["properties"]) == {field.alias or name for name, field in JobSpec.model_fields.items()}
    assert {
        "phase",
        "progress",
        "resultURL",
        "errorMessage",
        "reason",
        "metrics",
        "conditions",
        "observedGeneration",
        "jobName",
        "startTime",
        "completionTime",
    } <= set(status["properties"])
    wan = spec["properties"]["parameters"]["properties"]["wan"]["properties"]
    assert wan["width"]["multipleOf"] == 16 and wan["length"]["x-kubernetes-validations"]
    assert [c["name"] for c in version["additionalPrinterColumns"][:5]] == [
        "Status",
        "Model",
        "Progress",
        "Duration",
        "Age",
    ]
    assert version["subresources"] == {"status": {}}
    assert VideoJobStatus().phase == "Queued"
