"""Writing frames to MP4 and proving that a file is a playable MP4 (for every model's result).

Both use the ffmpeg binary bundled in the ``imageio-ffmpeg`` wheel, the backend of diffusers'
``export_to_video``. There is no ffprobe: the probe decodes every frame with ffmpeg (its exit status
says whether the video decodes, its ``-progress`` report how many frames it has) and takes size, fps
and duration from the header that ``imageio_ffmpeg.read_frames`` parses.
"""

from __future__ import annotations

import os
import struct
import subprocess
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeAlias

from PIL import Image

if TYPE_CHECKING:  # numpy is needed to write videos, not to probe them
    import numpy as np
    from numpy.typing import NDArray

    Frame: TypeAlias = NDArray[Any] | Image.Image
    """An RGB frame: PIL image, uint8 array (H, W, 3) or float array (H, W, 3) in [0, 1]."""

_CONTAINER_BOXES = frozenset({b"ftyp", b"moov", b"mdat"})
_PROBE_TIMEOUT_SECONDS = 300


@dataclass(frozen=True)
class VideoInfo:
    frames: int
    width: int
    height: int
    fps: float
    duration: float
    """Seconds, as the container states it."""


def export_mp4(frames: Iterable[Frame], path: Path, fps: int, quality: float = 5.0) -> None:
    """Encode RGB frames as H.264 MP4 (yuv420p, ``faststart`` for streaming) at ``path``.

    The file appears atomically: it is written beside ``path`` and renamed when complete, so a
    failure or cancellation never leaves a partial video where a result is expected.
    """
    import imageio_ffmpeg
    import numpy as np

    arrays = [_to_uint8(frame) for frame in frames]
    if not arrays:
        raise ValueError("cannot write a video without frames")
    height, width = arrays[0].shape[:2]
    if any(array.shape != arrays[0].shape for array in arrays):
        raise ValueError("all frames must have the same size")

    partial = path.with_name(f".{path.stem}.partial{path.suffix or '.mp4'}")
    writer = imageio_ffmpeg.write_frames(
        str(partial),
        (width, height),
        fps=fps,
        quality=quality,
        macro_block_size=16,
        ffmpeg_log_level="error",
        output_params=["-f", "mp4", "-movflags", "+faststart"],
    )
    try:
        writer.send(None)
        for array in arrays:
            writer.send(np.ascontiguousarray(array).tobytes())
        writer.close()
        os.replace(partial, path)
    finally:
        writer.close()
        partial.unlink(missing_ok=True)


def _to_uint8(frame: Frame) -> NDArray[np.uint8]:
    import numpy as np

    if isinstance(frame, Image.Image):
        return np.asarray(frame.convert("RGB"), dtype=np.uint8)
    array = np.asarray(frame)
    if array.ndim != 3 or array.shape[2] != 3:
        raise ValueError(f"expected RGB frames of shape (H, W, 3), got {array.shape}")
    if array.dtype == np.uint8:
        return array.astype(np.uint8, copy=False)
    if np.issubdtype(array.dtype, np.floating):
        scaled: NDArray[np.floating[Any]] = np.clip(array, 0.0, 1.0) * 255.0
        return scaled.round().astype(np.uint8)
    raise ValueError(f"expected uint8 or float frames, got {array.dtype}")


def probe_mp4(path: Path) -> VideoInfo:
    """Check that ``path`` is a complete MP4 whose video decodes.

    Raises ValueError with the reason only (e.g. ``truncated: box 'mdat' at byte 890 runs past the
    end of the file``); callers add which file it was.
    """
    if not path.is_file():
        raise ValueError("the file does not exist")
    _check_boxes(path)
    info = _decode(path)
    if info.frames == 0:
        raise ValueError("no decodable video frames")
    return info


def _check_boxes(path: Path) -> None:
    """Walk the top-level ISO-BMFF boxes: ``ftyp`` first, ``moov`` and ``mdat`` present, and the
    box sizes adding up to the file size (a truncated download or upload fails here)."""
    size = path.stat().st_size
    if size == 0:
        raise ValueError("the file is empty")
    seen: list[bytes] = []
    with path.open("rb") as file:
        if file.read(8)[4:] != b"ftyp":
            raise ValueError("not an MP4 file (no ftyp box at the start)")
        file.seek(0)
        offset = 0
        while offset < size:
            header = file.read(8)
            if len(header) < 8:
                raise ValueError(f"truncated: incomplete box header at byte {offset}")
            box_size, box_type = struct.unpack(">I4s", header)
            if box_size == 1:
                extended = file.read(8)
                if len(extended) < 8:
                    raise ValueError(f"truncated: incomplete box header at byte {offset}")
                (box_size,) = struct.unpack(">Q", extended)
            elif box_size == 0:
                box_size = size - offset
            name = box_type.decode("latin-1")
            if box_size < 8:
                raise ValueError(f"corrupt: box {name!r} at byte {offset} has an invalid size")
            if offset + box_size > size:
                raise ValueError(f"truncated: box {name!r} at byte {offset} runs past the end of the file")
            seen.append(box_type)
            offset += box_size
            file.seek(offset)
    missing = sorted(box.decode() for box in _CONTAINER_BOXES - set(seen))
    if missing:
        raise ValueError(f"no {', '.join(missing)} box")


def _decode(path: Path) -> VideoInfo:
    """Count the frames by decoding them, then read the video's header."""
    frames = _count_frames(path)
    header = _header(path)
    width, height = header["source_size"]
    return VideoInfo(
        frames=frames,
        width=int(width),
        height=int(height),
        fps=float(header["fps"]),
        duration=float(header["duration"]),
    )


def _count_frames(path: Path) -> int:
    """Decode every frame of the first video stream with ffmpeg to a null sink, exiting on the first
    decoding error: ``imageio_ffmpeg.read_frames`` cannot stand in here, as it ends quietly, short
    of frames, when ffmpeg stops at a corrupt one."""
    import imageio_ffmpeg

    command = [
        imageio_ffmpeg.get_ffmpeg_exe(), "-hide_banner", "-nostdin", "-nostats",
        "-err_detect", "explode", "-i", str(path),
        "-map", "0:v:0", "-f", "null", "-xerror", "-progress", "pipe:1", "-",
    ]  # fmt: skip
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=_PROBE_TIMEOUT_SECONDS)
    except subprocess.TimeoutExpired:
        raise ValueError(f"decoding took longer than {_PROBE_TIMEOUT_SECONDS} s") from None
    if done.returncode != 0:
        raise ValueError(f"ffmpeg cannot decode its video ({_first_error(done.stderr)})")
    frames = _last_progress(done.stdout, "frame")
    if frames is None or not frames.isdigit():
        raise ValueError("no video stream")
    return int(frames)


def _last_progress(report: str, key: str) -> str | None:
    """The last value of ``key`` in an ffmpeg ``-progress`` report (blocks of ``key=value`` lines)."""
    value = None
    for line in report.splitlines():
        name, equals, text = line.partition("=")
        if equals and name == key:
            value = text.strip()
    return value


def _header(path: Path) -> dict[str, Any]:
    """imageio-ffmpeg's reading of the header (``source_size``, ``fps``, ``duration``, …); the reader
    stops before the first frame."""
    import imageio_ffmpeg

    reader = imageio_ffmpeg.read_frames(str(path))
    try:
        header: dict[str, Any] = next(reader)
    except (OSError, LookupError, AttributeError, ValueError) as error:
        raise ValueError(f"unreadable video header ({type(error).__name__})") from None
    finally:
        reader.close()
    return header


def _first_error(stderr: str) -> str:
    """ffmpeg's first decoder or demuxer complaint (``[h264 @ 0x…] Invalid NAL unit size``)."""
    lines = [line.strip() for line in stderr.splitlines() if line.strip()]
    for line in lines:
        if line.startswith("[") and "] " in line:
            return line.split("] ", 1)[1]
    return lines[-1] if lines else "no output"
