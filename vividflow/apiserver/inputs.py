"""Checking a job's input image (every pixel decoded) before the job exists, so a bad input never
creates a job: uploads and fetched URLs are validated by content (then kept by the submission, see
services.job_inputs); GCS objects are validated in place and referenced by their gs:// URI.

Slow network work stays off the threads that serve database work and plain routes: https URLs are
fetched on the event loop (async client), GCS reads and writes run on the I/O pool, and each user may
have only ``max_url_fetches_per_user`` URL downloads at once (per API process).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from vividflow.apiserver.errors import ApiError, invalid_parameters
from vividflow.apiserver.services.job_inputs import CheckedInput
from vividflow.storage import fetch, gcs, images
from vividflow.storage.errors import InputTooLarge, StorageError

if TYPE_CHECKING:
    from vividflow.apiserver.state import AppState


async def check_input(
    upload: bytes | None, image_url: str | None, state: AppState, user_id: str
) -> CheckedInput:
    settings = state.settings
    try:
        if upload is not None:
            mime_type = await state.run_io(images.validate_image_bytes, upload, settings.max_upload_bytes)
            return CheckedInput(data=upload, mime_type=mime_type, gcs_uri=None)
        assert image_url is not None
        with state.fetch_slots.take(user_id):
            return await _check_url(image_url, state)
    except InputTooLarge as error:
        raise ApiError(413, "Image too large", [error.message]) from error
    except StorageError as error:
        field = "image" if upload is not None else "image_url"
        raise invalid_parameters([f"{field}: {error.message}"]) from error


async def _check_url(url: str, state: AppState) -> CheckedInput:
    settings = state.settings
    location = gcs.parse_gcs_url(url)
    if location is not None:
        return await state.run_io(_check_gcs_object, location, settings.max_upload_bytes)
    if url.startswith(("https://", "http://")):
        fetched = await fetch.fetch_image_url_async(url, settings)
        return CheckedInput(data=fetched.data, mime_type=fetched.mime_type, gcs_uri=None)
    raise invalid_parameters(["image_url must be a gs:// URL or an https:// URL"])


def _check_gcs_object(location: gcs.GcsLocation, max_bytes: int) -> CheckedInput:
    data = gcs.download_bytes(location, max_bytes)
    mime_type = images.validate_image_bytes(data, max_bytes)
    return CheckedInput(data=data, mime_type=mime_type, gcs_uri=location.uri)
