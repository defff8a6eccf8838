"""The preference loop: the label schedule, and a short synthetic run (PPO on Pendulum with the
oracle) whose learned reward correlates with the true reward."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest
import torch as th
from stable_baselines3 import PPO
from stable_baselines3.common.vec_env import DummyVecEnv, VecMonitor

from core.errors import UsageError
from rewards.clipfiles import ClipFolder
from rewards.labelers import OracleLabeler
from rewards.loop import PreferenceCallback, ensemble_reward_function, labels_due, pearson
from rewards.models import build_reward_ensemble
from rewards.store import LabelStore
from rewards.wrapper import LearnedRewardVecEnv


def test_schedule_asks_a_share_first_then_a_decaying_rate_and_ends_at_the_budget() -> None:
    assert labels_due(0, 1_000_000, 700) == 175  # 25% before RL
    assert labels_due(1_000_000, 1_000_000, 700) == 700
    due = [labels_due(t, 1_000_000, 700) for t in range(0, 1_000_001, 100_000)]
    assert due == sorted(due)
    gains = np.diff(due)
    assert gains[0] > gains[-1]  # the rate decays: horizon / (t + horizon)
    # By hand: 175 + 525 * log(1 + 5e5 / 2e6) / log(1 + 1e6 / 2e6) = 175 + 525 * 0.5503 = 463.9
    assert labels_due(500_000, 1_000_000, 700) == 463


def test_bad_loop_settings_are_one_line_errors(tmp_path) -> None:
    env = DummyVecEnv([lambda: gym.make("Pendulum-v1")])
    ensemble = build_reward_ensemble(env.observation_space, env.action_space, members=2)
    where = {"store": LabelStore.for_run(tmp_path), "clips": ClipFolder(tmp_path)}
    without_recording = LearnedRewardVecEnv(env, ensemble_reward_function(ensemble))
    with pytest.raises(UsageError, match="records recent steps"):
        PreferenceCallback(without_recording, ensemble, OracleLabeler(), budget=10, total_steps=100, **where)
    recording = LearnedRewardVecEnv(env, ensemble_reward_function(ensemble), recent_steps=100)
    with pytest.raises(UsageError, match="query strategy"):
        PreferenceCallback(
            recording, ensemble, OracleLabeler(), budget=10, total_steps=100, strategy="max", **where
        )
    with pytest.raises(UsageError, match="budget"):
        PreferenceCallback(recording, ensemble, OracleLabeler(), budget=0, total_steps=100, **where)
    with pytest.raises(UsageError, match="run_ahead"):
        PreferenceCallback(recording, ensemble, None, budget=10, total_steps=100, run_ahead=-1, **where)


def test_synthetic_run_learns_a_reward_that_correlates_with_the_true_one(tmp_path) -> None:
    th.manual_seed(0)
    base = VecMonitor(DummyVecEnv([lambda: gym.make("Pendulum-v1")]))
    base.seed(0)
    ensemble = build_reward_ensemble(base.observation_space, base.action_space, members=3)
    env = LearnedRewardVecEnv(base, ensemble_reward_function(ensemble), recent_steps=1024)
    total = 2048
    store = LabelStore.for_run(tmp_path)
    loop = PreferenceCallback(
        env, ensemble, OracleLabeler(), store=store, clips=ClipFolder(tmp_path), budget=120,
        total_steps=total, clip_length=20, query_every=512, initial_epochs=50, epochs=30, seed=0,
    )  # fmt: skip
    model = PPO("MlpPolicy", env, n_steps=256, batch_size=64, n_epochs=2, seed=0, device="cpu")
    model.learn(total, callback=loop)
    assert loop.asked == 120 and loop.rounds >= 3
    assert loop.comparisons is not None and loop.comparisons.size == 120  # the oracle never says cant_tell
    # Every query and answer went through the store, each clip to its file.
    assert store.progress() == (120, 0, 0, 120)
    assert len(list((tmp_path / "clips").glob("*.npz"))) == 240
    # Per step, on the agent's recent steps, the learned reward ranks like the true one; so do the
    # returns of the recorded episode segments (what progress.csv logs).
    recent = env.recent
    assert recent is not None
    observations = recent.observations.reshape(-1, *base.observation_space.shape)
    actions = recent.actions.reshape(-1, *base.action_space.shape)
    predicted = ensemble.predict(observations, actions).numpy()
    assert pearson(predicted, recent.rewards.reshape(-1)) > 0.4
    assert loop.true_return_correlation() > 0.3


Seen = list[tuple[int, int]]


def _background_run(tmp_path, seed: int = 0) -> tuple[PreferenceCallback, LearnedRewardVecEnv, Seen]:
    """A short oracle run with ``background_fit``; returns the loop, its env and (rounds, fits) seen
    just before each rollout end's work."""
    tmp_path.mkdir(exist_ok=True)
    th.manual_seed(seed)
    base = VecMonitor(DummyVecEnv([lambda: gym.make("Pendulum-v1")]))
    base.seed(seed)
    ensemble = build_reward_ensemble(base.observation_space, base.action_space, members=3)
    env = LearnedRewardVecEnv(base, ensemble_reward_function(ensemble), recent_steps=1024)
    loop = PreferenceCallback(
        env, ensemble, OracleLabeler(), store=LabelStore.for_run(tmp_path), clips=ClipFolder(tmp_path),
        budget=120, total_steps=2048, clip_length=20, query_every=512, initial_epochs=50, epochs=30,
        background_fit=True, seed=seed,
    )  # fmt: skip
    seen: Seen = []
    rollout_end = loop._on_rollout_end

    def recording() -> None:
        seen.append((loop.rounds, loop.fits))
        rollout_end()

    loop._on_rollout_end = recording  # type: ignore[method-assign]
    model = PPO("MlpPolicy", env, n_steps=256, batch_size=64, n_epochs=2, seed=seed, device="cpu")
    model.learn(2048, callback=loop)
    return loop, env, seen


def test_background_fit_applies_each_fit_one_rollout_later_and_loses_none(tmp_path) -> None:
    loop, env, seen = _background_run(tmp_path / "a")
    # A round at one rollout end has its fit applied at the next: fits trail rounds by one there.
    assert seen[1] == (1, 0) and seen[2] == (1, 1)
    assert loop.fits == loop.rounds and loop._pending is None  # the last round's fit too
    assert loop.asked == 120
    recent = env.recent
    assert recent is not None
    observations = recent.observations.reshape(-1, *env.observation_space.shape)
    actions = recent.actions.reshape(-1, *env.action_space.shape)
    predicted = loop.ensemble.predict(observations, actions).numpy()
    assert pearson(predicted, recent.rewards.reshape(-1)) > 0.4
    # Reproducible: the same seed gives the same reward model.
    again, _, seen_again = _background_run(tmp_path / "b")
    assert seen_again == seen
    assert th.equal(
        again.ensemble.predict(observations, actions), loop.ensemble.predict(observations, actions)
    )


def test_a_checkpoint_holds_the_background_fit_in_flight(tmp_path) -> None:
    loop, _, _ = _background_run(tmp_path)
    assert loop.comparisons is not None
    loop._unfit = 1  # as if an answer had arrived: a fit goes to the worker
    before = loop.fits
    loop._learn_from_new_answers()
    assert loop._pending is not None and loop.fits == before
    state = loop.state_dict()
    assert loop._pending is None and loop.fits == before + 1
    assert state["counters"]["fits"] == before + 1
