"""Behavior Regularized Actor Critic (BRAC): offline actor-critic kept close to the data's policy.

Paper: Yifan Wu, George Tucker, Ofir Nachum, "Behavior Regularized Offline Reinforcement Learning",
arXiv:1911.11361 (2019). Reference code consulted: google-research ``behavior_regularized_offline_rl``
(``brac/brac_primal_agent.py``, ``brac_dual_agent.py``, ``bc_agent.py``, ``divergences.py``,
``networks.py``, read through an offline index) and the project spec ``shared/specs/brac.md``.

With a divergence ``D(s)`` between the learned policy pi and the behavior policy pi_b (Sec. 3):

    BRAC-v (value penalty):  y = r + gamma * discount * (min_j Q'_j(s', a') - alpha D(s')),  a' ~ pi(s')
    BRAC-p (policy reg.):    y = r + gamma * discount * min_j Q'_j(s', a')
    critic loss  sum_j E[(Q_j(s, a) - y)^2]
    actor loss   E[alpha D(s) - 1[t > warm_start] min_j Q_j(s, a~pi)]

Per step: soft target update -> Q step -> policy step -> (dual critic steps) -> alpha step. With a primal
divergence (``kl``, ``mmd``) pi_b is first fitted by behavior cloning for ``behavior_steps`` gradient
steps (counted in ``num_timesteps``), then frozen; ``warm_start`` counts BRAC steps after that phase.

Differences from the paper:
- The behavior-cloning phase runs inside ``learn_offline`` (the reference trains pi_b in a separate run);
  its entropy coefficient is ``exp(log_alpha)`` as in SAC (the reference clips a raw variable at 0).
- Adaptive alpha is projected gradient descent (the parameter is clamped into ``[0, alpha_max]`` after
  each step; the reference clips with a straight-through gradient) and reuses the divergence estimate
  of the policy step instead of drawing new samples.
- Dual divergences need the dataset action at ``s'`` for the value penalty; where the episode ends
  there is none and the transition's own action stands in (only truncated ends matter: terminal ones
  have discount 0).
- Actions are moved ``1e-3`` half-widths inside the bounds (the reference: ``1e-3`` in action units).
- Speed only, same math: the Q ensemble is one batched network, the actor loss differentiates Q
  through its inputs only, statistics stay on the device between log dumps, Adam uses fused kernels.
"""

from __future__ import annotations

from typing import ClassVar, Literal, get_args

import torch as th
from stable_baselines3.common.policies import BasePolicy
from stable_baselines3.common.type_aliases import GymEnv
from stable_baselines3.common.utils import polyak_update

from agents.brac.divergences import CLIP_EPS, DUAL_ESTIMATES, dual_critic_loss, kl_primal, mmd_laplacian
from agents.brac.policy import BRACPolicy
from core.errors import UsageError, check_choice
from core.networks import TanhGaussian, TestPolicy, behavior_cloning_losses, make_adam
from core.offline import OfflineAlgorithm, OfflineBatch

Regularization = Literal["value_penalty", "policy"]
Divergence = Literal["kl", "mmd", "kl_dual", "w_dual"]
PRIMAL_DIVERGENCES = ("kl", "mmd")


class BRAC(OfflineAlgorithm):
    """Behavior Regularized Actor Critic (Wu, Tucker & Nachum 2019), BRAC-v and BRAC-p.

    :param policy: ``MlpPolicy`` (vector observations)
    :param env: the env whose spaces the dataset must match (only reset, never stepped)
    :param regularization: ``value_penalty`` (BRAC-v: alpha D in the critic target and the actor loss)
        or ``policy`` (BRAC-p: in the actor loss only)
    :param divergence: ``kl`` (primal), ``mmd`` (Laplacian kernel), ``kl_dual`` or ``w_dual`` (learned critic)
    :param alpha: regularization weight (the initial value when ``target_divergence`` is set)
    :param target_divergence: ``None`` keeps alpha fixed; a number tunes alpha to hold D at that value
    :param alpha_max: upper clip of the tuned alpha
    :param behavior_steps: behavior-cloning steps of pi_b before BRAC (primal divergences only)
    :param warm_start: BRAC steps during which the actor only minimizes alpha D (imitates)
    :param n_critics: Q ensemble size (the ensemble value is the minimum)
    :param actor_net_arch: hidden sizes of the actor
    :param critic_net_arch: hidden sizes of each Q-network
    :param behavior_net_arch: hidden sizes of pi_b
    :param dual_critic_net_arch: hidden sizes of the dual critic c(s, a)
    :param actor_learning_rate: Adam learning rate of the actor
    :param critic_learning_rate: Adam learning rate of the Q ensemble
    :param behavior_learning_rate: Adam learning rate of pi_b and its entropy coefficient
    :param dual_critic_learning_rate: Adam learning rate of the dual critic
    :param alpha_learning_rate: Adam learning rate of the tuned alpha
    :param batch_size: transitions per gradient step
    :param gamma: discount factor
    :param tau: soft target update coefficient
    :param divergence_samples: actions sampled per state by the primal estimates
    :param mmd_sigma: bandwidth of the Laplacian kernel
    :param gradient_penalty: weight of the dual critic's gradient penalty
    :param dual_critic_steps: dual critic updates per step (the extra ones on fresh batches)
    :param test_policy: ``predict(deterministic=True)``: ``deterministic`` (tanh of the mean) or
        ``max_q`` (best of ``test_samples`` sampled actions under the first Q-network)
    :param test_samples: actions sampled by the ``max_q`` test policy
    :param tensorboard_log: TensorBoard log folder (``None``: no TensorBoard)
    :param verbose: verbosity level: 0 none, 1 info, 2 debug
    :param seed: seed of the pseudo-random generators
    :param device: device (cpu, cuda, auto)
    :param _init_setup_model: whether to build the networks on creation
    """

    policy_aliases: ClassVar[dict[str, type[BasePolicy]]] = {"MlpPolicy": BRACPolicy}
    policy: BRACPolicy

    def __init__(
        self,
        policy: str | type[BRACPolicy],
        env: GymEnv | str,
        regularization: Regularization = "value_penalty",
        divergence: Divergence = "kl",
        alpha: float = 0.1,
        target_divergence: float | None = None,
        alpha_max: float = 500.0,
        behavior_steps: int = 300_000,
        warm_start: int = 20_000,
        n_critics: int = 2,
        actor_net_arch: tuple[int, ...] = (200, 200),
        critic_net_arch: tuple[int, ...] = (300, 300),
        behavior_net_arch: tuple[int, ...] = (200, 200),
        dual_critic_net_arch: tuple[int, ...] = (300, 300),
        actor_learning_rate: float = 3e-4,
        critic_learning_rate: float = 1e-3,
        behavior_learning_rate: float = 5e-4,
        dual_critic_learning_rate: float = 1e-3,
        alpha_learning_rate: float = 1e-3,
        batch_size: int = 256,
        gamma: float = 0.99,
        tau: float = 0.005,
        divergence_samples: int = 4,
        mmd_sigma: float = 20.0,
        gradient_penalty: float = 5.0,
        dual_critic_steps: int = 3,
        test_policy: TestPolicy = "deterministic",
        test_samples: int = 10,
        tensorboard_log: str | None = None,
        verbose: int = 0,
        seed: int | None = None,
        device: th.device | str = "auto",
        _init_setup_model: bool = True,
    ) -> None:
        check_choice("regularization", regularization, get_args(Regularization))
        check_choice("divergence", divergence, get_args(Divergence))
        check_choice("test_policy", test_policy, get_args(TestPolicy))
        if alpha < 0 or alpha > alpha_max:
            raise UsageError(f"alpha must be in [0, alpha_max={alpha_max}], got {alpha}")
        counts = {
            "n_critics": n_critics,
            "divergence_samples": divergence_samples,
            "dual_critic_steps": dual_critic_steps,
            "test_samples": test_samples,
        }
        for name, value in counts.items():
            if value < 1:
                raise UsageError(f"{name} must be >= 1, got {value}")
        if behavior_steps < 0 or warm_start < 0:
            raise UsageError(
                f"behavior_steps and warm_start must be >= 0, got {behavior_steps}, {warm_start}"
            )
        self.regularization = regularization
        self.divergence = divergence
        self.alpha = alpha
        self.target_divergence = target_divergence
        self.alpha_max = alpha_max
        self.behavior_steps = behavior_steps if divergence in PRIMAL_DIVERGENCES else 0
        self.warm_start = warm_start
        self.n_critics = n_critics
        self.actor_net_arch = tuple(actor_net_arch)
        self.critic_net_arch = tuple(critic_net_arch)
        self.behavior_net_arch = tuple(behavior_net_arch)
        self.dual_critic_net_arch = tuple(dual_critic_net_arch)
        self.actor_learning_rate = actor_learning_rate
        self.critic_learning_rate = critic_learning_rate
        self.behavior_learning_rate = behavior_learning_rate
        self.dual_critic_learning_rate = dual_critic_learning_rate
        self.alpha_learning_rate = alpha_learning_rate
        self.gamma = gamma
        self.tau = tau
        self.divergence_samples = divergence_samples
        self.mmd_sigma = mmd_sigma
        self.gradient_penalty = gradient_penalty
        self.dual_critic_steps = dual_critic_steps
        self.test_policy = test_policy
        self.test_samples = test_samples
        super().__init__(
            policy,
            env,
            learning_rate=actor_learning_rate,
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
        primal = self.divergence in PRIMAL_DIVERGENCES
        self.policy = self.policy_class(  # type: ignore[assignment]
            self.observation_space,
            self.action_space,
            actor_net_arch=self.actor_net_arch,
            critic_net_arch=self.critic_net_arch,
            n_critics=self.n_critics,
            test_policy=self.test_policy,
            test_samples=self.test_samples,
            behavior_net_arch=self.behavior_net_arch if primal else None,
            dual_critic_net_arch=None if primal else self.dual_critic_net_arch,
        ).to(self.device)
        self.actor = self.policy.actor
        assert self.policy.critic is not None and self.policy.critic_target is not None
        self.critic, self.critic_target = self.policy.critic, self.policy.critic_target
        self.behavior, self.dual_critic = self.policy.behavior, self.policy.dual_critic
        device = self.device
        self.actor_optimizer = make_adam(list(self.actor.parameters()), self.actor_learning_rate, device)
        self.critic_optimizer = make_adam(list(self.critic.parameters()), self.critic_learning_rate, device)
        self.alpha_value = th.tensor(float(self.alpha), device=device, requires_grad=self.adaptive_alpha)
        self.alpha_optimizer = make_adam([self.alpha_value], self.alpha_learning_rate, device)
        self.behavior_log_entropy_coef = th.zeros((), device=device, requires_grad=True)
        if self.behavior is not None:
            behavior_params = [*self.behavior.parameters(), self.behavior_log_entropy_coef]
            self.behavior_optimizer = make_adam(behavior_params, self.behavior_learning_rate, device)
        if self.dual_critic is not None:
            dual_params = list(self.dual_critic.parameters())
            self.dual_critic_optimizer = make_adam(dual_params, self.dual_critic_learning_rate, device)

    @property
    def adaptive_alpha(self) -> bool:
        return self.target_divergence is not None

    def _get_torch_save_params(self) -> tuple[list[str], list[str]]:
        optimizers = ["actor_optimizer", "critic_optimizer", "alpha_optimizer"]
        optimizers += ["behavior_optimizer"] if self.behavior is not None else ["dual_critic_optimizer"]
        return ["policy", *optimizers], ["alpha_value", "behavior_log_entropy_coef"]

    def _excluded_save_params(self) -> list[str]:
        aliases = ["actor", "critic", "critic_target", "behavior", "dual_critic"]
        return [*super()._excluded_save_params(), *aliases]

    def train_step(self, batch: OfflineBatch) -> dict[str, th.Tensor]:
        if self._n_updates < self.behavior_steps:
            return self._behavior_cloning_step(batch)
        return self._brac_step(batch)

    def _behavior_cloning_step(self, batch: OfflineBatch) -> dict[str, th.Tensor]:
        """Fit pi_b: max likelihood of the (clipped) dataset actions + auto-tuned entropy term."""
        assert self.behavior is not None
        target_entropy = -float(self.policy.action_dim)
        policy_loss, coef_loss, nll = behavior_cloning_losses(
            self.behavior(batch.observations), batch.actions, self.behavior_log_entropy_coef,
            target_entropy, CLIP_EPS,
        )  # fmt: skip
        self.behavior_optimizer.zero_grad(set_to_none=True)
        (policy_loss + coef_loss).backward()  # disjoint gradients: each loss detaches the other's input
        self.behavior_optimizer.step()
        return {"behavior_nll": nll, "behavior_entropy_coef": self.behavior_log_entropy_coef.detach().exp()}

    def _divergence(
        self, obs: th.Tensor, dist: TanhGaussian, policy_actions: th.Tensor, behavior_actions: th.Tensor
    ) -> th.Tensor:
        """D(s) ``[B]`` between pi (``dist``, with a gradient) and pi_b (frozen) at ``obs``.

        :param policy_actions: one action of pi per state (dual estimates)
        :param behavior_actions: the dataset's actions at ``obs`` (dual estimates)
        """
        if self.divergence in PRIMAL_DIVERGENCES:
            assert self.behavior is not None
            with th.no_grad():
                behavior = self.behavior(obs)
            if self.divergence == "kl":
                return kl_primal(dist, behavior, self.divergence_samples)
            return mmd_laplacian(dist, behavior, self.divergence_samples, self.mmd_sigma)
        assert self.dual_critic is not None
        c_p = self.dual_critic(obs, policy_actions, detach_params=True)[0]
        c_b = self.dual_critic(obs, behavior_actions, detach_params=True)[0]
        return DUAL_ESTIMATES[self.divergence](c_p, c_b)

    def critic_targets(self, batch: OfflineBatch) -> th.Tensor:
        """TD targets ``y`` ``[B]`` (no gradient), ``a' ~ pi(s')`` drawn by one ``rsample``."""
        with th.no_grad():
            next_obs = batch.next_observations
            next_dist = self.actor(next_obs)
            next_actions = next_dist.rsample(1)[0][0]
            # Ensemble value min_j Q'_j (the general lambda*min + (1-lambda)*max with lambda = 1).
            next_value = self.critic_target(next_obs, next_actions).min(dim=0).values
            if self.regularization == "value_penalty":
                # BRAC-v (Sec. 3.1): the penalty enters the bootstrap, V(s') = Q(s',a') - alpha D(s').
                divergence = self._divergence(next_obs, next_dist, next_actions, batch.next_actions)
                next_value = next_value - self.alpha_value.detach() * divergence
            return batch.rewards + self.gamma * batch.discounts * next_value

    def _brac_step(self, batch: OfflineBatch) -> dict[str, th.Tensor]:
        polyak_update(self.critic.parameters(), self.critic_target.parameters(), self.tau)
        alpha = self.alpha_value.detach()
        obs = batch.observations
        target = self.critic_targets(batch)
        q = self.critic(obs, batch.actions)  # [n_critics, B]
        critic_loss = (q - target).square().mean(dim=1).sum()  # MSE summed over the ensemble members
        self.critic_optimizer.zero_grad(set_to_none=True)
        critic_loss.backward()
        self.critic_optimizer.step()

        dist = self.actor(obs)
        policy_actions = dist.rsample(1)[0][0]
        divergence = self._divergence(obs, dist, policy_actions, batch.actions)
        actor_loss = alpha * divergence.mean()
        if self._n_updates - self.behavior_steps > self.warm_start:
            # Actor objective (Sec. 3): E[alpha D(s) - Qens(s, a~pi)], Q only after the warm start.
            q_policy = self.critic(obs, policy_actions, detach_params=True).min(dim=0).values
            actor_loss = actor_loss - q_policy.mean()
        self.actor_optimizer.zero_grad(set_to_none=True)
        actor_loss.backward()
        self.actor_optimizer.step()

        stats = {
            "critic_loss": critic_loss.detach(),
            "actor_loss": actor_loss.detach(),
            "divergence": divergence.detach().mean(),
            "q": q.detach().mean(),
            "alpha": alpha,
        }
        if self.dual_critic is not None:
            stats["dual_critic_loss"] = self._dual_critic_steps(batch)
        if self.adaptive_alpha:
            assert self.target_divergence is not None
            # Lagrangian step: alpha grows while D exceeds its target (minimize -alpha (D - eps)).
            alpha_loss = -self.alpha_value * (divergence.detach().mean() - self.target_divergence)
            self.alpha_optimizer.zero_grad(set_to_none=True)
            alpha_loss.backward()
            self.alpha_optimizer.step()
            with th.no_grad():
                self.alpha_value.clamp_(0.0, self.alpha_max)
        return stats

    def _dual_critic_steps(self, batch: OfflineBatch) -> th.Tensor:
        """Train c(s, a) to maximize the dual estimate; the first step reuses ``batch``."""
        assert self.dual_critic is not None
        estimate = DUAL_ESTIMATES[self.divergence]
        critic = self.dual_critic
        loss = th.zeros((), device=self.device)
        for step in range(self.dual_critic_steps):
            data = batch if step == 0 else self.sample(self.batch_size)
            with th.no_grad():
                policy_actions = self.actor(data.observations).rsample(1)[0][0]
            loss = dual_critic_loss(
                lambda o, a: critic(o, a)[0], estimate, data.observations, policy_actions, data.actions,
                self.gradient_penalty,
            )  # fmt: skip
            self.dual_critic_optimizer.zero_grad(set_to_none=True)
            loss.backward()
            self.dual_critic_optimizer.step()
        return loss.detach()
