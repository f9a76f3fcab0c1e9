"""Google Veo 3.1 on Vertex AI through google-genai: submit, poll the operation, deliver the MP4.

Delivery: when ``spec.output_uri`` is ``gs://``, Veo writes the video straight to GCS. Veo picks
its own object name under the ``storageUri`` prefix it is given, so the runner hands it a scratch
prefix next to the destination (``<dir of output_uri>/_veo/<job_id>/``), then copies the object
Veo names to exactly ``spec.output_uri`` with a server-side rewrite and deletes the scratch object
(the video never passes through the runner). Otherwise Veo returns the bytes inline and they are
written to ``request.output_path``.

Vertex AI cannot cancel a Veo operation: on cancel or timeout the runner stops polling, and Veo
may still finish and leave its object under ``_veo/<job_id>/`` (a bucket lifecycle rule on that
prefix clears such leftovers).
"""

from __future__ import annotations

import functools
import logging
import math
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import requests
from google import genai
from google.api_core.exceptions import GoogleAPIError
from google.auth.credentials import Credentials
from google.auth.exceptions import GoogleAuthError
from google.genai import errors as genai_errors
from google.genai import types
from google.rpc import code_pb2

from vividflow.genai_client import (
    SDK_NETWORK_ERRORS,
    VertexClientError,
    VertexNotConfigured,
    make_vertex_client,
)
from vividflow.jobspec import VeoParams
from vividflow.runner.errors import (
    Cancelled,
    GenerationTimeout,
    InvalidInput,
    ModelLoadFailed,
    RunnerError,
    UpstreamError,
)
from vividflow.runner.models.base import (
    CancelCheck,
    GenerationOutput,
    GenerationRequest,
    MonotonicProgress,
    ProgressCallback,
)
from vividflow.runner.models.veo_prompt import fold_prompt
from vividflow.settings import Settings
from vividflow.storage import gcs

if TYPE_CHECKING:
    from google.cloud import storage

log = logging.getLogger(__name__)

_REQUEST_TIMEOUT_MS = 120_000
"""Per HTTP request (submit or poll), so a hung connection cannot outlive the job's deadline by much."""
_CANCEL_CHECK_SECONDS = 1.0
"""Longest sleep between two ``should_cancel`` checks while waiting for the next poll."""
_TRANSIENT_POLL_ERRORS = 3
"""Consecutive 408/429/5xx or network failures of polling tolerated before the job fails."""
_TYPICAL_RUN_SECONDS = 60.0
"""Time constant of the progress estimate: Veo reports no progress and usually takes 1-3 min."""
_MAX_ESTIMATE = 94
_MESSAGE_LIMIT = 500

_INVALID_INPUT_RPC_CODES = frozenset({code_pb2.INVALID_ARGUMENT, code_pb2.OUT_OF_RANGE})
_INVALID_INPUT_HTTP_CODES = frozenset({400, 413, 422})
_TRANSIENT_HTTP_CODES = frozenset({408, 429, 500, 502, 503, 504})

StorageFactory = Callable[[], "storage.Client"]


_NETWORK_ERRORS = SDK_NETWORK_ERRORS


class _TransientUpstreamError(UpstreamError):
    """An upstream failure worth another poll (408/429/5xx or no connection)."""


# ---------------------------------------------------------------------------------------------
# Pure helpers
# ---------------------------------------------------------------------------------------------


def poll_intervals(initial: float, maximum: float) -> Iterator[float]:
    """Seconds to wait before each poll: ``initial``, doubling, capped at ``maximum`` (forever)."""
    interval = min(initial, maximum)
    while True:
        yield interval
        interval = min(interval * 2, maximum)


def estimate_progress(elapsed_seconds: float) -> int:
    """A time-based guess in 0-94 (Veo reports none): 60 % after a minute, 86 % after two."""
    fraction = 1.0 - math.exp(-max(elapsed_seconds, 0.0) / _TYPICAL_RUN_SECONDS)
    return min(_MAX_ESTIMATE, int(100 * fraction))


def output_gcs_prefix(output_uri: str, job_id: str) -> str:
    """The scratch ``storageUri`` Veo writes into for a job whose video goes to ``output_uri``."""
    parent = output_uri.rsplit("/", 1)[0] if output_uri.count("/") > 2 else output_uri.rstrip("/")
    return f"{parent}/_veo/{job_id}/"


def _gcs_location(uri: str) -> gcs.GcsLocation:
    location = gcs.parse_gcs_url(uri)
    if location is None or not uri.startswith("gs://"):
        raise ValueError(f"not a gs://bucket/object URI: {uri}")
    return location


def _short(text: object) -> str:
    flat = " ".join(str(text).split())
    return flat if len(flat) <= _MESSAGE_LIMIT else flat[: _MESSAGE_LIMIT - 1] + "…"


def api_error(exc: genai_errors.APIError) -> RunnerError:
    """Map an HTTP error answered by Vertex AI to a job failure with a one-line message."""
    status = f"{exc.code} {exc.status}" if exc.status else str(exc.code)
    detail = _short(exc.message or exc.details)
    if exc.code == 429:
        return UpstreamError(f"Veo quota exceeded ({status}): {detail}")
    if exc.code in (401, 403):
        return UpstreamError(f"Vertex AI refused the credentials ({status}): {detail}")
    if exc.code in _INVALID_INPUT_HTTP_CODES:
        return InvalidInput(f"Veo rejected the request ({status}): {detail}")
    if exc.code >= 500:
        return UpstreamError(f"Vertex AI failed ({status}): {detail}")
    return UpstreamError(f"Vertex AI answered {status}: {detail}")


def operation_error(error: dict[str, Any]) -> RunnerError:
    """Map a finished operation's ``error`` (a google.rpc.Status) to a job failure.

    INVALID_ARGUMENT and OUT_OF_RANGE are the input's fault (InvalidInput); anything else is Veo's
    (UpstreamError).
    """
    code = error.get("code")
    name = code_pb2.Code.Name(code) if code in code_pb2.Code.values() else "ERROR"
    message = f"Veo failed ({name}, code {code}): {_short(error.get('message') or 'no message')}"
    if code in _INVALID_INPUT_RPC_CODES:
        return InvalidInput(message)
    return UpstreamError(message)


def pick_video(operation: types.GenerateVideosOperation) -> types.Video:
    """The video of a finished operation, or the failure it stands for.

    Safety filtering is reported as InvalidInput: it is a verdict on the prompt or image, which
    retrying does not change; the caller has to change the input.
    """
    if operation.error:
        raise operation_error(operation.error)
    response = operation.response or operation.result
    videos = [g.video for g in (response.generated_videos or []) if g.video] if response else []
    if videos:
        return videos[0]
    if response and (response.rai_media_filtered_count or response.rai_media_filtered_reasons):
        reasons = "; ".join(_short(r) for r in response.rai_media_filtered_reasons or [])
        raise InvalidInput(f"Veo's safety filters blocked the video: {reasons or 'no reason given'}")
    raise UpstreamError("Veo finished without returning a video")


def _video_config(params: VeoParams, output_uri: str, job_id: str) -> types.GenerateVideosConfig:
    return types.GenerateVideosConfig(
        number_of_videos=1,
        duration_seconds=params.duration_seconds,
        resolution=params.resolution,
        enhance_prompt=params.enhance_prompt,
        output_gcs_uri=output_gcs_prefix(output_uri, job_id) if output_uri.startswith("gs://") else None,
    )


def _input_image(request: GenerationRequest) -> types.Image:
    if request.spec.input_uri.startswith("gs://"):
        return types.Image(gcs_uri=request.spec.input_uri, mime_type=request.image_mime_type)
    return types.Image(image_bytes=request.image_bytes, mime_type=request.image_mime_type)


# ---------------------------------------------------------------------------------------------
# The model
# ---------------------------------------------------------------------------------------------


class VeoModel:
    """Veo 3.1 behind the :class:`~vividflow.runner.models.base.VideoModel` protocol."""

    def __init__(
        self,
        client: genai.Client,
        settings: Settings,
        *,
        storage_client: StorageFactory = gcs.storage_client,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.client = client
        self.settings = settings
        self._storage_client = storage_client
        self._clock = clock
        self._sleep = sleep

    @classmethod
    def load(cls, settings: Settings, *, credentials: Credentials | None = None) -> VeoModel:
        """Build the Vertex AI client.

        With ``settings.vertex_api_key`` the client runs in express mode (the key alone; project
        and location are not sent). Otherwise it needs ``settings.vertex_project`` and uses
        ``credentials`` or, by default, application default credentials, resolved here so that a
        missing setup fails at load instead of at the first job.
        """
        try:
            client = make_vertex_client(settings, credentials=credentials, timeout_ms=_REQUEST_TIMEOUT_MS)
        except VertexNotConfigured:
            raise ModelLoadFailed(
                "Veo needs VIVID_VERTEX_PROJECT (with application default credentials) "
                "or VIVID_VERTEX_API_KEY"
            ) from None
        except VertexClientError as exc:
            raise ModelLoadFailed(exc.message) from None
        return cls(client, settings)

    def generate(
        self, request: GenerationRequest, on_progress: ProgressCallback, should_cancel: CancelCheck
    ) -> GenerationOutput:
        spec = request.spec
        params = spec.params
        if not isinstance(params, VeoParams):
            raise InvalidInput(f"job {spec.job_id} is not a Veo job")
        deadline = self._clock() + spec.deadline_seconds
        if should_cancel():
            raise Cancelled("Cancelled before the request was sent to Veo")
        operation = self._call(
            lambda: self.client.models.generate_videos(
                model=self.settings.veo_model,
                source=types.GenerateVideosSource(
                    prompt=fold_prompt(spec.prompt, params), image=_input_image(request)
                ),
                config=_video_config(params, spec.output_uri, spec.job_id),
            )
        )
        log.info("Veo operation %s started for job %s", operation.name, spec.job_id)
        operation = self._wait(operation, deadline, spec.deadline_seconds, on_progress, should_cancel)
        output = self._deliver(pick_video(operation), request)
        on_progress(100)
        return output

    # --- polling -----------------------------------------------------------------------------

    def _wait(
        self,
        operation: types.GenerateVideosOperation,
        deadline: float,
        deadline_seconds: int,
        on_progress: ProgressCallback,
        should_cancel: CancelCheck,
    ) -> types.GenerateVideosOperation:
        started = self._clock()
        progress = MonotonicProgress(on_progress)
        failures = 0
        intervals = poll_intervals(self.settings.veo_poll_initial_seconds, self.settings.veo_poll_max_seconds)
        while not operation.done:
            self._sleep_until(min(self._clock() + next(intervals), deadline), should_cancel)
            if self._clock() >= deadline:
                raise GenerationTimeout(f"Veo did not finish within {deadline_seconds} s")
            try:
                poll = functools.partial(self.client.operations.get, operation)
                operation = self._call(poll, retryable=True)
                failures = 0
            except _TransientUpstreamError as exc:
                failures += 1
                if failures > _TRANSIENT_POLL_ERRORS:
                    raise UpstreamError(exc.message) from None
                log.warning("Polling Veo failed (%s); retrying", exc.message)
            progress(estimate_progress(self._clock() - started))
        return operation

    def _sleep_until(self, wake_at: float, should_cancel: CancelCheck) -> None:
        while True:
            if should_cancel():
                raise Cancelled("Cancelled while Veo was generating")
            remaining = wake_at - self._clock()
            if remaining <= 0:
                return
            self._sleep(min(remaining, _CANCEL_CHECK_SECONDS))

    def _call(
        self, fn: Callable[[], types.GenerateVideosOperation], *, retryable: bool = False
    ) -> types.GenerateVideosOperation:
        """Run one SDK call, turning every failure into a RunnerError with a one-line message.

        With ``retryable``, transient failures raise :class:`_TransientUpstreamError` (polls are
        retried; the submission is not, as a duplicate would be billed twice).
        """
        transient = _TransientUpstreamError if retryable else UpstreamError
        try:
            return fn()
        except genai_errors.APIError as exc:
            error = api_error(exc)
            if exc.code in _TRANSIENT_HTTP_CODES:
                raise transient(error.message) from None
            raise error from None
        except _NETWORK_ERRORS as exc:
            raise transient(f"Could not reach Vertex AI: {type(exc).__name__}: {_short(exc)}") from None
        except GoogleAuthError as exc:
            raise UpstreamError(f"Could not authenticate to Vertex AI: {_short(exc)}") from None
        except genai_errors.UnknownApiResponseError as exc:
            raise UpstreamError(f"Vertex AI answered with something other than JSON: {_short(exc)}") from None

    # --- delivery ----------------------------------------------------------------------------

    def _deliver(self, video: types.Video, request: GenerationRequest) -> GenerationOutput:
        output_uri = request.spec.output_uri
        if video.video_bytes:
            _write(request.output_path, video.video_bytes)
            return GenerationOutput(local_path=request.output_path)
        if not video.uri:
            raise UpstreamError("Veo returned a video with neither bytes nor a URI")
        try:
            if output_uri.startswith("gs://"):
                self._move(video.uri, output_uri)
                return GenerationOutput(written_to_output_uri=True)
            self._download(video.uri, request.output_path)
            return GenerationOutput(local_path=request.output_path)
        except ValueError as exc:
            raise UpstreamError(f"Veo returned an unusable video URI: {_short(exc)}") from None
        except (GoogleAPIError, GoogleAuthError, requests.RequestException, OSError) as exc:
            raise UpstreamError(
                f"Could not fetch Veo's video from {video.uri}: {type(exc).__name__}: {_short(exc)}"
            ) from None

    def _move(self, source_uri: str, target_uri: str) -> None:
        """Copy ``source_uri`` to exactly ``target_uri`` inside GCS, then delete the source."""
        if source_uri == target_uri:
            return
        client = self._storage_client()
        src, dst = _gcs_location(source_uri), _gcs_location(target_uri)
        source = client.bucket(src.bucket).blob(src.name)
        target = client.bucket(dst.bucket).blob(dst.name)
        token, _, _ = target.rewrite(source)
        while token is not None:
            token, _, _ = target.rewrite(source, token=token)
        try:
            source.delete()
        except GoogleAPIError as exc:  # the copy is in place; a leftover scratch object is harmless
            log.warning("Could not delete Veo's scratch object %s: %s", source_uri, exc)

    def _download(self, source_uri: str, path: Path) -> None:
        src = _gcs_location(source_uri)
        path.parent.mkdir(parents=True, exist_ok=True)
        self._storage_client().bucket(src.bucket).blob(src.name).download_to_filename(str(path))


def _write(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
