"""The application's offline path: datasets checked against the env before a run folder exists."""

from __future__ import annotations

import numpy as np
import pytest
from gymnasium import spaces

from core.datasets import TransitionDataset
from core.errors import UsageError


def dataset(observations: np.ndarray, actions: np.ndarray) -> TransitionDataset:
    n = len(observations)
    done = np.zeros(n, dtype=bool)
    done[-1] = True
    return TransitionDataset(
        observations=observations,
        actions=actions,
        rewards=np.zeros(n, dtype=np.float32),
        next_observations=observations,
        terminated=done,
        truncated=np.zeros(n, dtype=bool),
    )


BOX_OBS = spaces.Box(-np.inf, np.inf, (3,), np.float32)
BOX_ACT = spaces.Box(-2.0, 2.0, (1,), np.float32)


def test_fitting_box_dataset_passes() -> None:
    data = dataset(np.zeros((5, 3), np.float32), np.linspace(-2, 2, 5, dtype=np.float32)[:, None])
    data.check_spaces(BOX_OBS, BOX_ACT, "Pendulum-v1")


@pytest.mark.parametrize(
    ("observations", "actions", "message"),
    [
        (np.zeros((4, 11)), np.zeros((4, 1)), r"observations have shape \(11,\), Pendulum-v1 expects \(3,\)"),
        (np.zeros((4, 3)), np.zeros((4, 2)), r"actions have shape \(2,\), Pendulum-v1 expects \(1,\)"),
        (np.zeros((4, 3)), np.array([[0.0], [2.5], [0.0], [0.0]]), r"outside .* \(first at transition 1\)"),
    ],
)
def test_box_mismatches_are_one_line_errors(observations, actions, message) -> None:
    with pytest.raises(UsageError, match=message) as caught:
        dataset(observations, actions).check_spaces(BOX_OBS, BOX_ACT, "Pendulum-v1")
    assert "\n" not in str(caught.value)


def test_discrete_actions_must_be_valid_indices() -> None:
    observations = np.zeros((3, 4), np.float32)
    obs_space = spaces.Box(-np.inf, np.inf, (4,), np.float32)
    two = spaces.Discrete(2)
    dataset(observations, np.array([0, 1, 1])).check_spaces(obs_space, two, "CartPole-v1")
    with pytest.raises(UsageError, match="action 2 at transition 2 is not one of CartPole-v1's 2 actions"):
        dataset(observations, np.array([0, 1, 2])).check_spaces(obs_space, two, "CartPole-v1")
    with pytest.raises(UsageError, match="2 discrete actions"):
        dataset(observations, np.array([0.5, 1, 1])).check_spaces(obs_space, two, "CartPole-v1")
