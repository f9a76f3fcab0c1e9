"""VIVID_WAN_COMPILE on the tiny model: the repeated blocks are compiled, the warm worker keeps their
graphs across jobs of one shape, and the first job of a shape reports the compile in spin_up_time.

The tests compile with torch.compile's ``eager`` backend (VIVID_WAN_COMPILE_BACKEND): TorchDynamo
traces, guards and recompiles exactly as it does for inductor, without inductor's C++ code generation,
which takes ~35 s per shape for the tiny model on one CPU thread.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from tests.runner.test_runner_core import PUBLIC_URL, png_bytes, wan_spec
from tests.runner.test_wan_model import decoded_frames, generate, gradient_image, ignore, make_request, never
from vividflow.jobspec import ModelName
from vividflow.runner.core import Runner
from vividflow.runner.errors import ModelLoadFailed
from vividflow.runner.models.base import (
    CancelCheck,
    GenerationOutput,
    GenerationRequest,
    ProgressCallback,
    VideoModel,
)
from vividflow.runner.models.wan import WanModel
from vividflow.settings import Settings


@pytest.fixture(autouse=True)
def fresh_compile_caches() -> None:
    """TorchDynamo keeps compiled graphs per code object, shared by every model in the process: each
    test starts with none, as a runner process does."""
    import torch

    torch._dynamo.reset()


def compiled_settings(model_dir: Path, **overrides: object) -> Settings:
    return Settings(wan_model=str(model_dir), wan_compile=True, wan_compile_backend="eager", **overrides)


def test_compiled_blocks_keep_their_graph_per_shape(tiny_wan_model_dir: Path, tmp_path: Path) -> None:
    model = WanModel.load(compiled_settings(tiny_wan_model_dir))
    assert all(block._compiled_call_impl is not None for block in model._pipe.transformer.blocks)

    def warmup(name: str, width: int) -> float | None:
        request = make_request(tmp_path / f"{name}.mp4", gradient_image(32, 32), width=width)
        return model.generate(request, ignore, never).warmup_time

    first = warmup("first", 32)
    assert first is not None and first > 0
    assert warmup("same-shape", 32) is None  # the graph is kept: nothing to compile, nothing reported
    wider = warmup("new-shape", 48)
    assert wider is not None and wider > 0
    assert warmup("first-shape-again", 32) is None

    # The compiled path computes what the plain one does (the eager backend runs the same kernels).
    plain = WanModel.load(Settings(wan_model=str(tiny_wan_model_dir)))
    assert decoded_frames(tmp_path / "first.mp4") == decoded_frames(generate(plain, tmp_path / "plain.mp4"))


def test_compile_with_the_lora_switches_between_presets(
    tiny_wan_model_dir: Path, tiny_wan_lora: Path, tmp_path: Path
) -> None:
    model = WanModel.load(compiled_settings(tiny_wan_model_dir, wan_lora=str(tiny_wan_lora)))
    plain = WanModel.load(Settings(wan_model=str(tiny_wan_model_dir), wan_lora=str(tiny_wan_lora)))
    for name, params in [("standard", {}), ("fast", {"preset": "fast", "steps": 4, "cfg": 1.0})]:
        compiled_video = decoded_frames(generate(model, tmp_path / f"c-{name}.mp4", **params))
        assert compiled_video == decoded_frames(generate(plain, tmp_path / f"p-{name}.mp4", **params))
    again = model.generate(make_request(tmp_path / "again.mp4", gradient_image(32, 32)), ignore, never)
    assert again.warmup_time is None  # the standard graph is still there after the fast job


def test_compile_refuses_group_offload(tiny_wan_model_dir: Path) -> None:
    with pytest.raises(
        ModelLoadFailed, match="VIVID_WAN_COMPILE cannot be combined with VIVID_WAN_OFFLOAD=group"
    ):
        WanModel.load(compiled_settings(tiny_wan_model_dir, wan_offload="group"))


class Recording:
    """The real WanModel, recording what each generation reported."""

    def __init__(self, model: VideoModel) -> None:
        self.model = model
        self.outputs: list[GenerationOutput] = []

    def generate(
        self, request: GenerationRequest, on_progress: ProgressCallback, should_cancel: CancelCheck
    ) -> GenerationOutput:
        output = self.model.generate(request, on_progress, should_cancel)
        self.outputs.append(output)
        return output


def test_the_first_jobs_compile_counts_as_spin_up(tiny_wan_model_dir: Path, tmp_path: Path) -> None:
    settings = compiled_settings(tiny_wan_model_dir, data_dir=tmp_path / "data", public_url=PUBLIC_URL)
    recorded: list[Recording] = []

    def load(loaded: Settings) -> VideoModel:
        recorded.append(Recording(WanModel.load(loaded)))
        return recorded[-1]

    loaders: dict[ModelName, Callable[[Settings], VideoModel]] = {ModelName.WAN21: load}
    runner = Runner(settings, loaders)
    image = tmp_path / "input.png"
    image.write_bytes(png_bytes())
    cold = runner.run(wan_spec(str(image), str(settings.results_dir / "cold.mp4")))
    warm = runner.run(wan_spec(str(image), str(settings.results_dir / "warm.mp4")))

    assert cold.ok and warm.ok and cold.metrics and warm.metrics, (cold, warm)
    first, second = recorded[0].outputs
    assert first.warmup_time is not None and second.warmup_time is None
    assert cold.metrics.model_load_time is not None and warm.metrics.model_load_time is None
    # spin_up_time = fetching the input + loading + the compile; generation_time is what is left.
    assert cold.metrics.spin_up_time >= cold.metrics.model_load_time + first.warmup_time - 0.002
    assert cold.metrics.generation_time < cold.metrics.spin_up_time
    assert warm.metrics.spin_up_time < first.warmup_time
