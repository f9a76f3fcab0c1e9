"""Input images by URL: gs:// and storage.googleapis.com through the GCS emulator, other https
through a real local TLS server, and the guard against private addresses. A bad input never
creates a job."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from tests.api.conftest import MakeSettings, app_state, create_api_key, image_bytes, wait_status
from tests.fixtures.fake_vertex import FakeVertex
from tests.fixtures.gcs_emulator import GcsEmulator
from tests.fixtures.https_server import HttpsServer
from vividflow.apiserver.app import create_app
from vividflow.apiserver.services import jobs
from vividflow.runner.video import probe_mp4

BUCKET = "vivid-inputs"


@pytest.fixture
def url_client(
    make_settings: MakeSettings, gcs_emulator: GcsEmulator, https_server: HttpsServer
) -> Iterator[TestClient]:
    gcs_emulator.make_bucket(BUCKET)
    with TestClient(create_app(make_settings(**https_server.settings_overrides()))) as client:
        yield client


@pytest.fixture
def url_headers(url_client: TestClient) -> dict[str, str]:
    return {"X-API-Key": create_api_key(url_client, "uma@example.com")}


def generate_json(client: TestClient, headers: dict[str, str], image_url: str) -> Any:
    return client.post("/api/v1/generate", headers=headers, json={"prompt": "p", "image_url": image_url})


def job_input_uri(client: TestClient, job_id: str) -> str:
    with app_state(client).session_factory() as session:
        job = jobs.get_job(session, job_id)
        assert job is not None
        return job.input_uri


def assert_no_job(client: TestClient, headers: dict[str, str]) -> None:
    assert client.get("/api/v1/history", headers=headers).json()["count"] == 0


@pytest.mark.parametrize(
    "form", ["gs://{b}/in dir/cat photo.jpg", "https://storage.googleapis.com/{b}/in%20dir/cat%20photo.jpg"]
)
def test_gcs_urls_are_checked_and_referenced(
    url_client: TestClient, url_headers: dict[str, str], gcs_emulator: GcsEmulator, form: str
) -> None:
    blob = gcs_emulator.client().bucket(BUCKET).blob("in dir/cat photo.jpg")
    blob.upload_from_string(image_bytes("JPEG"), content_type="image/jpeg")
    response = generate_json(url_client, url_headers, form.format(b=BUCKET))
    assert response.status_code == 202, response.text
    assert job_input_uri(url_client, response.json()["job_id"]) == f"gs://{BUCKET}/in dir/cat photo.jpg"


def test_missing_or_non_image_gcs_objects_are_400(
    url_client: TestClient, url_headers: dict[str, str], gcs_emulator: GcsEmulator
) -> None:
    gcs_emulator.client().bucket(BUCKET).blob("notes.txt").upload_from_string(
        b"hello", content_type="text/plain"
    )
    for url in (f"gs://{BUCKET}/missing.png", f"gs://{BUCKET}/notes.txt"):
        response = generate_json(url_client, url_headers, url)
        assert response.status_code == 400, response.text
        assert response.json()["details"][0].startswith("image_url: ")
    assert_no_job(url_client, url_headers)


def test_https_url_is_fetched_and_kept(
    url_client: TestClient, url_headers: dict[str, str], https_server: HttpsServer
) -> None:
    url = https_server.add("api-inputs/sunset.webp", image_bytes("WEBP"), "image/webp")
    response = generate_json(url_client, url_headers, url + "?token=secret")
    assert response.status_code == 202, response.text
    stored = Path(job_input_uri(url_client, response.json()["job_id"]))
    assert stored.suffix == ".webp" and stored.read_bytes() == image_bytes("WEBP")


def test_bad_https_inputs_are_400_without_secrets(
    url_client: TestClient, url_headers: dict[str, str], https_server: HttpsServer
) -> None:
    not_image = https_server.add("api-inputs/page.html", b"<html></html>", "text/html")
    for url in (
        https_server.url("api-inputs/missing.png") + "?sig=topsecret",
        not_image,
        "https://10.1.2.3/x.png",
        "https://169.254.169.254/latest/meta-data",
        "http://example.com/x.png",
    ):
        response = generate_json(url_client, url_headers, url)
        assert response.status_code == 400, (url, response.text)
        detail = response.json()["details"][0]
        assert detail.startswith("image_url: ") and "topsecret" not in detail
    assert_no_job(url_client, url_headers)


def test_loopback_refused_without_the_allow_list(
    make_settings: MakeSettings, https_server: HttpsServer
) -> None:
    url = https_server.add("api-inputs/ok.png", image_bytes(), "image/png")
    settings = make_settings(fetch_ca_bundle=https_server.ca_bundle_path)  # trusted, but not allowed
    with TestClient(create_app(settings)) as client:
        headers = {"X-API-Key": create_api_key(client, "lou@example.com")}
        response = generate_json(client, headers, url)
        assert response.status_code == 400
        assert "image_url: " in response.json()["details"][0]
        assert_no_job(client, headers)
    assert https_server.hits("api-inputs/ok.png") == 0


def test_results_go_to_gcs_when_a_bucket_is_set(
    make_settings: MakeSettings, gcs_emulator: GcsEmulator, fake_vertex: FakeVertex, tmp_path: Path
) -> None:
    bucket = gcs_emulator.make_bucket("vivid-results")
    fake_vertex.set_scenario(polls=1)
    settings = make_settings(workers=1, gcs_bucket=bucket, **fake_vertex.settings_overrides())
    with TestClient(create_app(settings)) as client:
        headers = {"X-API-Key": create_api_key(client, "gus@example.com")}
        response = client.post(
            "/api/v1/generate",
            data={"prompt": "p", "model": "veo3.1"},
            headers=headers,
            files={"image": ("in.png", image_bytes(), "image/png")},
        )
        job_id = response.json()["job_id"]
        assert job_input_uri(client, job_id) == f"gs://{bucket}/inputs/{job_id}.png"
        body = wait_status(client, headers, job_id)
    assert body["status"] == "completed", body
    assert body["result_url"] == f"https://storage.googleapis.com/{bucket}/videos/{job_id}.mp4"
    blob = gcs_emulator.client().bucket(bucket).get_blob(f"videos/{job_id}.mp4")
    assert blob is not None and blob.content_type == "video/mp4"
    blob.download_to_filename(tmp_path / "out.mp4")
    assert probe_mp4(tmp_path / "out.mp4").frames > 0
