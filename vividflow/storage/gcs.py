"""Google Cloud Storage: parsing object URLs, bounded downloads, uploads and result URLs.

``STORAGE_EMULATOR_HOST`` (read by google-cloud-storage itself) points every client at an emulator;
the client then runs with anonymous credentials, as the emulator needs no others.
"""

from __future__ import annotations

import contextlib
import os
import re
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import timedelta
from functools import lru_cache
from pathlib import Path
from urllib.parse import quote, unquote, urlsplit

import google.auth.exceptions
import requests
from google.api_core import exceptions as api_exceptions
from google.auth.credentials import AnonymousCredentials, Credentials, Signing
from google.cloud import storage
from google.oauth2 import service_account

from vividflow.settings import Settings
from vividflow.storage.errors import (
    InputNotFound,
    InputTooLarge,
    InputUnreachable,
    StorageAccessDenied,
    StorageError,
)

PUBLIC_ENDPOINT = "https://storage.googleapis.com"
MAX_SIGNED_URL_SECONDS = 7 * 24 * 3600  # the V4 signing limit
DEFAULT_TIMEOUT = 60.0
EMULATOR_PROJECT = "vividflow-emulator"

_PATH_STYLE_HOSTS = {"storage.googleapis.com", "storage.cloud.google.com"}
_VIRTUAL_HOST_SUFFIX = ".storage.googleapis.com"
_BUCKET_NAME = re.compile(r"[a-z0-9][a-z0-9._-]{1,220}[a-z0-9]")


@dataclass(frozen=True)
class GcsLocation:
    """One object: ``bucket`` and the object ``name`` (unquoted)."""

    bucket: str
    name: str

    @property
    def uri(self) -> str:
        return f"gs://{self.bucket}/{self.name}"

    @property
    def public_url(self) -> str:
        return f"{PUBLIC_ENDPOINT}/{self.bucket}/{quote(self.name, safe='/~')}"


def parse_gcs_url(url: str) -> GcsLocation | None:
    """The object named by ``gs://bucket/obj`` or ``https://storage.googleapis.com/bucket/obj``.

    ``None`` for any other URL, and for https URLs with a query string: those are signed URLs
    that must be fetched as they are, not re-read with our own credentials.
    """
    try:
        parts = urlsplit(url)
    except ValueError:
        return None
    scheme, host = parts.scheme.lower(), parts.netloc.lower()
    if scheme == "gs":  # gs:// names are raw: "?" and "#" are part of the name
        bucket, _, name = url.split("://", 1)[1].partition("/")
    elif scheme == "https" and not parts.query:
        if host in _PATH_STYLE_HOSTS:
            bucket, _, quoted = parts.path.lstrip("/").partition("/")
        elif host.endswith(_VIRTUAL_HOST_SUFFIX):
            bucket, quoted = host.removesuffix(_VIRTUAL_HOST_SUFFIX), parts.path.lstrip("/")
        else:
            return None
        name = unquote(quoted)
    else:
        return None
    if not name or not _BUCKET_NAME.fullmatch(bucket):
        return None
    return GcsLocation(bucket, name)


def storage_client() -> storage.Client:
    """A client shared by the process (one per ``STORAGE_EMULATOR_HOST`` value, so tests may switch)."""
    return _client(os.environ.get("STORAGE_EMULATOR_HOST") or None)


@lru_cache(maxsize=4)
def _client(emulator_host: str | None) -> storage.Client:
    if emulator_host:
        anonymous = AnonymousCredentials()  # type: ignore[no-untyped-call]
        return storage.Client(project=EMULATOR_PROJECT, credentials=anonymous)
    return storage.Client()  # application default credentials


def clear_client_cache() -> None:
    _client.cache_clear()


@contextmanager
def _translated(loc: GcsLocation, verb: str) -> Iterator[None]:
    """Turn client and transport exceptions into :class:`StorageError` with user-safe messages."""
    try:
        yield
    except (StorageError, FileNotFoundError, IsADirectoryError):
        raise  # ours, or a local file the caller got wrong
    except api_exceptions.NotFound as exc:
        missing = loc.uri if verb == "read" else f"the bucket {loc.bucket}"
        raise InputNotFound(f"{missing} does not exist") from exc
    except (api_exceptions.Forbidden, api_exceptions.Unauthorized) as exc:
        raise StorageAccessDenied(f"no permission to {verb} {loc.uri}") from exc
    except google.auth.exceptions.GoogleAuthError as exc:
        message = f"cannot {verb} {loc.uri}: Google Cloud credentials are missing or invalid"
        raise StorageAccessDenied(message) from exc
    except api_exceptions.GoogleAPICallError as exc:
        raise InputUnreachable(f"could not {verb} {loc.uri}: Cloud Storage answered HTTP {exc.code}") from exc
    except (api_exceptions.GoogleAPIError, requests.RequestException, OSError) as exc:
        raise InputUnreachable(f"could not {verb} {loc.uri}: Cloud Storage did not answer") from exc


def download_bytes(loc: GcsLocation, max_bytes: int, timeout: float = DEFAULT_TIMEOUT) -> bytes:
    """The object's content, refused before download when its metadata says it is over ``max_bytes``."""
    with _translated(loc, "read"):
        bucket = storage_client().bucket(loc.bucket)
        meta = bucket.get_blob(loc.name, timeout=timeout)
        if meta is None:
            raise InputNotFound(f"{loc.uri} does not exist")
        if meta.size is not None and meta.size > max_bytes:
            raise InputTooLarge.of(max_bytes, meta.size)
        # A fresh Blob builds its own media URL (the emulator's mediaLink is not quoted); the
        # generation precondition pins the read to the object whose size was just checked.
        data: bytes = bucket.blob(loc.name).download_as_bytes(
            if_generation_match=meta.generation, timeout=timeout
        )
    if len(data) > max_bytes:
        raise InputTooLarge.of(max_bytes, len(data))
    return data


def object_size(loc: GcsLocation, timeout: float = DEFAULT_TIMEOUT) -> int | None:
    """The object's size in bytes, or None if there is no such object."""
    with _translated(loc, "read"):
        meta = storage_client().bucket(loc.bucket).get_blob(loc.name, timeout=timeout)
    return None if meta is None else int(meta.size or 0)


def delete(loc: GcsLocation, timeout: float = DEFAULT_TIMEOUT) -> None:
    """Remove the object (gone already is fine)."""
    with _translated(loc, "write"), contextlib.suppress(api_exceptions.NotFound):
        storage_client().bucket(loc.bucket).blob(loc.name).delete(timeout=timeout)


def upload_file(path: Path, loc: GcsLocation, content_type: str, timeout: float = DEFAULT_TIMEOUT) -> None:
    with _translated(loc, "write"):
        blob = storage_client().bucket(loc.bucket).blob(loc.name)
        blob.upload_from_filename(str(path), content_type=content_type, timeout=timeout)


def upload_bytes(data: bytes, loc: GcsLocation, content_type: str, timeout: float = DEFAULT_TIMEOUT) -> None:
    with _translated(loc, "write"):
        blob = storage_client().bucket(loc.bucket).blob(loc.name)
        blob.upload_from_string(data, content_type=content_type, timeout=timeout)


def result_url(loc: GcsLocation, settings: Settings) -> str:
    """The URL a client downloads the result from: public, or V4-signed when ``gcs_signed_urls``."""
    if not settings.gcs_signed_urls:
        return loc.public_url
    credentials = _signing_credentials(settings)
    expiry = min(settings.gcs_signed_url_expiry_seconds, MAX_SIGNED_URL_SECONDS)
    client = storage_client()
    blob = client.bucket(loc.bucket).blob(loc.name)
    url: str = blob.generate_signed_url(
        version="v4",
        expiration=timedelta(seconds=expiry),
        method="GET",
        api_access_endpoint=PUBLIC_ENDPOINT,
        credentials=credentials,
        client=client,
    )
    return url


def _signing_credentials(settings: Settings) -> Credentials:
    """Credentials holding a private key: the configured key file, else the client's own."""
    if settings.gcs_signing_key_file is not None:
        try:
            key: Credentials = service_account.Credentials.from_service_account_file(  # type: ignore[no-untyped-call]
                str(settings.gcs_signing_key_file)
            )
        except (OSError, ValueError) as exc:
            message = "cannot sign result URLs: the signing key file is not a service-account key"
            raise StorageError(message) from exc
        return key
    try:
        credentials: Credentials = storage_client()._credentials
    except (google.auth.exceptions.GoogleAuthError, OSError) as exc:
        raise StorageError("cannot sign result URLs: Google Cloud credentials are missing") from exc
    if not isinstance(credentials, Signing):
        raise StorageError(
            "cannot sign result URLs: signing needs service-account credentials with a private key "
            "(set VIVID_GCS_SIGNING_KEY_FILE or turn off VIVID_GCS_SIGNED_URLS)"
        )
    return credentials
