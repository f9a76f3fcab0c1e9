"""Recognising and decoding input images: PNG, JPEG and WebP only, judged by content, never by name."""

from __future__ import annotations

import io
import warnings
from dataclasses import dataclass

from PIL import Image, ImageOps

from vividflow.storage.errors import InputTooLarge, InvalidImage

ACCEPTED_MESSAGE = "image must be PNG, JPEG or WebP"

_PIL_FORMATS = {"image/png": "PNG", "image/jpeg": "JPEG", "image/webp": "WEBP"}
EXTENSIONS = {"image/png": "png", "image/jpeg": "jpg", "image/webp": "webp"}
_MAX_PIXELS = 40_000_000


def sniff_image_type(data: bytes) -> str | None:
    """The MIME type of ``data`` by its magic bytes, or ``None`` if it is not PNG, JPEG or WebP."""
    if data.startswith(b"\x89PNG\r\n\x1a\n"):
        return "image/png"
    if data.startswith(b"\xff\xd8\xff"):
        return "image/jpeg"
    if len(data) >= 12 and data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "image/webp"
    return None


def decode_image(data: bytes, max_pixels: int = _MAX_PIXELS) -> Image.Image:
    """Decode ``data`` completely into an upright RGB image.

    Decoding every pixel (not just the header) is what catches truncated and corrupt files; the pixel
    limit is checked from the header first, so a decompression bomb is refused before it is expanded.
    """
    mime = sniff_image_type(data)
    if mime is None:
        raise InvalidImage(ACCEPTED_MESSAGE)
    return _decode(data, mime, max_pixels)


def _decode(data: bytes, mime: str, max_pixels: int) -> Image.Image:
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(data), formats=[_PIL_FORMATS[mime]]) as image:
                width, height = image.size
                if width * height > max_pixels:
                    raise InvalidImage(
                        f"image is {width}x{height} pixels; the limit is {max_pixels / 1e6:g} megapixels"
                    )
                image.load()
                ImageOps.exif_transpose(image, in_place=True)
                return image.convert("RGB")
    except InvalidImage:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        message = f"image has too many pixels; the limit is {max_pixels / 1e6:g} megapixels"
        raise InvalidImage(message) from exc
    except (OSError, SyntaxError, ValueError, EOFError) as exc:
        # Pillow reports truncated and corrupt data as OSError, SyntaxError (bad PNG chunks) or ValueError.
        raise InvalidImage(f"image is corrupt or truncated ({mime.removeprefix('image/').upper()})") from exc


@dataclass(frozen=True)
class CheckedImage:
    """An input image that decoded completely: its bytes, MIME type and upright RGB pixels."""

    data: bytes
    mime_type: str
    image: Image.Image


def check_image(data: bytes, max_bytes: int) -> CheckedImage:
    """Check that ``data`` is a complete PNG, JPEG or WebP image within ``max_bytes``, decoding it
    once; keep the decoded image for whoever needs the pixels."""
    if len(data) > max_bytes:
        raise InputTooLarge.of(max_bytes, len(data))
    if not data:
        raise InvalidImage(f"image is empty; {ACCEPTED_MESSAGE}")
    mime = sniff_image_type(data)
    if mime is None:
        raise InvalidImage(ACCEPTED_MESSAGE)
    return CheckedImage(data, mime, _decode(data, mime, _MAX_PIXELS))


def validate_image_bytes(data: bytes, max_bytes: int) -> str:
    """Check that ``data`` is a complete PNG, JPEG or WebP image within ``max_bytes``; its MIME type."""
    return check_image(data, max_bytes).mime_type
