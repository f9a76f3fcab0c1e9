"""Reading inputs and writing outputs by URI: local paths, the GCS emulator and the TLS server."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.fixtures.gcs_emulator import GcsEmulator
from tests.fixtures.https_server import HttpsServer
from tests.storage.test_images import make_image
from vividflow.settings import Settings
from vividflow.storage.errors import FetchRefused, InputNotFound, InputTooLarge, InvalidImage, StorageError
from vividflow.storage.locations import output_uri_for, read_input, result_url_for, store_input, write_output

BUCKET = "vivid-locations-tests"
PNG = make_image("PNG")
JPEG = make_image("JPEG")


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return Settings(data_dir=tmp_path / "data", public_url="https://vivid.example/")


@pytest.fixture
def gcs_settings(settings: Settings, gcs_emulator: GcsEmulator) -> Settings:
    gcs_emulator.make_bucket(BUCKET)
    return settings.model_copy(
        update={"gcs_bucket": BUCKET, "gcs_prefix": "out/videos", "gcs_inputs_prefix": "in"}
    )


def test_read_local_path_and_file_url(settings: Settings, tmp_path: Path) -> None:
    path = tmp_path / "an input.jpeg.png"  # a JPEG under a misleading name
    path.write_bytes(JPEG)
    assert read_input(str(path), settings).data == JPEG
    assert read_input(path.as_uri(), settings).data == JPEG


def test_read_local_missing_file(settings: Settings, tmp_path: Path) -> None:
    with pytest.raises(InputNotFound, match=r"input file nothing\.png does not exist"):
        read_input(str(tmp_path / "nothing.png"), settings)


def test_read_local_checks_size_before_reading(settings: Settings, tmp_path: Path) -> None:
    path = tmp_path / "big.png"
    path.write_bytes(PNG + bytes(2000))
    with pytest.raises(InputTooLarge, match=f"image is {len(PNG) + 2000} bytes; the limit is 1000 bytes"):
        read_input(str(path), settings.model_copy(update={"max_upload_bytes": 1000}))


def test_read_local_validates_the_image(settings: Settings, tmp_path: Path) -> None:
    path = tmp_path / "fake.png"
    path.write_bytes(b"<html>not an image</html>")
    with pytest.raises(InvalidImage, match="image must be PNG, JPEG or WebP"):
        read_input(str(path), settings)


@pytest.mark.parametrize("uri", ["/etc/hostname", "file:///etc/hostname", "relative/x.png"])
def test_read_refuses_local_paths_from_users(settings: Settings, uri: str) -> None:
    with pytest.raises(FetchRefused, match="must use https"):
        read_input(uri, settings, allow_local=False)


def test_read_gcs_by_gs_and_https_url(gcs_settings: Settings, gcs_emulator: GcsEmulator) -> None:
    gcs_emulator.client().bucket(BUCKET).blob("user uploads/ü 1.webp").upload_from_string(make_image("WEBP"))
    by_gs = read_input(f"gs://{BUCKET}/user uploads/ü 1.webp", gcs_settings)
    by_https = read_input(
        f"https://storage.googleapis.com/{BUCKET}/user%20uploads/%C3%BC%201.webp", gcs_settings
    )
    assert by_gs.data == by_https.data == make_image("WEBP")


def test_read_gcs_validates_the_image(gcs_settings: Settings, gcs_emulator: GcsEmulator) -> None:
    gcs_emulator.client().bucket(BUCKET).blob("notes.png").upload_from_string(b"plain text")
    with pytest.raises(InvalidImage):
        read_input(f"gs://{BUCKET}/notes.png", gcs_settings)


def test_read_gs_url_without_object(settings: Settings) -> None:
    with pytest.raises(InputNotFound, match="names no object"):
        read_input(f"gs://{BUCKET}", settings, allow_local=False)


def test_read_https_url(settings: Settings, https_server: HttpsServer) -> None:
    url = https_server.add("locations/input.png", PNG, "image/png")
    assert read_input(url, settings.model_copy(update=https_server.settings_overrides())).data == PNG


def test_read_https_url_keeps_the_guard(settings: Settings, https_server: HttpsServer) -> None:
    url = https_server.add("locations/guarded.png", PNG, "image/png")
    with pytest.raises(FetchRefused):
        read_input(url, settings, allow_local=False)


def test_write_output_locally_replaces_atomically(settings: Settings, tmp_path: Path) -> None:
    video = tmp_path / "render.mp4"
    video.write_bytes(b"new video")
    destination = settings.results_dir / "nested" / "job.mp4"
    destination.parent.mkdir(parents=True)
    destination.write_bytes(b"old video")
    write_output(video, str(destination), settings)
    assert destination.read_bytes() == b"new video"
    assert sorted(p.name for p in destination.parent.iterdir()) == ["job.mp4"]  # no temporary left
    assert video.read_bytes() == b"new video"  # copied, not moved


def test_write_output_to_file_url_creates_directories(settings: Settings, tmp_path: Path) -> None:
    video = tmp_path / "render.mp4"
    video.write_bytes(b"video")
    destination = tmp_path / "a" / "b c" / "job.mp4"
    write_output(video, destination.as_uri(), settings)
    assert destination.read_bytes() == b"video"


def test_write_output_to_gcs(gcs_settings: Settings, gcs_emulator: GcsEmulator, tmp_path: Path) -> None:
    video = tmp_path / "render.mp4"
    video.write_bytes(b"gcs video")
    write_output(video, f"gs://{BUCKET}/videos/job-9.mp4", gcs_settings)
    blob = gcs_emulator.client().bucket(BUCKET).get_blob("videos/job-9.mp4")
    assert blob is not None
    assert (blob.content_type, blob.download_as_bytes()) == ("video/mp4", b"gcs video")


def test_write_output_to_an_unknown_scheme(settings: Settings, tmp_path: Path) -> None:
    video = tmp_path / "render.mp4"
    video.write_bytes(b"video")
    with pytest.raises(StorageError, match=r"cannot write results to s3://bucket/x\.mp4$"):
        write_output(video, "s3://bucket/x.mp4?token=secret", settings)


def test_result_url_for_local_results(settings: Settings) -> None:
    uri = str(settings.results_dir / "2026" / "job 1.mp4")
    assert result_url_for(uri, settings) == "https://vivid.example/files/results/2026/job%201.mp4"


def test_result_url_for_a_path_outside_the_results(settings: Settings, tmp_path: Path) -> None:
    with pytest.raises(StorageError, match="not inside the results directory"):
        result_url_for(str(settings.results_dir / ".." / "inputs" / "x.png"), settings)


def test_result_url_for_gcs(settings: Settings) -> None:
    assert (
        result_url_for("gs://bkt/videos/j.mp4", settings) == "https://storage.googleapis.com/bkt/videos/j.mp4"
    )


def test_local_round_trip(settings: Settings, tmp_path: Path) -> None:
    input_uri = store_input(JPEG, "job_abc-1", "image/jpeg", settings)
    assert Path(input_uri) == (settings.inputs_dir / "job_abc-1.jpg").resolve()
    assert read_input(input_uri, settings).data == JPEG

    output_uri = output_uri_for("job_abc-1", settings)
    assert Path(output_uri) == (settings.results_dir / "job_abc-1.mp4").resolve()
    video = tmp_path / "render.mp4"
    video.write_bytes(b"video")
    write_output(video, output_uri, settings)
    assert result_url_for(output_uri, settings) == "https://vivid.example/files/results/job_abc-1.mp4"


def test_gcs_round_trip(gcs_settings: Settings, gcs_emulator: GcsEmulator, tmp_path: Path) -> None:
    input_uri = store_input(PNG, "job-7", "image/png", gcs_settings)
    assert input_uri == f"gs://{BUCKET}/in/job-7.png"
    blob = gcs_emulator.client().bucket(BUCKET).get_blob("in/job-7.png")
    assert blob is not None and blob.content_type == "image/png"
    assert read_input(input_uri, gcs_settings).data == PNG

    output_uri = output_uri_for("job-7", gcs_settings)
    assert output_uri == f"gs://{BUCKET}/out/videos/job-7.mp4"
    video = tmp_path / "render.mp4"
    video.write_bytes(b"video")
    write_output(video, output_uri, gcs_settings)
    assert (
        result_url_for(output_uri, gcs_settings)
        == f"https://storage.googleapis.com/{BUCKET}/out/videos/job-7.mp4"
    )


@pytest.mark.parametrize("job_id", ["../escape", "a/b", "", "x.png"])
def test_job_ids_cannot_escape_the_directory(settings: Settings, job_id: str) -> None:
    with pytest.raises(ValueError, match="not usable as a file name"):
        store_input(PNG, job_id, "image/png", settings)
    with pytest.raises(ValueError, match="not usable as a file name"):
        output_uri_for(job_id, settings)


def test_store_input_refuses_other_types(settings: Settings) -> None:
    with pytest.raises(InvalidImage, match="image must be PNG, JPEG or WebP"):
        store_input(b"GIF89a", "job-1", "image/gif", settings)
