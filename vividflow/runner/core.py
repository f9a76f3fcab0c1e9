"""One entry point for every job, whatever runs it: fetch the input, load (or reuse) the model,
generate with progress, check the MP4, write it to its destination, and report metrics."""

from __future__ import annotations

import logging
import tempfile
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

from vividflow.jobspec import FailureReason, JobMetrics, JobSpec, ModelName, RunResult
from vividflow.runner.errors import Cancelled, InvalidInput, OutOfMemory, RunnerError, UpstreamError
from vividflow.runner.models.base import (
    CancelCheck,
    GenerationRequest,
    MonotonicProgress,
    ProgressCallback,
    VideoModel,
)
from vividflow.settings import Settings
from vividflow.storage import gcs, locations
from vividflow.storage.errors import StorageError

log = logging.getLogger(__name__)

ModelLoader = Callable[[Settings], VideoModel]
MAX_VIDEO_BYTES = 4 * 1024**3


def _load_wan(settings: Settings) -> VideoModel:
    from vividflow.runner.models.wan import WanModel

    return WanModel.load(settings)


def _load_veo(settings: Settings) -> VideoModel:
    from vividflow.runner.models.veo import VeoModel

    return VeoModel.load(settings)


DEFAULT_LOADERS: dict[ModelName, ModelLoader] = {ModelName.WAN21: _load_wan, ModelName.VEO31: _load_veo}


def _never() -> bool:
    return False


def _ignore(_: int) -> None:
    return None


class Runner:
    """Runs jobs one at a time and keeps each loaded model warm for the next job."""

    def __init__(
        self,
        settings: Settings,
        loaders: dict[ModelName, ModelLoader] | None = None,
        started: float | None = None,
    ) -> None:
        """``started``: when the runner's process began (``time.monotonic()``), if earlier than now."""
        self.settings = settings
        self._loaders = loaders or DEFAULT_LOADERS
        self._models: dict[ModelName, VideoModel] = {}
        self._fresh_since: float | None = started if started is not None else time.monotonic()
        """Set until the first job: a cold runner's spin-up counts from its own start."""

    def run(
        self, spec: JobSpec, on_progress: ProgressCallback = _ignore, should_cancel: CancelCheck = _never
    ) -> RunResult:
        started = self._fresh_since or time.monotonic()
        self._fresh_since = None
        progress = MonotonicProgress(on_progress)
        try:
            with tempfile.TemporaryDirectory(prefix=f"vividflow-{spec.job_id}-") as workdir:
                return self._run(spec, started, progress, should_cancel, Path(workdir))
        except RunnerError as error:
            return RunResult.failure(error.reason, error.message)
        except MemoryError:
            return RunResult.failure(FailureReason.OUT_OF_MEMORY, OutOfMemory.default_message)
        except Exception as error:  # the runner reports, it never crashes on a job
            log.exception("job %s failed unexpectedly", spec.job_id)
            return RunResult.failure(
                FailureReason.INTERNAL, f"Internal error in the runner ({type(error).__name__})."
            )

    def _run(
        self,
        spec: JobSpec,
        started: float,
        progress: MonotonicProgress,
        should_cancel: CancelCheck,
        workdir: Path,
    ) -> RunResult:
        progress(0)
        self._result_url(spec.output_uri)  # an unusable destination fails before any work is done
        try:
            checked = locations.read_input(spec.input_uri, self.settings)  # decoded once, kept
        except StorageError as error:
            raise InvalidInput(f"Input image: {error.message}") from error
        model, load_time = self._model(spec.model)
        spin_up = time.monotonic() - started

        generation_started = time.monotonic()
        request = GenerationRequest(
            spec=spec,
            image=checked.image,
            image_bytes=checked.data,
            image_mime_type=checked.mime_type,
            output_path=workdir / f"{spec.job_id}.mp4",
        )
        # 100 means the video is stored: the model's own 100 waits until the upload is done.
        output = model.generate(request, lambda percent: progress(min(percent, 99)), should_cancel)
        generation_time = time.monotonic() - generation_started
        if output.warmup_time:  # e.g. a first compile: getting the model ready, not generating
            warmup = min(output.warmup_time, generation_time)
            spin_up, generation_time = spin_up + warmup, generation_time - warmup
        if should_cancel():  # a cancelled job writes no result
            if output.written_to_output_uri:
                self._discard_output(spec.output_uri)
            raise Cancelled("The job was cancelled.")

        upload_started = time.monotonic()
        local = output.local_path
        if local is None and output.written_to_output_uri:
            local = request.output_path
            self._fetch_back(spec.output_uri, local)
        if local is None:
            raise UpstreamError("The model returned no video.")
        try:
            self._check_mp4(local)
        except UpstreamError:
            if output.written_to_output_uri:  # never leave a broken video where a result is expected
                self._discard_output(spec.output_uri)
            raise
        if not output.written_to_output_uri:
            try:
                locations.write_output(local, spec.output_uri, self.settings)
            except StorageError as error:
                raise UpstreamError(f"Could not store the video: {error.message}") from error
        upload_time = time.monotonic() - upload_started

        progress(100)
        created = spec.created_at  # timezone-aware (JobSpec makes it so)
        metrics = JobMetrics(
            spin_up_time=round(spin_up, 3),
            generation_time=round(generation_time, 3),
            total_time=round((datetime.now(UTC) - created).total_seconds(), 3),
            upload_time=round(upload_time, 3),
            model_load_time=None if load_time is None else round(load_time, 3),
            step_time=output.step_time,
            peak_gpu_memory_bytes=output.peak_gpu_memory_bytes,
        )
        return RunResult.success(
            result_url=self._result_url(spec.output_uri),  # signed URLs: their validity starts now
            output_uri=spec.output_uri,
            metrics=metrics,
        )

    def _result_url(self, output_uri: str) -> str:
        """Where clients download the output (e.g. a local path outside the results directory has
        no such URL: that spec is invalid)."""
        try:
            return locations.result_url_for(output_uri, self.settings)
        except StorageError as error:
            raise InvalidInput(f"Output {output_uri}: {error.message}") from error

    def _model(self, name: ModelName) -> tuple[VideoModel, float | None]:
        """The warm model, or one loaded now with the seconds it took."""
        model = self._models.get(name)
        if model is not None:
            return model, None
        loading = time.monotonic()
        model = self._models[name] = self._loaders[name](self.settings)
        return model, time.monotonic() - loading

    def _fetch_back(self, output_uri: str, local: Path) -> None:
        """A model wrote straight to the destination: fetch it back once to prove it is an MP4."""
        location = gcs.parse_gcs_url(output_uri)
        if location is None:
            raise UpstreamError("The model reported a video at a location that is not in GCS.")
        try:
            local.write_bytes(gcs.download_bytes(location, MAX_VIDEO_BYTES))
        except StorageError as error:
            raise UpstreamError(f"The generated video could not be read back: {error.message}") from error

    def _discard_output(self, output_uri: str) -> None:
        location = gcs.parse_gcs_url(output_uri)
        if location is None:
            return
        try:
            gcs.delete(location)
        except StorageError as error:
            log.warning("could not remove the invalid video at %s: %s", output_uri, error.message)

    @staticmethod
    def _check_mp4(path: Path) -> None:
        from vividflow.runner.video import probe_mp4

        try:
            probe_mp4(path)
        except ValueError as error:
            raise UpstreamError(f"The generated file is not a valid MP4: {error}") from error
