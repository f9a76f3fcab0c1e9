"""VeoModel through the real google-genai client against the fake Vertex AI server."""

from __future__ import annotations

import base64
import io
import itertools
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from google.api_core.exceptions import Forbidden
from google.cloud import storage
from PIL import Image

from tests.fixtures.fake_vertex import FAKE_BEARER_TOKEN, FakeVertex, Scenario, tiny_mp4
from tests.fixtures.gcs_emulator import GcsEmulator
from vividflow.jobspec import FailureReason, JobParameters, JobSpec, ModelName, VeoParams
from vividflow.runner.errors import (
    Cancelled,
    GenerationTimeout,
    InvalidInput,
    ModelLoadFailed,
    RunnerError,
    UpstreamError,
)
from vividflow.runner.models.base import GenerationOutput, GenerationRequest
from vividflow.runner.models.veo import (
    VeoModel,
    estimate_progress,
    output_gcs_prefix,
    poll_intervals,
)
from vividflow.runner.models.veo_prompt import fold_prompt
from vividflow.settings import Settings

PROMPT = "A red fox in fresh snow"


def _png() -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (16, 16), (200, 40, 40)).save(buffer, format="PNG")
    return buffer.getvalue()


PNG = _png()


def make_request(
    tmp_path: Path,
    *,
    input_uri: str | None = None,
    output_uri: str | None = None,
    deadline_seconds: int = 30,
    **params: Any,
) -> GenerationRequest:
    output_path = tmp_path / "out.mp4"
    spec = JobSpec(
        job_id="6f1c1f8e-9d55-4a55-9a39-2b5f3c0d7e11",
        owner="user-1",
        model=ModelName.VEO31,
        prompt=PROMPT,
        input_uri=input_uri or str(tmp_path / "in.png"),
        parameters=JobParameters(veo=VeoParams(**params)),
        output_uri=output_uri or str(output_path),
        deadline_seconds=deadline_seconds,
        created_at=datetime.now(UTC),
    )
    return GenerationRequest(
        spec=spec,
        image=Image.open(io.BytesIO(PNG)).convert("RGB"),
        image_bytes=PNG,
        image_mime_type="image/png",
        output_path=output_path,
    )


class Progress:
    def __init__(self) -> None:
        self.values: list[int] = []

    def __call__(self, value: int) -> None:
        self.values.append(value)


def never() -> bool:
    return False


@pytest.fixture(autouse=True)
def _fresh_fake(fake_vertex: FakeVertex) -> None:
    fake_vertex.set_scenario()


@pytest.fixture
def settings(fake_vertex: FakeVertex) -> Settings:
    return Settings(**fake_vertex.settings_overrides())


@pytest.fixture
def model(settings: Settings) -> VeoModel:
    return VeoModel.load(settings)


def fail(
    model: VeoModel, request: GenerationRequest, should_cancel: Callable[[], bool] = never
) -> RunnerError:
    with pytest.raises(RunnerError) as info:
        model.generate(request, Progress(), should_cancel)
    assert "Traceback" not in info.value.message and "\n" not in info.value.message
    return info.value


# --- pure helpers ----------------------------------------------------------------------------


def test_fold_prompt_leaves_prompt_alone_without_motion() -> None:
    assert fold_prompt(PROMPT, VeoParams(camera_motion="none", subject_animation="  ")) == PROMPT


def test_fold_prompt_appends_labelled_sentences_in_fixed_order() -> None:
    params = VeoParams(
        environmental_animation="snow falls gently.",
        camera_motion="slow dolly in",
        subject_animation="the fox turns its head",
    )
    assert fold_prompt(PROMPT, params) == (
        f"{PROMPT}\n\nCamera: slow dolly in. Subject: the fox turns its head. Environment: snow falls gently."
    )
    assert fold_prompt(PROMPT, VeoParams(subject_animation="runs")) == f"{PROMPT}\n\nSubject: runs."


def test_poll_intervals_double_from_initial_and_cap() -> None:
    assert list(itertools.islice(poll_intervals(5, 30), 6)) == [5, 10, 20, 30, 30, 30]
    assert list(itertools.islice(poll_intervals(10, 4), 2)) == [4, 4]


def test_progress_estimate_grows_and_stays_below_95() -> None:
    values = [estimate_progress(t) for t in (0, 10, 60, 120, 600, 10**6)]
    assert values == sorted(values)
    assert values[0] == 0 and values[2] == 63 and values[-1] == 94


def test_output_prefix_is_a_job_scratch_dir_beside_the_destination() -> None:
    assert output_gcs_prefix("gs://b/videos/j.mp4", "j") == "gs://b/videos/_veo/j/"
    assert output_gcs_prefix("gs://b/j.mp4", "j") == "gs://b/_veo/j/"


# --- through the SDK -------------------------------------------------------------------------


def test_success_with_inline_bytes(fake_vertex: FakeVertex, model: VeoModel, tmp_path: Path) -> None:
    fake_vertex.set_scenario(polls=3)
    request = make_request(
        tmp_path,
        duration_seconds=6,
        resolution="1080p",
        enhance_prompt=True,
        camera_motion="orbit left",
        environmental_animation="wind",
    )
    progress = Progress()

    output = model.generate(request, progress, never)

    assert output == GenerationOutput(local_path=request.output_path)
    assert request.output_path.read_bytes() == tiny_mp4()
    [submit] = fake_vertex.submits
    assert submit.path == "/v1beta1/publishers/google/models/veo-3.1-generate-001:predictLongRunning"
    assert submit.headers["x-goog-api-key"] == fake_vertex.api_key
    instance = submit.body["instances"][0]
    assert instance["prompt"] == f"{PROMPT}\n\nCamera: orbit left. Environment: wind."
    assert instance["image"] == {
        "bytesBase64Encoded": base64.b64encode(PNG).decode(),
        "mimeType": "image/png",
    }
    assert submit.body["parameters"] == {
        "sampleCount": 1,
        "durationSeconds": 6,
        "resolution": "1080p",
        "enhancePrompt": True,
    }
    assert len(fake_vertex.polls) == 4
    assert fake_vertex.polls[0].body == {"operationName": fake_vertex.polls[0].body["operationName"]}
    assert (
        fake_vertex.polls[0]
        .body["operationName"]
        .startswith(
            "projects/fake-project/locations/us-central1/publishers/google/models/veo-3.1-generate-001/operations/"
        )
    )
    assert progress.values == sorted(progress.values) and progress.values[-1] == 100
    assert all(v < 95 for v in progress.values[:-1])


def test_application_default_credentials_path(fake_vertex: FakeVertex, tmp_path: Path) -> None:
    settings = Settings(**{**fake_vertex.settings_overrides(), "vertex_api_key": None})
    model = VeoModel.load(settings, credentials=fake_vertex.adc_credentials())

    model.generate(make_request(tmp_path), Progress(), never)

    [submit] = fake_vertex.submits
    assert submit.path == (
        "/v1beta1/projects/fake-project/locations/us-central1/publishers/google/"
        "models/veo-3.1-generate-001:predictLongRunning"
    )
    assert submit.headers["Authorization"] == f"Bearer {FAKE_BEARER_TOKEN}"
    assert "x-goog-api-key" not in {k.lower() for k in submit.headers}


def test_load_without_project_or_key_fails_clearly() -> None:
    with pytest.raises(ModelLoadFailed, match="VIVID_VERTEX_PROJECT"):
        VeoModel.load(Settings(vertex_project=None, vertex_api_key=None))


def test_load_without_credentials_fails_at_load(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("GOOGLE_APPLICATION_CREDENTIALS", str(tmp_path / "missing.json"))
    with pytest.raises(ModelLoadFailed, match="No Google Cloud credentials") as info:
        VeoModel.load(Settings(vertex_project="p", vertex_api_key=None))
    assert info.value.reason is FailureReason.MODEL_LOAD_FAILED


def test_gs_input_is_sent_as_gcs_uri(fake_vertex: FakeVertex, model: VeoModel, tmp_path: Path) -> None:
    model.generate(make_request(tmp_path, input_uri="gs://inputs/u/cat.png"), Progress(), never)

    image = fake_vertex.submits[0].body["instances"][0]["image"]
    assert image == {"gcsUri": "gs://inputs/u/cat.png", "mimeType": "image/png"}


def test_success_with_gcs_output_lands_exactly_at_output_uri(
    fake_vertex: FakeVertex, model: VeoModel, gcs_emulator: GcsEmulator, tmp_path: Path
) -> None:
    bucket = gcs_emulator.make_bucket("veo-results")
    request = make_request(tmp_path, output_uri=f"gs://{bucket}/videos/result-1.mp4")

    output = model.generate(request, Progress(), never)

    assert output == GenerationOutput(written_to_output_uri=True)
    job_id = request.spec.job_id
    assert fake_vertex.submits[0].body["parameters"]["storageUri"] == f"gs://{bucket}/videos/_veo/{job_id}/"
    client = gcs_emulator.client()
    assert [b.name for b in client.list_blobs(bucket)] == ["videos/result-1.mp4"]  # scratch removed
    assert client.bucket(bucket).blob("videos/result-1.mp4").download_as_bytes() == tiny_mp4()
    assert not request.output_path.exists()


def test_storage_failure_after_generation_is_reported(
    fake_vertex: FakeVertex, model: VeoModel, gcs_emulator: GcsEmulator, tmp_path: Path
) -> None:
    def forbidden() -> storage.Client:
        raise Forbidden("caller does not have storage.objects.create access")  # type: ignore[no-untyped-call]

    bucket = gcs_emulator.make_bucket("veo-results")
    model = VeoModel(model.client, model.settings, storage_client=forbidden)
    error = fail(model, make_request(tmp_path, output_uri=f"gs://{bucket}/videos/result-2.mp4"))
    assert error.reason is FailureReason.UPSTREAM_ERROR
    assert error.message.startswith(f"Could not fetch Veo's video from gs://{bucket}/videos/_veo/")
    assert error.message.endswith("Forbidden: 403 caller does not have storage.objects.create access")


def test_operation_error_is_an_upstream_failure(
    fake_vertex: FakeVertex, model: VeoModel, tmp_path: Path
) -> None:
    fake_vertex.set_scenario(outcome="error", error_code=13, error_message="Internal error in Veo.")
    error = fail(model, make_request(tmp_path))
    assert isinstance(error, UpstreamError)
    assert error.message == "Veo failed (INTERNAL, code 13): Internal error in Veo."
    assert not (tmp_path / "out.mp4").exists()


def test_invalid_argument_operation_error_blames_the_input(
    fake_vertex: FakeVertex, model: VeoModel, tmp_path: Path
) -> None:
    fake_vertex.set_scenario(outcome="error", error_code=3, error_message="Image is too small.")
    error = fail(model, make_request(tmp_path))
    assert error.reason is FailureReason.INVALID_INPUT
    assert error.message == "Veo failed (INVALID_ARGUMENT, code 3): Image is too small."


def test_safety_filtered_video(fake_vertex: FakeVertex, model: VeoModel, tmp_path: Path) -> None:
    fake_vertex.set_scenario(Scenario(outcome="rai", rai_reasons=("Prompt contains blocked words. Code 1",)))
    error = fail(model, make_request(tmp_path))
    assert isinstance(error, InvalidInput)
    assert error.message == "Veo's safety filters blocked the video: Prompt contains blocked words. Code 1"


def test_quota_exceeded_on_submit(fake_vertex: FakeVertex, model: VeoModel, tmp_path: Path) -> None:
    fake_vertex.set_scenario(submit_status=429)
    error = fail(model, make_request(tmp_path))
    assert type(error) is UpstreamError
    assert error.message.startswith("Veo quota exceeded (429 RESOURCE_EXHAUSTED): Quota exceeded for ")
    assert len(fake_vertex.submits) == 1 and not fake_vertex.polls  # no silent retries that cost money


def test_bad_request_on_submit_blames_the_input(
    fake_vertex: FakeVertex, model: VeoModel, tmp_path: Path
) -> None:
    fake_vertex.set_scenario(submit_status=400, submit_message="Unsupported image dimensions.")
    error = fail(model, make_request(tmp_path))
    assert isinstance(error, InvalidInput)
    assert error.message == "Veo rejected the request (400 INVALID_ARGUMENT): Unsupported image dimensions."


def test_unreachable_endpoint(settings: Settings, tmp_path: Path) -> None:
    import socket

    with socket.socket() as sock:  # a port nobody listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    model = VeoModel.load(settings.model_copy(update={"vertex_base_url": f"http://127.0.0.1:{port}/"}))
    error = fail(model, make_request(tmp_path))
    assert type(error) is UpstreamError
    assert error.message.startswith("Could not reach Vertex AI: ConnectError")


def test_transient_poll_failures_are_retried(
    fake_vertex: FakeVertex, model: VeoModel, tmp_path: Path
) -> None:
    fake_vertex.set_scenario(poll_failures=2, polls=0)
    output = model.generate(make_request(tmp_path), Progress(), never)
    assert output.local_path is not None and output.local_path.read_bytes() == tiny_mp4()
    assert len(fake_vertex.polls) == 3


def test_persistent_poll_failures_fail_the_job(
    fake_vertex: FakeVertex, model: VeoModel, tmp_path: Path
) -> None:
    fake_vertex.set_scenario(poll_failures=10)
    error = fail(model, make_request(tmp_path))
    assert type(error) is UpstreamError
    assert error.message == "Vertex AI failed (503 UNAVAILABLE): The service is currently unavailable."
    assert len(fake_vertex.polls) == 4


def test_deadline(fake_vertex: FakeVertex, settings: Settings, tmp_path: Path) -> None:
    fake_vertex.set_scenario(outcome="never")
    model = VeoModel.load(settings.model_copy(update={"veo_poll_max_seconds": 0.2}))
    started = time.monotonic()
    error = fail(model, make_request(tmp_path, deadline_seconds=1))
    assert isinstance(error, GenerationTimeout)
    assert error.message == "Veo did not finish within 1 s"
    assert 1.0 <= time.monotonic() - started < 3.0
    assert len(fake_vertex.polls) >= 3


def test_cancel_between_polls(fake_vertex: FakeVertex, model: VeoModel, tmp_path: Path) -> None:
    fake_vertex.set_scenario(outcome="never")
    error = fail(model, make_request(tmp_path), lambda: len(fake_vertex.polls) >= 2)
    assert isinstance(error, Cancelled)
    polls = len(fake_vertex.polls)
    time.sleep(0.1)
    assert polls == 2 and len(fake_vertex.polls) == polls


def test_cancel_before_submit_sends_nothing(fake_vertex: FakeVertex, model: VeoModel, tmp_path: Path) -> None:
    error = fail(model, make_request(tmp_path), lambda: True)
    assert isinstance(error, Cancelled)
    assert fake_vertex.requests == []


def test_poll_backoff_grows_and_caps(fake_vertex: FakeVertex, settings: Settings, tmp_path: Path) -> None:
    fake_vertex.set_scenario(polls=7)
    model = VeoModel.load(
        settings.model_copy(update={"veo_poll_initial_seconds": 0.02, "veo_poll_max_seconds": 0.05})
    )
    model.generate(make_request(tmp_path), Progress(), never)

    times = [r.at for r in fake_vertex.requests]
    gaps = [b - a for a, b in itertools.pairwise(times)]
    expected = [0.02, 0.04, 0.05, 0.05, 0.05, 0.05, 0.05, 0.05]
    assert len(gaps) == len(expected)
    assert all(gap >= want for gap, want in zip(gaps, expected, strict=True)), gaps
    # Uncapped doubling would wait 0.08 + 0.16 + ... ; capped, the last four stay near 0.05 each.
    assert sum(gaps[-4:]) < 0.6, gaps
