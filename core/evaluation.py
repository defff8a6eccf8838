"""Greedy (or stochastic) evaluation episodes and the Q-value overestimation diagnostic.

Episode returns are the sum of the rewards the evaluation env gives; families build evaluation envs
with the evaluation protocol (Atari: full games, raw scores), so this is the score users compare.

The overestimation gap (Zhu & Rigotti 2021, and van Hasselt et al. 2016, Fig. 3) compares the value
the agent predicts, Q(s_t, a_t), with the discounted return G_t it then actually obtains. It must be
measured in the MDP the agent was trained on (Atari: clipped rewards, a life loss ends the episode),
so :func:`overestimation_gap` runs on a training-mode env. States near a time-limit truncation are
left out: their observed return misses the tail the Q-value rightly includes. A state counts when the
discounted weight of what truncation cut off, gamma**(T - t), is below ``tail_tolerance``.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np
import torch
from stable_baselines3.common.base_class import BaseAlgorithm
from stable_baselines3.common.vec_env import VecEnv

EVAL_SEED_BASE = 10_000  # evaluation seeds start here, disjoint from training envs' seeds (run seed + rank)
STORED_EVAL_SEEDS = 1000  # how many a run stores; an evaluation uses the first N

# Per-step info keys that are not facts about the finished episode.
_NOT_EPISODE_INFO = frozenset({"terminal_observation", "episode", "TimeLimit.truncated", "render_state"})


def evaluation_seeds(count: int = STORED_EVAL_SEEDS, base: int = EVAL_SEED_BASE) -> list[int]:
    """The evaluation seeds every run stores: episode ``i`` resets with seed ``base + i``.

    The list is the same for every run, so runs of different agents and training seeds are evaluated
    on the same start states (common random numbers make comparisons less noisy)."""
    return [base + i for i in range(count)]


@dataclass
class EvaluationResult:
    """Per-episode returns and lengths of an evaluation; ``seeds`` and ``infos`` (the scalar
    ``info`` entries at each episode's end) when the episodes were seeded one by one."""

    returns: list[float] = field(default_factory=list)
    lengths: list[int] = field(default_factory=list)
    seeds: list[int] = field(default_factory=list)
    truncated: list[bool] = field(default_factory=list)
    infos: list[dict[str, float | int | bool | str]] = field(default_factory=list)

    @property
    def mean(self) -> float:
        return float(np.mean(self.returns)) if self.returns else math.nan

    @property
    def std(self) -> float:
        return float(np.std(self.returns)) if self.returns else math.nan


@dataclass
class GapResult:
    """Mean of Q(s_t, a_t) - G_t over the counted states, with the two means it is made of."""

    mean_gap: float
    mean_predicted: float
    mean_observed: float
    states: int
    episodes: int


def run_episodes(
    model: BaseAlgorithm,
    env: VecEnv,
    episodes: int,
    *,
    deterministic: bool = True,
    on_step: Callable[[np.ndarray, np.ndarray, np.ndarray, np.ndarray, list[dict]], None] | None = None,
    progress: Callable[[int], None] | None = None,
) -> EvaluationResult:
    """Run exactly ``episodes`` complete episodes on ``env`` (any number of sub-envs).

    Each sub-env contributes episodes until the total is reached, counted in the order they finish
    with ties broken by sub-env index, so the result does not depend on timing.
    ``on_step(obs, actions, rewards, dones, infos)`` sees every transition (used by the gap).
    """
    result = EvaluationResult()
    n_envs = env.num_envs
    # Cap episodes per sub-env so that the set of episodes is fixed by the seeds, not by speed.
    quota = np.array([(episodes + i) // n_envs for i in range(n_envs)])
    done_count = np.zeros(n_envs, dtype=int)
    running_return = np.zeros(n_envs)
    running_length = np.zeros(n_envs, dtype=int)
    observations = env.reset()
    while (done_count < quota).any():
        actions, _ = model.predict(observations, deterministic=deterministic)  # type: ignore[arg-type]
        next_observations, rewards, dones, infos = env.step(actions)
        if on_step is not None:
            on_step(observations, actions, rewards, dones, infos)  # type: ignore[arg-type]
        running_return += rewards
        running_length += 1
        for i in np.flatnonzero(dones):
            if done_count[i] < quota[i]:
                result.returns.append(float(running_return[i]))
                result.lengths.append(int(running_length[i]))
                done_count[i] += 1
                if progress is not None:
                    progress(len(result.returns))
            running_return[i] = 0.0
            running_length[i] = 0
        observations = next_observations
    return result


def run_seeded_episodes(
    model: BaseAlgorithm,
    env: VecEnv,
    seeds: Sequence[int],
    *,
    deterministic: bool = True,
    on_frame: Callable[[int, np.ndarray], None] | None = None,
    record: int = 0,
    progress: Callable[[int], None] | None = None,
) -> EvaluationResult:
    """One episode per seed on a single-env ``env``: episode ``i`` starts from ``reset(seed=seeds[i])``,
    so the same seeds (and the same model) give the same episodes, whatever ran before.

    Stochastic evaluation seeds torch's and numpy's generators with the episode's seed too, so
    sampled actions repeat as well. ``on_frame(episode, frame)`` gets the rendered frame of every
    state the policy acts in (``len`` frames per episode) for the first ``record`` episodes; the env
    must have been made with ``render_mode="rgb_array"``.
    """
    if env.num_envs != 1:
        raise ValueError(f"seeded evaluation steps one env, got a VecEnv of {env.num_envs}")
    result = EvaluationResult()
    for episode, seed in enumerate(seeds):
        if not deterministic:
            torch.manual_seed(seed)
            np.random.seed(seed % 2**32)
        env.seed(int(seed))
        observations = env.reset()
        recording = on_frame is not None and episode < record
        total, length, done = 0.0, 0, False
        info: dict = {}
        while not done:
            if recording:
                assert on_frame is not None
                on_frame(episode, _first_image(env))
            actions, _ = model.predict(observations, deterministic=deterministic)  # type: ignore[arg-type]
            observations, rewards, dones, infos = env.step(actions)
            total += float(rewards[0])
            length += 1
            done, info = bool(dones[0]), infos[0]
        result.returns.append(total)
        result.lengths.append(length)
        result.seeds.append(int(seed))
        result.truncated.append(bool(info.get("TimeLimit.truncated", False)))
        result.infos.append(_episode_info(info))
        if progress is not None:
            progress(episode + 1)
    return result


def _first_image(env: VecEnv) -> np.ndarray:
    images = env.get_images()
    if not images or images[0] is None:
        raise RuntimeError("the evaluation env renders no frames (make it with render_mode='rgb_array')")
    return np.asarray(images[0])


def _episode_info(info: dict) -> dict[str, float | int | bool | str]:
    """The scalar entries of an episode's last ``info`` (``is_success``, ``lives``, ...)."""
    kept: dict[str, float | int | bool | str] = {}
    for key, value in info.items():
        if key in _NOT_EPISODE_INFO:
            continue
        if (isinstance(value, np.ndarray) and value.size == 1) or isinstance(value, np.generic):
            value = value.item()
        if isinstance(value, bool | int | float | str):
            kept[key] = value
    return kept


def overestimation_gap(
    model: BaseAlgorithm,
    q_values: Callable[[np.ndarray], np.ndarray],
    env: VecEnv,
    episodes: int,
    *,
    gamma: float,
    tail_tolerance: float = 0.01,
) -> GapResult:
    """Mean of predicted Q(s_t, a_t) minus the observed discounted return G_t, greedy policy."""
    per_env: list[list[tuple[float, float]]] = [[] for _ in range(env.num_envs)]
    predicted: list[float] = []
    observed: list[float] = []

    def on_step(
        obs: np.ndarray, actions: np.ndarray, rewards: np.ndarray, dones: np.ndarray, infos: list[dict]
    ) -> None:
        q = q_values(obs)
        chosen = q[np.arange(len(actions)), np.asarray(actions).reshape(-1)]
        for i in range(env.num_envs):
            per_env[i].append((float(chosen[i]), float(rewards[i])))
            if dones[i]:
                truncated = bool(infos[i].get("TimeLimit.truncated", False))
                _collect(per_env[i], truncated, gamma, tail_tolerance, predicted, observed)
                per_env[i] = []

    result = run_episodes(model, env, episodes, deterministic=True, on_step=on_step)
    if not predicted:
        return GapResult(math.nan, math.nan, math.nan, 0, len(result.returns))
    p, o = np.asarray(predicted), np.asarray(observed)
    return GapResult(float(np.mean(p - o)), float(p.mean()), float(o.mean()), len(p), len(result.returns))


def _collect(
    steps: list[tuple[float, float]],
    truncated: bool,
    gamma: float,
    tail_tolerance: float,
    predicted: list[float],
    observed: list[float],
) -> None:
    """Backward discounted returns of one episode; keep the states whose return is trustworthy."""
    length = len(steps)
    g = 0.0
    returns = np.empty(length)
    for t in range(length - 1, -1, -1):
        g = steps[t][1] + gamma * g
        returns[t] = g
    for t, (q, _) in enumerate(steps):
        if truncated and gamma ** (length - t) >= tail_tolerance:
            continue
        predicted.append(q)
        observed.append(float(returns[t]))
