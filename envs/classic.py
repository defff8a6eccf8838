"""Classic control (CartPole, Acrobot, MountainCar, Pendulum; LunarLander where Box2D is installed)."""

from __future__ import annotations

from importlib.util import find_spec

from envs import RegisteredGymFamily

CLASSIC_CONTROL_IDS = [
    "CartPole-v1",
    "Acrobot-v1",
    "MountainCar-v0",
    "MountainCarContinuous-v0",
    "Pendulum-v1",
]
BOX2D_IDS = ["LunarLander-v3", "LunarLanderContinuous-v3"]


class ClassicFamily(RegisteredGymFamily):
    """gymnasium's classic-control tasks with vector observations, built by ``gymnasium.make``.

    Options are :class:`envs.GymOptions` (``env_kwargs`` go to ``gymnasium.make``, e.g.
    ``sutton_barto_reward: true`` for CartPole). LunarLander is listed only when Box2D is installed.
    Training and evaluation envs are the same.
    """

    name = "classic"
    summary = "gymnasium classic control: CartPole, Acrobot, MountainCar(Continuous), Pendulum"

    def env_ids(self) -> list[str]:
        """The classic-control ids, plus LunarLander when Box2D is importable."""
        return CLASSIC_CONTROL_IDS + (BOX2D_IDS if find_spec("Box2D") is not None else [])


FAMILY = ClassicFamily()
