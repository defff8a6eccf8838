"""Clips on disk: one compressed ``.npz`` per clip in the run's ``clips/`` folder, named by reference.

The label store's queries hold clip REFERENCES, never arrays: a reference is the clip's path relative
to the run folder, ``clips/<32 hex digits>.npz``. Training writes the files before it adds the query
(so every stored query's clips exist), the labeling app renders them, and ``zoo reward fit`` reloads
them to retrain from stored labels. A file holds ``observations``, ``actions``, ``episode_id``,
``start``, ``padded`` (rows of the absorbing state after a termination) and, when known,
``true_rewards`` and ``render_states``; for people to watch, ``clips/<hex>.mp4`` may sit next to it
(:mod:`rewards.rendering`). It is written to a temporary name and renamed, so a
reader never sees half a clip.

References are checked before any file is touched: anything but ``clips/<hex>.npz`` (an absolute
path, ``..``, another folder) is refused, so a reference read from a database cannot reach outside
the clip folder.
"""

from __future__ import annotations

import os
import re
import uuid
import zipfile
from pathlib import Path

import numpy as np

from core.errors import UsageError
from rewards.clips import Clip

CLIP_FOLDER = "clips"
_REFERENCE = re.compile(r"clips/([0-9a-f]{32})\.npz")


class ClipFileError(UsageError):
    """A clip reference that is malformed, or whose file is missing or unreadable."""


class ClipFolder:
    """Reads and writes clips under ``run_dir/clips``.

    :param run_dir: the run folder (``clips/`` is created on the first write)
    """

    def __init__(self, run_dir: str | os.PathLike[str]) -> None:
        self.run_dir = Path(run_dir)
        self.folder = self.run_dir / CLIP_FOLDER

    def path(self, reference: str) -> Path:
        """The file of ``reference``; a :class:`ClipFileError` unless it is ``clips/<hex>.npz``."""
        if not isinstance(reference, str) or _REFERENCE.fullmatch(reference) is None:
            raise ClipFileError(f"not a clip reference: {reference!r} (expected clips/<32 hex digits>.npz)")
        return self.folder / Path(reference).name

    def video_path(self, reference: str) -> Path:
        """The MP4 of ``reference`` (``clips/<hex>.mp4``, next to its ``.npz``), whether or not it exists."""
        return self.path(reference).with_suffix(".mp4")

    def save(self, clip: Clip) -> str:
        """Write ``clip`` and return its new reference."""
        self.folder.mkdir(parents=True, exist_ok=True)
        reference = f"{CLIP_FOLDER}/{uuid.uuid4().hex}.npz"
        target = self.path(reference)
        arrays: dict[str, np.ndarray] = {
            "observations": np.asarray(clip.observations),
            "actions": np.asarray(clip.actions),
            "episode_id": np.asarray(clip.episode_id, dtype=np.int64),
            "start": np.asarray(clip.start, dtype=np.int64),
            "padded": np.asarray(clip.padded, dtype=np.int64),
        }
        if clip.true_rewards is not None:
            arrays["true_rewards"] = np.asarray(clip.true_rewards, dtype=np.float32)
        if clip.render_states is not None:
            arrays["render_states"] = np.asarray(clip.render_states)
        partial = target.with_name(target.stem + ".partial.npz")
        np.savez_compressed(partial, **arrays)  # type: ignore[arg-type]
        os.replace(partial, target)
        return reference

    def load(self, reference: str) -> Clip:
        """The clip of ``reference``; a one-line :class:`ClipFileError` if it is missing or corrupt."""
        path = self.path(reference)
        try:
            with np.load(path, allow_pickle=False) as data:
                rewards = np.array(data["true_rewards"]) if "true_rewards" in data.files else None
                states = np.array(data["render_states"]) if "render_states" in data.files else None
                return Clip(
                    np.array(data["observations"]),
                    np.array(data["actions"]),
                    rewards,
                    int(data["episode_id"]),
                    int(data["start"]),
                    int(data["padded"]) if "padded" in data.files else 0,
                    states,
                )
        except FileNotFoundError:
            raise ClipFileError(f"{path}: clip file is missing") from None
        except (OSError, ValueError, KeyError, zipfile.BadZipFile, EOFError) as error:
            raise ClipFileError(f"{path}: cannot read the clip ({type(error).__name__}: {error})") from None
