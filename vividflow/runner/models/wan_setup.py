"""How a Wan pipeline is chosen and set up: checkpoint by size, flow shift, attention, offload, LoRA,
compile. (Step caching is set per job: :mod:`wan_cache`.)

torch and diffusers are imported inside the functions that need them.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any, Literal

from vividflow.runner.errors import ModelLoadFailed
from vividflow.runner.models.wan_cache import default_threshold
from vividflow.runner.models.wan_lora import load_lora
from vividflow.settings import Settings

logger = logging.getLogger(__name__)

P480_PIXELS = 832 * 480
"""Jobs with more pixels than this use the 720P checkpoint."""
FLOW_SHIFT_480P, FLOW_SHIFT_720P = 3.0, 5.0

Offload = Literal["none", "model", "group"]


def is_720p(width: int, height: int) -> bool:
    return width * height > P480_PIXELS


def flow_shift(width: int, height: int) -> float:
    """The scheduler's flow shift Wan 2.1 uses at this size: 5.0 above 480P, 3.0 otherwise."""
    return FLOW_SHIFT_720P if is_720p(width, height) else FLOW_SHIFT_480P


def checkpoint_for(settings: Settings, width: int, height: int) -> str:
    """``VIVID_WAN_MODEL_720P`` above 832x480 pixels, else ``VIVID_WAN_MODEL_480P``; either falls
    back to ``VIVID_WAN_MODEL`` when empty."""
    chosen = settings.wan_model_720p if is_720p(width, height) else settings.wan_model_480p
    return chosen or settings.wan_model


@dataclass(frozen=True)
class WanLoadOptions:
    """What a loaded pipeline depends on; a warm model is reusable while these stay equal."""

    source: str
    device: str | None
    offload: Offload
    vae_tiling: bool
    attention: str = "native"
    cache: str = "none"
    cache_threshold: float = 0.05
    magcache_ratios: tuple[float, ...] = ()
    """Calibrated ratios of this checkpoint; empty: the published ones by size (:mod:`wan_cache`)."""
    lora: str = ""
    lora_weight_name: str = ""
    compile: bool = False
    compile_backend: str = "inductor"

    @property
    def cpu_offload(self) -> bool:
        return self.offload == "model"

    @classmethod
    def from_settings(cls, settings: Settings, width: int = 1280, height: int = 720) -> WanLoadOptions:
        """The options of a job of ``width`` x ``height`` (the API's default size unless given)."""
        offload: Offload = settings.wan_offload
        if offload == "none" and settings.wan_cpu_offload:
            offload = "model"
        return cls(
            source=checkpoint_for(settings, width, height),
            device=settings.wan_device,
            offload=offload,
            vae_tiling=settings.wan_vae_tiling,
            attention=settings.wan_attention.strip().lower() or "native",
            cache=settings.wan_cache,
            cache_threshold=settings.wan_cache_threshold or default_threshold(settings.wan_cache),
            magcache_ratios=tuple(settings.wan_magcache_ratios),
            lora=settings.wan_lora.strip(),
            lora_weight_name=settings.wan_lora_weight_name.strip(),
            compile=settings.wan_compile,
            compile_backend=settings.wan_compile_backend,
        )


def check_attention_backend(name: str) -> None:
    """Raise :class:`ModelLoadFailed` unless diffusers knows backend ``name`` and its kernel is
    installed here (diffusers would otherwise fail only at the first attention call)."""
    from diffusers.models.attention_dispatch import (
        AttentionBackendName,
        _check_attention_backend_requirements,
    )

    known = sorted(member.value for member in AttentionBackendName if not member.value.startswith("_"))
    try:
        backend = AttentionBackendName(name)
    except ValueError:
        raise ModelLoadFailed(
            f"Unknown VIVID_WAN_ATTENTION {name!r}; diffusers knows: {', '.join(known)}"
        ) from None
    try:
        _check_attention_backend_requirements(backend)
    except (RuntimeError, ImportError) as error:
        raise ModelLoadFailed(f"VIVID_WAN_ATTENTION={name} cannot be used here: {error}") from None


def check_combination(options: WanLoadOptions) -> None:
    """Refuse, before any weights load, the options that do not work together."""
    if options.compile and options.cache != "none":
        raise ModelLoadFailed(
            f"VIVID_WAN_COMPILE cannot be combined with VIVID_WAN_CACHE={options.cache}: diffusers' cache "
            "hooks on the transformer blocks do not compile as one graph; choose one"
        )
    if options.compile and options.offload == "group":
        raise ModelLoadFailed(
            "VIVID_WAN_COMPILE cannot be combined with VIVID_WAN_OFFLOAD=group: the offload hooks on "
            "every layer do not compile as one graph; use VIVID_WAN_OFFLOAD=model or none"
        )


def set_up(pipe: Any, device: str, options: WanLoadOptions) -> None:
    """Load the LoRA, place ``pipe`` on ``device`` (with its offload mode), then set attention, compile
    and tiling. The LoRA goes first (offload hooks and compiled graphs must see its layers)."""
    if options.attention != "native":
        check_attention_backend(options.attention)
    load_lora(pipe, options.lora, options.lora_weight_name)
    _place(pipe, device, options.offload)
    if options.attention != "native":
        pipe.transformer.set_attention_backend(options.attention)
    if options.compile:
        pipe.transformer.compile_repeated_blocks(fullgraph=True, backend=options.compile_backend)
    if options.vae_tiling:
        pipe.vae.enable_tiling()


def set_flow_shift(pipe: Any, shift: float) -> None:
    """Rebuild the scheduler with ``shift`` when it differs (cheap: no weights)."""
    config = pipe.scheduler.config
    if config.get("flow_shift") == shift:
        return
    pipe.scheduler = type(pipe.scheduler).from_config(config, flow_shift=shift)


def _place(pipe: Any, device: str, offload: Offload) -> None:
    cuda = device.startswith("cuda")
    if offload == "group":
        if not cuda:
            raise ModelLoadFailed(f"VIVID_WAN_OFFLOAD=group needs a CUDA device; this worker has {device}")
        import torch

        pipe.enable_group_offload(
            onload_device=torch.device(device),
            offload_device=torch.device("cpu"),
            offload_type="leaf_level",
            use_stream=True,
        )
    elif offload == "model" and cuda:
        pipe.enable_model_cpu_offload(device=device)
    else:
        if offload == "model":
            logger.warning("model CPU offload needs a CUDA device; running on %s without it", device)
        pipe.to(device)
