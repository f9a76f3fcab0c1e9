"""wan2.1's ``preset`` (an extension of the contract): ``fast`` needs the server's distilled LoRA and
brings its own steps and cfg where the request gives none; ``standard`` changes nothing."""

from __future__ import annotations

from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select

from tests.api.conftest import MakeSettings, app_state, create_api_key, image_bytes
from vividflow.apiserver.app import create_app
from vividflow.apiserver.db.models import Job

PNG = image_bytes()
NO_LORA = "preset fast is not available on this server: no distilled LoRA is configured (VIVID_WAN_LORA)"


def post(client: TestClient, headers: dict[str, str], fields: dict[str, Any], json_body: bool) -> Any:
    if json_body:
        return client.post(
            "/api/v1/generate",
            json={**fields, "image_url": "gs://bucket/in.png"},
            headers=headers,
        )
    data = {key: str(value) for key, value in fields.items()}
    return client.post(
        "/api/v1/generate", data=data, files={"image": ("in.png", PNG, "image/png")}, headers=headers
    )


def stored_wan_parameters(client: TestClient, job_id: str) -> dict[str, Any]:
    with app_state(client).session_factory() as session:
        job = session.scalars(select(Job).where(Job.id == job_id)).one()
        wan: dict[str, Any] = job.parameters["wan"]
        return wan


@pytest.fixture
def lora_client(make_settings: MakeSettings) -> Any:
    settings = make_settings(wan_lora="lightx2v/some-distilled-lora", wan_fast_steps=4, wan_fast_cfg=1.0)
    with TestClient(create_app(settings)) as client:
        yield client


@pytest.mark.parametrize("json_body", [False, True], ids=["multipart", "json"])
def test_fast_without_a_lora_is_a_400_and_creates_no_job(
    client: TestClient, headers: dict[str, str], json_body: bool
) -> None:
    response = post(client, headers, {"prompt": "a cat", "preset": "fast"}, json_body=json_body)
    assert response.status_code == 400, response.text
    body = response.json()
    assert body["error"] == "Invalid parameters"
    assert any(detail.startswith(NO_LORA) for detail in body["details"]), body
    assert client.get("/api/v1/history", headers=headers).json()["count"] == 0


def test_a_fast_request_with_a_bad_field_reports_that_field(
    client: TestClient, headers: dict[str, str]
) -> None:
    response = post(client, headers, {"prompt": "a cat", "preset": "fast", "steps": 0}, json_body=False)
    assert response.status_code == 400
    details = response.json()["details"]
    assert any(detail.startswith("steps:") for detail in details), details


def test_an_unknown_preset_is_a_400(client: TestClient, headers: dict[str, str]) -> None:
    response = post(client, headers, {"prompt": "a cat", "preset": "turbo"}, json_body=False)
    assert response.status_code == 400
    assert any("preset must be one of: standard, fast" in d for d in response.json()["details"])


def test_preset_is_a_wan_parameter_only(client: TestClient, headers: dict[str, str]) -> None:
    response = post(
        client, headers, {"prompt": "a cat", "model": "veo3.1", "preset": "fast"}, json_body=False
    )
    assert response.status_code == 400
    assert "preset is a wan2.1 parameter; it is not accepted with model veo3.1" in response.json()["details"]


@pytest.mark.parametrize("fields", [{}, {"preset": "standard"}], ids=["omitted", "standard"])
def test_standard_jobs_are_stored_as_before_the_parameter_existed(
    client: TestClient, headers: dict[str, str], fields: dict[str, Any]
) -> None:
    response = post(client, headers, {"prompt": "a cat", **fields}, json_body=False)
    assert response.status_code == 202, response.text
    stored = stored_wan_parameters(client, response.json()["job_id"])
    assert "preset" not in stored
    assert (stored["steps"], stored["cfg"]) == (30, 7.5)


def test_fast_brings_its_steps_and_cfg(lora_client: TestClient) -> None:
    headers = {"X-API-Key": create_api_key(lora_client, "fast@example.com")}
    response = post(lora_client, headers, {"prompt": "a cat", "preset": "fast"}, json_body=False)
    assert response.status_code == 202, response.text
    stored = stored_wan_parameters(lora_client, response.json()["job_id"])
    assert (stored["preset"], stored["steps"], stored["cfg"]) == ("fast", 4, 1.0)


@pytest.mark.parametrize(
    ("given", "expected"),
    [({"steps": 8}, (8, 1.0)), ({"cfg": 2.5}, (4, 2.5)), ({"steps": 30, "cfg": 7.5}, (30, 7.5))],
)
def test_steps_and_cfg_the_request_gives_are_kept(
    lora_client: TestClient, given: dict[str, Any], expected: tuple[int, float]
) -> None:
    headers = {"X-API-Key": create_api_key(lora_client, "explicit@example.com")}
    response = post(lora_client, headers, {"prompt": "a cat", "preset": "fast", **given}, json_body=False)
    assert response.status_code == 202, response.text
    stored = stored_wan_parameters(lora_client, response.json()["job_id"])
    assert (stored["steps"], stored["cfg"]) == expected


def test_the_openapi_document_lists_the_preset(client: TestClient) -> None:
    spec = client.get("/openapi.json").json()
    form = spec["paths"]["/api/v1/generate"]["post"]["requestBody"]["content"]["multipart/form-data"]
    wan, veo = form["schema"]["oneOf"]
    assert wan["properties"]["preset"]["enum"] == ["standard", "fast"]
    assert wan["properties"]["preset"]["default"] == "standard"
    assert "preset" not in veo["properties"]
