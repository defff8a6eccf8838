"""What the application needs to know about an agent, registered under ``zoo.agents``."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from gymnasium import spaces
from stable_baselines3.common.base_class import BaseAlgorithm

from core.envs import ObservationKind
from core.registry import Registry


@dataclass(frozen=True)
class AgentSpec:
    """An agent as the CLI sees it.

    :param name: registry name (``zoo train NAME``)
    :param algorithm: the SB3-style algorithm class; its constructor signature is the config schema
    :param summary: one line for ``zoo list``
    :param action_spaces: action-space types the agent supports
    :param image_policy: policy name for image observations
    :param vector_policy: policy name for vector observations
    :param value_based: whether ``zoo eval`` can report the Q-value overestimation gap
    :param episodic_replay: when the runner gives an off-policy agent ``EpisodicReplayBuffer``:
        ``always``, only for ``images`` (elsewhere the algorithm keeps its own buffer), or ``never``
    :param offline: the agent learns from a dataset (``zoo train AGENT --dataset``) through
        :class:`core.offline.OfflineAlgorithm`'s ``set_dataset`` and ``learn_offline``; its steps are
        gradient steps and the env is only used for evaluation
    :param demonstrations: the agent learns from demonstrations (``zoo train AGENT --demos``), then
        acts online: an off-policy algorithm with ``set_demonstrations`` (see ``core.demos``)
    :param hyperparameters: constructor arguments the agent's name stands for, the lowest layer of
        its configuration (zoo.yaml and ``--set`` override them); e.g. ``dqfd`` is NAC's class with
        ``loss="dqfd"``
    """

    name: str
    algorithm: type[BaseAlgorithm]
    summary: str
    action_spaces: tuple[type[spaces.Space], ...]
    image_policy: str = "CnnPolicy"
    vector_policy: str = "MlpPolicy"
    value_based: bool = False
    episodic_replay: Literal["always", "images", "never"] = "always"
    offline: bool = False
    demonstrations: bool = False
    hyperparameters: Mapping[str, Any] = field(default_factory=dict, hash=False)

    def policy_for(self, kind: ObservationKind) -> str:
        return self.image_policy if kind == "image" else self.vector_policy


AGENTS: Registry[AgentSpec] = Registry("zoo.agents", "agent")
