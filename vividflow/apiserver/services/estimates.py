"""A rough ``estimated_wait_time``: the queue ahead and recent run times, over the workers."""

from __future__ import annotations

import math
from statistics import median

from vividflow.jobspec import ModelName

TYPICAL_RUN_SECONDS = {ModelName.WAN21: 240.0, ModelName.VEO31: 90.0}
"""Used until this server has seen a few runs of its own."""


def estimated_seconds(
    model: ModelName, queued_ahead: int, processing: int, recent_runs: list[float], parallel: int
) -> float:
    per_job = median(recent_runs) if recent_runs else TYPICAL_RUN_SECONDS[model]
    slots = max(1, parallel)
    waves_ahead = (queued_ahead + processing) / slots
    return per_job * (waves_ahead + 1)


def describe(seconds: float) -> str:
    """A range in the contract's style: '~2-5 minutes' (until the video is ready)."""
    low, high = seconds * 0.7, seconds * 1.5
    if high < 60:
        return f"~{max(1, math.floor(low))}-{math.ceil(high)} seconds"
    low_minutes = max(1, math.floor(low / 60))
    high_minutes = max(low_minutes + 1, math.ceil(high / 60))
    return f"~{low_minutes}-{high_minutes} minutes"
