"""Action noise configured without knowing the action space (zoo.yaml), sized when the env is known."""

from __future__ import annotations

import numpy as np
from stable_baselines3.common.noise import ActionNoise, NormalActionNoise, OrnsteinUhlenbeckActionNoise

from core.errors import UsageError


class SizedActionNoise(ActionNoise):
    """SB3's normal or Ornstein-Uhlenbeck noise with one ``sigma`` for every action dimension.

    :param kind: ``normal`` or ``ornstein_uhlenbeck``
    :param sigma: standard deviation, in the policy's [-1, 1] action scale (SB3 adds the noise there)
    :param theta: mean-reversion rate of the Ornstein-Uhlenbeck process
    """

    def __init__(self, kind: str, sigma: float, theta: float = 0.15) -> None:
        super().__init__()
        self.kind = kind
        self.sigma = sigma
        self.theta = theta
        self._noise: ActionNoise | None = None

    def bind(self, shape: tuple[int, ...]) -> SizedActionNoise:
        """Create the underlying noise for actions of ``shape``; returns ``self``."""
        mean, sigma = np.zeros(shape), np.full(shape, self.sigma)
        if self.kind == "normal":
            self._noise = NormalActionNoise(mean, sigma)
        elif self.kind == "ornstein_uhlenbeck":
            self._noise = OrnsteinUhlenbeckActionNoise(mean, sigma, theta=self.theta)
        else:
            raise UsageError(f"action_noise.kind: expected normal or ornstein_uhlenbeck, got {self.kind!r}")
        return self

    def __call__(self) -> np.ndarray:
        if self._noise is None:
            raise RuntimeError("SizedActionNoise used before bind(action_shape)")
        return self._noise()

    def reset(self) -> None:
        if self._noise is not None:
            self._noise.reset()

    def __repr__(self) -> str:
        return f"SizedActionNoise(kind={self.kind!r}, sigma={self.sigma}, theta={self.theta})"
