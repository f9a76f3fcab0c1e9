"""Reading inputs and writing outputs: local files, Google Cloud Storage and https image URLs."""

from vividflow.storage.errors import (
    FetchRefused,
    InputNotFound,
    InputTooLarge,
    InputUnreachable,
    InvalidImage,
    StorageAccessDenied,
    StorageError,
)
from vividflow.storage.fetch import FetchedImage, fetch_image_url, fetch_image_url_async
from vividflow.storage.gcs import GcsLocation, parse_gcs_url
from vividflow.storage.images import decode_image, sniff_image_type, validate_image_bytes
from vividflow.storage.locations import (
    output_uri_for,
    read_input,
    result_url_for,
    store_input,
    write_output,
)

__all__ = [
    "FetchRefused",
    "FetchedImage",
    "GcsLocation",
    "InputNotFound",
    "InputTooLarge",
    "InputUnreachable",
    "InvalidImage",
    "StorageAccessDenied",
    "StorageError",
    "decode_image",
    "fetch_image_url",
    "fetch_image_url_async",
    "output_uri_for",
    "parse_gcs_url",
    "read_input",
    "result_url_for",
    "sniff_image_type",
    "store_input",
    "validate_image_bytes",
    "write_output",
]
