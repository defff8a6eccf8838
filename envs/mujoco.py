"""MuJoCo locomotion and manipulation tasks (gymnasium v5)."""

from __future__ import annotations

from envs import RegisteredGymFamily

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


class MujocoFamily(RegisteredGymFamily):
    """gymnasium's MuJoCo v5 tasks with vector observations, built by ``gymnasium.make``.

    Options are :class:`envs.GymOptions`: ``env_kwargs`` go to the v5 constructor, e.g.
    ``{terminate_when_unhealthy: false}`` or ``{ctrl_cost_weight: 0.0}``. The ``mujoco`` package is
    imported by gymnasium when the first env is made, not when this module is imported.
    Training and evaluation envs are the same.
    """

    name = "mujoco"
    summary = "gymnasium MuJoCo v5: Ant, HalfCheetah, Hopper, Humanoid, Walker2d, ..."

    def env_ids(self) -> list[str]:
        """The eleven gymnasium MuJoCo v5 ids."""
        return list(MUJOCO_IDS)


FAMILY = MujocoFamily()
