"""/docs and the OpenAPI document describe every field and error."""

from __future__ import annotations

from fastapi.testclient import TestClient

from vividflow.jobspec import VeoParams, WanParams


def test_openapi_documents_generate_and_errors(client: TestClient) -> None:
    assert client.get("/docs").status_code == 200
    spec = client.get("/openapi.json").json()
    generate = spec["paths"]["/api/v1/generate"]["post"]
    content = generate["requestBody"]["content"]
    assert set(content) == {"multipart/form-data", "application/x-www-form-urlencoded", "application/json"}
    fields = content["multipart/form-data"]["schema"]["properties"]
    assert {"prompt", "model", "image", "image_url"} | set(WanParams.model_fields) | set(
        VeoParams.model_fields
    ) == set(fields)
    assert all(field.get("description") for field in fields.values())
    assert fields["width"]["default"] == 1280 and fields["duration_seconds"]["default"] == 4
    assert {"202", "200", "400", "401", "413", "415", "429"} <= set(generate["responses"])
    assert {"401", "403", "404", "409", "429"} <= set(
        spec["paths"]["/api/v1/cancel/{job_id}"]["post"]["responses"]
    )
    assert spec["components"]["securitySchemes"]["APIKeyHeader"]["name"] == "X-API-Key"
