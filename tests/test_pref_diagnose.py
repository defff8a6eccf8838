"""benchmarks/pref_diagnose.py's Hopper helpers: the healthy rule on stored observations matches the
env's own ``is_healthy``, and the regression on the reward's terms recovers known weights."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from types import ModuleType

import gymnasium as gym
import numpy as np


def diagnose() -> ModuleType:
    path = Path(__file__).resolve().parents[1] / "benchmarks" / "pref_diagnose.py"
    spec = importlib.util.spec_from_file_location("pref_diagnose", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_healthy_rule_on_observations_matches_the_env() -> None:
    module = diagnose()
    env = gym.make("Hopper-v5", terminate_when_unhealthy=False)
    obs, _ = env.reset(seed=0)
    rng = np.random.default_rng(0)
    observations, healthy = [], []
    for _ in range(300):
        obs, *_ = env.step(rng.uniform(-1, 1, 3))
        observations.append(obs)
        healthy.append(bool(env.unwrapped.is_healthy))  # type: ignore[attr-defined]
    found = module.hopper_healthy(env, np.asarray(observations))
    assert 0 < sum(healthy) < len(healthy)  # random actions: it stands a while, then falls
    np.testing.assert_array_equal(found, healthy)


def test_the_regression_on_the_reward_terms_recovers_known_weights() -> None:
    module = diagnose()
    rng = np.random.default_rng(1)
    terms = np.column_stack([rng.normal(size=500), rng.integers(0, 2, 500)])
    learned = 1.5 * terms[:, 0] - 0.25 * terms[:, 1] + 0.5
    line = module.regress_on_terms(learned, terms, terms.sum(1))
    assert "1.50 x forward term -0.25 x healthy term +0.50" in line
