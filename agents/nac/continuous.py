"""NAC for continuous (Box) actions: ``V_Q`` by log-sum-exp over action particles drawn from an actor.

Paper: Gao et al. 2018, arXiv:1802.05313 (discrete actions only; the project spec ``shared/specs/nac.md``
asks for "log-sum-exp over sampled action particles or an actor"). This variant uses both:

    V_Q(s)  = alpha log integral exp(Q(s, a) / alpha) da
            ~ alpha [logsumexp_k (Q(s, a_k) / alpha - log q(a_k|s)) - log K],   a_k ~ q(.|s), k = 1..K

an importance-sampled log-sum-exp whose proposal ``q`` is a SAC-style tanh-Gaussian actor (SB3's SAC
policy, actions in SB3's [-1, 1] scale) trained towards ``pi_Q = exp((Q - V_Q) / alpha)`` by SAC's policy
loss ``E[alpha log pi(a|s) - Q(s, a)]``. The critic loss is NAC's (``agents.nac.losses.nac_loss``) for every
Q-network, with ``V_Q`` through the particles (the ``- grad V`` normalization lowers ``Q`` where the actor
puts its mass), ``Qhat = r + gamma^n (1 - terminated) min_i V_Q'_i(s')`` from the target networks and
``Vhat = Qhat`` (see ``agents.nac.nac``). The actor acts: it samples in stage 2, its mean is greedy.

Trade-off of the choice: uniform particles (one network, the spec's 64 samples) give an estimate whose
variance grows exponentially with the action dimension (6 for HalfCheetah, 17 for Humanoid): the mass of
``exp(Q / alpha)`` sits in a small part of the box that few uniform samples hit, so ``V_Q`` is biased
low and acting by the best particle is poor. An actor as the proposal keeps ``K`` small (16) in any
dimension, at the price of a second network, SAC's policy loss (not in the paper) and a ``V_Q`` that is
only as good as the actor's coverage of ``pi_Q``.

Differences from the paper: the actor (above); ``alpha`` is fixed (SAC's ``ent_coef``), the same in
``V_Q``, the actor loss and the target; Polyak-averaged targets (SAC's ``tau``); no importance weights.
"""

from __future__ import annotations

import math
from typing import Any, Literal

import numpy as np
import torch as th
from stable_baselines3 import SAC
from stable_baselines3.common.buffers import ReplayBuffer
from stable_baselines3.common.type_aliases import GymEnv, Schedule
from stable_baselines3.common.utils import polyak_update
from stable_baselines3.sac.policies import SACPolicy

from agents.nac import losses
from agents.nac.nac import bootstrap
from core.demos import DemoBatch, DemonstrationLearning
from core.errors import UsageError, check_choice
from core.replay import EpisodicReplayBuffer


class NACContinuous(DemonstrationLearning, SAC):
    """NAC with Box actions: particle log-sum-exp ``V_Q`` with a SAC-style actor as the proposal.

    :param policy: ``MlpPolicy`` or ``CnnPolicy`` (SB3's SAC policies: actor and Q-networks)
    :param env: The environment (stepped in stage 2 only)
    :param learning_rate: Adam learning rate of the actor and the Q-networks
    :param buffer_size: Size of the agent's own replay (the demonstrations have their own)
    :param learning_starts: Transitions in the agent's replay before stage 2 trains
    :param batch_size: Transitions per gradient step (both stages)
    :param tau: Polyak coefficient of the target Q-networks
    :param gamma: Discount factor
    :param train_freq: Update the model every ``train_freq`` env steps in stage 2
    :param gradient_steps: Gradient steps after each stage-2 rollout (-1: as many as env steps)
    :param replay_buffer_class: The agent's replay: an ``EpisodicReplayBuffer`` (``None``: one is made)
    :param replay_buffer_kwargs: Keyword arguments of the replay
    :param loss: ``nac``, or ``soft_q`` (the gradient through ``V_Q`` stopped)
    :param alpha: Temperature of ``V_Q``, ``pi_Q``, the actor loss and the target
    :param particles: Actions ``K`` sampled from the actor per state for ``V_Q``
    :param pretrain_steps: Stage-1 gradient steps on the demonstrations before acting
    :param demo_share: Fraction of each stage-2 batch drawn from the demonstrations (0 to 1)
    :param n_step_return: n of the target's n-step return
    :param target_update_interval: Gradient steps between two Polyak updates of the targets
    :param stats_window_size: Episodes averaged for the rollout statistics
    :param tensorboard_log: TensorBoard log folder (``None``: no TensorBoard)
    :param policy_kwargs: Keyword arguments of the policy (``net_arch``, ``n_critics``, ...)
    :param verbose: Verbosity level: 0 none, 1 info, 2 debug
    :param seed: Seed of the pseudo-random generators
    :param device: Device (cpu, cuda, auto)
    :param _init_setup_model: Whether to build the networks on creation
    """

    policy: SACPolicy

    def __init__(
        self,
        policy: str | type[SACPolicy],
        env: GymEnv | str,
        learning_rate: float | Schedule = 3e-4,
        buffer_size: int = 1_000_000,
        learning_starts: int = 1000,
        batch_size: int = 256,
        tau: float = 0.005,
        gamma: float = 0.99,
        train_freq: int | tuple[int, str] = 1,
        gradient_steps: int = 1,
        replay_buffer_class: type[ReplayBuffer] | None = None,
        replay_buffer_kwargs: dict[str, Any] | None = None,
        loss: Literal["nac", "soft_q"] = "nac",
        alpha: float = 0.1,
        particles: int = 16,
        pretrain_steps: int = 20_000,
        demo_share: float = 0.25,
        n_step_return: int = 1,
        target_update_interval: int = 1,
        stats_window_size: int = 100,
        tensorboard_log: str | None = None,
        policy_kwargs: dict[str, Any] | None = None,
        verbose: int = 0,
        seed: int | None = None,
        device: th.device | str = "auto",
        _init_setup_model: bool = True,
    ) -> None:
        check_choice("loss", loss, ("nac", "soft_q"))
        self.check_stage_settings(pretrain_steps, demo_share)
        if not alpha > 0 or particles < 1 or n_step_return < 1:
            raise UsageError("need alpha > 0, particles >= 1 and n_step_return >= 1")
        self.loss, self.alpha, self.particles, self.n_step_return = (
            loss,
            float(alpha),
            particles,
            n_step_return,
        )
        self.pretrain_steps, self.demo_share = pretrain_steps, float(demo_share)
        super().__init__(
            policy,
            env,
            learning_rate=learning_rate,
            buffer_size=buffer_size,
            learning_starts=learning_starts,
            batch_size=batch_size,
            tau=tau,
            gamma=gamma,
            train_freq=train_freq,
            gradient_steps=gradient_steps,
            replay_buffer_class=replay_buffer_class,
            replay_buffer_kwargs=replay_buffer_kwargs,
            ent_coef=float(alpha),  # fixed: the same alpha everywhere
            target_update_interval=target_update_interval,
            stats_window_size=stats_window_size,
            tensorboard_log=tensorboard_log,
            policy_kwargs=policy_kwargs,
            verbose=verbose,
            seed=seed,
            device=device,
            _init_setup_model=_init_setup_model,
        )

    def _setup_model(self) -> None:
        if self.replay_buffer_class is None:
            self.replay_buffer_class = EpisodicReplayBuffer
            self.replay_buffer_kwargs = {"gamma": self.gamma, **self.replay_buffer_kwargs}
        if not issubclass(self.replay_buffer_class, EpisodicReplayBuffer):
            raise UsageError(
                f"nac_continuous needs an EpisodicReplayBuffer, got {self.replay_buffer_class.__name__}"
            )
        super()._setup_model()

    def _demonstration_actions(self, actions: np.ndarray) -> np.ndarray:
        """Demonstrated actions in SB3's [-1, 1] scale, as SAC stores its own."""
        return self.policy.scale_action(np.asarray(actions, dtype=np.float32))

    def soft_values(self, critic: Any, observations: th.Tensor) -> th.Tensor:
        """``V_Q(s)`` of every Q-network of ``critic``, ``[n_critics, B]``; gradient through ``Q`` only."""
        k, batch = self.particles, observations.shape[0]
        repeated = observations.repeat(k, *([1] * (observations.dim() - 1)))  # row k * B + b is state b
        with th.no_grad():
            actions, log_q = self.actor.action_log_prob(repeated)
        q = th.stack([q.view(k, batch) for q in critic(repeated, actions)])  # [n_critics, K, B]
        log_weights = q / self.alpha - log_q.view(1, k, batch)
        return self.alpha * (th.logsumexp(log_weights, dim=1) - math.log(k))

    def critic_loss(self, batch: DemoBatch) -> tuple[th.Tensor, dict[str, th.Tensor]]:
        """NAC's loss (or soft Q-learning's) summed over the Q-networks, and detached statistics."""
        samples = batch.by_n[0]
        with th.no_grad():
            next_values = self.soft_values(self.critic_target, samples.next_observations)
            q_target = bootstrap(samples, next_values.min(dim=0).values)  # clipped double Q, as SAC
        q_taken = th.cat(self.critic(samples.observations, samples.actions), dim=1).T  # [n_critics, B]
        if self.loss == "nac":
            values = self.soft_values(self.critic, samples.observations)
            terms = [losses.nac_loss(q, v, q_target, q_target) for q, v in zip(q_taken, values, strict=True)]
        else:
            terms = [losses.soft_q_loss(q, q_target) for q in q_taken]
        loss = th.stack(terms).sum()
        return loss, {"critic_loss": loss.detach(), "q_taken": q_taken.detach().mean()}

    def actor_loss(self, observations: th.Tensor) -> th.Tensor:
        """SAC's policy loss ``E[alpha log pi(a|s) - min_i Q_i(s, a)]``, ``a ~ pi`` reparameterized."""
        actions, log_prob = self.actor.action_log_prob(observations)
        q_pi = th.cat(self.critic(observations, actions), dim=1).min(dim=1).values
        return (self.alpha * log_prob.view(-1) - q_pi).mean()

    def train(self, gradient_steps: int, batch_size: int = 64) -> None:
        self.policy.set_training_mode(True)
        self._update_learning_rate([self.actor.optimizer, self.critic.optimizer])
        history: list[dict[str, th.Tensor]] = []
        for _ in range(gradient_steps):
            batch = self.sample_batch(batch_size, (self.n_step_return,))
            critic_loss, stats = self.critic_loss(batch)
            self.critic.optimizer.zero_grad()
            critic_loss.backward()
            self.critic.optimizer.step()
            actor_loss = self.actor_loss(batch.by_n[0].observations)
            self.actor.optimizer.zero_grad()  # its gradient also reaches the critic: cleared before its step
            actor_loss.backward()
            self.actor.optimizer.step()
            self._n_updates += 1
            if self._n_updates % self.target_update_interval == 0:
                polyak_update(self.critic.parameters(), self.critic_target.parameters(), self.tau)
                polyak_update(self.batch_norm_stats, self.batch_norm_stats_target, 1.0)
            history.append({**stats, "actor_loss": actor_loss.detach()})
        self.logger.record("train/n_updates", self._n_updates, exclude="tensorboard")
        for key in history[0] if history else ():
            self.logger.record_mean(f"train/{key}", th.stack([h[key] for h in history]).mean().item())
