"""Offline transition datasets: the in-memory form every offline agent learns from.

On disk, datasets use the Minari format (see ``core.minari_io``); in memory they are a
:class:`TransitionDataset`: flat arrays, one row per transition, in episode order.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

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
