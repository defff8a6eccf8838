"""MuJoCo locomotion and manipulation tasks (gymnasium v5)."""

from __future__ import annotations

import gymnasium as gym

from core.envs import EnvFamily, EnvOptions
from envs import make_registered_env, seed_env

MUJOCO_IDS = [
    f"{name}-v5"
    for name in (
        "Ant",
        "HalfCheetah",
        "Hopper",
        "Humanoid",
        "HumanoidStandup",
        "InvertedDoublePendulum",
        "InvertedPendulum",
        "Pusher",
        "Reacher",
        "Swimmer",
        "Walker2d",
    )
]


class MujocoFamily(EnvFamily):
    """gymnasium's MuJoCo v5 tasks with vector observations, built by ``gymnasium.make``.

    Options are :class:`core.envs.EnvOptions`: ``env_kwargs`` go to the v5 constructor, e.g.
    ``{terminate_when_unhealthy: false}`` or ``{ctrl_cost_weight: 0.0}``. The ``mujoco`` package is
    imported by gymnasium when the first env is made, not when this module is imported.
    Training and evaluation envs are the same.
    """

    name = "mujoco"
    observation_kind = "vector"
    Options = EnvOptions
    summary = "gymnasium MuJoCo v5: Ant, HalfCheetah, Hopper, Humanoid, Walker2d, ..."

    def env_ids(self) -> list[str]:
        """The eleven gymnasium MuJoCo v5 ids."""
        return list(MUJOCO_IDS)

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
        return seed_env(env, seed)


FAMILY = MujocoFamily()
