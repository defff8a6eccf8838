"""Pieces shared by the off-policy agents built on SB3's ``OffPolicyAlgorithm``."""

from __future__ import annotations

import math
from typing import Any

from stable_baselines3.common.off_policy_algorithm import OffPolicyAlgorithm
from stable_baselines3.common.type_aliases import RolloutReturn, TrainFreq, TrainFrequencyUnit


class ExactStepBudget(OffPolicyAlgorithm):
    """Mixin: ``learn(total_timesteps=N)`` stops after N env steps instead of finishing the rollout.

    SB3 collects whole rollouts of ``train_freq`` steps, so a budget that is not a multiple of
    ``train_freq * n_envs`` overshoots. Here the last rollout is shortened to what is left (rounded up
    to whole vector steps, so at most ``n_envs - 1`` extra transitions). That rollout still gets the
    configured ``gradient_steps``. Put the mixin before the SB3 algorithm: ``class A(ExactStepBudget, DQN)``.
    """

    def collect_rollouts(
        self, env: Any, callback: Any, train_freq: TrainFreq, *args: Any, **kwargs: Any
    ) -> RolloutReturn:
        if train_freq.unit == TrainFrequencyUnit.STEP:
            remaining = math.ceil((self._total_timesteps - self.num_timesteps) / env.num_envs)
            if 0 < remaining < train_freq.frequency:
                train_freq = TrainFreq(remaining, TrainFrequencyUnit.STEP)
        return super().collect_rollouts(env, callback, train_freq, *args, **kwargs)
