"""What the API's and the operator's Prometheus metrics share: bucket boundaries, the histograms of
a job's own timings (as its runner reported them) and the text exposition.

Metric names are prefixed ``vividflow_``, units are in the names, and labels are bounded (a model, a
status, a reason, a route template: never a job id or a user).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any, Protocol

from prometheus_client import CONTENT_TYPE_LATEST, Histogram, generate_latest
from prometheus_client.metrics_core import Metric

REQUEST_SECONDS_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)
JOB_SECONDS_BUCKETS = (1, 5, 10, 30, 60, 120, 300, 600, 900, 1200, 1800, 2700, 3600, 7200)
"""Queue waits, spin-ups, generations and whole jobs: seconds to hours."""
STEP_SECONDS_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1, 2, 4, 8, 15, 30, 60)
"""One diffusion step: a tiny model on a CPU to Wan 14B at 720P."""
GIB = 1024**3
GPU_MEMORY_BUCKETS = tuple(float(size * GIB) for size in (1, 2, 4, 8, 16, 24, 32, 40, 48, 64, 80, 96, 141))
"""Peak GPU memory: up to the largest GPUs (141 GB H200)."""

EXPOSITION_CONTENT_TYPE = CONTENT_TYPE_LATEST


class Collecting(Protocol):
    def collect(self) -> Iterable[Metric]: ...


JOB_TIMING_HISTOGRAMS: tuple[tuple[str, str, str, tuple[float, ...]], ...] = (
    # (JobMetrics field, metric name suffix, what it measures, buckets)
    ("spin_up_time", "spin_up_seconds", "Runner start to model ready", JOB_SECONDS_BUCKETS),
    ("generation_time", "generation_seconds", "The model's own run", JOB_SECONDS_BUCKETS),
    ("total_time", "total_seconds", "Submission to completion", JOB_SECONDS_BUCKETS),
    ("step_time", "step_seconds", "Mean time of one diffusion step", STEP_SECONDS_BUCKETS),
    ("peak_gpu_memory_bytes", "peak_gpu_memory_bytes", "Peak GPU memory allocated", GPU_MEMORY_BUCKETS),
)


class JobTimings:
    """Histograms, by model, of the timings in a job's ``metrics`` (the ``JobMetrics`` fields of
    :data:`JOB_TIMING_HISTOGRAMS`)."""

    def __init__(self, prefix: str, what: str) -> None:
        """``prefix``: e.g. ``vividflow_job`` -> ``vividflow_job_generation_seconds``; ``what``: the
        help text's subject (e.g. "completed jobs")."""
        self.histograms = {
            field: Histogram(f"{prefix}_{suffix}", f"{meaning}, of {what}.", ["model"], buckets=buckets)
            for field, suffix, meaning, buckets in JOB_TIMING_HISTOGRAMS
        }

    def observe(self, model: str, metrics: Mapping[str, Any]) -> None:
        """Observe what ``metrics`` (a job's ``JobMetrics`` as JSON, snake_case) reports."""
        for field, histogram in self.histograms.items():
            value = metrics.get(field)
            if isinstance(value, int | float) and value >= 0:
                histogram.labels(model=model).observe(float(value))


class Combined:
    """Several collectors exposed as one (a registry's metrics plus metrics read at scrape time)."""

    def __init__(self, *parts: Collecting) -> None:
        self._parts = parts

    def collect(self) -> Iterable[Metric]:
        for part in self._parts:
            yield from part.collect()


def exposition(source: Collecting) -> bytes:
    """The Prometheus text format of everything ``source`` collects."""
    return generate_latest(source)
