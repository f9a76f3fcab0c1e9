"""/docs and the OpenAPI document describe every field and error, and the body schema of /generate is
exact: a body valid against it is accepted, an invalid one refused."""

from __future__ import annotations

from typing import Any

import jsonschema
import pytest
from fastapi.testclient import TestClient

from tests.api.conftest import image_bytes
from vividflow.jobspec import VeoParams, WanParams


def _generate_body_schema(client: TestClient, content_type: str) -> dict[str, Any]:
    spec = client.get("/openapi.json").json()
    schema: dict[str, Any] = spec["paths"]["/api/v1/generate"]["post"]["requestBody"]["content"][
        content_type
    ]["schema"]
    return schema


def test_openapi_documents_generate_and_errors(client: TestClient) -> None:
    assert client.get("/docs").status_code == 200
    spec = client.get("/openapi.json").json()
    generate = spec["paths"]["/api/v1/generate"]["post"]
    content = generate["requestBody"]["content"]
    assert set(content) == {"multipart/form-data", "application/x-www-form-urlencoded", "application/json"}
    wan, veo = content["multipart/form-data"]["schema"]["oneOf"]
    assert (wan["title"], veo["title"]) == ("wan2.1", "veo3.1")
    common = {"prompt", "model", "image", "image_url", "webhook_url", "webhook_events"}
    assert set(wan["properties"]) == common | set(WanParams.model_fields)
    assert set(veo["properties"]) == common | set(VeoParams.model_fields)
    assert wan["additionalProperties"] is False and veo["additionalProperties"] is False
    for branch in (wan, veo):
        assert all(field.get("description") for field in branch["properties"].values())
    assert (
        wan["properties"]["width"]["default"] == 1280
        and veo["properties"]["duration_seconds"]["default"] == 4
    )
    assert wan["properties"]["model"]["default"] == "wan2.1" and veo["required"] == ["prompt", "model"]
    assert {"202", "200", "400", "401", "408", "413", "415", "429"} <= set(generate["responses"])
    assert {"401", "403", "404", "409", "429"} <= set(
        spec["paths"]["/api/v1/cancel/{job_id}"]["post"]["responses"]
    )
    assert "409" in spec["paths"]["/api/v1/keys"]["post"]["responses"]
    assert spec["components"]["securitySchemes"]["APIKeyHeader"]["name"] == "X-API-Key"


def test_result_files_document_404_and_answer_head(client: TestClient, settings: Any) -> None:
    spec = client.get("/openapi.json").json()
    path = spec["paths"]["/files/results/{name}"]
    assert set(path) == {"get", "head"}
    assert "404" in path["get"]["responses"] and "404" in path["head"]["responses"]
    assert path["get"]["operationId"] != path["head"]["operationId"]

    name = "0f7c1e2a-1111-4222-8333-444455556666.mp4"
    settings.results_dir.mkdir(parents=True, exist_ok=True)
    (settings.results_dir / name).write_bytes(b"\0" * 1234)
    head = client.head(f"/files/results/{name}")
    assert head.status_code == 200 and head.content == b""
    assert head.headers["content-length"] == "1234" and head.headers["content-type"] == "video/mp4"
    missing = client.head("/files/results/0f7c1e2a-0000-4222-8333-444455556666.mp4")
    assert missing.status_code == 404
    body = client.get("/files/results/0f7c1e2a-0000-4222-8333-444455556666.mp4").json()
    assert body == {"error": "Not found", "details": ["No such result file."]}


@pytest.mark.parametrize(
    ("path", "allowed"),
    [
        ("/api/v1/keys", "GET, OPTIONS, POST"),
        ("/api/v1/keys/some-id", "DELETE, OPTIONS"),
        ("/api/v1/generate", "OPTIONS, POST"),
        ("/files/results/x.mp4", "GET, HEAD, OPTIONS"),
    ],
)
def test_options_and_405_list_every_method_of_the_path(client: TestClient, path: str, allowed: str) -> None:
    options = client.options(path)
    assert options.status_code == 204 and options.headers["allow"] == allowed
    wrong = client.put(path)
    assert wrong.status_code == 405 and wrong.headers["allow"] == allowed
    assert wrong.json() == {
        "error": "Method not allowed",
        "details": [f"PUT is not allowed here; use {allowed}."],
    }


def test_unknown_paths_answer_the_error_shape(client: TestClient) -> None:
    response = client.get("/api/v1/nothing-here")
    assert response.status_code == 404
    assert response.json() == {"error": "Not found", "details": ["There is nothing at /api/v1/nothing-here."]}


# Bodies as a client would send them (JSON types); for forms each value travels as text.
BODIES: list[dict[str, Any]] = [
    {"prompt": "a cat"},
    {"prompt": "a cat", "model": "wan2.1", "width": 32, "height": 48, "length": 9, "steps": 2, "seed": 0},
    {"prompt": "a cat", "cfg": 1.0, "negative_prompt": "blur"},
    {"prompt": "a cat", "model": "veo3.1", "duration_seconds": 8, "resolution": "1080p"},
    {"prompt": "a cat", "model": "veo3.1", "enhance_prompt": True, "camera_motion": "dolly in"},
    {"prompt": "a cat", "length": 241},
    # invalid:
    {"prompt": "a cat", "length": 6},
    {"prompt": "a cat", "width": 1000},
    {"prompt": "a cat", "width": 2000},
    {"prompt": "a cat", "steps": 0},
    {"prompt": "a cat", "cfg": 20.5},
    {"prompt": "a cat", "seed": 4294967296},
    {"prompt": "a cat", "duration_seconds": 6},
    {"prompt": "a cat", "model": "veo3.1", "steps": 3},
    {"prompt": "a cat", "model": "veo3.1", "duration_seconds": 5},
    {"prompt": "a cat", "model": "veo3.1", "resolution": "4k"},
    {"prompt": "a cat", "model": "sora"},
    {"prompt": "a cat", "colour": "red"},
    {"prompt": "   "},
    {"prompt": "x" * 2001},
    {"prompt": "a cat", "camera_motion": "pan"},
    {"prompt": "a cat", "webhook_url": "https://example.com/hook", "webhook_events": "start, completed"},
    {"prompt": "a cat", "webhook_url": "https://example.com/hook", "webhook_events": '["progress"]'},
    # invalid:
    {"prompt": "a cat", "webhook_url": "http://example.com/hook"},
    {"prompt": "a cat", "webhook_url": "https://example.com/hook", "webhook_events": "start,done"},
    {"prompt": "a cat", "webhook_events": "start"},
]


def _as_form_text(value: Any) -> str:
    return ("true" if value else "false") if isinstance(value, bool) else str(value)


@pytest.mark.parametrize("body", BODIES, ids=lambda body: ",".join(f"{k}={v}"[:24] for k, v in body.items()))
def test_schema_valid_bodies_are_exactly_the_accepted_ones(
    client: TestClient, headers: dict[str, str], body: dict[str, Any]
) -> None:
    schema = _generate_body_schema(client, "multipart/form-data")
    typed = {**body, "image": "<binary>"}
    valid = jsonschema.Draft202012Validator(schema).is_valid(typed)
    response = client.post(
        "/api/v1/generate",
        headers=headers,
        data={name: _as_form_text(value) for name, value in body.items()},
        files={"image": ("in.png", image_bytes(), "image/png")},
    )
    assert response.status_code == (202 if valid else 400), (valid, response.text)
