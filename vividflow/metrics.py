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


class JobTimings:
    """Histograms of the timings in a job's ``metrics`` (``JobMetrics`` fields), by model."""

    def __init__(self, prefix: str, what: str) -> None:
        """``prefix``: e.g. ``vividflow_job`` -> ``vividflow_job_generation_seconds``; ``what``: the
        help text's subject (e.g. "completed jobs")."""
        self.spin_up = Histogram(
            f"{prefix}_spin_up_seconds", f"Runner start to model ready, of {what}.", ["model"],
            buckets=JOB_SECONDS_BUCKETS,
        )  # fmt: skip
        self.generation = Histogram(
            f"{prefix}_generation_seconds", f"The model's own run, of {what}.", ["model"],
            buckets=JOB_SECONDS_BUCKETS,
        )  # fmt: skip
        self.total = Histogram(
            f"{prefix}_total_seconds", f"Submission to completion, of {what}.", ["model"],
            buckets=JOB_SECONDS_BUCKETS,
        )  # fmt: skip
        self.step = Histogram(
            f"{prefix}_step_seconds", f"Mean time of one diffusion step, of {what}.", ["model"],
            buckets=STEP_SECONDS_BUCKETS,
        )  # fmt: skip
        self.peak_gpu_memory = Histogram(
            f"{prefix}_peak_gpu_memory_bytes", f"Peak GPU memory allocated, of {what}.", ["model"],
            buckets=GPU_MEMORY_BUCKETS,
        )  # fmt: skip

    def observe(self, model: str, metrics: Mapping[str, Any]) -> None:
        """Observe what ``metrics`` (a job's ``JobMetrics`` as JSON, snake_case) reports."""
        for field, histogram in (
            ("spin_up_time", self.spin_up),
            ("generation_time", self.generation),
            ("total_time", self.total),
            ("step_time", self.step),
            ("peak_gpu_memory_bytes", self.peak_gpu_memory),
        ):
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
