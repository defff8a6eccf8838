"""BRAC's SB3 policy: the shared actor and Q ensemble, plus pi_b or the dual critic c(s, a)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from gymnasium import spaces

from core.networks import EnsembleCritic, OfflinePolicy, TanhGaussianActor


class BRACPolicy(OfflinePolicy):
    """:class:`OfflinePolicy` plus the behavior policy pi_b and, for dual divergences, the critic c(s, a).

    :param behavior_net_arch: hidden sizes of pi_b (``None``: no pi_b)
    :param dual_critic_net_arch: hidden sizes of c(s, a) (``None``: no dual critic)
    """

    def __init__(
        self,
        *args: Any,
        behavior_net_arch: Sequence[int] | None = (200, 200),
        dual_critic_net_arch: Sequence[int] | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(*args, **kwargs)
        box = self.action_space
        assert isinstance(box, spaces.Box)
        self.behavior = TanhGaussianActor(self.obs_dim, box, behavior_net_arch) if behavior_net_arch else None
        self.dual_critic = None
        if dual_critic_net_arch:
            self.dual_critic = EnsembleCritic(1, self.obs_dim + self.action_dim, dual_critic_net_arch)
