"""Collecting offline datasets from a mixture of behavior sources (BRAC, Wu et al. 2019, Sec. 5).

Sources:

- ``random``: uniform random actions (uniform in the Box bounds, or uniform over Discrete actions);
- ``policy``: the loaded model's own stochastic action, ``model.predict(obs, deterministic=False)``
  (SAC/PPO/A2C sample from their action distribution; DQN-family models act epsilon-greedily with
  their final exploration rate);
- ``noisy``: the ``policy`` action with :class:`Noise`: ``eps:P`` takes a uniform random action with
  probability P (Box or Discrete); ``gaussian:S`` adds N(0, S^2) in action units, then clips to the
  Box bounds (Box only), as the paper's eps1/eps3/gaussian1/gaussian3 variants.

How the mixture is made. The reference code (google-research ``behavior_regularized_offline_rl``,
``brac/collect_data.py``) splits the transition budget between the sources by weight
(``get_sample_counts``: ``int(n * w)`` each, the remainder to the last source) and collects the
sources one after another in one environment. :func:`collect` does the same: each source's block
holds exactly its share of transitions, so ``random:0.2,policy:0.4,noisy:0.4`` of 1M steps is 200k,
400k and 400k transitions, and every episode comes from a single source (recorded in the episode
metadata). Each block starts from a reset; the episode running when a block's budget is spent is cut
and stored with ``truncated=True`` and ``collection_cut=True`` (it must be bootstrapped, and its
return is left out of return statistics). Differences from the reference: it tags no source per
transition (it has no episode structure), and it evaluates each source before collecting, which here
is left to the caller (the card records the source run's evaluation return).

Collection is deterministic for a given seed: the env is seeded once, random and noise draws come
from ``numpy.random.default_rng(seed)`` and the policy's sampling from torch seeded with ``seed``.
Library code never prints; ``progress(steps_done)`` is called as steps are collected.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Literal

import numpy as np
from gymnasium import spaces
from stable_baselines3.common.base_class import BaseAlgorithm
from stable_baselines3.common.utils import set_random_seed
from stable_baselines3.common.vec_env import VecEnv

from core.errors import UsageError
from core.minari_io import Episode

SOURCES = ("random", "policy", "noisy")
POLICY_SOURCES = frozenset({"policy", "noisy"})
PROGRESS_EVERY = 1000


@dataclass(frozen=True)
class Noise:
    """Action noise of the ``noisy`` source.

    :param kind: ``eps`` (uniform random action with probability ``scale``) or ``gaussian``
        (add N(0, scale^2) in action units, clip to the bounds; Box actions only)
    :param scale: the probability (eps, in [0, 1]) or the standard deviation (gaussian, > 0)
    """

    kind: Literal["eps", "gaussian"]
    scale: float

    def __str__(self) -> str:
        return f"{self.kind}:{self.scale:g}"


def parse_mixture(text: str) -> dict[str, float]:
    """``"random:0.2,policy:0.4,noisy:0.4"`` -> weights; :class:`UsageError` naming the bad part.

    Sources are ``random``, ``policy`` and ``noisy``; each at most once; weights are non-negative
    numbers summing to 1 (within 1e-6).
    """
    weights: dict[str, float] = {}
    for part in text.split(","):
        item = part.strip()
        source, colon, value = item.partition(":")
        source = source.strip()
        if not colon or not source or not value.strip():
            raise UsageError(f"--mix {text!r}: {item!r} is not SOURCE:WEIGHT (e.g. random:0.2)")
        if source not in SOURCES:
            raise UsageError(
                f"--mix {text!r}: unknown source {source!r}; expected one of {', '.join(SOURCES)}"
            )
        if source in weights:
            raise UsageError(f"--mix {text!r}: source {source!r} is given twice")
        try:
            weight = float(value)
        except ValueError:
            raise UsageError(
                f"--mix {text!r}: weight {value.strip()!r} of {source} is not a number"
            ) from None
        if not math.isfinite(weight) or weight < 0:
            raise UsageError(f"--mix {text!r}: weight {value.strip()} of {source} must be a number >= 0")
        weights[source] = weight
    total = sum(weights.values())
    if abs(total - 1.0) > 1e-6:
        raise UsageError(f"--mix {text!r}: weights sum to {total:g}, they must sum to 1")
    return weights


def parse_noise(text: str) -> Noise:
    """``"eps:0.1"`` or ``"gaussian:0.3"`` -> :class:`Noise`; :class:`UsageError` otherwise."""
    kind, colon, value = text.strip().partition(":")
    if not colon or kind not in ("eps", "gaussian"):
        raise UsageError(f"--noise {text!r}: expected eps:P or gaussian:S (e.g. eps:0.1, gaussian:0.3)")
    try:
        scale = float(value)
    except ValueError:
        raise UsageError(f"--noise {text!r}: {value!r} is not a number") from None
    if kind == "eps" and not 0.0 <= scale <= 1.0:
        raise UsageError(f"--noise {text!r}: eps is a probability in [0, 1]")
    if kind == "gaussian" and not (math.isfinite(scale) and scale > 0.0):
        raise UsageError(f"--noise {text!r}: the gaussian standard deviation must be > 0")
    return Noise(kind, scale)  # type: ignore[arg-type]


def sample_counts(steps: int, weights: Mapping[str, float]) -> list[tuple[str, int]]:
    """Transitions per source in mixture order: ``int(steps * w)`` each, the rest to the last one
    (the reference code's ``get_sample_counts``)."""
    names = list(weights)
    total = sum(weights.values())
    counts, remainder = [], steps
    for name in names[:-1]:
        count = int(steps * weights[name] / total)
        counts.append((name, count))
        remainder -= count
    counts.append((names[-1], remainder))
    return counts


def check_sources(
    weights: Mapping[str, float], noise: Noise | None, action_space: spaces.Space, has_policy: bool
) -> None:
    """Raise :class:`UsageError` if the mixture cannot be collected with what is given."""
    if not isinstance(action_space, spaces.Box | spaces.Discrete):
        raise UsageError(f"collect supports Box or Discrete actions, not {type(action_space).__name__}")
    needs_policy = [s for s, w in weights.items() if s in POLICY_SOURCES and w > 0]
    if needs_policy and not has_policy:
        raise UsageError(
            f"--mix uses {' and '.join(needs_policy)}: a trained policy is needed, pass --run RUN_DIR"
        )
    uniform = weights.get("random", 0) > 0 or (
        weights.get("noisy", 0) > 0 and noise is not None and noise.kind == "eps"
    )
    if (
        uniform
        and isinstance(action_space, spaces.Box)
        and not (np.isfinite(action_space.low).all() and np.isfinite(action_space.high).all())
    ):
        raise UsageError("uniform random actions need finite Box action bounds; this env's are unbounded")
    if weights.get("noisy", 0) > 0 and noise is None:
        raise UsageError("--mix uses noisy: pass --noise eps:P or --noise gaussian:S")
    if noise is not None and noise.kind == "gaussian" and not isinstance(action_space, spaces.Box):
        raise UsageError(
            f"--noise {noise}: gaussian noise needs a Box action space, this env has "
            f"{type(action_space).__name__} actions (use eps:P)"
        )


@dataclass
class Collection:
    """What :func:`collect` gathered: episodes in order, with their source and whether the step
    budget (not the env) ended them."""

    episodes: list[Episode] = field(default_factory=list)

    def returns(self, source: str | None = None) -> np.ndarray:
        """Undiscounted returns of the episodes the env ended (optionally of one source)."""
        return np.array(
            [
                float(np.sum(e.rewards, dtype=np.float64))
                for e in self.episodes
                if not e.metadata["collection_cut"] and (source is None or e.metadata["source"] == source)
            ]
        )

    @property
    def steps(self) -> int:
        return sum(len(e.rewards) for e in self.episodes)


class _Actor:
    """Chooses the actions of each source for a one-env VecEnv."""

    def __init__(
        self,
        action_space: spaces.Space,
        rng: np.random.Generator,
        model: BaseAlgorithm | None,
        noise: Noise | None,
    ) -> None:
        self.action_space = action_space
        self.rng = rng
        self.model = model
        self.noise = noise

    def random(self) -> np.ndarray:
        space = self.action_space
        if isinstance(space, spaces.Discrete):
            return np.array([space.start + self.rng.integers(space.n)], dtype=np.int64)
        assert isinstance(space, spaces.Box)
        return self.rng.uniform(space.low, space.high)[None].astype(space.dtype)

    def policy(self, observation: np.ndarray) -> np.ndarray:
        assert self.model is not None
        action, _ = self.model.predict(observation, deterministic=False)
        return np.asarray(action)

    def noisy(self, observation: np.ndarray) -> np.ndarray:
        action = self.policy(observation)
        assert self.noise is not None
        if self.noise.kind == "eps":
            return self.random() if self.rng.random() < self.noise.scale else action
        space = self.action_space
        assert isinstance(space, spaces.Box)
        noisy = action + self.rng.normal(0.0, self.noise.scale, size=action.shape)
        return np.clip(noisy, space.low, space.high).astype(space.dtype)

    def act(self, source: str, observation: np.ndarray) -> np.ndarray:
        if source == "random":
            return self.random()
        if source == "policy":
            return self.policy(observation)
        return self.noisy(observation)


def collect(
    env: VecEnv,
    *,
    steps: int,
    weights: Mapping[str, float],
    seed: int,
    model: BaseAlgorithm | None = None,
    noise: Noise | None = None,
    progress: Callable[[int], None] | None = None,
) -> Collection:
    """Collect exactly ``steps`` transitions from ``env`` (a VecEnv with one env) by the mixture.

    See the module docstring for how the mixture is laid out. Observations must be a Box space.
    """
    if env.num_envs != 1:
        raise UsageError(f"collect steps one env at a time, got a VecEnv of {env.num_envs}")
    if steps <= 0:
        raise UsageError(f"--steps {steps}: must be a positive number of transitions")
    observation_space, action_space = env.observation_space, env.action_space
    if not isinstance(observation_space, spaces.Box):
        raise UsageError(
            f"collect supports Box observations, this env has {type(observation_space).__name__} observations"
        )
    check_sources(weights, noise, action_space, model is not None)
    rng = np.random.default_rng(seed)
    set_random_seed(seed)  # torch (the policy's sampling), numpy's and python's global RNGs
    actor = _Actor(action_space, rng, model, noise)
    discrete = isinstance(action_space, spaces.Discrete)
    action_dtype = np.int64 if discrete else action_space.dtype
    action_shape: tuple[int, ...] = () if discrete else tuple(action_space.shape or ())

    collection = Collection()
    done_steps = 0
    env.seed(seed)
    for source, count in sample_counts(steps, weights):
        if count == 0:
            continue
        observation = np.asarray(env.reset())
        observations = np.empty((count, *observation_space.shape), dtype=observation_space.dtype)
        actions = np.empty((count, *action_shape), dtype=action_dtype)
        rewards = np.empty(count, dtype=np.float32)
        terminations = np.zeros(count, dtype=bool)
        truncations = np.zeros(count, dtype=bool)
        start = 0

        for t in range(count):
            observations[t] = observation[0]
            action = actor.act(source, observation)
            next_observation, reward, done, infos = env.step(action)
            actions[t] = action.reshape(action_shape) if not discrete else int(np.asarray(action).item())
            rewards[t] = reward[0]
            if done[0]:
                truncated = bool(infos[0].get("TimeLimit.truncated", False))
                truncations[t] = truncated
                terminations[t] = not truncated
                final = np.asarray(infos[0]["terminal_observation"])
                collection.episodes.append(
                    _episode(
                        observations, actions, rewards, terminations, truncations, start, t + 1, final, source
                    )
                )
                start = t + 1
            done_steps += 1
            if progress is not None and (done_steps % PROGRESS_EVERY == 0 or done_steps == steps):
                progress(done_steps)
            observation = np.asarray(next_observation)
        if start < count:  # the block's budget is spent mid-episode: cut it, as a truncation
            truncations[count - 1] = True
            collection.episodes.append(
                _episode(
                    observations,
                    actions,
                    rewards,
                    terminations,
                    truncations,
                    start,
                    count,
                    observation[0],
                    source,
                    cut=True,
                )
            )
    return collection


def _episode(
    observations: np.ndarray,
    actions: np.ndarray,
    rewards: np.ndarray,
    terminations: np.ndarray,
    truncations: np.ndarray,
    start: int,
    end: int,
    final_observation: np.ndarray,
    source: str,
    *,
    cut: bool = False,
) -> Episode:
    """Rows ``start:end`` of a block as an :class:`Episode` ending in ``final_observation``."""
    return Episode(
        observations=np.concatenate([observations[start:end], final_observation[None]]),
        actions=actions[start:end].copy(),
        rewards=rewards[start:end].copy(),
        terminations=terminations[start:end].copy(),
        truncations=truncations[start:end].copy(),
        metadata={"source": source, "collection_cut": cut},
    )
