"""Where inputs and outputs live: local paths (embedded mode), ``gs://`` objects, or https image URLs.

The API server and the runner call these and never look at a URI's scheme themselves.
"""

from __future__ import annotations

import os
import re
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import IO
from urllib.parse import quote, unquote, urlsplit, urlunsplit
from urllib.request import url2pathname

from vividflow.settings import Settings
from vividflow.storage import gcs
from vividflow.storage.errors import (
    FetchRefused,
    InputNotFound,
    InputTooLarge,
    InvalidImage,
    StorageAccessDenied,
    StorageError,
    safe_url,
)
from vividflow.storage.fetch import fetch_image_url
from vividflow.storage.images import ACCEPTED_MESSAGE, EXTENSIONS, CheckedImage, check_image

_JOB_ID = re.compile(r"[A-Za-z0-9_-]{1,128}")


def read_input(uri: str, settings: Settings, *, allow_local: bool = True) -> CheckedImage:
    """The input image at ``uri``, checked to be a PNG, JPEG or WebP within ``max_upload_bytes`` (and
    decoded, once: the result keeps the pixels).

    ``uri`` is a local path or ``file://`` URL, a ``gs://`` or ``https://storage.googleapis.com/``
    object, or any other https URL (fetched with the private-address guard). Pass
    ``allow_local=False`` for URIs that came from a user, so they cannot read the server's files.
    """
    if _is_local(uri):
        if not allow_local:
            raise FetchRefused("image URLs must use https")
        data = _read_local(_local_path(uri), settings.max_upload_bytes)
    elif (location := gcs.parse_gcs_url(uri)) is not None:
        data = gcs.download_bytes(location, settings.max_upload_bytes)
    elif uri.lower().startswith("gs:"):
        raise InputNotFound(f"{safe_url(uri)} names no object (expected gs://bucket/object)")
    else:
        return fetch_image_url(uri, settings).checked
    return check_image(data, settings.max_upload_bytes)


def write_output(
    local_path: Path, output_uri: str, settings: Settings, content_type: str = "video/mp4"
) -> None:
    """Put the finished file at ``output_uri``: a local path (replaced atomically) or a GCS object."""
    if _is_local(output_uri):
        destination = _local_path(output_uri)
        if destination.resolve() != local_path.resolve():
            with local_path.open("rb") as source:
                _atomic_write(destination, lambda out: shutil.copyfileobj(source, out))
    elif (location := gcs.parse_gcs_url(output_uri)) is not None:
        gcs.upload_file(local_path, location, content_type)
    else:
        raise StorageError(f"cannot write results to {safe_url(output_uri)}")


def result_url_for(output_uri: str, settings: Settings) -> str:
    """The URL a client downloads the output from."""
    if (location := gcs.parse_gcs_url(output_uri)) is not None:
        return gcs.result_url(location, settings)
    if not _is_local(output_uri):
        raise StorageError(f"no result URL for {safe_url(output_uri)}")
    path, results = _local_path(output_uri).resolve(), settings.results_dir.resolve()
    if not path.is_relative_to(results):
        raise StorageError("the output is not inside the results directory")
    relative = quote(path.relative_to(results).as_posix())
    return f"{settings.public_url.rstrip('/')}/files/results/{relative}"


def is_result_url_of(url: str, output_uri: str, settings: Settings) -> bool:
    """Whether ``url`` downloads exactly the object at ``output_uri`` (a signed URL's query aside): a
    result URL that points anywhere else is not the job's."""
    location = gcs.parse_gcs_url(output_uri)
    if location is not None:
        try:
            parts = urlsplit(url)
        except ValueError:
            return False
        unsigned = urlunsplit((parts.scheme, parts.netloc, parts.path, "", ""))
        return parts.scheme == "https" and gcs.parse_gcs_url(unsigned) == location
    try:
        return url == result_url_for(output_uri, settings)
    except StorageError:
        return False


def output_exists(output_uri: str, settings: Settings) -> bool:
    """Whether a non-empty result is at ``output_uri`` (results are written whole: a local file is
    renamed into place, a GCS object appears complete)."""
    if (location := gcs.parse_gcs_url(output_uri)) is not None:
        return bool(gcs.object_size(location))
    if not _is_local(output_uri):
        return False
    path = _local_path(output_uri)
    return path.is_file() and path.stat().st_size > 0


def delete_stored(uri: str, settings: Settings) -> None:
    """Remove the file or GCS object at ``uri`` (an output or a stored input); a missing one is fine."""
    if _is_local(uri):
        _local_path(uri).unlink(missing_ok=True)
    elif (location := gcs.parse_gcs_url(uri)) is not None:
        gcs.delete(location)
    else:
        raise StorageError(f"cannot delete {safe_url(uri)}")


def store_input(data: bytes, job_id: str, mime_type: str, settings: Settings) -> str:
    """Keep an accepted upload where the runner can read it; its URI for :func:`read_input`."""
    extension = EXTENSIONS.get(mime_type)
    if extension is None:
        raise InvalidImage(ACCEPTED_MESSAGE)
    name = f"{_checked(job_id)}.{extension}"
    if settings.gcs_bucket:
        location = gcs.GcsLocation(settings.gcs_bucket, _object_name(settings.gcs_inputs_prefix, name))
        gcs.upload_bytes(data, location, mime_type)
        return location.uri
    path = settings.inputs_dir / name
    _atomic_write(path, lambda out: out.write(data))
    return str(path.resolve())


def output_uri_for(job_id: str, settings: Settings) -> str:
    """Where the runner writes the job's video: in the GCS bucket when one is set, else the results dir."""
    name = f"{_checked(job_id)}.mp4"
    if settings.gcs_bucket:
        return gcs.GcsLocation(settings.gcs_bucket, _object_name(settings.gcs_prefix, name)).uri
    return str((settings.results_dir / name).resolve())


def _is_local(uri: str) -> bool:
    try:
        scheme = urlsplit(uri).scheme.lower()
    except ValueError:
        return False
    return scheme in ("", "file")


def local_path(uri: str) -> Path | None:
    """The file a local URI (a path or a ``file://`` URL on this host) names; None for any other."""
    if not _is_local(uri):
        return None
    try:
        return _local_path(uri)
    except StorageError:
        return None


def _local_path(uri: str) -> Path:
    parts = urlsplit(uri)
    if parts.scheme.lower() != "file":
        return Path(uri)
    if parts.netloc not in ("", "localhost"):
        raise StorageError("file:// URLs must name a local file")
    return Path(url2pathname(unquote(parts.path)))


def _read_local(path: Path, max_bytes: int) -> bytes:
    try:
        size = path.stat().st_size
        if size > max_bytes:
            raise InputTooLarge.of(max_bytes, size)
        return path.read_bytes()
    except (FileNotFoundError, NotADirectoryError, IsADirectoryError) as exc:
        raise InputNotFound(f"input file {path.name} does not exist") from exc
    except PermissionError as exc:
        raise StorageAccessDenied(f"no permission to read input file {path.name}") from exc


def _atomic_write(destination: Path, write: Callable[[IO[bytes]], object]) -> None:
    """Write to a temporary file beside ``destination`` and rename it into place."""
    try:
        destination.parent.mkdir(parents=True, exist_ok=True)
        out = tempfile.NamedTemporaryFile(  # noqa: SIM115 - closed below, before the rename
            dir=destination.parent, prefix=f".{destination.name}.", suffix=".tmp", delete=False
        )
        temporary = Path(out.name)
        try:
            with out:
                write(out)
                out.flush()
                os.fsync(out.fileno())
            temporary.chmod(0o644)
            os.replace(temporary, destination)
        except BaseException:
            temporary.unlink(missing_ok=True)
            raise
    except OSError as exc:
        raise StorageError(f"could not write {destination.name}: {exc.strerror or 'I/O error'}") from exc


def _object_name(prefix: str, name: str) -> str:
    prefix = prefix.strip("/")
    return f"{prefix}/{name}" if prefix else name


def _checked(job_id: str) -> str:
    if not _JOB_ID.fullmatch(job_id):
        raise ValueError(f"job id {job_id!r} is not usable as a file name")
    return job_id
