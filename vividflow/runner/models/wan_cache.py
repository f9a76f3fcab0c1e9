"""Step caching of the Wan transformer (``VIVID_WAN_CACHE``), set per job with diffusers' cache hooks.

- ``first_block``: First Block Cache; skips the other blocks while the first one's output barely
  changes from the previous step (no calibration).
- ``magcache``: MagCache; skips steps while the accumulated change of the residual's magnitude, read
  from ratios calibrated per checkpoint, stays under the threshold. The ratios of the two official
  Wan 2.1 I2V 14B checkpoints are published by MagCache's authors and kept here; a job uses the
  480P or the 720P ones by its size, as it does the checkpoint. Another checkpoint (a fine-tune)
  needs its own: ``VIVID_WAN_MAGCACHE_RATIOS``, from a run of diffusers' ``MagCacheConfig(calibrate=True)``.

MagCache needs the job's step count (its ratios are stretched to it), so the hooks are set before
each job whose plan differs from the last one's. Fast-preset jobs run without a cache: their 4
distilled steps leave nothing to skip, and the ratios describe the base model's steps.

Left out, as they do not fit Wan 2.1 here: Pyramid Attention Broadcast and FasterCache, whose state
is not kept per guidance branch while diffusers' Wan pipeline runs the conditional and unconditional
passes as separate calls (PAB would hand one branch's attention to the other; FasterCache expects
both in one batch); TaylorSeer, whose full mode keeps Taylor factors of every attention output (tens
of GB for the 14B model at 480P) and whose lite mode is not validated on Wan.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

FIRST_BLOCK_THRESHOLD = 0.05
MAGCACHE_THRESHOLD = 0.12
"""MagCache's own Wan 2.1 setting (with K=2 and a retention ratio of 0.2)."""
MAGCACHE_MAX_SKIP_STEPS = 2
MAGCACHE_RETENTION_RATIO = 0.2


def _floats(text: str) -> tuple[float, ...]:
    return tuple(float(word) for word in text.split())


# MagCache4Wan2.1/magcache_generate.py in github.com/Zehong-Ma/MagCache: 40 steps, UniPC, the
# conditional and unconditional passes interleaved. diffusers applies one list to both passes, so the
# conditional one (every other value from the first) is kept; the two differ by at most 0.0021.
WAN21_I2V_480P_MAG_RATIOS = _floats(
    """
    1.0 0.98783 0.97559 0.98311 0.98202 0.9888 0.98762 0.98957 0.99052 0.99383
    0.98857 0.99065 0.98845 0.99057 0.98957 0.98601 0.98823 0.98756 0.98808 0.98721
    0.98571 0.98543 0.98157 0.98411 0.97952 0.98149 0.9774 0.97825 0.97355 0.97085
    0.97056 0.96588 0.96113 0.9567 0.94961 0.93973 0.93217 0.91878 0.90955 0.92617
    """
)
WAN21_I2V_720P_MAG_RATIOS = _floats(
    """
    1.0 0.99428 0.98588 0.98273 0.99018 0.98911 0.98646 0.99454 0.9891 0.99124
    0.99102 0.99215 0.99515 0.99576 0.99068 0.99097 0.99166 0.99041 0.99201 0.99101
    0.98599 0.98845 0.98848 0.98862 0.98718 0.98497 0.98264 0.98389 0.97938 0.97535
    0.97498 0.973 0.96827 0.96261 0.95335 0.94649 0.93397 0.91636 0.89088 0.8679
    """
)


def default_threshold(cache: str) -> float:
    return MAGCACHE_THRESHOLD if cache == "magcache" else FIRST_BLOCK_THRESHOLD


@dataclass(frozen=True)
class CachePlan:
    """The cache one job's transformer runs with; equal plans need no new hooks."""

    kind: str = "none"
    threshold: float = 0.0
    steps: int = 0
    """MagCache only: the job's step count."""
    ratios: tuple[float, ...] = ()

    @classmethod
    def for_job(
        cls, cache: str, threshold: float, steps: int, ratios: tuple[float, ...], fast: bool
    ) -> CachePlan:
        """``ratios``: the MagCache ratios of the job's checkpoint (see :func:`magcache_ratios`)."""
        if cache == "none" or fast:
            return cls()
        if cache == "magcache":
            return cls("magcache", threshold, steps, ratios)
        return cls(cache, threshold)


def magcache_ratios(calibrated: tuple[float, ...], is_720p: bool) -> tuple[float, ...]:
    """``calibrated`` when given, else the published ratios of the job's size class."""
    if calibrated:
        return calibrated
    return WAN21_I2V_720P_MAG_RATIOS if is_720p else WAN21_I2V_480P_MAG_RATIOS


def apply_plan(transformer: Any, current: CachePlan, wanted: CachePlan) -> CachePlan:
    """Give ``transformer`` the hooks of ``wanted`` (it has those of ``current``); returns ``wanted``."""
    if wanted == current:
        return current
    if current.kind != "none":
        transformer.disable_cache()
    if wanted.kind != "none":
        transformer.enable_cache(_config(wanted))
    return wanted


def _config(plan: CachePlan) -> Any:
    from diffusers import FirstBlockCacheConfig, MagCacheConfig

    if plan.kind == "first_block":
        return FirstBlockCacheConfig(threshold=plan.threshold)  # type: ignore[no-untyped-call]
    if plan.kind == "magcache":
        return MagCacheConfig(  # type: ignore[no-untyped-call]
            threshold=plan.threshold,
            max_skip_steps=MAGCACHE_MAX_SKIP_STEPS,
            retention_ratio=MAGCACHE_RETENTION_RATIO,
            num_inference_steps=plan.steps,
            mag_ratios=list(plan.ratios),
        )
    raise ValueError(f"unknown step cache {plan.kind!r}")
