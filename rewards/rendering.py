"""Videos of the clips people label: drawn on the training side, written next to the clip files.

- :class:`ClipRenderer` draws a clip's frames. Clips recorded with render states (MuJoCo: ``qpos,
  qvel`` after each step; classic control: the ``state`` vector; see :class:`envs.RenderStateInfo`)
  are drawn by a second, render-only instance of the env put into each state in turn, off-screen
  (MuJoCo through EGL unless ``MUJOCO_GL`` says otherwise; Atari: the emulator restored to each
  step's state draws its colour screen). Clips of image observations recorded without render states
  are drawn from their frames: the newest frame of each stack, scaled up by an integer factor.
- :class:`QueryPublisher` renders the two videos of each query in a background thread and adds the
  query to the label store only once both exist, so the labeling page never shows a query without
  its videos and people can start on the first queries while the rest of a round is drawn.

Differences from the paper: none in what people see (the paper showed the game's screen); an Atari
frame is the screen one emulator frame (1/60 s) after the step's state, which is how the restored
emulator draws it.
"""

from __future__ import annotations

import os
import queue
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from core.envs import restore_render_state
from core.errors import UsageError
from rewards.clipfiles import ClipFolder
from rewards.clips import Clip
from rewards.store import LabelStore, NewQuery
from rewards.video import write_mp4

ATARI_STEPS_PER_SECOND = 15.0  # the emulator's 60 Hz over a frame skip of 4
MAX_FPS = 60.0


class ClipRenderer:
    """Draws clips of one env.

    :param env_id: the gymnasium id (used for clips with render states)
    :param env_kwargs: keyword arguments of ``gymnasium.make``, as the run's env got them
    :param width: frame width in pixels for MuJoCo (height 3/4 of it); image observations are scaled
        to at least this width
    :param fps: frames per second of the videos (None: the env's real time, at most 60)
    """

    def __init__(
        self,
        env_id: str,
        *,
        env_kwargs: dict[str, Any] | None = None,
        width: int = 320,
        fps: float | None = None,
    ) -> None:
        if width < 16:
            raise UsageError(f"video width must be >= 16 pixels, got {width}")
        if fps is not None and not fps > 0:
            raise UsageError(f"video fps must be > 0, got {fps}")
        self.env_id, self.env_kwargs, self.width = env_id, dict(env_kwargs or {}), width
        self._fps = fps
        self._env: Any = None

    def _render_env(self) -> Any:
        """The render-only env, made on first use (in the thread that renders: GL contexts are per thread)."""
        if self._env is None:
            import gymnasium as gym

            os.environ.setdefault("MUJOCO_GL", "egl")
            if self.is_atari:
                import ale_py

                gym.register_envs(ale_py)
            kwargs = {**self.env_kwargs, "render_mode": "rgb_array"}
            if self.is_atari:  # the drawing frame must be the game's own, never a sticky repeat
                kwargs["repeat_action_probability"] = 0.0
            try:
                env = gym.make(self.env_id, width=self.width, height=self.width * 3 // 4, **kwargs)
            except TypeError:  # classic control draws at its own size
                env = gym.make(self.env_id, **kwargs)
            env.reset(seed=0)
            self._env = env
        return self._env

    @property
    def is_atari(self) -> bool:
        return self.env_id.startswith("ALE/")

    def fps(self, clip: Clip) -> float:
        """Frames per second of ``clip``'s video."""
        if self._fps is not None:
            return self._fps
        if clip.render_states is None or self.is_atari:
            return ATARI_STEPS_PER_SECOND
        env = self._render_env()
        steps_per_second = env.metadata.get("render_fps") or 30
        return float(min(steps_per_second, MAX_FPS))

    def frames(self, clip: Clip) -> list[np.ndarray]:
        """``[H, W, 3]`` uint8 frames, one per step of ``clip``.

        :raises UsageError: for a clip with neither render states nor image observations
        """
        if clip.render_states is not None:
            env = self._render_env()
            drawn = []
            for state in np.asarray(clip.render_states):
                restore_render_state(env, state)
                frame = np.asarray(env.render())
                drawn.append(self._scaled(frame) if 2 * frame.shape[1] <= self.width else frame)
            return drawn
        return [self._scaled(frame) for frame in newest_frames(clip.observations)]

    def _scaled(self, frame: np.ndarray) -> np.ndarray:
        """``frame`` repeated by an integer factor, to at least ``width`` (or the nearest below it for
        a colour screen, which is not scaled past twice the width)."""
        factor = max(1, -(-self.width // frame.shape[1]) if frame.ndim == 2 else self.width // frame.shape[1])
        return np.repeat(np.repeat(frame, factor, axis=0), factor, axis=1)

    def write(self, clip: Clip, path: Path) -> float:
        """Write ``clip`` as an MP4 at ``path``; returns its fps."""
        fps = self.fps(clip)
        write_mp4(self.frames(clip), path, fps=fps)
        return fps

    def close(self) -> None:
        if self._env is not None:
            self._env.close()
            self._env = None


def newest_frames(observations: np.ndarray) -> np.ndarray:
    """The frame each image observation ends with: ``[T, H, W]`` gray or ``[T, H, W, 3]`` RGB.

    Accepts channel-first stacks ``[T, C, H, W]`` (SB3's ``VecTransposeImage``), channel-last
    ``[T, H, W, C]`` and plain ``[T, H, W]``.

    :raises UsageError: for observations that are not images
    """
    obs = np.asarray(observations)
    if obs.ndim == 3:
        return obs
    if obs.ndim != 4:
        raise UsageError(f"cannot draw observations of shape {obs.shape[1:]}: no render states were recorded")
    channel_first = obs.shape[1] <= 4 < obs.shape[-1]
    if channel_first:
        return np.moveaxis(obs[:, -3:], 1, -1) if obs.shape[1] == 3 else obs[:, -1]
    return obs[..., -3:] if obs.shape[-1] == 3 else obs[..., -1]


class QueryPublisher:
    """Renders each query's two clips to ``clips/<hex>.mp4`` in a background thread, then adds it.

    The clips' ``.npz`` files are written by the caller before :meth:`submit`. A failure (say, no
    off-screen GL) stops the thread; :meth:`check` raises it in the training thread.

    :param renderer: draws the clips
    :param store: the label store the queries go to
    :param clips: the run's clip folder
    :param notify: shows a one-line message (failures)
    :param background: draw in a background thread (for people, who can start on the first queries
        while the rest are drawn); False draws in :meth:`publish` and returns the ids (for a
        synchronous labeler, which answers at once)
    """

    def __init__(
        self,
        renderer: ClipRenderer,
        store: LabelStore,
        clips: ClipFolder,
        notify: Callable[[str], None] = print,
        *,
        background: bool = True,
    ) -> None:
        self.renderer, self.store, self.clips, self.notify = renderer, store, clips, notify
        self._queue: queue.Queue[tuple[NewQuery, Clip, Clip] | None] = queue.Queue()
        self._pending = 0
        self._lock = threading.Lock()
        self._error: BaseException | None = None
        self.published = 0
        self._thread: threading.Thread | None = None
        if background:
            self._thread = threading.Thread(target=self._run, name="zoo-clip-videos", daemon=True)
            self._thread.start()

    def publish(self, queries: list[tuple[NewQuery, Clip, Clip]]) -> list[int]:
        """Draw and add ``queries`` (each with its two clips): in the background, returning no ids;
        else here and now, returning their ids in order."""
        if self._thread is None:
            ids = [self._draw_and_add(*item) for item in queries]
            self.published += len(ids)
            return ids
        self.check()
        with self._lock:
            self._pending += len(queries)
        for item in queries:
            self._queue.put(item)
        return []

    def _draw_and_add(self, query: NewQuery, left: Clip, right: Clip) -> int:
        fps = 0.0
        for reference, clip in ((query.left_clip, left), (query.right_clip, right)):
            fps = self.renderer.write(clip, self.clips.video_path(reference))
        metadata = {**(query.metadata or {}), "fps": fps, "video": "mp4"}
        return self.store.add_queries([_with_metadata(query, metadata)])[0]

    def queued(self) -> int:
        """Queries submitted but not yet in the store."""
        with self._lock:
            return self._pending

    def check(self) -> None:
        """Raise the background thread's failure, if any, as a one-line error."""
        if self._error is not None:
            error = self._error
            raise UsageError(f"cannot render clip videos: {type(error).__name__}: {error}")

    def _run(self) -> None:
        while (item := self._queue.get()) is not None:
            try:
                self._draw_and_add(*item)
            except BaseException as error:  # reported to the training thread by check()
                self._error = error
                self.notify(f"clip videos stopped: {type(error).__name__}: {error}")
                break
            finally:
                with self._lock:
                    self._pending -= 1
            self.published += 1
        self.renderer.close()

    def close(self, timeout: float | None = None) -> None:
        """Stop after the queued queries are drawn and added (or after ``timeout`` seconds)."""
        if self._thread is None:
            self.renderer.close()
            return
        self._queue.put(None)
        self._thread.join(timeout)


def _with_metadata(query: NewQuery, metadata: dict[str, Any]) -> NewQuery:
    fields = {name: getattr(query, name) for name in NewQuery.__dataclass_fields__}
    return NewQuery(**(fields | {"metadata": metadata}))
