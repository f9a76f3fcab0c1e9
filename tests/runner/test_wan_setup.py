"""Wan checkpoint choice by size, attention backend, step caching and offload modes (tiny model)."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import torch

from tests.runner.test_wan_model import generate, gradient_image, ignore, make_request, never
from vividflow.runner.errors import ModelLoadFailed
from vividflow.runner.models.wan import WanModel
from vividflow.runner.models.wan_setup import WanLoadOptions, checkpoint_for, flow_shift
from vividflow.runner.video import probe_mp4
from vividflow.settings import Settings


@pytest.mark.parametrize(
    ("width", "height", "expected", "shift"),
    [(832, 480, "small", 3.0), (480, 832, "small", 3.0), (848, 480, "large", 5.0), (1280, 720, "large", 5.0)],
)
def test_checkpoint_and_flow_shift_follow_the_pixel_count(
    width: int, height: int, expected: str, shift: float
) -> None:
    settings = Settings(wan_model="one", wan_model_480p="small", wan_model_720p="large")
    assert checkpoint_for(settings, width, height) == expected
    assert flow_shift(width, height) == shift


def test_empty_per_size_checkpoints_fall_back_to_wan_model() -> None:
    assert checkpoint_for(Settings(wan_model="one"), 1280, 720) == "one"
    assert checkpoint_for(Settings(wan_model="one", wan_model_720p="large"), 32, 32) == "one"


def test_the_cpu_offload_setting_means_model_offload() -> None:
    assert WanLoadOptions.from_settings(Settings(wan_cpu_offload=True)).offload == "model"
    assert WanLoadOptions.from_settings(Settings()).offload == "none"
    assert (
        WanLoadOptions.from_settings(Settings(wan_offload="group", wan_cpu_offload=True)).offload == "group"
    )


def test_the_worker_swaps_to_the_checkpoint_of_the_jobs_size(
    tiny_wan_model_dir: Path, tmp_path: Path
) -> None:
    large = tmp_path / "large"
    shutil.copytree(tiny_wan_model_dir, large)
    settings = Settings(wan_model_480p=str(tiny_wan_model_dir), wan_model_720p=str(large))
    model = WanModel.load(settings, 32, 32)
    assert model.source == str(tiny_wan_model_dir)
    model.use_checkpoint_for(896, 480)
    assert model.source == str(large)
    assert model._pipe.scheduler.config.flow_shift == 5.0
    model.use_checkpoint_for(32, 32)
    assert model.source == str(tiny_wan_model_dir)
    assert model._pipe.scheduler.config.flow_shift == 3.0
    assert probe_mp4(generate(model, tmp_path / "out.mp4")).frames == 9


def test_native_attention_loads_and_generates(tiny_wan_model_dir: Path, tmp_path: Path) -> None:
    model = WanModel.load(Settings(wan_model=str(tiny_wan_model_dir), wan_attention="native"))
    assert probe_mp4(generate(model, tmp_path / "out.mp4")).frames == 9


@pytest.mark.parametrize("backend", ["flash", "sage"])
def test_an_uninstalled_attention_kernel_fails_at_load(tiny_wan_model_dir: Path, backend: str) -> None:
    with pytest.raises(ModelLoadFailed, match=f"VIVID_WAN_ATTENTION={backend} cannot be used here"):
        WanModel.load(Settings(wan_model=str(tiny_wan_model_dir), wan_attention=backend))


def test_an_unknown_attention_backend_fails_at_load(tiny_wan_model_dir: Path) -> None:
    with pytest.raises(
        ModelLoadFailed, match=r"Unknown VIVID_WAN_ATTENTION 'warp'; diffusers knows: .*native"
    ):
        WanModel.load(Settings(wan_model=str(tiny_wan_model_dir), wan_attention="warp"))


def test_first_block_cache_gives_a_video(tiny_wan_model_dir: Path, tmp_path: Path) -> None:
    model = WanModel.load(
        Settings(wan_model=str(tiny_wan_model_dir), wan_cache="first_block", wan_cache_threshold=0.2)
    )
    output = model.generate(
        make_request(tmp_path / "out.mp4", gradient_image(32, 32), steps=4), ignore, never
    )
    info = probe_mp4(output.local_path)
    assert (info.frames, info.width, info.height) == (9, 32, 32)


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the refusal without CUDA")
def test_group_offload_refuses_cleanly_without_cuda(tiny_wan_model_dir: Path) -> None:
    with pytest.raises(
        ModelLoadFailed, match="VIVID_WAN_OFFLOAD=group needs a CUDA device; this worker has cpu"
    ):
        WanModel.load(Settings(wan_model=str(tiny_wan_model_dir), wan_offload="group"))
