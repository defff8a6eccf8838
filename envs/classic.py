"""Classic control (CartPole, Acrobot, MountainCar, Pendulum; LunarLander where Box2D is installed)."""

from __future__ import annotations

from importlib.util import find_spec

import gymnasium as gym

from core.envs import EnvFamily, EnvOptions
from envs import make_registered_env, seed_env

CLASSIC_CONTROL_IDS = [
    "CartPole-v1",
    "Acrobot-v1",
    "MountainCar-v0",
    "MountainCarContinuous-v0",
    "Pendulum-v1",
]
BOX2D_IDS = ["LunarLander-v3", "LunarLanderContinuous-v3"]


class ClassicFamily(EnvFamily):
    """gymnasium's classic-control tasks with vector observations, built by ``gymnasium.make``.

    Options are :class:`core.envs.EnvOptions` (``env_kwargs`` go to ``gymnasium.make``, e.g.
    ``sutton_barto_reward: true`` for CartPole). LunarLander is listed only when Box2D is installed.
    Training and evaluation envs are the same.
    """

    name = "classic"
    observation_kind = "vector"
    Options = EnvOptions
    summary = "gymnasium classic control: CartPole, Acrobot, MountainCar(Continuous), Pendulum"

    def env_ids(self) -> list[str]:
        """The classic-control ids, plus LunarLander when Box2D is importable."""
        return CLASSIC_CONTROL_IDS + (BOX2D_IDS if find_spec("Box2D") is not None else [])

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


FAMILY = ClassicFamily()
