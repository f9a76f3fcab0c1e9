"""POST /generate: every parameter rule, for multipart, urlencoded and JSON bodies. A rejected
request never creates a job."""

from __future__ import annotations

from typing import Any

import pytest
from fastapi.testclient import TestClient

from tests.api.conftest import MakeSettings, create_api_key, image_bytes
from vividflow.apiserver.app import create_app

PNG = image_bytes()
INTEGER = "must be a whole number written with digits only (e.g. 16)"
DECIMAL = "must be a finite decimal number (e.g. 7.5)"
BOOLEAN = "must be true or false"


def post_form(
    client: TestClient, headers: dict[str, str], fields: dict[str, Any], image: bytes | None = PNG
) -> Any:
    files = {"image": ("in.png", image, "image/png")} if image is not None else None
    data = {key: str(value) for key, value in fields.items()}
    if files is None:
        return client.post("/api/v1/generate", data=data, headers=headers)
    return client.post("/api/v1/generate", data=data, files=files, headers=headers)


def assert_rejected(client: TestClient, headers: dict[str, str], response: Any, *expected: str) -> None:
    assert response.status_code == 400, response.text
    body = response.json()
    assert body["error"] == "Invalid parameters"
    for line in expected:
        assert any(line in detail for detail in body["details"]), (line, body["details"])
    assert client.get("/api/v1/history", headers=headers).json()["count"] == 0


def test_defaults_accepted_with_202_body(client: TestClient, headers: dict[str, str]) -> None:
    response = post_form(client, headers, {"prompt": "a cat surfing"})
    assert response.status_code == 202, response.text
    body = response.json()
    assert set(body) == {"message", "job_id", "status", "estimated_wait_time"}
    assert body["message"] == "Generation job accepted" and body["status"] == "queued"
    assert body["estimated_wait_time"].startswith("~")
    assert response.headers["X-RateLimit-Limit"] == "500"


@pytest.mark.parametrize(
    ("fields", "problem"),
    [
        ({"width": 1000}, "width must be a multiple of 16 between 16 and 1920"),
        ({"width": 1936}, "width must be a multiple of 16"),
        ({"height": 0}, "height must be a multiple of 16"),
        ({"length": 80}, "length must be between 5 and 241 with (length - 1) divisible by 4"),
        ({"length": 245}, "length must be between 5 and 241"),
        ({"length": 1}, "length must be between 5 and 241"),
        ({"steps": 0}, "steps:"),
        ({"steps": 101}, "steps:"),
        ({"cfg": 0.5}, "cfg:"),
        ({"cfg": 20.5}, "cfg:"),
        ({"seed": -1}, "seed:"),
        ({"width": "wide"}, "width must be a whole number written with digits only"),
        # Strictly the contract's types: no lax conversions.
        ({"steps": "1_6"}, f"steps {INTEGER}"),
        ({"steps": " 16 "}, f"steps {INTEGER}"),
        ({"steps": "16.0"}, f"steps {INTEGER}"),
        ({"steps": "+16"}, f"steps {INTEGER}"),
        ({"steps": "١٦"}, f"steps {INTEGER}"),  # Arabic-Indic digits: int() would take them
        ({"seed": "0x10"}, f"seed {INTEGER}"),
        ({"cfg": "NaN"}, f"cfg {DECIMAL}"),
        ({"cfg": "inf"}, f"cfg {DECIMAL}"),
        ({"cfg": "1e400"}, f"cfg {DECIMAL}"),
        ({"cfg": "7,5"}, f"cfg {DECIMAL}"),
        ({"model": "veo3.1", "enhance_prompt": "yes"}, f"enhance_prompt {BOOLEAN}"),
        ({"model": "veo3.1", "enhance_prompt": "on"}, f"enhance_prompt {BOOLEAN}"),
        ({"model": "veo3.1", "enhance_prompt": "1"}, f"enhance_prompt {BOOLEAN}"),
    ],
)
def test_parameter_rules(
    client: TestClient, headers: dict[str, str], fields: dict[str, Any], problem: str
) -> None:
    response = post_form(client, headers, {"prompt": "p", **fields})
    assert_rejected(client, headers, response, problem)


@pytest.mark.parametrize(
    ("fields", "problem"),
    [
        ({"duration_seconds": 5}, "duration_seconds must be 4, 6, or 8"),
        ({"resolution": "4k"}, "resolution must be 720p or 1080p"),
        ({"enhance_prompt": "maybe"}, "enhance_prompt must be true or false"),
    ],
)
def test_veo_parameter_rules(
    client: TestClient, headers: dict[str, str], fields: dict[str, Any], problem: str
) -> None:
    response = post_form(client, headers, {"prompt": "p", "model": "veo3.1", **fields})
    assert_rejected(client, headers, response, problem)


def test_boundary_values_accepted(client: TestClient, headers: dict[str, str]) -> None:
    for fields in (
        {"width": 16, "height": 1920, "length": 5, "steps": 1, "cfg": 1.0},
        {"width": 1920, "height": 16, "length": 241, "steps": 100, "cfg": 20.0, "seed": 0},
    ):
        assert post_form(client, headers, {"prompt": "p", **fields}).status_code == 202
    for duration in (4, 6, 8):
        veo = {
            "prompt": "p",
            "model": "veo3.1",
            "duration_seconds": duration,
            "resolution": "1080p",
            "enhance_prompt": "true",
            "camera_motion": "Pan (right)",
        }
        assert post_form(client, headers, veo).status_code == 202


def test_other_models_parameters_are_rejected(client: TestClient, headers: dict[str, str]) -> None:
    response = post_form(client, headers, {"prompt": "p", "duration_seconds": 6})
    assert_rejected(
        client,
        headers,
        response,
        "duration_seconds is a veo3.1 parameter; it is not accepted with model wan2.1",
    )
    response = post_form(client, headers, {"prompt": "p", "model": "veo3.1", "steps": 10, "cfg": 3})
    assert_rejected(client, headers, response, "steps is a wan2.1 parameter", "cfg is a wan2.1 parameter")


def test_every_problem_is_listed(client: TestClient, headers: dict[str, str]) -> None:
    response = post_form(client, headers, {"width": 17, "length": 6, "colour": "red"}, image=None)
    assert_rejected(
        client,
        headers,
        response,
        "prompt is required",
        "an input image is required",
        "width must be",
        "length must be",
        "unknown parameter: colour",
    )
    assert len(response.json()["details"]) == 5


def test_unknown_model(client: TestClient, headers: dict[str, str]) -> None:
    response = post_form(client, headers, {"prompt": "p", "model": "sora"})
    assert_rejected(client, headers, response, "model must be one of: wan2.1, veo3.1")


def test_image_and_image_url_are_exclusive(client: TestClient, headers: dict[str, str]) -> None:
    response = post_form(client, headers, {"prompt": "p", "image_url": "gs://b/o.png"})
    assert_rejected(client, headers, response, "give either an image file or image_url, not both")


def test_blank_prompt(client: TestClient, headers: dict[str, str]) -> None:
    assert_rejected(client, headers, post_form(client, headers, {"prompt": "   "}), "prompt is required")
    assert_rejected(
        client,
        headers,
        post_form(client, headers, {"prompt": "x" * 2001}),
        "prompt must be at most 2000 characters",
    )


def test_json_body(client: TestClient, headers: dict[str, str]) -> None:
    response = client.post(
        "/api/v1/generate",
        headers=headers,
        json={
            "prompt": "p",
            "model": "veo3.1",
            "image_url": "ftp://x/y.png",
            "duration_seconds": 8,
            "enhance_prompt": True,
        },
    )
    assert_rejected(client, headers, response, "image_url must be a gs:// URL or an https:// URL")
    response = client.post("/api/v1/generate", headers=headers, json={"prompt": "p", "steps": "many"})
    assert_rejected(client, headers, response, "an input image is required", "steps must be a whole number")
    response = client.post("/api/v1/generate", headers=headers, json=["prompt"])
    assert_rejected(client, headers, response, "The JSON body must be an object.")
    response = client.post(
        "/api/v1/generate", headers={**headers, "Content-Type": "application/json"}, content=b"{not json"
    )
    assert_rejected(client, headers, response, "The request body is not valid JSON.")


def test_urlencoded_body(client: TestClient, headers: dict[str, str]) -> None:
    response = client.post(
        "/api/v1/generate",
        headers=headers,
        data={"prompt": "p", "model": "veo3.1", "enhance_prompt": "yes-please"},
    )
    assert_rejected(
        client, headers, response, "an input image is required", "enhance_prompt must be true or false"
    )


def test_unsupported_content_type(client: TestClient, headers: dict[str, str]) -> None:
    response = client.post(
        "/api/v1/generate", headers={**headers, "Content-Type": "text/plain"}, content=b"prompt=p"
    )
    assert response.status_code == 415
    assert response.json()["error"] == "Unsupported content type"


def test_non_image_upload_is_rejected(client: TestClient, headers: dict[str, str]) -> None:
    response = post_form(client, headers, {"prompt": "p"}, image=b"%PDF-1.7 not an image")
    assert_rejected(client, headers, response, "image: ")


def test_truncated_image_is_rejected(client: TestClient, headers: dict[str, str]) -> None:
    response = post_form(client, headers, {"prompt": "p"}, image=PNG[: len(PNG) // 2])
    assert_rejected(client, headers, response, "image: ")


@pytest.mark.parametrize("fmt", ["PNG", "JPEG", "WEBP"])
def test_image_formats_by_content_not_name(client: TestClient, headers: dict[str, str], fmt: str) -> None:
    files = {"image": ("photo.gif", image_bytes(fmt), "application/octet-stream")}
    response = client.post("/api/v1/generate", data={"prompt": "p"}, files=files, headers=headers)
    assert response.status_code == 202, response.text


def test_upload_size_limit(make_settings: MakeSettings) -> None:
    big = image_bytes("PNG", (64, 64)) + b"\0" * 4096
    with TestClient(create_app(make_settings(max_upload_bytes=1024))) as c:
        key = {"X-API-Key": create_api_key(c, "carol@example.com")}
        response = c.post(
            "/api/v1/generate",
            data={"prompt": "p"},
            files={"image": ("a.png", big, "image/png")},
            headers=key,
        )
        assert response.status_code == 413
        assert response.json()["error"] == "Image too large"
        assert c.get("/api/v1/history", headers=key).json()["count"] == 0


@pytest.mark.parametrize(
    ("fields", "problem"),
    [
        ({"width": True}, f"width {INTEGER}"),
        ({"width": 32.0}, f"width {INTEGER}"),
        ({"width": "32.0"}, f"width {INTEGER}"),
        ({"cfg": True}, f"cfg {DECIMAL}"),
        ({"cfg": "7.5e"}, f"cfg {DECIMAL}"),
        ({"model": "veo3.1", "enhance_prompt": 1}, f"enhance_prompt {BOOLEAN}"),
        ({"model": "veo3.1", "resolution": 720}, "resolution must be text"),
        ({"prompt": 42}, "prompt is required (text)"),
    ],
)
def test_json_values_follow_the_contracts_types_strictly(
    client: TestClient, headers: dict[str, str], fields: dict[str, Any], problem: str
) -> None:
    body = {"prompt": "p", "image_url": "gs://bucket/in.png", **fields}
    response = client.post("/api/v1/generate", headers=headers, json=body)
    assert_rejected(client, headers, response, problem)


def test_strict_values_that_are_right_are_accepted(client: TestClient, headers: dict[str, str]) -> None:
    for fields in (
        {"steps": "16", "seed": "0", "cfg": "7", "width": "32", "height": "48", "length": "9"},
        {"cfg": "7.25", "seed": "4294967295"},
        {"cfg": ".5e1"},
        {"model": "veo3.1", "enhance_prompt": "TRUE"},
        {"model": "veo3.1", "enhance_prompt": "False", "duration_seconds": "8"},
    ):
        response = post_form(client, headers, {"prompt": "p", **fields})
        assert response.status_code == 202, (fields, response.text)


def test_a_nan_cfg_in_json_is_refused_as_not_finite(client: TestClient, headers: dict[str, str]) -> None:
    response = client.post(
        "/api/v1/generate",
        headers={**headers, "Content-Type": "application/json"},
        content=b'{"prompt": "p", "image_url": "gs://b/i.png", "cfg": NaN}',
    )
    assert_rejected(client, headers, response, f"cfg {DECIMAL}")


def test_the_form_parsers_refusals_have_the_error_shape(client: TestClient, headers: dict[str, str]) -> None:
    fields = {f"field{n}": "x" for n in range(101)}
    too_many = client.post("/api/v1/generate", headers=headers, data={"prompt": "p", **fields})
    assert too_many.status_code == 400
    assert too_many.json() == {
        "error": "Invalid request body",
        "details": ["Too many fields. Maximum number of fields is 100."],
    }
    no_boundary = client.post(
        "/api/v1/generate",
        headers={**headers, "Content-Type": "multipart/form-data"},
        content=b"--x\r\nContent-Disposition: form-data; name=prompt\r\n\r\np\r\n--x--\r\n",
    )
    assert no_boundary.status_code == 400
    assert no_boundary.json()["error"] == "Invalid request body" and no_boundary.json()["details"]
    huge_field = post_form(client, headers, {"prompt": "p", "negative_prompt": "x" * 40_000})
    assert huge_field.status_code == 413
    assert huge_field.json() == {
        "error": "Request too large",
        "details": ["A form field is larger than the limit of 16384 bytes."],
    }
    assert client.get("/api/v1/history", headers=headers).json()["count"] == 0
