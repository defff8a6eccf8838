"""Naive offline SAC: Soft Actor-Critic's losses on a fixed dataset, without behavior regularization.

Paper: Haarnoja et al., "Soft Actor-Critic Algorithms and Applications", arXiv:1812.05905 (2018), used
as the "no regularization" baseline of BRAC (Wu et al. 2019, arXiv:1911.11361), where it typically
collapses: the actor exploits Q's errors on actions the data never shows. Reference code consulted:
``stable_baselines3/sac/sac.py``.

    y = r + gamma * discount * (min_j Q'_j(s', a') - alpha log pi(a'|s')),  a' ~ pi(s')
    critic loss 0.5 sum_j E[(Q_j(s, a) - y)^2];  actor loss E[alpha log pi(a|s) - min_j Q_j(s, a)]
    alpha loss  -log(alpha) E[log pi(a|s) + target_entropy],  target_entropy = -|A|

Differences from SB3's SAC: the networks are BRAC's (tanh-Gaussian actor with log_std in [-5, 0],
batched Q ensemble) so the baselines differ only in their losses; transitions come from a dataset
instead of a replay buffer filled online.
"""

from __future__ import annotations

from typing import ClassVar, get_args

import torch as th
from stable_baselines3.common.policies import BasePolicy
from stable_baselines3.common.type_aliases import GymEnv
from stable_baselines3.common.utils import polyak_update

from core.errors import UsageError, check_choice
from core.networks import EnsembleCritic, OfflinePolicy, TestPolicy, make_adam
from core.offline import OfflineAlgorithm, OfflineBatch


class OfflineSAC(OfflineAlgorithm):
    """SAC with automatic entropy tuning, trained on a fixed dataset.

    :param policy: ``MlpPolicy`` (vector observations)
    :param env: the env whose spaces the dataset must match (only reset, never stepped)
    :param learning_rate: Adam learning rate of the actor, the critics and the entropy coefficient
    :param batch_size: transitions per gradient step
    :param gamma: discount factor
    :param tau: soft target update coefficient
    :param n_critics: Q ensemble size (the ensemble value is the minimum)
    :param actor_net_arch: hidden sizes of the actor
    :param critic_net_arch: hidden sizes of each Q-network
    :param initial_entropy_coef: initial alpha
    :param test_policy: ``predict(deterministic=True)``: ``deterministic`` (tanh of the mean) or ``max_q``
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
        learning_rate: float = 3e-4,
        batch_size: int = 256,
        gamma: float = 0.99,
        tau: float = 0.005,
        n_critics: int = 2,
        actor_net_arch: tuple[int, ...] = (200, 200),
        critic_net_arch: tuple[int, ...] = (300, 300),
        initial_entropy_coef: float = 1.0,
        test_policy: TestPolicy = "deterministic",
        tensorboard_log: str | None = None,
        verbose: int = 0,
        seed: int | None = None,
        device: th.device | str = "auto",
        _init_setup_model: bool = True,
    ) -> None:
        if n_critics < 1 or initial_entropy_coef <= 0:
            raise UsageError(
                f"need n_critics >= 1 and initial_entropy_coef > 0, got {n_critics}, {initial_entropy_coef}"
            )
        check_choice("test_policy", test_policy, get_args(TestPolicy))
        self.gamma = gamma
        self.tau = tau
        self.n_critics = n_critics
        self.actor_net_arch = tuple(actor_net_arch)
        self.critic_net_arch = tuple(critic_net_arch)
        self.initial_entropy_coef = initial_entropy_coef
        self.test_policy = test_policy
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
            self.observation_space,
            self.action_space,
            actor_net_arch=self.actor_net_arch,
            critic_net_arch=self.critic_net_arch,
            n_critics=self.n_critics,
            test_policy=self.test_policy,
        ).to(self.device)
        assert self.policy.critic is not None and self.policy.critic_target is not None
        self.actor = self.policy.actor
        self.critic: EnsembleCritic = self.policy.critic
        self.critic_target: EnsembleCritic = self.policy.critic_target
        lr = float(self.lr_schedule(1.0))
        self.actor_optimizer = make_adam(list(self.actor.parameters()), lr, self.device)
        self.critic_optimizer = make_adam(list(self.critic.parameters()), lr, self.device)
        initial = th.log(th.tensor(self.initial_entropy_coef, device=self.device))
        self.log_entropy_coef = initial.clone().requires_grad_(True)
        self.entropy_coef_optimizer = make_adam([self.log_entropy_coef], lr, self.device)
        self.target_entropy = -float(self.policy.action_dim)

    def _get_torch_save_params(self) -> tuple[list[str], list[str]]:
        optimizers = ["actor_optimizer", "critic_optimizer", "entropy_coef_optimizer"]
        return ["policy", *optimizers], ["log_entropy_coef"]

    def _excluded_save_params(self) -> list[str]:
        return [*super()._excluded_save_params(), "actor", "critic", "critic_target"]

    def train_step(self, batch: OfflineBatch) -> dict[str, th.Tensor]:
        dist = self.actor(batch.observations)
        actions_pi, log_prob = dist.rsample(1)
        actions_pi, log_prob = actions_pi[0], log_prob[0]
        entropy_coef_loss = -(self.log_entropy_coef * (log_prob.detach() + self.target_entropy)).mean()
        self.entropy_coef_optimizer.zero_grad(set_to_none=True)
        entropy_coef_loss.backward()
        self.entropy_coef_optimizer.step()
        alpha = self.log_entropy_coef.detach().exp()

        with th.no_grad():
            next_actions, next_log_prob = self.actor(batch.next_observations).rsample(1)
            next_q = self.critic_target(batch.next_observations, next_actions[0]).min(dim=0).values
            # Soft Bellman target: V(s') = min_j Q'_j(s', a') - alpha log pi(a'|s').
            target = batch.rewards + self.gamma * batch.discounts * (next_q - alpha * next_log_prob[0])
        q = self.critic(batch.observations, batch.actions)
        critic_loss = 0.5 * (q - target).square().mean(dim=1).sum()
        self.critic_optimizer.zero_grad(set_to_none=True)
        critic_loss.backward()
        self.critic_optimizer.step()

        q_pi = self.critic(batch.observations, actions_pi, detach_params=True).min(dim=0).values
        actor_loss = (alpha * log_prob - q_pi).mean()
        self.actor_optimizer.zero_grad(set_to_none=True)
        actor_loss.backward()
        self.actor_optimizer.step()
        polyak_update(self.critic.parameters(), self.critic_target.parameters(), self.tau)
        return {
            "critic_loss": critic_loss.detach(),
            "actor_loss": actor_loss.detach(),
            "entropy_coef": alpha,
            "q": q.detach().mean(),
        }
