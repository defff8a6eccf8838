"""Synthetic labelers for clip pairs: the oracle of Christiano et al. 2017, "Deep RL from Human
Preferences" (Sec. 3: synthetic labels prefer the clip with the higher TRUE reward sum), and simulated
imperfect teachers from B-Pref (Lee et al. 2021, "B-Pref: Benchmarking Preference-Based Reinforcement
Learning"). A human answers through the labeling app; every labeler gives the same four answers:
``left``, ``right``, ``equal``, ``cant_tell``.

The simulated teacher, in B-Pref's order, for clip returns ``R1``, ``R2`` (undiscounted):
1. skip: ``max(R1, R2) < skip_threshold`` -> ``cant_tell``;
2. equal: ``|R1 - R2| < equal_threshold`` -> ``equal``;
3. myopic sums ``D = sum_t gamma^(L-1-t) r_t`` (later steps weigh more);
4. Boltzmann: ``P[left] = sigmoid(beta (D1 - D2))``; ``beta=None`` is perfectly rational;
5. mistake: the answer is flipped with probability ``eps``.

Presets (:func:`teacher_from_name`, B-Pref's teachers): ``oracle``, ``stoc`` (Boltzmann), ``mistake``
(eps 0.1), ``skip``, ``equal``, ``myopic`` (gamma 0.9).

Differences from B-Pref:
- Thresholds are absolute. The presets derive them from the candidate clip returns: ``skip`` uses
  their 10% quantile and ``equal`` 0.1 x their std (B-Pref: 0.1 x the mean segment return, which
  assumes positive returns).
- ``stoc`` calibrates ``beta = 1 / std(clip returns)`` (:func:`calibrate_beta`: a one-std gap gives
  ``P = sigmoid(1) = 0.73``, so answers are neither deterministic nor random); B-Pref uses beta = 1 on
  the raw returns, which is also the fallback here when no returns are given.
- A rational teacher answers ``equal`` on an exact tie (B-Pref prefers the first clip).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Protocol

import numpy as np
from numpy.typing import ArrayLike

from core.errors import UsageError, did_you_mean
from rewards.clips import Clip

PRESETS = ("oracle", "stoc", "mistake", "skip", "equal", "myopic")
SKIP_QUANTILE = 0.1
EQUAL_STD_FRACTION = 0.1


class Labeler(Protocol):
    """Answers ``left``, ``right``, ``equal`` or ``cant_tell`` for each ``(left, right)`` pair."""

    def label(self, pairs: Sequence[tuple[Clip, Clip]]) -> list[str]: ...


def true_rewards(clip: Clip) -> np.ndarray:
    """The clip's true rewards ``[L]`` as float64; a UsageError when they are unknown."""
    if clip.true_rewards is None:
        raise UsageError(
            f"synthetic labels need the true rewards of the clips (episode {clip.episode_id} has none)"
        )
    return np.asarray(clip.true_rewards, dtype=np.float64)


class OracleLabeler:
    """Prefers the clip with the higher true undiscounted reward sum; exactly equal sums -> ``equal``."""

    def label(self, pairs: Sequence[tuple[Clip, Clip]]) -> list[str]:
        answers = []
        for left, right in pairs:
            left_return, right_return = true_rewards(left).sum(), true_rewards(right).sum()
            if left_return == right_return:
                answers.append("equal")
            else:
                answers.append("left" if left_return > right_return else "right")
        return answers


def calibrate_beta(clip_returns: ArrayLike) -> float:
    """``1 / std(clip_returns)``: a return gap of one std is answered correctly with probability
    ``sigmoid(1) = 0.73``."""
    std = float(np.std(np.asarray(clip_returns, dtype=np.float64)))
    if not std > 0.0:
        raise UsageError("calibrating the teacher's beta needs clip returns that differ")
    return 1.0 / std


class SimulatedTeacher:
    """An imperfect synthetic labeler (B-Pref); the defaults are a perfect oracle.

    :param beta: Boltzmann rationality on the myopic return gap; None: perfectly rational
    :param gamma: myopic discount, the weight of step ``t`` is ``gamma^(L-1-t)`` (1: not myopic)
    :param eps: probability of flipping the answer (a mistake)
    :param skip_threshold: both clips' returns below it -> ``cant_tell``; None: never skip
    :param equal_threshold: ``|R1 - R2|`` below it -> ``equal``
    :param seed: seed or generator for the stochastic answers
    """

    def __init__(
        self,
        beta: float | None = None,
        gamma: float = 1.0,
        eps: float = 0.0,
        skip_threshold: float | None = None,
        equal_threshold: float = 0.0,
        seed: int | np.random.Generator | None = None,
    ) -> None:
        if beta is not None and not beta > 0.0:
            raise UsageError(f"teacher beta must be > 0 (or None for a rational teacher); got {beta}")
        if not 0.0 < gamma <= 1.0 or not 0.0 <= eps <= 1.0 or equal_threshold < 0.0:
            raise UsageError(
                f"teacher needs 0 < gamma <= 1, 0 <= eps <= 1, equal_threshold >= 0; "
                f"got {gamma}, {eps}, {equal_threshold}"
            )
        self.beta = beta
        self.gamma = gamma
        self.eps = eps
        self.skip_threshold = skip_threshold
        self.equal_threshold = equal_threshold
        self.rng = np.random.default_rng(seed)

    def _myopic_return(self, rewards: np.ndarray) -> float:
        # B-Pref's myopic teacher: sum_t gamma^(L-1-t) r_t, the last step weighs 1.
        return float((self.gamma ** np.arange(len(rewards) - 1, -1, -1) * rewards).sum())

    def label(self, pairs: Sequence[tuple[Clip, Clip]]) -> list[str]:
        return [self._answer(true_rewards(left), true_rewards(right)) for left, right in pairs]

    def _answer(self, left: np.ndarray, right: np.ndarray) -> str:
        left_return, right_return = left.sum(), right.sum()
        if self.skip_threshold is not None and max(left_return, right_return) < self.skip_threshold:
            return "cant_tell"
        if abs(left_return - right_return) < self.equal_threshold:
            return "equal"
        gap = self._myopic_return(left) - self._myopic_return(right)
        if self.beta is None:
            if gap == 0.0:
                return "equal"
            prefers_left = gap > 0.0
        else:
            # Bradley-Terry with rationality beta: P[left] = sigmoid(beta * gap), via tanh (no overflow).
            prefers_left = bool(self.rng.random() < 0.5 * (1.0 + np.tanh(0.5 * self.beta * gap)))
        if self.eps > 0.0 and self.rng.random() < self.eps:
            prefers_left = not prefers_left
        return "left" if prefers_left else "right"


def teacher_from_name(
    name: str, *, clip_returns: ArrayLike | None = None, seed: int | np.random.Generator | None = None
) -> SimulatedTeacher:
    """A B-Pref teacher preset by name.

    :param name: ``oracle``, ``stoc``, ``mistake``, ``skip``, ``equal`` or ``myopic``
    :param clip_returns: true returns of candidate clips, to scale ``stoc``'s beta and the ``skip`` and
        ``equal`` thresholds (needed for ``skip`` and ``equal``)
    :param seed: seed or generator of the teacher
    """
    if name not in PRESETS:
        raise UsageError(
            f"unknown teacher {name!r}; choose one of {', '.join(PRESETS)}{did_you_mean(name, PRESETS)}"
        )
    returns = None if clip_returns is None else np.asarray(clip_returns, dtype=np.float64)
    if name in ("skip", "equal") and (returns is None or returns.size == 0):
        raise UsageError(f"teacher {name} needs clip_returns to set its threshold")
    if name == "stoc":
        return SimulatedTeacher(beta=1.0 if returns is None else calibrate_beta(returns), seed=seed)
    if name == "mistake":
        return SimulatedTeacher(eps=0.1, seed=seed)
    if name == "skip" and returns is not None:
        return SimulatedTeacher(skip_threshold=float(np.quantile(returns, SKIP_QUANTILE)), seed=seed)
    if name == "equal" and returns is not None:
        return SimulatedTeacher(equal_threshold=EQUAL_STD_FRACTION * float(np.std(returns)), seed=seed)
    if name == "myopic":
        return SimulatedTeacher(gamma=0.9, seed=seed)
    return SimulatedTeacher(seed=seed)


class PresetTeacher:
    """A :func:`teacher_from_name` preset whose thresholds and temperature are calibrated on the true
    returns of the clips of its first batch whose returns differ, then kept fixed (before it, every
    pair has equal returns and is answered "equal").

    :param name: a preset name (see :data:`PRESETS`)
    :param seed: seed of the teacher's randomness
    """

    def __init__(self, name: str, seed: int | None = None) -> None:
        if name not in PRESETS:
            raise UsageError(
                f"unknown teacher {name!r}; choose one of {', '.join(PRESETS)}{did_you_mean(name, PRESETS)}"
            )
        self.name = name
        self.seed = seed
        self.teacher: SimulatedTeacher | None = None

    def label(self, pairs: Sequence[tuple[Clip, Clip]]) -> list[str]:
        if self.teacher is None:
            returns = [float(true_rewards(clip).sum()) for pair in pairs for clip in pair]
            if not np.std(returns) > 0.0:
                # Nothing to calibrate on (e.g. Pong's first clips all score 0): every pair is a tie,
                # answered as such; the first batch whose returns differ calibrates the teacher.
                return ["equal"] * len(pairs)
            self.teacher = teacher_from_name(self.name, clip_returns=returns, seed=self.seed)
        return self.teacher.label(pairs)

    def state_dict(self) -> dict[str, Any]:
        """The calibration and the generator state (for a checkpoint); empty before the first batch."""
        if self.teacher is None:
            return {}
        t = self.teacher
        settings = {"beta": t.beta, "gamma": t.gamma, "eps": t.eps, "skip_threshold": t.skip_threshold}
        return settings | {"equal_threshold": t.equal_threshold, "rng": t.rng.bit_generator.state}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore :meth:`state_dict`."""
        if not state:
            self.teacher = None
            return
        settings = {k: v for k, v in state.items() if k != "rng"}
        self.teacher = SimulatedTeacher(**settings)
        self.teacher.rng.bit_generator.state = state["rng"]


def labeler_from_setting(name: str, seed: int | None = None) -> Labeler | None:
    """The labeler of a ``labeler:`` setting: ``synthetic`` -> :class:`OracleLabeler`,
    ``teacher:NAME`` -> :class:`PresetTeacher`, ``human`` -> ``None`` (answers come through the store)."""
    if name == "synthetic":
        return OracleLabeler()
    if name == "human":
        return None
    kind, _, preset = name.partition(":")
    if kind != "teacher" or not preset:
        raise UsageError(
            f"labeler must be synthetic, human or teacher:NAME ({', '.join(PRESETS)}); got {name!r}"
        )
    return PresetTeacher(preset, seed)
