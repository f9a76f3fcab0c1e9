"""The Wan 2.1 I2V-14B pipeline of bench/wan_gpu.py, built from its published configurations with random
weights, directly on the device (nothing is downloaded), or at the tests' tiny size.

The configurations are those of ``Wan-AI/Wan2.1-I2V-14B-480P-Diffusers`` and ``-720P-Diffusers``
(the two transformers have one architecture; they differ in weights only), ``google/umt5-xxl`` (text
encoder) and the vision tower of ``laion/CLIP-ViT-H-14-laion2B-s32B-b79K`` (image encoder), as
diffusers' scripts/convert_wan_to_diffusers.py assembles them. ``AutoencoderKLWan()``'s defaults are
the Wan 2.1 VAE. The tokenizer is the tests' local one: prompts are padded to 512 tokens either way,
so the text encoder does the same work as with the real vocabulary.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import torch

from tests.fixtures.tiny_wan import TINY_VOCAB_SIZE, tiny_tokenizer

TRANSFORMER_14B: dict[str, Any] = {
    "image_dim": 1280,
    "added_kv_proj_dim": 5120,
    "attention_head_dim": 128,
    "cross_attn_norm": True,
    "eps": 1e-06,
    "ffn_dim": 13824,
    "freq_dim": 256,
    "in_channels": 36,
    "num_attention_heads": 40,
    "num_layers": 40,
    "out_channels": 16,
    "patch_size": (1, 2, 2),
    "qk_norm": "rms_norm_across_heads",
    "text_dim": 4096,
}
UMT5_XXL: dict[str, Any] = {
    "vocab_size": 256384,
    "d_model": 4096,
    "d_kv": 64,
    "d_ff": 10240,
    "num_layers": 24,
    "num_heads": 64,
    "relative_attention_num_buckets": 32,
    "relative_attention_max_distance": 128,
    "feed_forward_proj": "gated-gelu",
    "layer_norm_epsilon": 1e-6,
    "tie_word_embeddings": False,
}
CLIP_VIT_H_14: dict[str, Any] = {
    "hidden_size": 1280,
    "intermediate_size": 5120,
    "num_hidden_layers": 32,
    "num_attention_heads": 16,
    "patch_size": 14,
    "image_size": 224,
    "projection_dim": 1024,
    "hidden_act": "gelu",
    "layer_norm_eps": 1e-5,
}
VAE_WAN21: dict[str, Any] = {}

# The sizes of tests/fixtures/tiny_wan.py.
TRANSFORMER_TINY: dict[str, Any] = {
    "patch_size": (1, 2, 2),
    "num_attention_heads": 2,
    "attention_head_dim": 12,
    "in_channels": 36,
    "out_channels": 16,
    "text_dim": 32,
    "freq_dim": 256,
    "ffn_dim": 32,
    "num_layers": 2,
    "cross_attn_norm": True,
    "qk_norm": "rms_norm_across_heads",
    "rope_max_seq_len": 32,
    "image_dim": 4,
}
UMT5_TINY: dict[str, Any] = {
    "vocab_size": TINY_VOCAB_SIZE,
    "d_model": 32,
    "d_kv": 8,
    "d_ff": 37,
    "num_layers": 2,
    "num_heads": 4,
    "relative_attention_num_buckets": 8,
}
CLIP_TINY: dict[str, Any] = {
    "hidden_size": 4,
    "projection_dim": 4,
    "num_hidden_layers": 2,
    "num_attention_heads": 2,
    "image_size": 32,
    "intermediate_size": 16,
    "patch_size": 1,
}
VAE_TINY: dict[str, Any] = {
    "base_dim": 3,
    "z_dim": 16,
    "dim_mult": [1, 1, 1, 1],
    "num_res_blocks": 1,
    "temperal_downsample": [False, True, True],
}


@contextmanager
def created_on(device: str, dtype: torch.dtype) -> Iterator[None]:
    """Modules created inside are allocated on ``device`` in ``dtype`` and initialised there."""
    previous = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        with torch.device(device):
            yield
    finally:
        torch.set_default_dtype(previous)


def dtypes(device: str) -> dict[str, torch.dtype]:
    """As the runner loads them: bf16 on CUDA with the VAE and image encoder in fp32; fp32 on CPU."""
    if device.startswith("cuda"):
        return {"default": torch.bfloat16, "vae": torch.float32, "image_encoder": torch.float32}
    return {"default": torch.float32, "vae": torch.float32, "image_encoder": torch.float32}


def build_transformer(full: bool, device: str) -> Any:
    from diffusers import WanTransformer3DModel

    torch.manual_seed(0)
    with created_on(device, dtypes(device)["default"]):
        return WanTransformer3DModel.from_config(TRANSFORMER_14B if full else TRANSFORMER_TINY).eval()


def build_pipeline(full: bool, device: str) -> Any:
    """A ``WanImageToVideoPipeline`` with random weights on ``device``."""
    from diffusers import AutoencoderKLWan, UniPCMultistepScheduler, WanImageToVideoPipeline
    from transformers import (
        CLIPImageProcessor,
        CLIPVisionConfig,
        CLIPVisionModelWithProjection,
        UMT5Config,
        UMT5EncoderModel,
    )

    kinds = dtypes(device)
    torch.manual_seed(0)
    with created_on(device, kinds["default"]):
        text_encoder = UMT5EncoderModel(UMT5Config(**(UMT5_XXL if full else UMT5_TINY))).eval()
    with created_on(device, kinds["image_encoder"]):
        image_encoder = CLIPVisionModelWithProjection(
            CLIPVisionConfig(**(CLIP_VIT_H_14 if full else CLIP_TINY))
        ).eval()
    with created_on(device, kinds["vae"]):
        vae = AutoencoderKLWan(**(VAE_WAN21 if full else VAE_TINY)).eval()
    side = CLIP_VIT_H_14["image_size"] if full else CLIP_TINY["image_size"]
    pipe = WanImageToVideoPipeline(
        tokenizer=tiny_tokenizer(),
        text_encoder=text_encoder,
        vae=vae,
        scheduler=UniPCMultistepScheduler(
            prediction_type="flow_prediction", use_flow_sigmas=True, num_train_timesteps=1000, flow_shift=3.0
        ),
        image_processor=CLIPImageProcessor(crop_size=side, size=side),
        image_encoder=image_encoder,
        transformer=build_transformer(full, device),
    )
    pipe.set_progress_bar_config(disable=True)
    return pipe


def parameter_count(module: Any) -> int:
    return sum(p.numel() for p in module.parameters())
