"""Step caching (VIVID_WAN_CACHE) on the tiny model: the blocks really are skipped, per job, and never
in fast-preset jobs."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from tests.runner.test_wan_model import decoded_frames, generate
from vividflow.runner.errors import ModelLoadFailed
from vividflow.runner.models.wan import WanModel
from vividflow.runner.models.wan_cache import (
    FIRST_BLOCK_THRESHOLD,
    MAGCACHE_THRESHOLD,
    WAN21_I2V_480P_MAG_RATIOS,
    WAN21_I2V_720P_MAG_RATIOS,
    CachePlan,
    magcache_ratios,
)
from vividflow.runner.models.wan_setup import WanLoadOptions
from vividflow.settings import Settings


@contextmanager
def last_block_runs(model: WanModel) -> Iterator[list[int]]:
    """Counts the feed-forward runs of the last transformer block: a skipped block does not run it."""
    runs: list[int] = []
    ffn = model._pipe.transformer.blocks[-1].ffn
    handle = ffn.register_forward_hook(lambda module, args, output: runs.append(1))
    try:
        yield runs
    finally:
        handle.remove()


def block_runs(model: WanModel, path: Path, **params: Any) -> int:
    with last_block_runs(model) as runs:
        generate(model, path, **params)
    return len(runs)


def test_without_a_cache_every_step_runs_every_block(tiny_wan_model_dir: Path, tmp_path: Path) -> None:
    model = WanModel.load(Settings(wan_model=str(tiny_wan_model_dir)))
    assert block_runs(model, tmp_path / "out.mp4", steps=6) == 12  # 6 steps, 2 passes each (CFG)
    assert model.cache_plan == CachePlan()
    assert model._pipe.transformer._cache_config is None


def test_first_block_cache_skips_blocks(tiny_wan_model_dir: Path, tmp_path: Path) -> None:
    settings = Settings(wan_model=str(tiny_wan_model_dir), wan_cache="first_block", wan_cache_threshold=0.5)
    model = WanModel.load(settings)
    assert block_runs(model, tmp_path / "out.mp4", steps=6) < 12
    assert model.cache_plan == CachePlan("first_block", 0.5)
    assert type(model._pipe.transformer._cache_config).__name__ == "FirstBlockCacheConfig"


def test_magcache_skips_steps_and_follows_each_jobs_step_count(
    tiny_wan_model_dir: Path, tmp_path: Path
) -> None:
    settings = Settings(wan_model=str(tiny_wan_model_dir), wan_cache="magcache")
    model = WanModel.load(settings)
    # Published 480P ratios at the default threshold: after the first 20 % of steps, MagCache skips
    # up to two steps in a row while the accumulated error stays under 0.12.
    assert block_runs(model, tmp_path / "ten.mp4", steps=10) < 20
    config = model._pipe.transformer._cache_config
    assert (config.num_inference_steps, config.threshold, config.max_skip_steps) == (
        10,
        MAGCACHE_THRESHOLD,
        2,
    )
    assert block_runs(model, tmp_path / "six.mp4", steps=6) < 12
    assert model._pipe.transformer._cache_config.num_inference_steps == 6
    # The same job again gives the same video: no state is left over from the job before.
    again = decoded_frames(generate(model, tmp_path / "six-again.mp4", steps=6))
    assert again == decoded_frames(tmp_path / "six.mp4")


def test_a_cached_video_differs_from_the_uncached_one(tiny_wan_model_dir: Path, tmp_path: Path) -> None:
    plain = WanModel.load(Settings(wan_model=str(tiny_wan_model_dir)))
    cached = WanModel.load(Settings(wan_model=str(tiny_wan_model_dir), wan_cache="magcache"))
    assert decoded_frames(generate(cached, tmp_path / "c.mp4", steps=10)) != decoded_frames(
        generate(plain, tmp_path / "p.mp4", steps=10)
    )


def test_fast_jobs_run_without_the_cache_and_standard_ones_get_it_back(
    tiny_wan_model_dir: Path, tiny_wan_lora: Path, tmp_path: Path
) -> None:
    settings = Settings(
        wan_model=str(tiny_wan_model_dir),
        wan_lora=str(tiny_wan_lora),
        wan_cache="first_block",
        wan_cache_threshold=0.5,
    )
    model = WanModel.load(settings)
    first = block_runs(model, tmp_path / "standard.mp4", steps=6)
    assert first < 12
    assert block_runs(model, tmp_path / "fast.mp4", preset="fast", steps=4, cfg=1.0) == 4
    assert model.cache_plan == CachePlan() and model._pipe.transformer._cache_config is None
    assert block_runs(model, tmp_path / "standard-again.mp4", steps=6) == first
    assert decoded_frames(tmp_path / "standard-again.mp4") == decoded_frames(tmp_path / "standard.mp4")


def test_thresholds_default_by_method() -> None:
    assert (
        WanLoadOptions.from_settings(Settings(wan_cache="first_block")).cache_threshold
        == FIRST_BLOCK_THRESHOLD
    )
    assert WanLoadOptions.from_settings(Settings(wan_cache="magcache")).cache_threshold == MAGCACHE_THRESHOLD
    assert (
        WanLoadOptions.from_settings(Settings(wan_cache="magcache", wan_cache_threshold=0.3)).cache_threshold
        == 0.3
    )


def test_magcache_ratios_by_size_or_calibrated(monkeypatch: pytest.MonkeyPatch) -> None:
    assert len(WAN21_I2V_480P_MAG_RATIOS) == len(WAN21_I2V_720P_MAG_RATIOS) == 40
    assert WAN21_I2V_480P_MAG_RATIOS[0] == WAN21_I2V_720P_MAG_RATIOS[0] == 1.0
    assert magcache_ratios((), is_720p=False) == WAN21_I2V_480P_MAG_RATIOS
    assert magcache_ratios((), is_720p=True) == WAN21_I2V_720P_MAG_RATIOS
    monkeypatch.setenv("VIVID_WAN_MAGCACHE_RATIOS", "1.0, 0.99,0.95")
    calibrated = WanLoadOptions.from_settings(Settings()).magcache_ratios
    assert calibrated == (1.0, 0.99, 0.95)
    assert magcache_ratios(calibrated, is_720p=True) == calibrated


@pytest.mark.parametrize("cache", ["first_block", "magcache"])
def test_compile_and_a_cache_are_refused_together(tiny_wan_model_dir: Path, cache: str) -> None:
    settings = Settings(wan_model=str(tiny_wan_model_dir), wan_cache=cache, wan_compile=True)
    with pytest.raises(
        ModelLoadFailed, match=f"VIVID_WAN_COMPILE cannot be combined with VIVID_WAN_CACHE={cache}"
    ):
        WanModel.load(settings)
