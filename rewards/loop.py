"""The preference loop of Christiano et al. 2017 as an SB3 callback: query clip pairs on a schedule, get
labels, refit the reward ensemble, while any agent trains on the learned reward.

Schedule (paper, "labels before RL" and the decaying label rate): ``initial_share`` of the ``budget``
is asked first, then labels arrive at a rate proportional to ``horizon / (t + horizon)`` (MuJoCo:
``horizon = 2e6``, Atari: ``5e6``), scaled so the whole budget is spent at ``total_steps``. The
cumulative count is the integral of that rate, ``horizon * log(1 + t / horizon)``:

    labels_due(t) = initial + (budget - initial) * log(1 + t / horizon) / log(1 + total / horizon)

A round runs at the end of a rollout once ``query_every`` env steps have passed since the last one:
clips of ``clip_length`` steps are cut from the agent's recent steps (``LearnedRewardVecEnv.recent``),
pairs are selected (ensemble variance by default), labeled, and the ensemble is refit on all labels so
far (``initial_epochs`` after the first round, ``epochs`` after later ones).

Differences from the paper:
- The first round uses clips of the untrained policy's first rollout in place of a separate
  random-policy phase (an untrained policy acts nearly at random); the rewards of that first rollout
  come from the untrained reward model.
- Labeling is synchronous here (the synthetic and simulated labelers answer at once); the human labeler
  goes through the label store.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch as th
from stable_baselines3.common.callbacks import BaseCallback

from core.errors import UsageError
from rewards.clips import STRATEGIES, QueryPair, comparisons_from_labels, cut_clips, select_pairs
from rewards.labelers import Labeler
from rewards.models import RewardEnsemble
from rewards.preferences import Comparisons
from rewards.wrapper import LearnedRewardVecEnv


def labels_due(
    step: int, total_steps: int, budget: int, initial_share: float = 0.25, horizon: float = 2e6
) -> int:
    """Labels that should have been asked by env step ``step`` (see the module docstring)."""
    initial = round(initial_share * budget)
    if step >= total_steps:
        return budget
    spread = math.log1p(max(step, 0) / horizon) / math.log1p(total_steps / horizon)
    return min(budget, initial + math.floor((budget - initial) * spread))


def pearson(a: np.ndarray, b: np.ndarray) -> float:
    """Pearson correlation of two 1-D arrays (NaN when either is constant or shorter than 2)."""
    if len(a) < 2 or np.std(a) == 0 or np.std(b) == 0:
        return float("nan")
    return float(np.corrcoef(a, b)[0, 1])


class PreferenceCallback(BaseCallback):
    """Drives the preference loop for the agent that learns in ``env``.

    :param env: the agent's env, wrapped so its reward is ``ensemble``'s (with ``recent_steps`` > 0)
    :param ensemble: the reward ensemble, refit after every round
    :param labeler: answers each pair with ``left``, ``right``, ``equal`` or ``cant_tell``
    :param budget: total labels
    :param total_steps: env steps of the run (the schedule spends ``budget`` by then)
    :param clip_length: steps per clip (paper: 15-60 on MuJoCo, 25 on Atari)
    :param initial_share: share of the budget asked in the first round (paper, MuJoCo: 0.25)
    :param horizon: the label rate decays as ``horizon / (t + horizon)``
    :param query_every: env steps between rounds (at rollout ends)
    :param strategy: query selection: ``variance``, ``random`` or ``mixed``
    :param oversampling: candidate pairs per query
    :param initial_epochs: fitting epochs after the first round (the paper's Atari: 200)
    :param epochs: fitting epochs after each later round
    :param batch_size: comparisons per gradient step of the reward model
    :param seed: seed of clip cutting and selection
    """

    def __init__(
        self,
        env: LearnedRewardVecEnv,
        ensemble: RewardEnsemble,
        labeler: Labeler,
        *,
        budget: int,
        total_steps: int,
        clip_length: int = 25,
        initial_share: float = 0.25,
        horizon: float = 2e6,
        query_every: int = 2048,
        strategy: str = "variance",
        oversampling: int = 10,
        initial_epochs: int = 50,
        epochs: int = 20,
        batch_size: int = 64,
        seed: int = 0,
    ) -> None:
        super().__init__()
        if env.recent is None:
            raise UsageError("the preference loop needs a LearnedRewardVecEnv that records recent steps")
        if budget < 1 or total_steps < 1 or clip_length < 1 or query_every < 1:
            raise UsageError(
                f"budget, total_steps, clip_length and query_every must be >= 1; "
                f"got {budget}, {total_steps}, {clip_length}, {query_every}"
            )
        if not 0.0 <= initial_share <= 1.0 or horizon <= 0:
            raise UsageError(f"need 0 <= initial_share <= 1 and horizon > 0; got {initial_share}, {horizon}")
        if strategy not in STRATEGIES:
            raise UsageError(f"query strategy must be one of {', '.join(STRATEGIES)}; got {strategy!r}")
        self.reward_env = env
        self.ensemble = ensemble
        self.labeler = labeler
        self.budget, self.total_steps, self.clip_length = budget, total_steps, clip_length
        self.initial_share, self.horizon, self.query_every = initial_share, horizon, query_every
        self.strategy, self.oversampling = strategy, oversampling
        self.initial_epochs, self.epochs, self.batch_size = initial_epochs, epochs, batch_size
        self.rng = np.random.default_rng(seed)
        self.generator = th.Generator().manual_seed(seed)
        self.comparisons: Comparisons | None = None
        self.asked = 0  # labels asked (cant_tell answers count: they were asked)
        self.rounds = 0
        self._last_round_step = -query_every

    def _on_step(self) -> bool:
        return True

    def _on_rollout_end(self) -> None:
        waited = self.num_timesteps - self._last_round_step >= self.query_every
        if self.rounds > 0 and not waited and self.num_timesteps < self.total_steps:
            return  # the last rollout always gets its round: the budget is spent by ``total_steps``
        due = labels_due(self.num_timesteps, self.total_steps, self.budget, self.initial_share, self.horizon)
        if due <= self.asked:
            return
        self.query_round(due - self.asked)

    def query_round(self, n_queries: int) -> None:
        """Cut clips, select ``n_queries`` pairs, label them, refit the ensemble, log."""
        assert self.reward_env.recent is not None
        trajectories = self.reward_env.recent.trajectories()
        # Enough clips that the candidate pool holds ``oversampling`` pairs per query.
        n_clips = max(2 * n_queries, math.ceil(math.sqrt(2 * self.oversampling * n_queries)) + 1)
        clips = cut_clips(trajectories, self.clip_length, n_clips, self.rng)
        fitted = self.comparisons is not None
        strategy = self.strategy if fitted else "random"  # an unfitted ensemble's variance means nothing
        pairs = select_pairs(
            self.ensemble if fitted else None, clips, n_queries, strategy, self.oversampling, rng=self.rng
        )
        choices = self.labeler.label([pair.clips for pair in pairs])
        self._add(pairs, choices)
        self.asked += len(pairs)
        self.rounds += 1
        self._last_round_step = self.num_timesteps
        self.logger.record("label/count", self.asked)
        self.logger.record("label/comparisons", 0 if self.comparisons is None else self.comparisons.size)
        scores = [p.score for p in pairs if p.score is not None]
        if scores:
            self.logger.record("reward/disagreement", float(np.mean(scores)))
        if self.comparisons is None or self.comparisons.size == 0:
            return
        report = self.ensemble.fit(
            self.comparisons,
            epochs=self.epochs if fitted else self.initial_epochs,
            batch_size=self.batch_size,
            generator=self.generator,
        )
        self.logger.record("reward/train_loss", float(np.nanmean(report.train_loss)))
        self.logger.record("reward/validation_loss", float(np.nanmean(report.validation_loss)))
        self.logger.record("reward/validation_accuracy", float(np.nanmean(report.validation_accuracy)))
        self.logger.record("reward/weight_decay", float(np.mean(report.weight_decay)))
        self.logger.record("reward/true_return_correlation", self.true_return_correlation())

    def _add(self, pairs: list[QueryPair], choices: list[str]) -> None:
        labeled = [(pair.clips, choice) for pair, choice in zip(pairs, choices, strict=True)]
        kept = [(clips, choice) for clips, choice in labeled if choice != "cant_tell"]
        if not kept:
            return
        new = comparisons_from_labels([c for c, _ in kept], [choice for _, choice in kept])
        if self.comparisons is None:
            self.comparisons = new
        else:
            self.comparisons = Comparisons(
                *(th.cat([old, add]) for old, add in zip(self.comparisons, new, strict=True))
            )

    def true_return_correlation(self) -> float:
        """Pearson correlation of predicted and true returns over the recorded episode segments."""
        assert self.reward_env.recent is not None
        segments = [
            t for t in self.reward_env.recent.trajectories() if t.rewards is not None and len(t.rewards) > 1
        ]
        if len(segments) < 2:
            return float("nan")
        predicted = [float(self.ensemble.predict(t.observations, t.actions).sum()) for t in segments]
        true = [float(np.sum(t.rewards)) for t in segments if t.rewards is not None]
        return pearson(np.array(predicted), np.array(true))


def ensemble_reward_function(ensemble: RewardEnsemble) -> Any:
    """The ensemble's ``predict`` as the wrapper's batched numpy reward function."""

    def reward(observations: np.ndarray, actions: np.ndarray) -> np.ndarray:
        return ensemble.predict(observations, actions).cpu().numpy().astype(np.float32)

    return reward
