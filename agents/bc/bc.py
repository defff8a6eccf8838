"""Behavior cloning (BC) of a tanh-Gaussian policy: the baseline offline agents are compared against.

Reference code consulted: google-research ``behavior_regularized_offline_rl`` (``brac/bc_agent.py``),
the behavior policy BRAC fits; spec ``shared/specs/brac.md``. Loss: maximum likelihood of the dataset
actions (moved 1e-3 half-widths inside the bounds) plus an entropy term whose coefficient is tuned to
the target entropy ``-|A|``; ``predict(deterministic=True)`` is ``tanh(mean)`` rescaled to the bounds.

Differences from the reference: the entropy coefficient is ``exp(log_alpha)`` as in SAC (the reference
clips a raw variable at 0); Adam uses fused kernels where available.
"""

from __future__ import annotations

from typing import ClassVar

import torch as th
from stable_baselines3.common.policies import BasePolicy
from stable_baselines3.common.type_aliases import GymEnv

from core.networks import OfflinePolicy, behavior_cloning_losses, make_adam
from core.offline import OfflineAlgorithm, OfflineBatch

CLIP_EPS = 1e-3


class BC(OfflineAlgorithm):
    """Tanh-Gaussian behavior cloning with an auto-tuned entropy bonus.

    :param policy: ``MlpPolicy`` (vector observations)
    :param env: the env whose spaces the dataset must match (only reset, never stepped)
    :param net_arch: hidden sizes of the policy MLP
    :param learning_rate: Adam learning rate of the policy and the entropy coefficient
    :param batch_size: transitions per gradient step
    :param tensorboard_log: TensorBoard log folder (``None``: no TensorBoard)
    :param verbose: verbosity level: 0 none, 1 info, 2 debug
    :param seed: seed of the pseudo-random generators
    :param device: device (cpu, cuda, auto)
    :param _init_setup_model: whether to build the networks on creation
    """

    policy_aliases: ClassVar[dict[str, type[BasePolicy]]] = {"MlpPolicy": OfflinePolicy}
    policy: OfflinePolicy

    def __init__(
        self,
        policy: str | type[OfflinePolicy],
        env: GymEnv | str,
        net_arch: tuple[int, ...] = (200, 200),
        learning_rate: float = 5e-4,
        batch_size: int = 256,
        tensorboard_log: str | None = None,
        verbose: int = 0,
        seed: int | None = None,
        device: th.device | str = "auto",
        _init_setup_model: bool = True,
    ) -> None:
        self.net_arch = tuple(net_arch)
        super().__init__(
            policy,
            env,
            learning_rate=learning_rate,
            batch_size=batch_size,
            tensorboard_log=tensorboard_log,
            verbose=verbose,
            seed=seed,
            device=device,
        )
        if _init_setup_model:
            self._setup_model()

    def _setup_model(self) -> None:
        self._setup_lr_schedule()
        self.set_random_seed(self.seed)
        self.policy = self.policy_class(  # type: ignore[assignment]
            self.observation_space, self.action_space, actor_net_arch=self.net_arch, n_critics=0
        ).to(self.device)
        self.log_entropy_coef = th.zeros((), device=self.device, requires_grad=True)
        parameters = [*self.policy.actor.parameters(), self.log_entropy_coef]
        self.optimizer = make_adam(parameters, float(self.lr_schedule(1.0)), self.device)

    def _get_torch_save_params(self) -> tuple[list[str], list[str]]:
        return ["policy", "optimizer"], ["log_entropy_coef"]

    def train_step(self, batch: OfflineBatch) -> dict[str, th.Tensor]:
        policy_loss, coef_loss, nll = behavior_cloning_losses(
            self.policy.actor(batch.observations),
            batch.actions,
            self.log_entropy_coef,
            target_entropy=-float(self.policy.action_dim),
            clip=CLIP_EPS,
        )
        self.optimizer.zero_grad(set_to_none=True)
        (policy_loss + coef_loss).backward()  # disjoint gradients: each loss detaches the other's input
        self.optimizer.step()
        return {"nll": nll, "entropy_coef": self.log_entropy_coef.detach().exp()}
