"""Offline transition datasets: the in-memory form every offline agent learns from.

On disk, datasets use the Minari format (see ``core.minari_io``); in memory they are a
:class:`TransitionDataset`: flat arrays, one row per transition, in episode order.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
from gymnasium import spaces

from core.errors import UsageError


@dataclass(frozen=True)
class TransitionDataset:
    """Transitions ``(s, a, r, s', terminated, truncated)`` in episode order.

    :param observations: ``[N, *obs_shape]``
    :param actions: ``[N, *action_shape]`` (``[N]`` integers for discrete actions)
    :param rewards: ``[N]`` float32
    :param next_observations: ``[N, *obs_shape]``
    :param terminated: ``[N]`` bool: the episode ended in a terminal state (no bootstrap)
    :param truncated: ``[N]`` bool: the episode was cut (time limit), its value must be bootstrapped
    :param metadata: the dataset card (env id, source, mixture, noise, seed, versions, ...)
    """

    observations: np.ndarray
    actions: np.ndarray
    rewards: np.ndarray
    next_observations: np.ndarray
    terminated: np.ndarray
    truncated: np.ndarray
    metadata: dict[str, Any] = field(default_factory=dict)

    def __len__(self) -> int:
        return int(self.rewards.shape[0])

    def validate(self, where: str = "dataset") -> None:
        """Raise :class:`UsageError` (one line) if empty, of mismatched lengths, or not finite."""
        n = len(self)
        if n == 0:
            raise UsageError(f"{where}: the dataset is empty")
        arrays = {
            "observations": self.observations,
            "actions": self.actions,
            "rewards": self.rewards,
            "next_observations": self.next_observations,
            "terminated": self.terminated,
            "truncated": self.truncated,
        }
        for name, array in arrays.items():
            if array.shape[0] != n:
                raise UsageError(f"{where}: {name} has {array.shape[0]} rows, rewards has {n}")
            if np.issubdtype(array.dtype, np.floating) and not np.isfinite(array).all():
                bad = int(np.flatnonzero(~np.isfinite(array.reshape(n, -1)).all(axis=1))[0])
                raise UsageError(f"{where}: {name} has a NaN or inf value (first at transition {bad})")
        if self.observations.shape[1:] != self.next_observations.shape[1:]:
            raise UsageError(
                f"{where}: observations {self.observations.shape[1:]} and next_observations "
                f"{self.next_observations.shape[1:]} differ in shape"
            )

    def episode_returns(self) -> np.ndarray:
        """Undiscounted return of each complete episode (an unfinished last episode is left out)."""
        ends = np.flatnonzero(self.terminated | self.truncated)
        if ends.size == 0:
            return np.zeros(0, dtype=np.float64)
        sums = np.add.reduceat(self.rewards.astype(np.float64), np.r_[0, ends[:-1] + 1])
        return sums

    def check_spaces(self, observation_space: spaces.Space, action_space: spaces.Space, env_id: str) -> None:
        """Raise :class:`UsageError` (one line) if the data does not fit ``env_id``'s spaces.

        Observations must have the env's shape; Box actions its shape and bounds (a tolerance of 1e-5
        of the range allows float round-off); Discrete actions integers in ``[0, n)``.
        """
        obs_shape = self.observations.shape[1:]
        if observation_space.shape is not None and obs_shape != observation_space.shape:
            raise UsageError(
                f"dataset: observations have shape {obs_shape}, {env_id} expects {observation_space.shape}"
            )
        actions = self.actions
        if isinstance(action_space, spaces.Box):
            if actions.shape[1:] != action_space.shape:
                raise UsageError(
                    f"dataset: actions have shape {actions.shape[1:]}, {env_id} expects {action_space.shape}"
                )
            slack = 1e-5 * (action_space.high - action_space.low)
            outside = (actions < action_space.low - slack) | (actions > action_space.high + slack)
            flat = outside.reshape(len(self), -1).any(axis=1)
            if flat.any():
                first = int(np.flatnonzero(flat)[0])
                raise UsageError(
                    f"dataset: actions outside {env_id}'s bounds [{action_space.low.min():g}, "
                    f"{action_space.high.max():g}] (first at transition {first})"
                )
        elif isinstance(action_space, spaces.Discrete):
            flat_actions = actions.reshape(len(self), -1)
            integral = np.issubdtype(actions.dtype, np.integer) or bool(
                np.all(np.equal(np.mod(actions, 1), 0))
            )
            if flat_actions.shape[1] != 1 or not integral:
                raise UsageError(
                    f"dataset: {env_id} has {action_space.n} discrete actions; the dataset's actions have "
                    f"shape {actions.shape[1:]} and dtype {actions.dtype}"
                )
            low, high = int(action_space.start), int(action_space.start + action_space.n)
            bad = (flat_actions < low) | (flat_actions >= high)
            if bad.any():
                first = int(np.flatnonzero(bad.any(axis=1))[0])
                raise UsageError(
                    f"dataset: action {flat_actions[first, 0]} at transition {first} is not one of "
                    f"{env_id}'s {action_space.n} actions"
                )
