"""Image recognition by content and complete decoding."""

from __future__ import annotations

import io
import struct
import zlib

import pytest
from PIL import Image

from vividflow.settings import MB
from vividflow.storage.errors import InputTooLarge, InvalidImage
from vividflow.storage.images import check_image, decode_image, sniff_image_type, validate_image_bytes

FORMATS = {"PNG": "image/png", "JPEG": "image/jpeg", "WEBP": "image/webp"}


def make_image(
    fmt: str = "PNG", size: tuple[int, int] = (24, 16), mode: str = "RGB", **save: object
) -> bytes:
    """A small real image in ``fmt`` (also used by the other storage tests)."""
    buffer = io.BytesIO()
    Image.new(mode, size, (200, 30, 60) if mode == "RGB" else None).save(buffer, fmt, **save)
    return buffer.getvalue()


def png_with_header_size(width: int, height: int) -> bytes:
    """A PNG whose IHDR claims ``width`` x ``height`` (a decompression bomb's header)."""
    data = bytearray(make_image("PNG", (1, 1)))
    ihdr = data.index(b"IHDR")
    data[ihdr + 4 : ihdr + 12] = struct.pack(">II", width, height)
    data[ihdr + 17 : ihdr + 21] = struct.pack(">I", zlib.crc32(bytes(data[ihdr : ihdr + 17])))
    return bytes(data)


@pytest.mark.parametrize(("fmt", "mime"), FORMATS.items())
def test_sniff_recognises_formats_by_magic_bytes(fmt: str, mime: str) -> None:
    assert sniff_image_type(make_image(fmt)) == mime


@pytest.mark.parametrize("data", [b"", b"GIF89a....", b"<html>", b"RIFF\0\0\0\0WAVEfmt ", b"\x89PN"])
def test_sniff_rejects_other_content(data: bytes) -> None:
    assert sniff_image_type(data) is None


@pytest.mark.parametrize("fmt", FORMATS)
def test_decode_returns_rgb_of_the_right_size(fmt: str) -> None:
    image = decode_image(make_image(fmt, (24, 16)))
    assert image.mode == "RGB"
    assert image.size == (24, 16)


def test_decode_converts_alpha_and_palette_images_to_rgb() -> None:
    assert decode_image(make_image("PNG", mode="RGBA")).mode == "RGB"
    assert decode_image(make_image("PNG", mode="P")).mode == "RGB"


def test_decode_applies_exif_orientation() -> None:
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90° clockwise to display
    rotated = decode_image(make_image("JPEG", (40, 20), exif=exif))
    assert rotated.size == (20, 40)


@pytest.mark.parametrize("fmt", FORMATS)
def test_decode_rejects_truncated_images(fmt: str) -> None:
    data = make_image(fmt, (64, 64))
    with pytest.raises(InvalidImage, match="corrupt or truncated"):
        decode_image(data[: len(data) // 2])


def test_decode_rejects_corrupt_data_after_a_valid_header() -> None:
    data = bytearray(make_image("PNG", (64, 64)))
    idat = data.index(b"IDAT")
    data[idat + 8 : idat + 40] = b"\0" * 32
    with pytest.raises(InvalidImage, match="corrupt or truncated"):
        decode_image(bytes(data))


def test_decode_refuses_a_decompression_bomb_from_its_header() -> None:
    with pytest.raises(InvalidImage, match="8000x8000 pixels; the limit is 40 megapixels"):
        decode_image(png_with_header_size(8000, 8000))


def test_decode_refuses_a_bomb_that_pillow_itself_stops() -> None:
    with pytest.raises(InvalidImage, match="too many pixels; the limit is 40 megapixels"):
        decode_image(png_with_header_size(100_000, 100_000))


def test_decode_honours_a_lower_pixel_limit() -> None:
    with pytest.raises(InvalidImage, match="24x16 pixels"):
        decode_image(make_image("PNG", (24, 16)), max_pixels=100)


@pytest.mark.parametrize(("fmt", "mime"), FORMATS.items())
def test_validate_returns_the_mime_type(fmt: str, mime: str) -> None:
    assert validate_image_bytes(make_image(fmt), 1 * MB) == mime


def test_validate_refuses_other_formats_with_a_clear_message() -> None:
    with pytest.raises(InvalidImage) as caught:
        validate_image_bytes(make_image("GIF"), 1 * MB)
    assert caught.value.message == "image must be PNG, JPEG or WebP"


def test_validate_refuses_empty_input() -> None:
    with pytest.raises(InvalidImage, match="empty"):
        validate_image_bytes(b"", 1 * MB)


def test_validate_states_size_and_limit_in_megabytes() -> None:
    data = b"\x89PNG\r\n\x1a\n" + bytes(int(25.3 * MB) - 8)
    with pytest.raises(InputTooLarge) as caught:
        validate_image_bytes(data, 20 * MB)
    assert caught.value.message == "image is 25.3 MB; the limit is 20 MB"


def test_validate_just_over_the_limit_states_bytes() -> None:
    with pytest.raises(InputTooLarge) as caught:
        validate_image_bytes(bytes(20 * MB + 1), 20 * MB)
    assert caught.value.message == f"image is {20 * MB + 1} bytes; the limit is {20 * MB} bytes"


def test_validate_decodes_fully() -> None:
    data = make_image("JPEG", (64, 64))
    with pytest.raises(InvalidImage, match="corrupt or truncated"):
        validate_image_bytes(data[:200], 1 * MB)


@pytest.mark.parametrize(("fmt", "mime"), FORMATS.items())
def test_check_keeps_the_bytes_the_mime_type_and_the_decoded_image(fmt: str, mime: str) -> None:
    data = make_image(fmt, (24, 16), mode="RGBA" if fmt == "PNG" else "RGB")
    checked = check_image(data, 1 * MB)
    assert (checked.data, checked.mime_type) == (data, mime)
    assert (checked.image.mode, checked.image.size) == ("RGB", (24, 16))


def test_check_refuses_what_validate_refuses() -> None:
    with pytest.raises(InvalidImage, match="corrupt or truncated"):
        check_image(make_image("JPEG", (64, 64))[:200], 1 * MB)
    with pytest.raises(InputTooLarge):
        check_image(make_image("PNG"), 10)
