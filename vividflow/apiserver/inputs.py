"""Checking (every pixel decoded) and keeping a job's input image before the job exists, so a bad input never
creates a job: uploads and fetched URLs are validated by content and stored; GCS objects are
validated in place and referenced by their gs:// URI."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from starlette.concurrency import run_in_threadpool
from starlette.datastructures import UploadFile

from vividflow.apiserver.errors import ApiError, invalid_parameters
from vividflow.settings import Settings
from vividflow.storage import fetch, gcs, images, locations
from vividflow.storage.errors import InputTooLarge, StorageError


@dataclass(frozen=True)
class CheckedInput:
    data: bytes
    mime_type: str
    gcs_uri: str | None
    """Set when the image already lives in GCS: the job reads it from there."""


async def check_input(upload: UploadFile | None, image_url: str | None, settings: Settings) -> CheckedInput:
    try:
        if upload is not None:
            return await _check_upload(upload, settings)
        assert image_url is not None
        return await run_in_threadpool(_check_url, image_url, settings)
    except InputTooLarge as error:
        raise ApiError(413, "Image too large", [error.message]) from error
    except StorageError as error:
        field = "image" if upload is not None else "image_url"
        raise invalid_parameters([f"{field}: {error.message}"]) from error


async def _check_upload(upload: UploadFile, settings: Settings) -> CheckedInput:
    limit = settings.max_upload_bytes
    data = await upload.read(limit + 1)
    mime_type = await run_in_threadpool(images.validate_image_bytes, data, limit)
    return CheckedInput(data=data, mime_type=mime_type, gcs_uri=None)


def _check_url(url: str, settings: Settings) -> CheckedInput:
    location = gcs.parse_gcs_url(url)
    if location is not None:
        data = gcs.download_bytes(location, settings.max_upload_bytes)
        mime_type = images.validate_image_bytes(data, settings.max_upload_bytes)
        gcs_uri: str | None = location.uri
    elif url.startswith(("https://", "http://")):
        fetched = fetch.fetch_image_url(url, settings)
        data, mime_type, gcs_uri = fetched.data, fetched.mime_type, None
    else:
        raise invalid_parameters(["image_url must be a gs:// URL or an https:// URL"])
    return CheckedInput(data=data, mime_type=mime_type, gcs_uri=gcs_uri)


def keep_input(checked: CheckedInput, job_id: str, settings: Settings) -> str:
    """Store the input where the job's runner can read it; returns its URI."""
    if checked.gcs_uri is not None:
        return checked.gcs_uri
    return locations.store_input(checked.data, job_id, checked.mime_type, settings)


def discard_input(uri: str, checked: CheckedInput) -> None:
    """Undo :func:`keep_input` when the job could not be created (local copies only)."""
    if checked.gcs_uri is None and not uri.startswith("gs://"):
        Path(uri).unlink(missing_ok=True)
