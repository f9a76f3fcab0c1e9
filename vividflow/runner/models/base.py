"""The protocol every video model implements, and what it is given and gives back."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from PIL import Image

from vividflow.jobspec import JobSpec

ProgressCallback = Callable[[int], None]
"""Called with 0-100 as generation advances (monotonic)."""


class MonotonicProgress:
    """Forwards 0-100 (clamped) only when it rises, so a caller never sees progress go back or repeat."""

    def __init__(self, sink: ProgressCallback) -> None:
        self._sink = sink
        self._last = -1

    def __call__(self, value: int) -> None:
        value = max(0, min(100, int(value)))
        if value > self._last:
            self._last = value
            self._sink(value)


CancelCheck = Callable[[], bool]
"""Returns True when the job should stop; models check it between steps or polls."""


@dataclass(frozen=True)
class GenerationRequest:
    spec: JobSpec
    image: Image.Image
    """The decoded input image (RGB, upright): the only decode a model gets; none decodes again."""
    image_bytes: bytes
    """The input exactly as read, for models that send the file itself (Veo)."""
    image_mime_type: str
    """``image/png``, ``image/jpeg`` or ``image/webp``."""
    output_path: Path
    """A local file the model may write its MP4 to."""


@dataclass(frozen=True)
class GenerationOutput:
    """Where the model left the video: a local MP4, or already at ``spec.output_uri`` (e.g. Veo
    writing straight to GCS)."""

    local_path: Path | None = None
    written_to_output_uri: bool = False
    step_time: float | None = None
    """Mean seconds per diffusion step, for models that step."""
    peak_gpu_memory_bytes: int | None = None
    """Peak GPU memory of the generation, for models on a GPU."""
    warmup_time: float | None = None
    """Seconds of one-off work inside the generation (compiling the model for a new shape): the
    runner counts them in ``spin_up_time``, not ``generation_time``."""


class VideoModel(Protocol):
    def generate(
        self, request: GenerationRequest, on_progress: ProgressCallback, should_cancel: CancelCheck
    ) -> GenerationOutput:
        """Generate one video. Raises :class:`vividflow.runner.errors.RunnerError` subclasses."""
        ...
