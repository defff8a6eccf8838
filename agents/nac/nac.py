"""Normalized Actor-Critic (NAC) for discrete actions, with DQfD, soft Q-learning and behavior cloning on
the same code path (one network, one demonstration pipeline, one two-stage loop; ``loss`` picks the loss).

Paper: Yang Gao, Huazhe Xu, Ji Lin, Fisher Yu, Sergey Levine, Trevor Darrell, "Reinforcement Learning from
Imperfect Demonstrations", 2018, arXiv:1802.05313. No official code was released; consulted: the project
spec ``shared/specs/nac.md``, Schulman, Chen & Abbeel 2017 (arXiv:1704.06440, the soft Q-learning / policy
gradient equivalence NAC builds on) and, for the ``dqfd`` baseline, Hester et al., "Deep Q-learning from
Demonstrations", AAAI 2018.

``loss="nac"`` (the paper's sections and equations are named, not numbered, here: the paper could not be
checked offline), with temperature ``alpha`` and a target network ``Q'``,

    V_Q(s)  = alpha logsumexp_a Q(s, a) / alpha,        pi_Q(a|s) = exp((Q(s, a) - V_Q(s)) / alpha)
    Qhat    = r + gamma^n (1 - terminated) V_Q'(s')      (n = ``n_step_return``)
    Vhat    = Qhat
    grad    = (grad Q(s,a) - grad V_Q(s)) (Q(s,a) - Qhat) + grad 1/2 (V_Q(s) - Vhat)^2

The ``- grad V_Q`` term is the normalization: raising ``Q(s, a)`` of a demonstrated action raises
``V_Q(s)``, and descending along ``- grad V_Q`` lowers every ``Q(s, b)`` by ``pi_Q(b|s)``, so actions absent
from the demonstrations lose value instead of keeping whatever the initialization gave them.
``loss="soft_q"`` stops the gradient through ``V_Q`` (soft Q-learning, the paper's ablation);
``loss="dqfd"`` is DQfD's ``J_DQ + n_step_coef J_n + margin_coef J_E + l2_coef ||theta||^2`` (double-DQN
1-step and n-step Huber TD losses, large-margin loss on demonstrated transitions); ``loss="bc"`` is
cross-entropy of the demonstrated actions with the network's outputs as logits, on the demonstrations
only (it never steps the env: all of its steps are stage 1).

Both stages use the same loss (``core.demos``): ``pretrain_steps`` gradient steps on the demonstrations,
then SB3's off-policy loop, each batch ``demo_share`` demonstrations. Acting: NAC and soft Q-learning
sample ``pi_Q`` (temperature ``alpha``), behavior cloning samples its softmax, DQfD is greedy; all add
``exploration_rate`` uniform actions (epsilon-greedy); ``predict(deterministic=True)`` is greedy.

Differences from the paper, and choices it leaves open:
- ``Vhat = Qhat``: the paper's ``Vhat(s)`` is an expectation under ``pi_Q``, which a dataset can estimate
  only with its own action ``a``. With ``Vhat = Qhat - alpha log pi_Q(a|s)`` the ``V`` term cancels the
  normalization exactly (NAC would be soft Q-learning; Schulman et al. 2017); with the entropy bonus,
  ``Vhat = Qhat + alpha H(pi_Q(.|s))``, NAC's gradient is soft Q-learning's plus
  ``(E_pi_Q Q(s, .) - Q(s, a)) grad V_Q(s)``, which raises every ``Q(s, .)`` wherever the policy already
  prefers the demonstrated action. ``Vhat = Qhat`` keeps the normalization: NAC's gradient is soft
  Q-learning's plus ``-alpha log pi_Q(a|s) grad V_Q(s)``, which always lowers ``V_Q(s)``.
- No importance weights (as the paper); squared errors as the paper (DQfD's TD terms use DQN's Huber).
- Demonstrations stay in their own replay in stage 2 at a fixed share (DQfD used prioritized replay with a
  demonstration bonus instead); uniform sampling within each replay.
- ``target_update_interval`` counts gradient updates (stage 1 has no env steps), as in SC-DQN.
"""

from __future__ import annotations

from typing import Any, ClassVar, Literal

import numpy as np
import torch as th
from gymnasium import spaces
from stable_baselines3 import DQN
from stable_baselines3.common.buffers import ReplayBuffer
from stable_baselines3.common.policies import BasePolicy
from stable_baselines3.common.type_aliases import GymEnv, ReplayBufferSamples, Schedule
from stable_baselines3.common.utils import polyak_update
from stable_baselines3.dqn.policies import CnnPolicy, DQNPolicy, MlpPolicy, MultiInputPolicy, QNetwork

from agents.nac import losses
from core.demos import DemoBatch, DemonstrationLearning
from core.errors import UsageError, check_choice
from core.replay import EpisodicReplayBuffer

Loss = Literal["nac", "soft_q", "dqfd", "bc"]
LOSSES: tuple[str, ...] = ("nac", "soft_q", "dqfd", "bc")


class NAC(DemonstrationLearning, DQN):
    """Normalized Actor-Critic (Gao et al. 2018) and its baselines DQfD, soft Q-learning and BC.

    :param policy: ``MlpPolicy`` (vector observations) or ``CnnPolicy`` (Nature CNN, images)
    :param env: The environment (stepped in stage 2 only)
    :param learning_rate: Adam learning rate, a float or a schedule of the progress remaining
    :param buffer_size: Size of the agent's own replay (the demonstrations have their own)
    :param learning_starts: Transitions in the agent's replay before stage 2 trains
    :param batch_size: Transitions per gradient step (both stages)
    :param tau: Target network update coefficient (1: hard copy)
    :param gamma: Discount factor
    :param train_freq: Update the model every ``train_freq`` env steps in stage 2
    :param gradient_steps: Gradient steps after each stage-2 rollout (-1: as many as env steps)
    :param replay_buffer_class: The agent's replay: an ``EpisodicReplayBuffer`` (``None``: one is made)
    :param replay_buffer_kwargs: Keyword arguments of the replay (e.g. ``frame_stack``)
    :param target_update_interval: Gradient updates between two target network updates
    :param exploration_fraction: Fraction of the run over which epsilon goes from initial to final
    :param exploration_initial_eps: Initial probability of a uniform random action (stage 2)
    :param exploration_final_eps: Final probability of a uniform random action
    :param max_grad_norm: Gradient-norm clipping threshold
    :param loss: ``nac``, ``soft_q`` (NAC without the gradient through V), ``dqfd`` or ``bc``
    :param alpha: Temperature of ``V_Q``, ``pi_Q`` and the soft target (one value for all three)
    :param pretrain_steps: Stage-1 gradient steps on the demonstrations before acting
    :param demo_share: Fraction of each stage-2 batch drawn from the demonstrations (0 to 1)
    :param n_step_return: n of the TD target's n-step return (``nac``, ``soft_q``; DQfD's ``J_n``)
    :param margin: DQfD's margin ``l(a_E, a)`` for ``a != a_E``
    :param margin_coef: DQfD's weight of the large-margin loss (lambda_2)
    :param n_step_coef: DQfD's weight of the n-step TD loss (lambda_1)
    :param l2_coef: DQfD's L2 regularization of the network weights (lambda_3)
    :param stats_window_size: Episodes averaged for the rollout statistics
    :param tensorboard_log: TensorBoard log folder (``None``: no TensorBoard)
    :param policy_kwargs: Keyword arguments of the policy (``net_arch``, optimizer, ...)
    :param verbose: Verbosity level: 0 none, 1 info, 2 debug
    :param seed: Seed of the pseudo-random generators
    :param device: Device (cpu, cuda, auto)
    :param _init_setup_model: Whether to build the networks on creation
    """

    policy_aliases: ClassVar[dict[str, type[BasePolicy]]] = {
        "MlpPolicy": MlpPolicy,
        "CnnPolicy": CnnPolicy,
        "MultiInputPolicy": MultiInputPolicy,
    }
    q_net: QNetwork
    q_net_target: QNetwork
    policy: DQNPolicy
    action_space: spaces.Discrete

    def __init__(
        self,
        policy: str | type[DQNPolicy],
        env: GymEnv | str,
        learning_rate: float | Schedule = 1e-4,
        buffer_size: int = 1_000_000,
        learning_starts: int = 1000,
        batch_size: int = 32,
        tau: float = 1.0,
        gamma: float = 0.99,
        train_freq: int | tuple[int, str] = 4,
        gradient_steps: int = 1,
        replay_buffer_class: type[ReplayBuffer] | None = None,
        replay_buffer_kwargs: dict[str, Any] | None = None,
        target_update_interval: int = 10_000,
        exploration_fraction: float = 0.1,
        exploration_initial_eps: float = 0.0,
        exploration_final_eps: float = 0.0,
        max_grad_norm: float = 10,
        loss: Loss = "nac",
        alpha: float = 0.1,
        pretrain_steps: int = 20_000,
        demo_share: float = 0.25,
        n_step_return: int = 1,
        margin: float = 0.8,
        margin_coef: float = 1.0,
        n_step_coef: float = 1.0,
        l2_coef: float = 1e-5,
        stats_window_size: int = 100,
        tensorboard_log: str | None = None,
        policy_kwargs: dict[str, Any] | None = None,
        verbose: int = 0,
        seed: int | None = None,
        device: th.device | str = "auto",
        _init_setup_model: bool = True,
    ) -> None:
        check_choice("loss", loss, LOSSES)
        self.check_stage_settings(pretrain_steps, demo_share)
        if not alpha > 0:
            raise UsageError(f"alpha (the temperature) must be > 0, got {alpha}")
        if n_step_return < 1 or target_update_interval < 1:
            raise UsageError("n_step_return and target_update_interval must be >= 1")
        self.loss, self.alpha, self.n_step_return = loss, float(alpha), n_step_return
        self.pretrain_steps, self.demo_share = pretrain_steps, float(demo_share)
        self.margin, self.margin_coef, self.n_step_coef, self.l2_coef = (
            margin,
            margin_coef,
            n_step_coef,
            l2_coef,
        )
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
            target_update_interval=target_update_interval,
            exploration_fraction=exploration_fraction,
            exploration_initial_eps=exploration_initial_eps,
            exploration_final_eps=exploration_final_eps,
            max_grad_norm=max_grad_norm,
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
            raise UsageError(f"nac needs an EpisodicReplayBuffer, got {self.replay_buffer_class.__name__}")
        super()._setup_model()

    def _learns_online(self) -> bool:
        return self.loss != "bc"

    def _on_step(self) -> None:
        """After each env step: the exploration schedule only (the target is updated in ``train``)."""
        self.exploration_rate = self.exploration_schedule(self._current_progress_remaining)
        self.logger.record("rollout/exploration_rate", self.exploration_rate)

    # ----------------------------------------------------------------------------------------------
    # Losses

    def _returns_needed(self) -> tuple[int, ...]:
        """The n-step returns one batch is read as: DQfD needs 1-step and n-step, NAC and soft Q one n."""
        if self.loss == "dqfd":
            return (1, self.n_step_return) if self.n_step_return > 1 else (1,)
        return (self.n_step_return,) if self.loss in ("nac", "soft_q") else (1,)

    def soft_target(self, samples: ReplayBufferSamples) -> th.Tensor:
        """``Qhat = r + gamma^n (1 - terminated) V_Q'(s')`` with the target network, ``[B]`` (no gradient)."""
        with th.no_grad():
            next_value = losses.soft_value(self.q_net_target(samples.next_observations), self.alpha)
            return bootstrap(samples, next_value)

    def double_q_target(self, samples: ReplayBufferSamples) -> th.Tensor:
        """DQfD's double-DQN target ``r + gamma^n (1 - terminated) Q'(s', argmax_a Q(s', a))``, ``[B]``."""
        with th.no_grad():
            best = self.q_net(samples.next_observations).argmax(dim=1, keepdim=True)
            return bootstrap(samples, self.q_net_target(samples.next_observations).gather(1, best).squeeze(1))

    def compute_loss(self, batch: DemoBatch) -> tuple[th.Tensor, dict[str, th.Tensor]]:
        """The loss of one batch and its detached statistics (logged as ``train/<name>``)."""
        samples = batch.by_n[0]
        q_values = self.q_net(samples.observations)
        actions = samples.actions.long().squeeze(1)
        q_taken = q_values.gather(1, actions[:, None]).squeeze(1)
        stats: dict[str, th.Tensor] = {"q_taken": q_taken.detach().mean()}
        if self.loss == "bc":
            loss = losses.cross_entropy_loss(q_values, actions)
        elif self.loss == "dqfd":
            td = losses.huber_td_loss(q_taken, self.double_q_target(samples))
            n_step = batch.by_n[-1]  # the 1-step batch again when n_step_return is 1
            td_n = losses.huber_td_loss(q_taken, self.double_q_target(n_step))
            margin = losses.large_margin_loss(q_values, actions, self.margin, batch.is_demo)
            l2 = sum(p.square().sum() for p in self.q_net.parameters())
            loss = td + self.n_step_coef * td_n + self.margin_coef * margin + self.l2_coef * l2
            stats.update(td_loss=td.detach(), n_step_loss=td_n.detach(), margin_loss=margin.detach())
        else:
            q_target = self.soft_target(samples)
            value = losses.soft_value(q_values, self.alpha)
            if self.loss == "nac":
                loss = losses.nac_loss(q_taken, value, q_target, value_target=q_target)  # Vhat = Qhat
            else:
                loss = losses.soft_q_loss(q_taken, q_target)
            stats["value"] = value.detach().mean()
        stats["loss"] = loss.detach()
        return loss, stats

    def train(self, gradient_steps: int, batch_size: int = 100) -> None:
        self.policy.set_training_mode(True)
        self._update_learning_rate(self.policy.optimizer)
        history: list[dict[str, th.Tensor]] = []
        for _ in range(gradient_steps):
            loss, stats = self.compute_loss(self.sample_batch(batch_size, self._returns_needed()))
            self.policy.optimizer.zero_grad()
            loss.backward()
            th.nn.utils.clip_grad_norm_(self.q_net.parameters(), self.max_grad_norm)
            self.policy.optimizer.step()
            self._n_updates += 1
            if self._n_updates % self.target_update_interval == 0:
                polyak_update(self.q_net.parameters(), self.q_net_target.parameters(), self.tau)
                polyak_update(self.batch_norm_stats, self.batch_norm_stats_target, 1.0)
            history.append(stats)
        self.logger.record("train/n_updates", self._n_updates, exclude="tensorboard")
        for key in history[0] if history else ():
            self.logger.record_mean(f"train/{key}", th.stack([h[key] for h in history]).mean().item())

    # ----------------------------------------------------------------------------------------------
    # Acting

    def _temperature(self) -> float | None:
        """Temperature of the sampled policy: ``alpha`` for NAC and soft Q, 1 for BC's logits, DQfD greedy."""
        return {"nac": self.alpha, "soft_q": self.alpha, "bc": 1.0}.get(self.loss)

    def q_values(self, observations: np.ndarray | dict[str, np.ndarray]) -> np.ndarray:
        """Q-values of the online network, shape ``[n, n_actions]`` (a single observation gives n = 1)."""
        obs_tensor, _ = self.policy.obs_to_tensor(observations)
        self.policy.set_training_mode(False)
        with th.no_grad():
            return self.q_net(obs_tensor).float().cpu().numpy()

    def predict(
        self,
        observation: np.ndarray | dict[str, np.ndarray],
        state: tuple[np.ndarray, ...] | None = None,
        episode_start: np.ndarray | None = None,
        deterministic: bool = False,
    ) -> tuple[np.ndarray, tuple[np.ndarray, ...] | None]:
        """Greedy actions if ``deterministic``; else ``pi_Q`` samples (see the class docstring), then a
        uniform action with probability ``exploration_rate``, one coin per env.

        :return: The actions (shape ``[n]``, or ``()`` for a single observation) and ``state``
        """
        obs_tensor, vectorized = self.policy.obs_to_tensor(observation)
        self.policy.set_training_mode(False)
        with th.no_grad():
            q_values = self.q_net(obs_tensor)
            temperature = self._temperature()
            if deterministic or temperature is None:
                actions = q_values.argmax(dim=1)
            else:  # pi_Q(a|s) = softmax(Q(s, .) / alpha)
                actions = th.distributions.Categorical(logits=q_values / temperature).sample()
        chosen = actions.cpu().numpy()
        if not deterministic and self.exploration_rate > 0:
            rng = self.action_space.np_random
            explore = rng.random(len(chosen)) < self.exploration_rate
            chosen[explore] = rng.integers(int(self.action_space.n), size=int(explore.sum()))
        return (chosen if vectorized else chosen.squeeze(axis=0)), state


def bootstrap(samples: ReplayBufferSamples, next_value: th.Tensor) -> th.Tensor:
    """``r + discount (1 - terminated) next_value``, ``[B]``: ``r`` the discounted n-step reward sum,
    ``discount = gamma^n`` (shorter at episode ends); ``dones`` is termination only (truncations
    bootstrap)."""
    assert samples.discounts is not None
    not_done = 1 - samples.dones.squeeze(1)
    return samples.rewards.squeeze(1) + not_done * samples.discounts.squeeze(1) * next_value
