"""The fast preset: a LoRA (a tiny random one made here) loaded with the pipeline and switched on for
fast jobs only, on one warm model."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from tests.runner.test_wan_model import decoded_frames, generate, gradient_image, ignore, make_request, never
from vividflow.runner.errors import ModelLoadFailed
from vividflow.runner.models.wan import WanModel
from vividflow.runner.models.wan_lora import lora_active, lora_location
from vividflow.runner.models.wan_setup import WanLoadOptions
from vividflow.settings import Settings

FAST = {"preset": "fast", "steps": 4, "cfg": 1.0}


@pytest.fixture(scope="module")
def lora_model(tiny_wan_model_dir: Path, tiny_wan_lora: Path) -> WanModel:
    return WanModel.load(Settings(wan_model=str(tiny_wan_model_dir), wan_lora=str(tiny_wan_lora)))


@contextmanager
def transformer_calls(model: WanModel) -> Iterator[list[bool]]:
    """One entry per transformer call while inside: whether the LoRA applied during that call."""
    calls: list[bool] = []
    handle = model._pipe.transformer.register_forward_pre_hook(
        lambda module, args: calls.append(lora_active(model._pipe))
    )
    try:
        yield calls
    finally:
        handle.remove()


def test_the_lora_loads_disabled(lora_model: WanModel, tiny_wan_lora: Path) -> None:
    assert lora_model.options.lora == str(tiny_wan_lora)
    assert lora_model._pipe.get_list_adapters() == {"transformer": ["fast"]}
    assert not lora_active(lora_model._pipe)


def test_fast_and_standard_jobs_alternate_on_one_warm_model(
    lora_model: WanModel, tiny_wan_model_dir: Path, tmp_path: Path
) -> None:
    plain = WanModel.load(Settings(wan_model=str(tiny_wan_model_dir)))
    without_lora = decoded_frames(generate(plain, tmp_path / "plain.mp4", steps=3))
    standard_fast_settings = decoded_frames(generate(plain, tmp_path / "plain-4.mp4", steps=4, cfg=1.0))

    runs: dict[str, list[bool]] = {}
    videos: dict[str, list[bytes]] = {}
    for name, params in [
        ("standard", {"steps": 3}),
        ("fast", FAST),
        ("standard again", {"steps": 3}),
        ("fast again", FAST),
    ]:
        with transformer_calls(lora_model) as calls:
            videos[name] = decoded_frames(generate(lora_model, tmp_path / f"{name}.mp4", **params))
        runs[name] = calls

    # Standard: 3 steps, two passes each (CFG), the adapter off. Fast: 4 steps, one pass (cfg 1), on.
    assert runs["standard"] == runs["standard again"] == [False] * 6
    assert runs["fast"] == runs["fast again"] == [True] * 4
    # A standard job on the LoRA's worker is the plain model's video; the fast one is not.
    assert videos["standard"] == videos["standard again"] == without_lora
    assert videos["fast"] == videos["fast again"] != standard_fast_settings


def test_fast_without_a_lora_on_the_runner_fails_clearly(tiny_wan_model_dir: Path, tmp_path: Path) -> None:
    model = WanModel.load(Settings(wan_model=str(tiny_wan_model_dir)))
    request = make_request(tmp_path / "out.mp4", gradient_image(32, 32), **FAST)
    with pytest.raises(ModelLoadFailed, match=r"preset=fast needs VIVID_WAN_LORA .* on the runner"):
        model.generate(request, ignore, never)
    assert not (tmp_path / "out.mp4").exists()


def test_a_missing_lora_fails_at_load(tiny_wan_model_dir: Path, tmp_path: Path) -> None:
    missing = tmp_path / "no-such-lora.safetensors"
    with pytest.raises(ModelLoadFailed, match=f"VIVID_WAN_LORA {missing} does not exist"):
        WanModel.load(Settings(wan_model=str(tiny_wan_model_dir), wan_lora=str(missing)))


def test_a_broken_lora_fails_naming_it(tiny_wan_model_dir: Path, tmp_path: Path) -> None:
    broken = tmp_path / "broken.safetensors"
    broken.write_bytes(b"not a safetensors file")
    with pytest.raises(ModelLoadFailed) as caught:
        WanModel.load(Settings(wan_model=str(tiny_wan_model_dir), wan_lora=str(broken)))
    assert caught.value.message.startswith(f"Could not load the LoRA VIVID_WAN_LORA={broken}: ")
    assert "\n" not in caught.value.message


def test_the_lora_is_part_of_the_load_options(tiny_wan_lora: Path) -> None:
    """A warm model is reused only while its options are equal: another LoRA means a reload."""
    with_lora = WanLoadOptions.from_settings(Settings(wan_lora=str(tiny_wan_lora)))
    assert with_lora != WanLoadOptions.from_settings(Settings())
    assert with_lora != WanLoadOptions.from_settings(
        Settings(wan_lora=str(tiny_wan_lora), wan_lora_weight_name="other.safetensors")
    )


@pytest.mark.parametrize(
    ("lora", "weight_name", "expected"),
    [
        ("org/distilled-lora", "", ("org/distilled-lora", {})),
        (
            "org/distilled-lora",
            "loras/x.safetensors",
            ("org/distilled-lora", {"weight_name": "loras/x.safetensors"}),
        ),
    ],
)
def test_a_hugging_face_lora_id_is_passed_as_it_is(
    lora: str, weight_name: str, expected: tuple[str, dict[str, Any]]
) -> None:
    assert lora_location(lora, weight_name) == expected


def test_a_local_lora_file_or_directory(tiny_wan_lora: Path) -> None:
    directory = tiny_wan_lora.parent
    assert lora_location(str(tiny_wan_lora)) == (str(directory), {"weight_name": tiny_wan_lora.name})
    assert lora_location(str(directory)) == (str(directory), {})
    assert lora_location(str(directory), "x.safetensors") == (
        str(directory),
        {"weight_name": "x.safetensors"},
    )
