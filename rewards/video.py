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
from typing import Any

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


class Mp4Writer:
    """An H.264 MP4 written frame by frame (nothing is held in memory); the file appears complete
    or not at all: frames go to a temporary name, renamed by :meth:`close`.

    :param path: the ``.mp4`` file to write (replaced if it exists)
    :param fps: frames per second of playback
    :raises UsageError: for a bad fps; :meth:`add` for frames of different sizes; :meth:`close` for
        no frames
    """

    def __init__(self, path: str | os.PathLike[str], fps: float = 30.0) -> None:
        if not fps > 0:
            raise UsageError(f"fps must be > 0, got {fps}")
        self.target = Path(path)
        self.fps = fps
        self.count = 0
        self._partial = self.target.with_name(self.target.stem + ".partial.mp4")
        self._writer: Any = None
        self._size: tuple[int, int] | None = None

    def add(self, frame: np.ndarray) -> None:
        import imageio_ffmpeg

        rgb = np.ascontiguousarray(as_rgb(frame))
        size = (rgb.shape[1], rgb.shape[0])
        if self._size is None:
            self._size = size
            self._writer = imageio_ffmpeg.write_frames(
                str(self._partial), size, fps=self.fps, codec="libx264", pix_fmt_out="yuv420p",
                macro_block_size=2, ffmpeg_log_level="error",
                output_params=["-movflags", "+faststart", "-preset", "veryfast", "-crf", "23"],
            )  # fmt: skip
            self._writer.send(None)  # start the generator
        elif size != self._size:
            first = f"{self._size[0]}x{self._size[1]}"
            raise UsageError(f"frame {self.count} is {size[0]}x{size[1]}, the first was {first}")
        self._writer.send(rgb)
        self.count += 1

    def close(self) -> int:
        """Finish the file and put it in place; returns the frame count."""
        if self._writer is None:
            raise UsageError(f"{self.target}: no frames to write")
        self._writer.close()
        self._writer = None
        os.replace(self._partial, self.target)
        return self.count

    def abort(self) -> None:
        """Drop a file being written (after an error): nothing appears at ``path``."""
        if self._writer is not None:
            self._writer.close()
            self._writer = None
        self._partial.unlink(missing_ok=True)


def write_mp4(frames: Iterable[np.ndarray], path: str | os.PathLike[str], fps: float = 30.0) -> int:
    """Write ``frames`` (RGB ``[H, W, 3]`` uint8, or gray) as an H.264 MP4; returns the frame count.

    The file appears complete or not at all (see :class:`Mp4Writer`).

    :raises UsageError: for no frames, frames of different sizes, or a bad fps
    """
    writer = Mp4Writer(path, fps)
    try:
        for frame in frames:
            writer.add(frame)
        return writer.close()
    finally:
        writer.abort()


def count_frames(path: str | os.PathLike[str]) -> int:
    """The number of frames ffmpeg decodes from ``path`` (for tests and checks)."""
    import imageio_ffmpeg

    frames, _seconds = imageio_ffmpeg.count_frames_and_secs(str(path))
    return int(frames)
