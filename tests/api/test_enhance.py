"""POST /enhance-prompt through the real app and the real google-genai client, against the fake
Vertex AI (Gemini's ``generateContent``)."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from tests.api.conftest import MakeSettings, create_api_key
from tests.fixtures.fake_vertex import FAKE_BEARER_TOKEN, FakeVertex, enhanced_text
from vividflow import genai_client
from vividflow.apiserver.app import create_app
from vividflow.apiserver.generate_input import MAX_PROMPT_LENGTH
from vividflow.apiserver.services.enhance import clean_answer, enhance_available, system_instruction
from vividflow.jobspec import ModelName
from vividflow.settings import Settings

URL = "/api/v1/enhance-prompt"
PROMPT = "a fox turns its head toward the camera"
# Day-long windows: the sliding counter's windows are aligned to the clock, and a minute roll-over
# in mid-test would shift the counts (the default, 10 a minute, is checked on its own).
LIMITS = "10/day"
REAL_DEFAULT_CREDENTIALS = genai_client.default_credentials


@pytest.fixture(autouse=True)
def _fresh_fake(fake_vertex: FakeVertex) -> None:
    fake_vertex.set_scenario()


def vertex_settings(fake_vertex: FakeVertex, *, express: bool = True) -> dict[str, Any]:
    overrides = {
        **fake_vertex.settings_overrides(),
        "enhance_limits": LIMITS,
        "rate_limits": "1000/day",
    }
    if not express:
        overrides["vertex_api_key"] = None
    return overrides


@pytest.fixture
def settings(make_settings: MakeSettings, fake_vertex: FakeVertex) -> Settings:
    """Project mode: application default credentials (the fake's token) and VIVID_VERTEX_PROJECT."""
    return make_settings(**vertex_settings(fake_vertex, express=False))


@pytest.fixture(autouse=True)
def _fake_adc(monkeypatch: pytest.MonkeyPatch, fake_vertex: FakeVertex) -> None:
    monkeypatch.setattr(genai_client, "default_credentials", fake_vertex.adc_credentials)


@contextmanager
def app_client(settings: Settings) -> Iterator[TestClient]:
    with TestClient(create_app(settings)) as client:
        yield client


def post(client: TestClient, headers: dict[str, str], body: Any) -> Any:
    return client.post(URL, json=body, headers=headers)


def unavailable_answer(settings: Settings, fake_vertex: FakeVertex) -> dict[str, Any]:
    """The 503 body of an enhancement request on a server without usable Vertex AI credentials
    (Google is not called)."""
    with app_client(settings) as client:
        headers = {"X-API-Key": create_api_key(client, "alice@example.com")}
        response = post(client, headers, {"prompt": PROMPT})
    assert response.status_code == 503
    body: dict[str, Any] = response.json()
    assert body["error"] == "Prompt enhancement is not available"
    assert fake_vertex.requests == []
    return body


# --- success ---------------------------------------------------------------------------------


def test_enhances_with_gemini_in_project_mode(
    client: TestClient, headers: dict[str, str], fake_vertex: FakeVertex, settings: Settings
) -> None:
    response = post(client, headers, {"prompt": f"  {PROMPT}  ", "model": "veo3.1"})

    assert response.status_code == 200, response.text
    assert response.json() == {"prompt": enhanced_text(PROMPT)}
    [call] = fake_vertex.generations
    assert call.path == (
        "/v1beta1/projects/fake-project/locations/us-central1/publishers/google/models/"
        "gemini-2.5-flash:generateContent"
    )
    assert call.model == settings.enhance_model == "gemini-2.5-flash"
    assert call.headers["Authorization"] == f"Bearer {FAKE_BEARER_TOKEN}"
    assert call.user_text == PROMPT
    assert call.body["contents"][0]["role"] == "user"
    assert "veo3.1" in call.system_instruction and "dialogue" in call.system_instruction
    assert call.system_instruction == system_instruction(ModelName.VEO31, MAX_PROMPT_LENGTH)
    assert 0.3 <= call.body["generationConfig"]["temperature"] <= 1.0
    assert response.headers["X-RateLimit-Limit"] == "10"
    assert response.headers["X-RateLimit-Remaining"] == "9"


def test_default_model_is_wan_and_its_guidance_is_sent(
    client: TestClient, headers: dict[str, str], fake_vertex: FakeVertex
) -> None:
    response = post(client, headers, {"prompt": PROMPT})

    assert response.status_code == 200, response.text
    [call] = fake_vertex.generations
    assert "wan2.1" in call.system_instruction and "veo3.1" not in call.system_instruction
    assert call.system_instruction == system_instruction(ModelName.WAN21, MAX_PROMPT_LENGTH)


def test_express_mode_sends_the_api_key(
    make_settings: MakeSettings, fake_vertex: FakeVertex, monkeypatch: pytest.MonkeyPatch
) -> None:
    def no_adc() -> None:
        raise AssertionError("express mode must not look up application default credentials")

    monkeypatch.setattr(genai_client, "default_credentials", no_adc)
    with app_client(make_settings(**vertex_settings(fake_vertex))) as client:
        headers = {"X-API-Key": create_api_key(client, "alice@example.com")}
        response = post(client, headers, {"prompt": PROMPT, "model": "wan2.1"})

        assert response.status_code == 200, response.text
        assert response.json() == {"prompt": enhanced_text(PROMPT)}
        [call] = fake_vertex.generations
        assert call.path == "/v1beta1/publishers/google/models/gemini-2.5-flash:generateContent"
        assert call.headers["x-goog-api-key"] == fake_vertex.api_key
        assert "authorization" not in {k.lower() for k in call.headers}


def test_configured_enhance_model_is_used(make_settings: MakeSettings, fake_vertex: FakeVertex) -> None:
    settings = make_settings(**vertex_settings(fake_vertex), enhance_model="gemini-2.5-pro")
    with app_client(settings) as client:
        headers = {"X-API-Key": create_api_key(client, "alice@example.com")}
        assert post(client, headers, {"prompt": PROMPT}).status_code == 200
        assert [call.model for call in fake_vertex.generations] == ["gemini-2.5-pro"]


def test_answer_is_unquoted_trimmed_and_cut_to_the_prompt_limit(
    client: TestClient, headers: dict[str, str], fake_vertex: FakeVertex
) -> None:
    fake_vertex.set_scenario(gemini_text='\n  "A fox turns slowly; snow drifts past."  \n')
    assert post(client, headers, {"prompt": PROMPT}).json() == {
        "prompt": "A fox turns slowly; snow drifts past."
    }

    fake_vertex.set_scenario(gemini_text="word " * 1000)
    enhanced = post(client, headers, {"prompt": PROMPT}).json()["prompt"]
    assert 0.8 * MAX_PROMPT_LENGTH < len(enhanced) <= MAX_PROMPT_LENGTH
    assert enhanced == enhanced.strip() and enhanced.endswith("word")


def test_clean_answer_keeps_inner_quotes() -> None:
    assert clean_answer('"Run!" she shouts, and "go" he answers', 100) == (
        '"Run!" she shouts, and "go" he answers'
    )
    assert clean_answer("\u201cA calm lake at dawn.\u201d", 100) == "A calm lake at dawn."
    assert clean_answer("x" * 50, 10) == "x" * 10


# --- not configured --------------------------------------------------------------------------


def test_without_credentials_answers_503_without_calling_google(
    make_settings: MakeSettings, fake_vertex: FakeVertex
) -> None:
    settings = make_settings(
        **{**vertex_settings(fake_vertex), "vertex_api_key": None, "vertex_project": None}
    )
    assert not enhance_available(settings)
    body = unavailable_answer(settings, fake_vertex)
    [detail] = body["details"]
    assert "VIVID_VERTEX_PROJECT" in detail and "VIVID_VERTEX_API_KEY" in detail


def test_project_without_adc_answers_503(
    make_settings: MakeSettings,
    fake_vertex: FakeVertex,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> None:
    monkeypatch.setattr(genai_client, "default_credentials", REAL_DEFAULT_CREDENTIALS)  # finds nothing
    monkeypatch.setenv("GOOGLE_APPLICATION_CREDENTIALS", str(tmp_path / "missing.json"))
    settings = make_settings(**vertex_settings(fake_vertex, express=False))
    assert enhance_available(settings)
    body = unavailable_answer(settings, fake_vertex)
    assert "credentials" in body["details"][0] and str(tmp_path) not in json.dumps(body)


def test_enhance_available_needs_a_key_or_a_project() -> None:
    assert not enhance_available(Settings(vertex_project=None, vertex_api_key=None))
    assert not enhance_available(Settings(vertex_project="", vertex_api_key=""))
    assert enhance_available(Settings(vertex_project="p", vertex_api_key=None))
    assert enhance_available(Settings(vertex_project=None, vertex_api_key="k"))


# --- validation and auth ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("body", "details"),
    [
        ({"prompt": "   "}, ["prompt is required (text)"]),
        ({}, ["prompt is required (text)"]),
        ({"prompt": 42}, ["prompt is required (text)"]),
        (
            {"prompt": "x" * (MAX_PROMPT_LENGTH + 1)},
            [f"prompt must be at most {MAX_PROMPT_LENGTH} characters"],
        ),
        ({"prompt": PROMPT, "model": "sora"}, ["model must be one of: wan2.1, veo3.1"]),
        ({"prompt": PROMPT, "colour": "red"}, ["unknown parameter: colour"]),
        (
            {"prompt": "", "model": 3, "steps": 4},
            ["prompt is required (text)", "model must be one of: wan2.1, veo3.1", "unknown parameter: steps"],
        ),
        (["a fox"], ["The JSON body must be an object."]),
    ],
    ids=["blank", "missing", "not-text", "too-long", "bad-model", "unknown-field", "all-at-once", "array"],
)
def test_invalid_bodies_are_400(
    client: TestClient,
    headers: dict[str, str],
    fake_vertex: FakeVertex,
    body: Any,
    details: list[str],
) -> None:
    response = post(client, headers, body)

    assert response.status_code == 400
    assert response.json() == {"error": "Invalid parameters", "details": details}
    assert fake_vertex.requests == []


def test_prompt_of_exactly_the_limit_is_accepted(
    client: TestClient, headers: dict[str, str], fake_vertex: FakeVertex
) -> None:
    assert post(client, headers, {"prompt": "x" * MAX_PROMPT_LENGTH}).status_code == 200


def test_not_json_is_400_and_other_content_types_415(
    client: TestClient, headers: dict[str, str], fake_vertex: FakeVertex
) -> None:
    not_json = client.post(
        URL, content=b"prompt=a fox", headers={**headers, "Content-Type": "application/json"}
    )
    assert not_json.status_code == 400
    assert not_json.json() == {
        "error": "Invalid parameters",
        "details": ["The request body is not valid JSON."],
    }

    form = client.post(URL, data={"prompt": PROMPT}, headers=headers)
    assert form.status_code == 415
    assert form.json()["error"] == "Unsupported content type"
    assert fake_vertex.requests == []


def test_without_api_key_is_401(client: TestClient, fake_vertex: FakeVertex) -> None:
    response = client.post(URL, json={"prompt": PROMPT})
    assert response.status_code == 401
    assert response.json()["error"] == "Invalid or missing API key"
    bad = client.post(URL, json={"prompt": PROMPT}, headers={"X-API-Key": "vf_nope"})
    assert bad.status_code == 401
    assert fake_vertex.requests == []


# --- rate limit ------------------------------------------------------------------------------


def test_eleventh_enhancement_is_429_per_user(
    client: TestClient, headers: dict[str, str], fake_vertex: FakeVertex
) -> None:
    remaining = [
        post(client, headers, {"prompt": PROMPT}).headers["X-RateLimit-Remaining"] for _ in range(10)
    ]
    assert remaining == [str(n) for n in range(9, -1, -1)]

    response = post(client, headers, {"prompt": PROMPT})

    assert response.status_code == 429
    body = response.json()
    assert body["error"] == "Rate limit exceeded" and len(body["details"]) == 1
    assert 0 < body["retry_after"] <= 86400
    assert response.headers["Retry-After"] == str(body["retry_after"])
    assert response.headers["X-RateLimit-Limit"] == "10"
    assert response.headers["X-RateLimit-Remaining"] == "0"
    assert int(response.headers["X-RateLimit-Reset"]) > 0
    assert len(fake_vertex.generations) == 10

    bob = {"X-API-Key": create_api_key(client, "bob@example.com")}
    assert post(client, bob, {"prompt": PROMPT}).status_code == 200  # per user
    assert client.get("/api/v1/usage", headers=headers).status_code == 200  # apart from the API's limits


def test_default_limit_is_ten_a_minute() -> None:
    assert Settings().enhance_limits == ["10/minute"]


# --- upstream failures -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("changes", "reason"),
    [
        ({"gemini_status": 429}, "quota"),
        ({"gemini_status": 500, "gemini_message": "Internal error encountered."}, "500"),
        (
            {"gemini_status": 403, "gemini_message": "Permission denied on project fake-project."},
            "credentials",
        ),
        ({"gemini_outcome": "blocked_prompt"}, "blocked the prompt (SAFETY)"),
        ({"gemini_outcome": "safety"}, "safety filters"),
        ({"gemini_outcome": "empty"}, "empty"),
        ({"gemini_text": '  ""  '}, "empty"),
    ],
    ids=["429", "500", "403", "blocked-prompt", "safety-candidate", "empty", "only-quotes"],
)
def test_upstream_failures_are_502(
    make_settings: MakeSettings,
    fake_vertex: FakeVertex,
    changes: dict[str, Any],
    reason: str,
) -> None:
    fake_vertex.set_scenario(**changes)
    with app_client(make_settings(**vertex_settings(fake_vertex))) as client:
        headers = {"X-API-Key": create_api_key(client, "alice@example.com")}
        response = post(client, headers, {"prompt": PROMPT})

        assert response.status_code == 502
        body = response.json()
        assert body["error"] == "Prompt enhancement failed"
        [detail] = body["details"]
        assert reason in detail
        assert fake_vertex.api_key not in response.text and FAKE_BEARER_TOKEN not in response.text
        assert "fake-project" not in response.text and PROMPT not in response.text
        assert len(fake_vertex.generations) == 1  # no retries


def test_gemini_timeout_is_502(make_settings: MakeSettings, fake_vertex: FakeVertex) -> None:
    release = threading.Event()
    fake_vertex.set_scenario(hold_gemini=release)
    settings = make_settings(**vertex_settings(fake_vertex), enhance_timeout_seconds=0.3)
    try:
        with app_client(settings) as client:
            headers = {"X-API-Key": create_api_key(client, "alice@example.com")}
            response = post(client, headers, {"prompt": PROMPT})

            assert response.status_code == 502
            assert response.json() == {
                "error": "Prompt enhancement failed",
                "details": ["Gemini did not answer within 0.3 seconds."],
            }
    finally:
        release.set()


def test_unreachable_vertex_is_502(make_settings: MakeSettings, fake_vertex: FakeVertex) -> None:
    settings = make_settings(**{**vertex_settings(fake_vertex), "vertex_base_url": "http://127.0.0.1:9/"})
    with app_client(settings) as client:
        headers = {"X-API-Key": create_api_key(client, "alice@example.com")}
        response = post(client, headers, {"prompt": PROMPT})

        assert response.status_code == 502
        assert response.json()["details"] == ["Could not reach Vertex AI."]


def test_logs_leave_out_the_prompt_and_secrets(
    client: TestClient,
    headers: dict[str, str],
    fake_vertex: FakeVertex,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level("DEBUG", logger="vividflow")
    assert post(client, headers, {"prompt": PROMPT}).status_code == 200
    fake_vertex.set_scenario(gemini_status=500)
    assert post(client, headers, {"prompt": PROMPT}).status_code == 502

    logged = "\n".join(
        record.getMessage() for record in caplog.records if record.name.startswith("vividflow")
    )
    assert "prompt enhanced with gemini-2.5-flash" in logged
    assert PROMPT not in logged and FAKE_BEARER_TOKEN not in logged and headers["X-API-Key"] not in logged


# --- OpenAPI ---------------------------------------------------------------------------------


def test_openapi_documents_the_route(client: TestClient) -> None:
    operation = client.get("/openapi.json").json()["paths"][URL]["post"]
    schema = operation["requestBody"]["content"]["application/json"]["schema"]
    assert schema["required"] == ["prompt"] and schema["additionalProperties"] is False
    assert schema["properties"]["model"]["enum"] == ["wan2.1", "veo3.1"]
    assert schema["properties"]["prompt"]["maxLength"] == MAX_PROMPT_LENGTH
    assert {"200", "400", "401", "415", "429", "502", "503"} <= set(operation["responses"])
    assert operation["security"] == [{"APIKeyHeader": []}]
