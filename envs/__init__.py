"""Env families of the zoo (classic control, Atari, MuJoCo), registered under ``zoo.envs``.

Each module defines an :class:`core.envs.EnvFamily` instance ``FAMILY``; heavy imports (ale_py,
mujoco) happen inside its methods, so importing a family module is cheap.
"""

from __future__ import annotations

from typing import Any

import gymnasium as gym

from core.envs import EnvFamily, EnvOptions, RenderStateInfo
from core.errors import UsageError


def make_registered_env(
    env_id: str, *, env_kwargs: dict[str, Any], render_mode: str | None, **defaults: Any
) -> gym.Env:
    """``gymnasium.make(env_id)`` with ``defaults`` overridden by the user's ``env_kwargs``.

    A keyword the env does not accept raises :class:`UsageError`.
    """
    kwargs = {**defaults, **env_kwargs}
    if render_mode is not None:
        kwargs["render_mode"] = render_mode
    try:
        env = gym.make(env_id, **kwargs)
    except TypeError as error:
        raise UsageError(f"{env_id}: bad env_kwargs {sorted(env_kwargs)}: {error}") from error
    return env


def seed_env(env: gym.Env, seed: int | None) -> gym.Env:
    """Reset ``env`` once with ``seed`` and seed its action space (no-op when ``seed`` is None).

    Later unseeded ``reset()`` calls then continue one reproducible stream.
    """
    if seed is not None:
        env.reset(seed=seed)
        env.action_space.seed(seed)
    return env


class GymOptions(EnvOptions):
    """Options of the plain gymnasium families (classic control, MuJoCo).

    :param env_kwargs: extra keyword arguments passed to ``gymnasium.make`` (MuJoCo v5:
        ``terminate_when_unhealthy``, ``ctrl_cost_weight``, ...)
    :param ignore_termination: episodes end only at the time limit; the env's termination condition no
        longer ends them (the preference paper's "no termination" for tasks without a kwarg for it, e.g.
        InvertedPendulum: the pole may fall and the reward says so)
    :param record_render_state: every step's ``info["render_state"]`` holds what it takes to draw
        that step later (see :class:`RenderStateInfo`); preference runs with human labelers set it
    """

    ignore_termination: bool = False
    record_render_state: bool = False


class IgnoreTermination(gym.Wrapper):
    """``terminated`` is always False; ``info["env_terminated"]`` keeps what the env said."""

    def step(self, action: Any) -> Any:
        obs, reward, terminated, truncated, info = self.env.step(action)
        info["env_terminated"] = bool(terminated)
        return obs, reward, False, truncated, info


class RegisteredGymFamily(EnvFamily):
    """A family of plain gymnasium ids: ``gymnasium.make(env_id, **options.env_kwargs)``, seeded once.

    Training and evaluation envs are the same. Subclasses set ``name``, ``summary`` and ``env_ids``.
    """

    observation_kind = "vector"
    Options = GymOptions

    def make_env(
        self,
        env_id: str,
        *,
        options: EnvOptions,
        training: bool,
        seed: int | None = None,
        render_mode: str | None = None,
    ) -> gym.Env:
        """``gymnasium.make(env_id, **options.env_kwargs)``, reset once with ``seed`` if given."""
        env = make_registered_env(env_id, env_kwargs=options.env_kwargs, render_mode=render_mode)
        if getattr(options, "ignore_termination", False):
            env = IgnoreTermination(env)
        if getattr(options, "record_render_state", False):
            if not (hasattr(env.unwrapped, "data") or hasattr(env.unwrapped, "state")):
                raise UsageError(f"{env_id}: cannot record render states (not MuJoCo or classic control)")
            env = RenderStateInfo(env)
        return seed_env(env, seed)
