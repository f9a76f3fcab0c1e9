"""The Wan 2.1 model and MP4 helpers, run on a real (tiny, random-weight) diffusers pipeline."""

from __future__ import annotations

import io
import resource
import shutil
import subprocess
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from PIL import Image

from tests.fixtures.tiny_wan import build_tiny_wan_model
from vividflow.jobspec import WAN_FPS, FailureReason, JobParameters, JobSpec, ModelName, WanParams
from vividflow.runner.errors import Cancelled, ModelLoadFailed, OutOfMemory
from vividflow.runner.models.base import GenerationRequest
from vividflow.runner.models.wan import WanModel, as_out_of_memory, fit_image
from vividflow.runner.video import export_mp4, probe_mp4
from vividflow.settings import Settings

SMALL = {"width": 32, "height": 32, "length": 9, "steps": 2}


def gradient_image(width: int, height: int) -> Image.Image:
    """A non-constant RGB test image (a constant one would hide resizing mistakes)."""
    ys, xs = np.mgrid[0:height, 0:width]
    pixels = np.stack([xs * 255 // max(width - 1, 1), ys * 255 // max(height - 1, 1), (xs + ys) % 256], -1)
    return Image.fromarray(pixels.astype(np.uint8), "RGB")


def make_request(output_path: Path, image: Image.Image, **params: Any) -> GenerationRequest:
    png = io.BytesIO()
    image.save(png, format="PNG")
    spec = JobSpec(
        job_id="00000000-0000-4000-8000-000000000001",
        owner="user-1",
        model=ModelName.WAN21,
        prompt="a lighthouse in a storm, waves crashing",
        input_uri="/tmp/input.png",
        parameters=JobParameters(wan=WanParams.model_validate({**SMALL, **params})),
        output_uri=str(output_path),
        created_at=datetime.now(UTC),
    )
    return GenerationRequest(
        spec=spec,
        image=image,
        image_bytes=png.getvalue(),
        image_mime_type="image/png",
        output_path=output_path,
    )


def never() -> bool:
    return False


def ignore(_: int) -> None:
    return None


def decoded_frames(path: Path) -> list[bytes]:
    import imageio_ffmpeg

    reader = imageio_ffmpeg.read_frames(str(path))
    next(reader)
    return list(reader)


@pytest.fixture(scope="module")
def wan_model(tiny_wan_model_dir: Path) -> WanModel:
    return WanModel.load(Settings(wan_model=str(tiny_wan_model_dir)))


@pytest.fixture(scope="module")
def reference(wan_model: WanModel, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The video of the default small request (seed 42), made once for comparisons."""
    return generate(wan_model, tmp_path_factory.mktemp("reference") / "reference.mp4")


def generate(model: WanModel, path: Path, image: Image.Image | None = None, **params: Any) -> Path:
    output = model.generate(make_request(path, image or gradient_image(32, 32), **params), ignore, never)
    assert output.local_path == path
    return path


# --- loading --------------------------------------------------------------------------------


def test_loads_the_tiny_model_from_its_directory(wan_model: WanModel, tiny_wan_model_dir: Path) -> None:
    assert wan_model.source == str(tiny_wan_model_dir)
    assert wan_model.device == ("cuda" if torch.cuda.is_available() else "cpu")


def test_the_tiny_model_builds_byte_identically(tiny_wan_model_dir: Path, tmp_path: Path) -> None:
    rebuilt = build_tiny_wan_model(tmp_path / "again")

    def files(root: Path) -> dict[str, bytes]:
        return {str(path.relative_to(root)): path.read_bytes() for path in root.rglob("*") if path.is_file()}

    assert "transformer/diffusion_pytorch_model.safetensors" in files(rebuilt)
    assert files(rebuilt) == files(tiny_wan_model_dir)


def test_missing_directory_fails_with_a_clear_message(tmp_path: Path) -> None:
    missing = tmp_path / "no-such-model"
    with pytest.raises(ModelLoadFailed) as caught:
        WanModel.load(Settings(wan_model=str(missing)))
    assert caught.value.message == f"Wan model directory {missing} does not exist"
    assert caught.value.reason is FailureReason.MODEL_LOAD_FAILED


def test_directory_without_a_pipeline_fails_naming_the_source(tmp_path: Path) -> None:
    with pytest.raises(ModelLoadFailed) as caught:
        WanModel.load(Settings(wan_model=str(tmp_path)))
    assert caught.value.message.startswith(f"Could not load the Wan model from {tmp_path}: ")
    assert "model_index.json" in caught.value.message
    assert "\n" not in caught.value.message


def test_corrupt_weights_fail_as_a_load_failure(tiny_wan_model_dir: Path, tmp_path: Path) -> None:
    broken = tmp_path / "broken"
    shutil.copytree(tiny_wan_model_dir, broken)
    weights = broken / "transformer" / "diffusion_pytorch_model.safetensors"
    weights.write_bytes(weights.read_bytes()[:200])
    with pytest.raises(ModelLoadFailed) as caught:
        WanModel.load(Settings(wan_model=str(broken)))
    assert caught.value.message.startswith(f"Could not load the Wan model from {broken}: ")
    assert len(caught.value.message) < 400


def test_offload_and_vae_tiling_settings_still_generate(tiny_wan_model_dir: Path, tmp_path: Path) -> None:
    settings = Settings(wan_model=str(tiny_wan_model_dir), wan_cpu_offload=True, wan_vae_tiling=True)
    model = WanModel.load(settings)
    assert (model.options.cpu_offload, model.options.vae_tiling) == (True, True)
    info = probe_mp4(generate(model, tmp_path / "out.mp4"))
    assert (info.frames, info.width, info.height) == (9, 32, 32)


def test_importing_the_module_does_not_import_torch() -> None:
    code = (
        "import sys, vividflow.runner.models.wan; print('torch' in sys.modules, 'diffusers' in sys.modules)"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.split() == ["False", "False"]


# --- generation -----------------------------------------------------------------------------


def test_generates_a_valid_mp4_of_the_requested_size_and_length(wan_model: WanModel, tmp_path: Path) -> None:
    info = probe_mp4(generate(wan_model, tmp_path / "out.mp4", width=48, height=32, length=13))
    assert (info.frames, info.width, info.height, info.fps) == (13, 48, 32, float(WAN_FPS))
    assert info.duration == pytest.approx(13 / WAN_FPS, abs=0.02)
    assert sorted(path.name for path in tmp_path.iterdir()) == ["out.mp4"]


def test_same_seed_gives_the_same_video_and_another_seed_differs(
    wan_model: WanModel, reference: Path, tmp_path: Path
) -> None:
    again = generate(wan_model, tmp_path / "again.mp4", seed=42)
    other = generate(wan_model, tmp_path / "other.mp4", seed=43)
    assert again.read_bytes() == reference.read_bytes()
    assert decoded_frames(again) == decoded_frames(reference)
    assert decoded_frames(other) != decoded_frames(reference)


@pytest.mark.parametrize("change", [{"cfg": 2.0}, {"negative_prompt": "rain, fog"}])
def test_cfg_and_negative_prompt_reach_the_pipeline(
    wan_model: WanModel, reference: Path, tmp_path: Path, change: dict[str, Any]
) -> None:
    assert decoded_frames(generate(wan_model, tmp_path / "out.mp4", **change)) != decoded_frames(reference)


def test_progress_rises_monotonically_to_100(wan_model: WanModel, tmp_path: Path) -> None:
    seen: list[int] = []
    wan_model.generate(
        make_request(tmp_path / "out.mp4", gradient_image(32, 32), steps=4), seen.append, never
    )
    assert seen == [0, 22, 45, 67, 90, 95, 100]


def test_cancellation_between_steps_stops_and_writes_nothing(
    wan_model: WanModel, reference: Path, tmp_path: Path
) -> None:
    seen: list[int] = []
    output = tmp_path / "out.mp4"
    request = make_request(output, gradient_image(32, 32), steps=4)
    with pytest.raises(Cancelled) as caught:
        wan_model.generate(request, seen.append, lambda: len(seen) >= 3)
    assert caught.value.reason is FailureReason.CANCELLED
    assert seen == [0, 22, 45]
    assert list(tmp_path.iterdir()) == []
    # An aborted run leaves nothing behind: the next one gives the usual video.
    assert generate(wan_model, output).read_bytes() == reference.read_bytes()


def test_cancellation_before_start_reports_no_progress(wan_model: WanModel, tmp_path: Path) -> None:
    seen: list[int] = []
    with pytest.raises(Cancelled):
        wan_model.generate(
            make_request(tmp_path / "out.mp4", gradient_image(32, 32)), seen.append, lambda: True
        )
    assert seen == []
    assert not (tmp_path / "out.mp4").exists()


def test_non_square_input_is_cropped_not_stretched(wan_model: WanModel, tmp_path: Path) -> None:
    wide = gradient_image(96, 48)
    cropped = decoded_frames(generate(wan_model, tmp_path / "wide.mp4", image=wide))
    assert cropped == decoded_frames(generate(wan_model, tmp_path / "pre.mp4", image=fit_image(wide, 32, 32)))
    stretched = wide.resize((32, 32), Image.Resampling.LANCZOS)
    assert cropped != decoded_frames(generate(wan_model, tmp_path / "stretched.mp4", image=stretched))


def test_fit_image_covers_then_crops_the_centre() -> None:
    left, middle, right = (255, 0, 0), (0, 255, 0), (0, 0, 255)
    wide = Image.new("RGB", (120, 30), middle)
    wide.paste(left, (0, 0, 30, 30))
    wide.paste(right, (90, 0, 120, 30))
    fitted = fit_image(wide, 32, 32)  # scaled to 128x32, then columns 48-79 kept
    assert fitted.size == (32, 32)
    assert set(map(tuple, np.asarray(fitted).reshape(-1, 3).tolist())) == {middle}
    tall = fit_image(Image.new("L", (10, 40), 128), 48, 16)
    assert (tall.size, tall.mode) == ((48, 16), "RGB")


# --- out of memory --------------------------------------------------------------------------


@contextmanager
def address_space_limit(extra_bytes: int) -> Iterator[None]:
    """Cap this process's virtual memory a little above what it uses now; restored on exit."""
    soft, hard = resource.getrlimit(resource.RLIMIT_AS)
    used_kib = next(
        int(line.split()[1])
        for line in Path("/proc/self/status").read_text().splitlines()
        if line.startswith("VmSize:")
    )
    limit = used_kib * 1024 + extra_bytes
    resource.setrlimit(
        resource.RLIMIT_AS, (limit if hard == resource.RLIM_INFINITY else min(limit, hard), hard)
    )
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_AS, (soft, hard))


@pytest.mark.skipif(torch.cuda.is_available(), reason="RLIMIT_AS bounds host memory, not GPU memory")
def test_a_video_too_large_for_memory_fails_as_out_of_memory(
    wan_model: WanModel, reference: Path, tmp_path: Path
) -> None:
    output = tmp_path / "huge.mp4"
    request = make_request(output, gradient_image(64, 64), width=1920, height=1920, length=241, steps=1)
    with address_space_limit(1024**3), pytest.raises(OutOfMemory) as caught:
        wan_model.generate(request, ignore, never)
    assert caught.value.reason is FailureReason.OUT_OF_MEMORY
    assert caught.value.message.startswith("Out of memory while generating a 1920x1920, 241-frame video")
    assert not output.exists()
    assert generate(wan_model, tmp_path / "after.mp4").read_bytes() == reference.read_bytes()


@pytest.mark.parametrize(
    "error",
    [
        torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 20.00 GiB"),
        MemoryError(),
        RuntimeError("[enforce fail at alloc_cpu.cpp:127] DefaultCPUAllocator: can't allocate memory"),
    ],
)
def test_memory_errors_map_to_out_of_memory(error: BaseException) -> None:
    mapped = as_out_of_memory(error, "testing")
    assert isinstance(mapped, OutOfMemory)
    assert mapped.message.startswith("Out of memory while testing;")


@pytest.mark.parametrize("error", [RuntimeError("shape mismatch"), ValueError("out of memory")])
def test_other_errors_are_not_out_of_memory(error: BaseException) -> None:
    assert as_out_of_memory(error, "testing") is None


# --- MP4 helpers ----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def sample_mp4(tmp_path_factory: pytest.TempPathFactory) -> Path:
    rng = np.random.default_rng(0)
    path = tmp_path_factory.mktemp("mp4") / "sample.mp4"
    export_mp4([rng.random((32, 48, 3), dtype=np.float32) for _ in range(9)], path, fps=16)
    return path


def test_export_and_probe_round_trip(sample_mp4: Path) -> None:
    info = probe_mp4(sample_mp4)
    assert (info.frames, info.width, info.height, info.fps) == (9, 48, 32, 16.0)
    assert info.duration == pytest.approx(0.5625, abs=0.02)
    assert [path.name for path in sample_mp4.parent.iterdir()] == ["sample.mp4"]


def test_export_accepts_uint8_and_pil_frames(tmp_path: Path) -> None:
    black = np.zeros((16, 16, 3), np.uint8)
    export_mp4([black, Image.new("RGB", (16, 16), "white"), black], tmp_path / "mixed.mp4", fps=8)
    frames = decoded_frames(tmp_path / "mixed.mp4")
    assert [round(np.frombuffer(frame, np.uint8).mean()) for frame in frames] == [0, 255, 0]


@pytest.mark.parametrize(
    "frames",
    [
        [],
        [np.zeros((16, 16, 3)), np.zeros((32, 16, 3))],
        [np.zeros((16, 16))],
        [np.zeros((16, 16, 3), np.int64)],
    ],
)
def test_export_rejects_bad_frames_and_writes_nothing(frames: list[Any], tmp_path: Path) -> None:
    with pytest.raises(ValueError):
        export_mp4(frames, tmp_path / "bad.mp4", fps=16)
    assert list(tmp_path.iterdir()) == []


def corrupt_payload(data: bytes) -> bytes:
    damaged = bytearray(data)
    start = data.index(b"mdat") + 40
    damaged[start:] = bytes((value * 7 + 3) % 256 for value in damaged[start:])
    return bytes(damaged)


@pytest.mark.parametrize(
    ("damage", "message"),
    [
        (lambda data: data[: len(data) - 100], "truncated"),
        (lambda data: data[:20], "truncated"),
        (lambda data: b"", "empty"),
        (lambda data: b"\x89PNG\r\n\x1a\n" + b"\0" * 64, "no ftyp box"),
        (lambda data: b"hello, world! " * 64, "no ftyp box"),
        (corrupt_payload, "cannot decode"),
        (lambda data: data.replace(b"moov", b"free", 1), "no moov box"),
    ],
)
def test_probe_rejects_damaged_files(
    sample_mp4: Path, tmp_path: Path, damage: Callable[[bytes], bytes], message: str
) -> None:
    damaged = tmp_path / "damaged.mp4"
    damaged.write_bytes(damage(sample_mp4.read_bytes()))
    with pytest.raises(ValueError, match=message):
        probe_mp4(damaged)


def test_probe_rejects_a_video_whose_later_frames_are_corrupt(tmp_path: Path) -> None:
    """The header and the first frames are intact: only decoding to the end finds the damage."""
    path = tmp_path / "long.mp4"
    rng = np.random.default_rng(0)
    export_mp4([rng.random((64, 64, 3), dtype=np.float32) for _ in range(40)], path, fps=16)
    data = bytearray(path.read_bytes())
    start = data.index(b"mdat") + (len(data) - data.index(b"mdat")) * 6 // 10
    data[start : start + 200] = bytes((value * 7 + 3) % 256 for value in data[start : start + 200])
    path.write_bytes(bytes(data))
    with pytest.raises(ValueError, match="cannot decode"):
        probe_mp4(path)


def test_probe_rejects_a_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="does not exist"):
        probe_mp4(tmp_path / "missing.mp4")


def test_probe_reads_a_veo_like_mp4_with_audio_first_and_moov_last(tmp_path: Path) -> None:
    import imageio_ffmpeg

    path = tmp_path / "veo.mp4"
    command = [
        imageio_ffmpeg.get_ffmpeg_exe(), "-hide_banner", "-loglevel", "error",
        "-f", "lavfi", "-i", "sine=frequency=440:duration=1",
        "-f", "lavfi", "-i", "testsrc=size=64x48:rate=24:duration=1",
        "-map", "0:a", "-map", "1:v", "-c:v", "libx264", "-pix_fmt", "yuv420p", "-c:a", "aac", str(path),
    ]  # fmt: skip
    subprocess.run(command, check=True)
    info = probe_mp4(path)
    assert (info.frames, info.width, info.height, info.fps, info.duration) == (24, 64, 48, 24.0, 1.0)
