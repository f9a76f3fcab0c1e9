"""A job's input image once checked (``apiserver.inputs`` checks it), and keeping it where the job's
runner reads it."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from vividflow.settings import Settings
from vividflow.storage import locations


@dataclass(frozen=True)
class CheckedInput:
    data: bytes
    mime_type: str
    gcs_uri: str | None
    """Set when the image already lives in GCS: the job reads it from there."""


def keep_input(checked: CheckedInput, job_id: str, settings: Settings) -> str:
    """Store the input where the job's runner can read it; returns its URI (blocking: GCS or disk)."""
    if checked.gcs_uri is not None:
        return checked.gcs_uri
    return locations.store_input(checked.data, job_id, checked.mime_type, settings)


def discard_input(uri: str, checked: CheckedInput) -> None:
    """Undo :func:`keep_input` when the job could not be created (local copies only)."""
    if checked.gcs_uri is None and not uri.startswith("gs://"):
        Path(uri).unlink(missing_ok=True)
