"""The chart's models.wan values reach the settings of runner Pods and (for preset=fast) the API."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from tests.chart.chart import HelmError, render
from tests.chart.test_render import configmap_settings
from vividflow.settings import Settings

WAN_VALUES = {
    "cache": "magcache",
    "cacheThreshold": 0.2,
    "magcacheRatios": [1.0, 0.99, 0.97],
    "compile": False,
    "lora": "lightx2v/distilled-lora",
    "loraWeightName": "loras/distilled.safetensors",
    "fastSteps": 6,
    "fastCfg": 1.5,
}


def runner_settings(api: Settings, monkeypatch: pytest.MonkeyPatch) -> Settings:
    """What a runner Pod reads: the operator gives it VIVID_RUNNER_ENV and nothing of its own."""
    for name in list(Settings.model_fields):
        monkeypatch.delenv(f"VIVID_{name.upper()}", raising=False)
    for key, value in api.runner_env.items():
        monkeypatch.setenv(key, value)
    return Settings()


def test_the_wan_values_reach_runner_pods_and_the_api(
    helm: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    values = tmp_path / "wan.yaml"
    values.write_text(yaml.safe_dump({"models": {"wan": WAN_VALUES}}))
    api = configmap_settings(render(helm, [values]), monkeypatch)
    assert (api.wan_lora, api.wan_fast_steps, api.wan_fast_cfg) == ("lightx2v/distilled-lora", 6, 1.5)
    runner = runner_settings(api, monkeypatch)
    assert (runner.wan_cache, runner.wan_cache_threshold) == ("magcache", 0.2)
    assert runner.wan_magcache_ratios == [1.0, 0.99, 0.97]
    assert (runner.wan_lora, runner.wan_lora_weight_name) == (
        "lightx2v/distilled-lora",
        "loras/distilled.safetensors",
    )
    assert runner.wan_compile is False


def test_the_defaults_leave_the_method_defaults_and_no_lora(
    helm: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    api = configmap_settings(render(helm, sets={"models.wan.compile": True}), monkeypatch)
    assert (api.wan_lora, api.wan_fast_steps, api.wan_fast_cfg) == ("", 4, 1.0)
    runner = runner_settings(api, monkeypatch)
    assert (runner.wan_cache, runner.wan_cache_threshold, runner.wan_magcache_ratios) == ("none", None, [])
    assert (runner.wan_lora, runner.wan_compile) == ("", True)


@pytest.mark.parametrize(
    ("sets", "fragment"),
    [
        ({"models.wan.cache": "pab"}, "cache"),
        ({"models.wan.fastSteps": 0}, "fastSteps"),
        ({"models.wan.fastCfg": 0.5}, "fastCfg"),
        ({"models.wan.compile": "yes"}, "compile"),
    ],
)
def test_the_schema_refuses_bad_wan_values(helm: Path, sets: dict[str, object], fragment: str) -> None:
    with pytest.raises(HelmError) as failure:
        render(helm, sets=sets)
    assert "schema" in str(failure.value).lower() and fragment in str(failure.value)
