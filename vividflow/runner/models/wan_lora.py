"""The fast preset's LoRA (``VIVID_WAN_LORA``): loaded once with the pipeline, switched per job.

The adapter stays loaded and unfused: a fast job enables it, a standard job disables it, so the base
weights are never modified. (Fusing and unfusing would round the bf16 weights a little on every
switch, and a warm worker alternating presets would drift from the checkpoint.) Disabled, peft's
LoRA layers call only their base layer: a standard job gives the same video as without the LoRA.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

from vividflow.runner.errors import ModelLoadFailed

logger = logging.getLogger(__name__)

FAST_ADAPTER = "fast"
"""The adapter name the LoRA is loaded under."""
_MAX_REASON_CHARS = 300


def lora_location(lora: str, weight_name: str = "") -> tuple[str, dict[str, Any]]:
    """What ``load_lora_weights`` is given for ``lora``: a directory or Hugging Face id, and the
    ``weight_name`` keyword when there is one (a ``.safetensors`` file is split into both)."""
    path = Path(lora).expanduser()
    local = os.path.isabs(lora) or lora.startswith((".", "~")) or path.exists()
    if local and path.is_file():
        return str(path.parent), {"weight_name": path.name}
    if local and not path.is_dir():
        raise ModelLoadFailed(f"VIVID_WAN_LORA {lora} does not exist")
    source = str(path) if local else lora
    return source, ({"weight_name": weight_name} if weight_name else {})


def load_lora(pipe: Any, lora: str, weight_name: str = "") -> None:
    """Load ``lora`` into ``pipe``'s transformer as the disabled adapter :data:`FAST_ADAPTER`
    (nothing when ``lora`` is empty). Raises :class:`ModelLoadFailed` naming the LoRA."""
    if not lora:
        return
    source, keywords = lora_location(lora, weight_name)
    try:
        pipe.load_lora_weights(source, adapter_name=FAST_ADAPTER, **keywords)
    except Exception as error:
        logger.debug("loading the LoRA %s failed", lora, exc_info=True)
        lines = [line.strip() for line in str(error).splitlines() if line.strip()]
        reason = (lines[0] if lines else type(error).__name__)[:_MAX_REASON_CHARS]
        raise ModelLoadFailed(f"Could not load the LoRA VIVID_WAN_LORA={lora}: {reason}") from None
    pipe.disable_lora()
    logger.info("loaded the fast preset's LoRA from %s", lora)


def set_lora_active(pipe: Any, active: bool) -> None:
    """Switch the loaded adapter on for a fast job, off for a standard one."""
    if active:
        pipe.enable_lora()
    else:
        pipe.disable_lora()


def lora_active(pipe: Any) -> bool:
    """Whether any LoRA layer of the transformer currently applies its adapter."""
    from peft.tuners.tuners_utils import BaseTunerLayer

    return any(
        isinstance(module, BaseTunerLayer) and not module.disable_adapters
        for module in pipe.transformer.modules()
    )
