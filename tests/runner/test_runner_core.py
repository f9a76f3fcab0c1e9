"""Runner.run end to end with the real models: the tiny Wan pipeline, Veo through the fake Vertex AI
server, inputs and outputs on local disk, the GCS emulator and a local TLS server.

The models themselves are tested in test_wan_model.py and test_veo_model.py; these tests are about
what the runner adds around them: fetching the input, keeping models warm, storing the video,
result URLs, progress, metrics, and turning every failure into a RunResult with nothing left behind.
"""

from __future__ import annotations

import io
import itertools
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from tests.fixtures.fake_vertex import FakeVertex, tiny_mp4
from tests.fixtures.gcs_emulator import GcsEmulator
from tests.fixtures.https_server import HttpsServer
from vividflow.jobspec import (
    WAN_FPS,
    FailureReason,
    JobParameters,
    JobSpec,
    ModelName,
    RunnerExit,
    RunResult,
    VeoParams,
    WanParams,
)
from vividflow.runner.core import DEFAULT_LOADERS, ModelLoader, Runner
from vividflow.runner.models.base import (
    CancelCheck,
    GenerationOutput,
    GenerationRequest,
    ProgressCallback,
    VideoModel,
)
from vividflow.runner.video import probe_mp4
from vividflow.settings import Settings

SMALL: dict[str, Any] = {"width": 32, "height": 32, "length": 9, "steps": 2}
PUBLIC_URL = "https://vivid.example.com/"
GCS_PUBLIC = "https://storage.googleapis.com"
REPO_ROOT = Path(__file__).resolve().parents[2]


# --- helpers ---------------------------------------------------------------------------------


def png_bytes(width: int = 40, height: int = 30) -> bytes:
    """A non-constant RGB PNG (not the output size, so the runner has to fit it)."""
    ys, xs = np.mgrid[0:height, 0:width]
    pixels = np.stack([xs * 255 // (width - 1), ys * 255 // (height - 1), (xs * ys) % 256], -1)
    buffer = io.BytesIO()
    Image.fromarray(pixels.astype(np.uint8), "RGB").save(buffer, format="PNG")
    return buffer.getvalue()


PNG = png_bytes()


def new_job_id() -> str:
    return str(uuid.uuid4())


def wan_spec(input_uri: str, output_uri: str, job_id: str | None = None, **params: Any) -> JobSpec:
    return JobSpec(
        job_id=job_id or new_job_id(),
        owner="user-1",
        model=ModelName.WAN21,
        prompt="a lighthouse in a storm, waves crashing",
        input_uri=input_uri,
        parameters=JobParameters(wan=WanParams.model_validate({**SMALL, **params})),
        output_uri=output_uri,
        created_at=datetime.now(UTC),
    )


def veo_spec(input_uri: str, output_uri: str, job_id: str | None = None) -> JobSpec:
    return JobSpec(
        job_id=job_id or new_job_id(),
        owner="user-1",
        model=ModelName.VEO31,
        prompt="a red fox in fresh snow",
        input_uri=input_uri,
        parameters=JobParameters(veo=VeoParams()),
        output_uri=output_uri,
        deadline_seconds=30,
        created_at=datetime.now(UTC),
    )


class Progress:
    """Records reported values and whether the final output existed when each arrived."""

    def __init__(self, output_exists: Callable[[], bool] = lambda: False) -> None:
        self.values: list[int] = []
        self.output_existed: list[bool] = []
        self._output_exists = output_exists

    def __call__(self, value: int) -> None:
        self.values.append(value)
        self.output_existed.append(self._output_exists())


class CountingLoaders(dict[ModelName, ModelLoader]):
    """The runner's real loaders, counting how often each model is loaded."""

    def __init__(self) -> None:
        super().__init__({name: self._counted(name, loader) for name, loader in DEFAULT_LOADERS.items()})
        self.loads: dict[ModelName, int] = dict.fromkeys(DEFAULT_LOADERS, 0)
        self.loaded: list[VideoModel] = []

    def _counted(self, name: ModelName, loader: ModelLoader) -> ModelLoader:
        def load(settings: Settings) -> VideoModel:
            self.loads[name] += 1
            model = loader(settings)
            self.loaded.append(model)
            return model

        return load


def assert_sane_metrics(result: RunResult) -> None:
    metrics = result.metrics
    assert metrics is not None
    assert min(metrics.spin_up_time, metrics.generation_time, metrics.upload_time) >= 0
    assert metrics.total_time >= metrics.generation_time
    assert metrics.total_time >= metrics.spin_up_time


def assert_rises_to_100(progress: Progress) -> None:
    values = progress.values
    assert values[0] == 0 and values[-1] == 100
    assert all(a < b for a, b in itertools.pairwise(values)), values


def assert_failed(result: RunResult, reason: FailureReason) -> str:
    assert not result.ok, result
    assert result.reason is reason, result
    assert result.result_url is None and result.output_uri is None
    message = result.error_message
    assert message and "\n" not in message and "Traceback" not in message
    return message


def gcs_blob_names(gcs_emulator: GcsEmulator, bucket: str, prefix: str = "") -> list[str]:
    return sorted(blob.name for blob in gcs_emulator.client().list_blobs(bucket, prefix=prefix))


def leftover_workdirs(job_id: str) -> list[Path]:
    return list(Path(tempfile.gettempdir()).glob(f"vividflow-{job_id}-*"))


@pytest.fixture
def make_settings(tiny_wan_model_dir: Path, tmp_path: Path) -> Callable[..., Settings]:
    def make(**overrides: Any) -> Settings:
        values: dict[str, Any] = {
            "wan_model": str(tiny_wan_model_dir),
            "data_dir": tmp_path / "data",
            "public_url": PUBLIC_URL,
        }
        return Settings(**{**values, **overrides})

    return make


@pytest.fixture
def local_input(tmp_path: Path) -> Path:
    path = tmp_path / "input.png"
    path.write_bytes(PNG)
    return path


# --- Wan, local in and out -------------------------------------------------------------------


def test_wan_job_from_a_local_file_into_the_results_dir(
    make_settings: Callable[..., Settings], local_input: Path
) -> None:
    settings = make_settings()
    job_id = new_job_id()
    output = settings.results_dir / f"{job_id}.mp4"
    spec = wan_spec(str(local_input), str(output), job_id, width=48, height=32, length=13)
    progress = Progress(output.exists)

    result = Runner(settings).run(spec, progress)

    assert result.ok, result
    assert result.output_uri == str(output)
    assert result.result_url == f"{PUBLIC_URL.rstrip('/')}/files/results/{job_id}.mp4"
    info = probe_mp4(output)
    assert (info.frames, info.width, info.height, info.fps) == (13, 48, 32, float(WAN_FPS))
    assert_sane_metrics(result)
    assert_rises_to_100(progress)
    # 100 is reported once the video is stored, and only then.
    assert progress.output_existed[-1] and not any(progress.output_existed[:-1])
    assert sorted(path.name for path in settings.results_dir.iterdir()) == [f"{job_id}.mp4"]
    assert leftover_workdirs(job_id) == []


def test_a_warm_runner_reuses_its_model_and_gives_the_same_video(
    make_settings: Callable[..., Settings], local_input: Path
) -> None:
    settings = make_settings()
    loaders = CountingLoaders()
    runner = Runner(settings, loaders)
    first, second = (settings.results_dir / f"{name}.mp4" for name in ("first", "second"))

    cold = runner.run(wan_spec(str(local_input), str(first)))
    started = time.monotonic()
    warm = runner.run(wan_spec(str(local_input), str(second)))
    warm_wall = time.monotonic() - started

    assert cold.ok and warm.ok, (cold, warm)
    assert loaders.loads == {ModelName.WAN21: 1, ModelName.VEO31: 0}
    # Nothing of the first job leaks into the second: same request, same bytes.
    assert first.read_bytes() == second.read_bytes()
    # A warm job's spin-up counts from its own start, not from the runner's or the first job's.
    assert warm.metrics is not None
    assert warm.metrics.spin_up_time <= warm_wall + 0.001
    assert_sane_metrics(warm)


def test_an_output_outside_the_results_dir_fails_before_any_work(
    make_settings: Callable[..., Settings], local_input: Path, tmp_path: Path
) -> None:
    loaders = CountingLoaders()
    output = tmp_path / "elsewhere" / "out.mp4"

    result = Runner(make_settings(), loaders).run(wan_spec(str(local_input), str(output)))

    message = assert_failed(result, FailureReason.INVALID_INPUT)
    assert message == f"Output {output}: the output is not inside the results directory"
    assert loaders.loads[ModelName.WAN21] == 0
    assert not output.parent.exists()


# --- GCS and https ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "input_form",
    ["gs://{bucket}/inputs/a cat.png", "https://storage.googleapis.com/{bucket}/inputs/a%20cat.png"],
)
def test_wan_job_from_gcs_to_gcs(
    make_settings: Callable[..., Settings], gcs_emulator: GcsEmulator, input_form: str, tmp_path: Path
) -> None:
    bucket = gcs_emulator.make_bucket("runner-core-wan")
    gcs_emulator.client().bucket(bucket).blob("inputs/a cat.png").upload_from_string(
        PNG, content_type="image/png"
    )
    job_id = new_job_id()
    spec = wan_spec(input_form.format(bucket=bucket), f"gs://{bucket}/videos/{job_id}.mp4", job_id)
    progress = Progress()

    result = Runner(make_settings(gcs_bucket=bucket)).run(spec, progress)

    assert result.ok, result
    assert result.output_uri == f"gs://{bucket}/videos/{job_id}.mp4"
    assert result.result_url == f"{GCS_PUBLIC}/{bucket}/videos/{job_id}.mp4"
    blob = gcs_emulator.client().bucket(bucket).get_blob(f"videos/{job_id}.mp4")
    assert blob is not None and blob.content_type == "video/mp4"
    downloaded = tmp_path / "downloaded.mp4"
    blob.download_to_filename(str(downloaded))
    info = probe_mp4(downloaded)
    assert (info.frames, info.width, info.height) == (9, 32, 32)
    assert_sane_metrics(result)
    assert_rises_to_100(progress)


def test_veo_job_writes_straight_to_gcs_exactly_at_the_output_uri(
    make_settings: Callable[..., Settings], gcs_emulator: GcsEmulator, fake_vertex: FakeVertex
) -> None:
    fake_vertex.set_scenario(polls=2)
    bucket = gcs_emulator.make_bucket("runner-core-veo")
    gcs_emulator.client().bucket(bucket).blob("inputs/fox.png").upload_from_string(
        PNG, content_type="image/png"
    )
    job_id = new_job_id()
    spec = veo_spec(f"gs://{bucket}/inputs/fox.png", f"gs://{bucket}/videos/{job_id}.mp4", job_id)
    progress = Progress()

    result = Runner(make_settings(gcs_bucket=bucket, **fake_vertex.settings_overrides())).run(spec, progress)

    assert result.ok, result
    assert result.result_url == f"{GCS_PUBLIC}/{bucket}/videos/{job_id}.mp4"
    # Veo was given a scratch prefix; the video now sits only at the output URI.
    assert fake_vertex.submits[0].body["parameters"]["storageUri"].startswith(f"gs://{bucket}/videos/_veo/")
    assert gcs_blob_names(gcs_emulator, bucket, "videos/") == [f"videos/{job_id}.mp4"]
    blob = gcs_emulator.client().bucket(bucket).get_blob(f"videos/{job_id}.mp4")
    assert blob is not None and blob.content_type == "video/mp4"
    assert blob.download_as_bytes() == tiny_mp4()
    assert_sane_metrics(result)
    assert_rises_to_100(progress)


def test_wan_job_from_an_https_url(make_settings: Callable[..., Settings], https_server: HttpsServer) -> None:
    url = https_server.add("/runner-core/input.png", PNG, "image/png")
    settings = make_settings(**https_server.settings_overrides())
    output = settings.results_dir / "from-https.mp4"

    result = Runner(settings).run(wan_spec(url, str(output)))

    assert result.ok, result
    assert https_server.hits("/runner-core/input.png") == 1
    assert probe_mp4(output).frames == 9


class RecordingModel:
    """Keeps each request it is given and answers with a tiny MP4."""

    def __init__(self) -> None:
        self.requests: list[GenerationRequest] = []

    def generate(
        self, request: GenerationRequest, on_progress: ProgressCallback, should_cancel: CancelCheck
    ) -> GenerationOutput:
        self.requests.append(request)
        request.output_path.write_bytes(tiny_mp4())
        return GenerationOutput(local_path=request.output_path)


def test_the_model_gets_upright_rgb_pixels_and_the_files_own_bytes_and_type(
    make_settings: Callable[..., Settings], tmp_path: Path
) -> None:
    exif = Image.Exif()
    exif[0x0112] = 6  # stored 40x20, shown rotated to 20x40
    buffer = io.BytesIO()
    Image.new("L", (40, 20), 128).save(buffer, "JPEG", exif=exif)
    photo = tmp_path / "photo.jpg"
    photo.write_bytes(buffer.getvalue())
    settings = make_settings()
    model = RecordingModel()

    result = Runner(settings, {ModelName.WAN21: lambda _: model}).run(
        wan_spec(str(photo), str(settings.results_dir / "recorded.mp4"))
    )

    assert result.ok, result
    [request] = model.requests
    assert (request.image.mode, request.image.size) == ("RGB", (20, 40))
    assert (request.image_bytes, request.image_mime_type) == (photo.read_bytes(), "image/jpeg")


# --- failures: a reason, a clear message, nothing left behind --------------------------------


Destination = Callable[[Settings, str], tuple[str, Callable[[], bool]]]
"""(settings, job id) -> (output URI, "does the output exist?")."""


@pytest.fixture(params=["local", "gcs"])
def destination(request: pytest.FixtureRequest) -> Destination:
    if request.param == "local":

        def local(settings: Settings, job_id: str) -> tuple[str, Callable[[], bool]]:
            path = settings.results_dir / f"{job_id}.mp4"
            return str(path), path.exists

        return local
    gcs_emulator: GcsEmulator = request.getfixturevalue("gcs_emulator")
    bucket = gcs_emulator.make_bucket("runner-core-failures")

    def in_gcs(settings: Settings, job_id: str) -> tuple[str, Callable[[], bool]]:
        blob = gcs_emulator.client().bucket(bucket).blob(f"videos/{job_id}.mp4")
        return f"gs://{bucket}/videos/{job_id}.mp4", blob.exists

    return in_gcs


def test_a_corrupt_image_fails_as_invalid_input(
    make_settings: Callable[..., Settings], destination: Destination, tmp_path: Path
) -> None:
    corrupt = tmp_path / "corrupt.png"
    corrupt.write_bytes(PNG[: len(PNG) // 2])
    settings = make_settings()
    job_id = new_job_id()
    output_uri, output_exists = destination(settings, job_id)
    loaders = CountingLoaders()

    result = Runner(settings, loaders).run(wan_spec(str(corrupt), output_uri, job_id))

    message = assert_failed(result, FailureReason.INVALID_INPUT)
    assert message == "Input image: image is corrupt or truncated (PNG)"
    assert not output_exists()
    assert loaders.loads[ModelName.WAN21] == 0  # rejected before loading anything


def test_an_unreadable_url_fails_as_invalid_input(
    make_settings: Callable[..., Settings], destination: Destination, https_server: HttpsServer
) -> None:
    url = https_server.url("/runner-core/no-such-image.png")
    settings = make_settings(**https_server.settings_overrides())
    job_id = new_job_id()
    output_uri, output_exists = destination(settings, job_id)

    result = Runner(settings).run(wan_spec(url, output_uri, job_id))

    message = assert_failed(result, FailureReason.INVALID_INPUT)
    assert message == f"Input image: {url} was not found (HTTP 404)"
    assert not output_exists()


def test_a_missing_model_directory_fails_naming_it(
    make_settings: Callable[..., Settings], local_input: Path, tmp_path: Path
) -> None:
    missing = tmp_path / "no-such-model"
    settings = make_settings(wan_model=str(missing))
    output = settings.results_dir / "never.mp4"

    result = Runner(settings).run(wan_spec(str(local_input), str(output)))

    message = assert_failed(result, FailureReason.MODEL_LOAD_FAILED)
    assert message == f"Wan model directory {missing} does not exist"
    assert not output.exists()


def test_an_upstream_veo_failure(
    make_settings: Callable[..., Settings],
    fake_vertex: FakeVertex,
    destination: Destination,
    local_input: Path,
) -> None:
    fake_vertex.set_scenario(outcome="error", error_code=13, error_message="Internal error in Veo.")
    settings = make_settings(**fake_vertex.settings_overrides())
    job_id = new_job_id()
    output_uri, output_exists = destination(settings, job_id)

    result = Runner(settings).run(veo_spec(str(local_input), output_uri, job_id))

    message = assert_failed(result, FailureReason.UPSTREAM_ERROR)
    assert message == "Veo failed (INTERNAL, code 13): Internal error in Veo."
    assert not output_exists()


def test_cancellation_stops_the_job_and_the_runner_stays_usable(
    make_settings: Callable[..., Settings], local_input: Path
) -> None:
    settings = make_settings()
    runner = Runner(settings)
    output = settings.results_dir / "cancelled.mp4"
    progress = Progress()

    result = runner.run(
        wan_spec(str(local_input), str(output), steps=4), progress, lambda: len(progress.values) >= 3
    )

    assert_failed(result, FailureReason.CANCELLED)
    assert not output.exists()
    assert progress.values == sorted(set(progress.values)) and max(progress.values) < 100
    again = runner.run(wan_spec(str(local_input), str(output)))
    assert again.ok, again
    assert probe_mp4(output).frames == 9


ADDRESS_SPACE_LIMIT = 8 * 1024**3
"""Ample for the runner and the tiny model (a few GiB of address space), far below one
1920x1920x241 float video (10.7 GB)."""


def _cap_address_space() -> None:
    _, hard = resource.getrlimit(resource.RLIMIT_AS)
    limit = ADDRESS_SPACE_LIMIT if hard == resource.RLIM_INFINITY else min(ADDRESS_SPACE_LIMIT, hard)
    resource.setrlimit(resource.RLIMIT_AS, (limit, hard))


def test_a_video_too_large_for_memory_fails_as_out_of_memory(
    tiny_wan_model_dir: Path, tmp_path: Path
) -> None:
    """In a runner process of its own (as a Job's container runs it), with its address space capped."""
    data_dir = tmp_path / "data"
    source = tmp_path / "input.png"
    source.write_bytes(png_bytes(64, 64))
    output = data_dir / "results" / "huge.mp4"
    spec = wan_spec(str(source), str(output), width=1920, height=1920, length=241, steps=1)
    log = tmp_path / "termination-log"
    env = {key: value for key, value in os.environ.items() if not key.startswith("VIVID_")}
    env |= {
        "VIVID_WAN_MODEL": str(tiny_wan_model_dir),
        "VIVID_WAN_DEVICE": "cpu",
        "VIVID_DATA_DIR": str(data_dir),
        "VIVID_TERMINATION_LOG": str(log),
        "CUDA_VISIBLE_DEVICES": "",  # RLIMIT_AS bounds host memory; keep the GPU out of it
        "OMP_NUM_THREADS": "1",
    }

    done = subprocess.run(
        [sys.executable, "-m", "vividflow.runner", "--spec-json", spec.model_dump_json()],
        cwd=REPO_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=180,
        preexec_fn=_cap_address_space,
    )

    assert done.returncode == RunnerExit.OUT_OF_MEMORY, done.stderr[-3000:]
    result = RunResult.model_validate(json.loads(log.read_text()))
    message = assert_failed(result, FailureReason.OUT_OF_MEMORY)
    assert message.startswith("Out of memory while generating a 1920x1920, 241-frame video")
    assert not output.exists()
    assert not list(data_dir.rglob("*.mp4"))
