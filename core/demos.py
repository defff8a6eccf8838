"""Learning from demonstrations in two stages, for off-policy agents (NAC, DQfD, soft Q-learning, ...).

Gao et al. 2018 (arXiv 1802.05313, NAC's algorithm) and Hester et al. 2018 (DQfD) share one procedure:

1. **Stage 1** makes ``pretrain_steps`` gradient steps on the demonstrations only; the env is not stepped.
2. **Stage 2** is SB3's off-policy loop (act, store, ``train``). The demonstrations stay in their own
   replay: every batch draws ``round(batch_size * demo_share)`` transitions from them and the rest from
   the agent's replay (``demo_share=0``: stage 2 learns from its own experience only).

The agent's ``train`` samples through :meth:`DemonstrationLearning.sample_batch`, which knows the stage,
so the same ``train`` (the same loss) runs in both stages.

Timeline: ``num_timesteps`` counts stage-1 gradient steps, then env steps. A run of ``total_timesteps``
is ``pretrain_steps`` gradient steps followed by ``total_timesteps - pretrain_steps`` env steps, so SB3's
callbacks (evaluation, checkpoints, progress bar) cover stage 1 too, checkpoints are ordered, and a
checkpoint taken in either stage resumes in that stage. ``learning_starts`` counts transitions in the
agent's replay (stage 2 trains once it holds that many), and stage 2 acts with the policy from its first
step (no uniform warm-up: the policy has learnt from the demonstrations).

Both replays are :class:`core.replay.EpisodicReplayBuffer` (each frame stored once, n-step returns of
any n from the same transitions). The demonstrations are not saved with the model: the runner re-reads
them from the run's dataset path on resume.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any, NamedTuple, TypeVar

import numpy as np
import torch as th
from gymnasium import spaces
from stable_baselines3.common.type_aliases import MaybeCallback, ReplayBufferSamples, TrainFreq

from core.datasets import TransitionDataset
from core.errors import UsageError
from core.offpolicy import ExactStepBudget
from core.replay import EpisodicReplayBuffer

SelfDemonstrationLearning = TypeVar("SelfDemonstrationLearning", bound="DemonstrationLearning")


class DemoBatch(NamedTuple):
    """``B`` transitions, the demonstrations' first, read as n-step returns for each n asked for.

    :param by_n: one SB3 ``ReplayBufferSamples`` per n (same ``s, a``): ``observations``
        ``[B, *obs_shape]``, ``actions`` ``[B, action_dim]``, ``rewards`` (discounted n-step sums),
        ``dones`` (termination within the window) and ``discounts`` (``gamma ** steps``, always set)
        ``[B, 1]``, ``next_observations`` after the window
    :param is_demo: ``[B]`` bool, True for the transitions drawn from the demonstrations
    """

    by_n: tuple[ReplayBufferSamples, ...]
    is_demo: th.Tensor


def demonstration_buffer(
    dataset: TransitionDataset,
    observation_space: spaces.Space,
    action_space: spaces.Space,
    *,
    actions: np.ndarray,
    frame_stack: int,
    gamma: float,
    device: th.device | str,
) -> EpisodicReplayBuffer:
    """All of ``dataset`` in an :class:`EpisodicReplayBuffer` sized so that nothing is dropped.

    :param actions: the dataset's actions as the agent stores them (e.g. SAC's rescaled to [-1, 1])
    :param frame_stack: frames stacked along the first observation axis (1 for vector observations)
    """
    n = len(dataset)
    ends = dataset.terminated.astype(bool) | dataset.truncated.astype(bool)
    episodes = int(ends.sum()) + 1
    # Every episode costs `frame_stack` frames more than its steps; a reset the buffer detects without an
    # end (a discontinuity) opens an episode too, counted by comparing s' with the next s.
    flat, flat_next = dataset.observations.reshape(n, -1), dataset.next_observations.reshape(n, -1)
    jumps = ~ends[:-1] & (flat_next[:-1] != flat[1:]).any(axis=1)
    episodes += int(jumps.sum())
    buffer = EpisodicReplayBuffer(
        n + episodes * (frame_stack + 1),
        observation_space,
        action_space,
        device=device,
        n_envs=1,
        frame_stack=frame_stack,
        gamma=gamma,
    )
    observations = np.asarray(dataset.observations, dtype=observation_space.dtype)
    next_observations = np.asarray(dataset.next_observations, dtype=observation_space.dtype)
    truncated = dataset.truncated.astype(bool) & ~dataset.terminated.astype(bool)
    for i in range(n):
        buffer.add(
            observations[i : i + 1],
            next_observations[i : i + 1],
            actions[i : i + 1],
            dataset.rewards[i : i + 1],
            ends[i : i + 1],
            [{"TimeLimit.truncated": bool(truncated[i])}],
        )
    if buffer.size() != n:  # the sizing above is exact; this guards a future change of the buffer
        raise RuntimeError(f"demonstration buffer kept {buffer.size()} of {n} transitions")
    return buffer


def concatenate(first: ReplayBufferSamples, second: ReplayBufferSamples) -> ReplayBufferSamples:
    """Two batches as one (field by field; ``discounts`` must be set in both)."""
    fields = []
    for a, b in zip(first, second, strict=True):
        assert a is not None and b is not None
        fields.append(th.cat([a, b]))
    return ReplayBufferSamples(*fields)


class DemonstrationLearning(ExactStepBudget):
    """Mixin giving an SB3 off-policy algorithm the two stages: ``class NAC(DemonstrationLearning, DQN)``.

    The subclass sets ``self.pretrain_steps`` and ``self.demo_share`` before SB3's ``__init__``, keeps
    its replay an :class:`EpisodicReplayBuffer`, and samples in ``train`` with :meth:`sample_batch`.
    ``pretrain_log_interval`` is the number of stage-1 steps between two rows of ``progress.csv``.
    """

    pretrain_steps: int
    demo_share: float
    demo_buffer: EpisodicReplayBuffer | None = None
    pretrain_log_interval: int = 1000
    _pretraining: bool = False

    @staticmethod
    def check_stage_settings(pretrain_steps: int, demo_share: float) -> None:
        """Raise a one-line :class:`UsageError` for a negative ``pretrain_steps`` or a bad share."""
        if pretrain_steps < 0:
            raise UsageError(f"pretrain_steps must be >= 0 gradient steps, got {pretrain_steps}")
        if not 0.0 <= demo_share <= 1.0:
            raise UsageError(
                f"demo_share is the fraction of each batch from the demonstrations, got {demo_share}"
            )

    # ----------------------------------------------------------------------------------------------
    # Demonstrations

    def set_demonstrations(self, dataset: TransitionDataset) -> None:
        """Check ``dataset`` against the model's spaces and store it as the demonstration replay.

        :raises UsageError: one line: empty, NaN or inf values, a shape or action that does not fit
        """
        dataset.validate("demonstrations")
        env_id = "the env"
        if self.env is not None:
            spec = self.env.get_attr("spec", [0])[0]
            env_id = spec.id if spec is not None else env_id
        dataset.check_spaces(self.observation_space, self.action_space, env_id)
        self.demo_buffer = demonstration_buffer(
            dataset,
            self.observation_space,
            self.action_space,
            actions=self._demonstration_actions(dataset.actions),
            frame_stack=int(getattr(self.replay_buffer, "frame_stack", 1)),
            gamma=float(self.gamma),
            device=self.device,
        )

    def _demonstration_actions(self, actions: np.ndarray) -> np.ndarray:
        """The dataset's actions in the form the agent's replay stores (hook; identity here)."""
        return actions

    def _learns_online(self) -> bool:
        """Whether stage 2 exists (hook: behavior cloning learns from the demonstrations only)."""
        return True

    @property
    def stage(self) -> int:
        """1 while pretraining on the demonstrations, else 2."""
        return 1 if self._pretraining or self.num_timesteps < self.pretrain_steps else 2

    def sample_batch(self, batch_size: int, n_steps: Sequence[int] = (1,)) -> DemoBatch:
        """``batch_size`` transitions: all from the demonstrations in stage 1, ``demo_share`` of them in
        stage 2 (none when no demonstrations were set); ``n_steps`` lists the returns to read."""
        from_demos = batch_size if self.stage == 1 else round(batch_size * self.demo_share)
        if self.demo_buffer is None:
            if self.stage == 1:
                raise UsageError(
                    f"{type(self).__name__}: stage 1 needs demonstrations; call set_demonstrations"
                )
            from_demos = 0
        parts = []
        if from_demos > 0:
            parts.append(self._read(self.demo_buffer, from_demos, n_steps))  # type: ignore[arg-type]
        if batch_size - from_demos > 0:
            replay = self.replay_buffer
            if not isinstance(replay, EpisodicReplayBuffer):
                raise UsageError(f"{type(self).__name__} needs an EpisodicReplayBuffer as its replay")
            parts.append(self._read(replay, batch_size - from_demos, n_steps))
        by_n = parts[0] if len(parts) == 1 else tuple(concatenate(a, b) for a, b in zip(*parts, strict=True))
        is_demo = th.arange(batch_size, device=self.device) < from_demos
        return DemoBatch(tuple(by_n), is_demo)

    def _read(
        self, buffer: EpisodicReplayBuffer, count: int, n_steps: Sequence[int]
    ) -> tuple[ReplayBufferSamples, ...]:
        env_indices, steps = buffer.sample_indices(count)
        samples = []
        for n in n_steps:
            batch = buffer.get_transitions(env_indices, steps, env=self._vec_normalize_env, n_steps=n)
            if batch.discounts is None:
                batch = batch._replace(discounts=th.full_like(batch.rewards, float(self.gamma)))
            samples.append(batch)
        return tuple(samples)

    # ----------------------------------------------------------------------------------------------
    # The two stages

    def learn(
        self: SelfDemonstrationLearning,
        total_timesteps: int,
        callback: MaybeCallback = None,
        log_interval: int = 4,
        tb_log_name: str = "run",
        reset_num_timesteps: bool = True,
        progress_bar: bool = False,
    ) -> SelfDemonstrationLearning:
        """Stage 1 until ``pretrain_steps`` (gradient steps), then env steps until ``total_timesteps``.

        :param total_timesteps: steps of the timeline (stage-1 gradient steps + env steps) to add
        :param callback: SB3 callback(s); ``on_step`` after every stage-1 gradient step and env step
        :param log_interval: episodes between two logger dumps in stage 2 (stage 1 dumps every
            ``pretrain_log_interval`` steps)
        """
        total_timesteps, callback = self._setup_learn(
            total_timesteps, callback, reset_num_timesteps, tb_log_name, progress_bar
        )
        callback.on_training_start(locals(), globals())
        stage_one_end = self.pretrain_steps if self._learns_online() else total_timesteps
        continue_training = True
        if self.num_timesteps < stage_one_end:
            continue_training = self._pretrain(min(stage_one_end, total_timesteps), callback)
            # SB3's time/fps of stage 2 counts env steps from here, not the gradient steps before.
            self.start_time, self._num_timesteps_at_start = time.time_ns(), self.num_timesteps
        assert isinstance(self.train_freq, TrainFreq)
        while continue_training and self.num_timesteps < total_timesteps:
            rollout = self.collect_rollouts(
                self.env,
                train_freq=self.train_freq,
                action_noise=self.action_noise,
                callback=callback,
                learning_starts=0,  # act with the policy from the first env step
                replay_buffer=self.replay_buffer,
                log_interval=log_interval,
            )
            continue_training = rollout.continue_training
            if continue_training and self.replay_buffer.size() >= max(self.learning_starts, 1):
                gradient_steps = (
                    self.gradient_steps if self.gradient_steps >= 0 else rollout.episode_timesteps
                )
                if gradient_steps > 0:
                    self.train(batch_size=self.batch_size, gradient_steps=gradient_steps)
                    self.logger.record("train/stage", 2)
        callback.on_training_end()
        return self

    def _pretrain(self, end: int, callback: Any) -> bool:
        """Stage 1: one gradient step on the demonstrations per timeline step until ``end``."""
        self._pretraining = True
        last = (self.num_timesteps, time.perf_counter())
        try:
            while self.num_timesteps < end:
                self.train(gradient_steps=1, batch_size=self.batch_size)
                self.num_timesteps += 1
                self._update_current_progress_remaining(self.num_timesteps, self._total_timesteps)
                callback.update_locals(locals())
                if not callback.on_step():
                    return False
                if self.num_timesteps % self.pretrain_log_interval == 0 or self.num_timesteps == end:
                    last = self._dump_pretrain_logs(last)
        finally:
            self._pretraining = False
        return True

    def _dump_pretrain_logs(self, last: tuple[int, float]) -> tuple[int, float]:
        step, now = self.num_timesteps, time.perf_counter()
        self.logger.record("train/stage", 1)
        if step > last[0]:
            self.logger.record("time/gradient_steps_per_s", (step - last[0]) / max(now - last[1], 1e-9))
        self.logger.record("time/total_timesteps", step, exclude="tensorboard")
        self.logger.dump(step=step)
        return step, now

    def _excluded_save_params(self) -> list[str]:
        return [*super()._excluded_save_params(), "demo_buffer", "_pretraining"]
