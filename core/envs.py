"""Env families: how an env id becomes a training VecEnv, an evaluation env, and what it observes.

An env family (classic control, Atari, MuJoCo, a third party's) is an :class:`EnvFamily` instance
registered under the ``zoo.envs`` entry-point group. The application finds the family that owns an
env id, validates the family's options with its pydantic model, then asks it for environments.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any, Literal

import gymnasium as gym
import numpy as np
from pydantic import BaseModel, ConfigDict
from stable_baselines3.common.vec_env import DummyVecEnv, VecEnv, VecMonitor

from core.errors import UsageError, did_you_mean
from core.registry import Registry

ObservationKind = Literal["image", "vector"]


class EnvOptions(BaseModel):
    """Options every family accepts; families subclass this with their own fields.

    :param env_kwargs: extra keyword arguments passed to ``gymnasium.make``
    """

    model_config = ConfigDict(extra="forbid")

    env_kwargs: dict[str, Any] = {}


class EnvFamily(ABC):
    """A group of env ids built the same way.

    Subclasses set ``name``, ``observation_kind`` and ``Options`` and implement
    :meth:`env_ids` and :meth:`make_env`. :meth:`make_vec_env` defaults to a monitored DummyVecEnv of
    :meth:`make_env`; a family overrides it where a faster native vector env exists.
    """

    name: str
    observation_kind: ObservationKind
    Options: type[EnvOptions] = EnvOptions
    summary: str = ""

    @abstractmethod
    def env_ids(self) -> list[str]:
        """The env ids this family exposes (each passes gymnasium's env checker)."""

    def owns(self, env_id: str) -> bool:
        """Whether ``env_id`` belongs to this family."""
        return env_id in self.env_ids()

    @abstractmethod
    def make_env(
        self,
        env_id: str,
        *,
        options: EnvOptions,
        training: bool,
        seed: int | None = None,
        render_mode: str | None = None,
    ) -> gym.Env:
        """One environment. ``training=True`` applies training-only changes (Atari: life loss as
        episode end, reward clipping); ``training=False`` is the evaluation protocol (full games,
        raw scores). Observations are what the agent sees (Atari: stacked 84x84 frames)."""

    def make_vec_env(
        self,
        env_id: str,
        *,
        options: EnvOptions,
        n_envs: int,
        seed: int,
        training: bool,
        render_mode: str | None = None,
    ) -> VecEnv:
        """``n_envs`` environments seeded ``seed, seed+1, ...`` as an SB3 VecEnv whose
        ``info["episode"]`` carries the true (unclipped, whole-game) episode return and length.
        ``render_mode="rgb_array"`` makes ``get_images()`` draw the sub-envs (evaluation videos)."""

        def factory(rank: int) -> Any:
            return lambda: self.make_env(
                env_id, options=options, training=training, seed=seed + rank, render_mode=render_mode
            )

        vec_env = DummyVecEnv([factory(rank) for rank in range(n_envs)])
        vec_env.seed(seed)
        return VecMonitor(vec_env)


ENV_FAMILIES: Registry[EnvFamily] = Registry("zoo.envs", "env family")


def family_for(env_id: str) -> EnvFamily:
    """The family that owns ``env_id``; unknown ids raise :class:`UsageError` with a suggestion."""
    all_ids: list[str] = []
    for _, family in ENV_FAMILIES.items():
        if family.owns(env_id):
            return family
        all_ids.extend(family.env_ids())
    raise UsageError(f"unknown env id '{env_id}'{did_you_mean(env_id, all_ids)}; `zoo list` shows them")


ALE_STATE_BYTES = 16_384
"""Size of an Atari render state: a 4-byte length, then ale-py's serialized ``ALEState`` (~7.8 KB)."""


def render_state(env: gym.Env) -> np.ndarray:
    """What it takes to draw ``env`` as it is now: MuJoCo's ``concat(qpos, qvel)``, classic control's
    ``state`` vector, the Atari emulator's serialized state (uint8, :data:`ALE_STATE_BYTES`); a
    :class:`UsageError` for an env that has none of them."""
    base = env.unwrapped
    ale = getattr(base, "ale", None)
    if ale is not None:
        serialized = ale.cloneState().serialize()
        if len(serialized) + 4 > ALE_STATE_BYTES:
            raise UsageError(f"an ALE state of {len(serialized)} bytes exceeds {ALE_STATE_BYTES - 4}")
        packed = np.zeros(ALE_STATE_BYTES, dtype=np.uint8)
        packed[:4] = np.frombuffer(len(serialized).to_bytes(4, "little"), dtype=np.uint8)
        packed[4 : 4 + len(serialized)] = np.frombuffer(serialized, dtype=np.uint8)
        return packed
    data = getattr(base, "data", None)
    if data is not None and hasattr(data, "qpos") and hasattr(data, "qvel"):
        return np.concatenate([np.asarray(data.qpos).ravel(), np.asarray(data.qvel).ravel()])
    state = getattr(base, "state", None)
    if state is not None:
        return np.asarray(state, dtype=np.float64).ravel()
    raise UsageError(f"{env.spec.id if env.spec else type(base).__name__}: cannot record a render state")


def restore_render_state(env: gym.Env, state: np.ndarray) -> None:
    """Put ``env`` back into a :func:`render_state` (its ``render()`` then draws that moment; an Atari
    emulator runs one frame, a 60th of a second, to draw its screen)."""
    base: Any = env.unwrapped
    ale = getattr(base, "ale", None)
    if ale is not None:
        import ale_py

        packed = np.asarray(state, dtype=np.uint8)
        length = int.from_bytes(packed[:4].tobytes(), "little")
        if not 0 < length <= len(packed) - 4:
            raise UsageError(f"not an ALE render state (length field {length})")
        ale.restoreState(ale_py.ALEState(packed[4 : 4 + length].tobytes()))  # parsed, never unpickled
        ale.act(0)  # the screen is not part of the state: draw it
        return
    data = getattr(base, "data", None)
    if data is not None and hasattr(base, "set_state"):
        n_qpos = int(np.asarray(data.qpos).size)
        base.set_state(state[:n_qpos], state[n_qpos:])
        return
    current = getattr(base, "state", None)
    if current is None:
        raise UsageError(f"{type(base).__name__}: cannot restore a render state")
    restored = np.asarray(state, dtype=np.asarray(current).dtype).reshape(np.shape(current))
    base.state = tuple(restored.tolist()) if isinstance(current, tuple) else restored


class RenderStateInfo(gym.Wrapper):
    """``info["render_state"]``: the :func:`render_state` after each step (a few floats: cheap to send
    from subprocess envs and to keep for every recent step), from which
    :mod:`rewards.rendering` draws the clips people label."""

    def step(self, action: Any) -> Any:
        obs, reward, terminated, truncated, info = self.env.step(action)
        info["render_state"] = render_state(self.env)
        return obs, reward, terminated, truncated, info
