"""MP4 files of clips for people to watch: H.264 (yuv420p, ``+faststart``) through imageio-ffmpeg's
bundled ffmpeg, which every Chromium-based browser plays.

This module imports neither torch nor a renderer: it writes frames it is given. Where the frames
come from (MuJoCo off-screen rendering of recorded physics states, Atari screens) is
:mod:`rewards.rendering`'s business.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path

import numpy as np

from core.errors import UsageError


def _even(frame: np.ndarray) -> np.ndarray:
    """H.264 in yuv420p needs even width and height: drop a trailing row or column if odd."""
    height, width = frame.shape[:2]
    return frame[: height - height % 2, : width - width % 2]


def as_rgb(frame: np.ndarray) -> np.ndarray:
    """``[H, W, 3]`` uint8 from an RGB frame, or from a gray ``[H, W]`` / ``[H, W, 1]`` one."""
    frame = np.asarray(frame)
    if frame.ndim == 3 and frame.shape[-1] == 1:
        frame = frame[..., 0]
    if frame.ndim == 2:
        frame = np.repeat(frame[..., None], 3, axis=-1)
    if frame.ndim != 3 or frame.shape[-1] != 3:
        raise UsageError(f"a video frame must be [H, W, 3] RGB or [H, W] gray, got shape {frame.shape}")
    if frame.dtype != np.uint8:
        frame = np.clip(frame, 0, 255).astype(np.uint8)
    return _even(frame)


def write_mp4(frames: Iterable[np.ndarray], path: str | os.PathLike[str], fps: float = 30.0) -> int:
    """Write ``frames`` (RGB ``[H, W, 3]`` uint8, or gray) as an H.264 MP4; returns the frame count.

    The file appears complete or not at all: it is written to a temporary name and renamed.

    :param frames: the frames, all of one size
    :param path: the ``.mp4`` file to write (replaced if it exists)
    :param fps: frames per second of playback
    :raises UsageError: for no frames, frames of different sizes, or a bad fps
    """
    import imageio_ffmpeg

    if not fps > 0:
        raise UsageError(f"fps must be > 0, got {fps}")
    target = Path(path)
    partial = target.with_name(target.stem + ".partial.mp4")
    writer = None
    count, size = 0, None
    try:
        for frame in frames:
            rgb = np.ascontiguousarray(as_rgb(frame))
            if size is None:
                size = (rgb.shape[1], rgb.shape[0])
                writer = imageio_ffmpeg.write_frames(
                    str(partial), size, fps=fps, codec="libx264", pix_fmt_out="yuv420p", macro_block_size=2,
                    output_params=["-movflags", "+faststart", "-preset", "veryfast", "-crf", "23"],
                    ffmpeg_log_level="error",
                )  # fmt: skip
                writer.send(None)  # start the generator
            elif (rgb.shape[1], rgb.shape[0]) != size:
                shape = f"{rgb.shape[1]}x{rgb.shape[0]}"
                raise UsageError(f"frame {count} is {shape}, the first was {size[0]}x{size[1]}")
            assert writer is not None
            writer.send(rgb)
            count += 1
        if writer is None:
            raise UsageError(f"{target}: no frames to write")
        writer.close()
        writer = None
        os.replace(partial, target)
    finally:
        if writer is not None:
            writer.close()
        partial.unlink(missing_ok=True)
    return count


def count_frames(path: str | os.PathLike[str]) -> int:
    """The number of frames ffmpeg decodes from ``path`` (for tests and checks)."""
    import imageio_ffmpeg

    frames, _seconds = imageio_ffmpeg.count_frames_and_secs(str(path))
    return int(frames)
