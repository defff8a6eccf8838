"""Clips (short trajectory segments) and the choice of which pairs to ask about, from Christiano et al.
2017, "Deep RL from Human Preferences" (arXiv 1706.03741), Sec. 2.2.4.

- :class:`Trajectory` / :func:`split_episodes`: recorded steps of one episode;
- :func:`cut_clips`: fixed-length clips that never cross an episode end;
- :func:`select_pairs`: sample ``oversampling * n_queries`` candidate pairs; ``variance`` keeps those on
  which the ensemble members' Bradley-Terry predictions disagree most, ``random`` picks uniformly,
  ``mixed`` takes a fraction of each;
- :func:`comparisons_from_labels`: labeled pairs -> a :class:`rewards.preferences.Comparisons` batch.

Differences from the paper:
- Candidates are distinct unordered pairs of clips, drawn uniformly, with left and right by a coin
  flip. The disagreement score is the variance across members of ``sigmoid(R_left - R_right)`` on the
  members' own (unnormalized) rewards, without the 10% random-answer term (it scales every variance by
  0.81 and so does not change the ranking).
- ``mixed`` is ours; the paper offers the variance rule and, in its ablation, random queries.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple, Protocol

import numpy as np
import torch as th

from core.errors import UsageError, check_choice
from rewards.preferences import Comparisons, choice_to_mu, preference_probability

STRATEGIES = ("variance", "random", "mixed")
SeedLike = int | np.random.Generator | None


class Trajectory(NamedTuple):
    """Recorded steps of ONE episode (all of it or a part).

    :param observations: ``[T, *obs_shape]``, the observation each action was taken in
    :param actions: ``[T, *action_shape]`` (``[T]`` integers for Discrete actions)
    :param rewards: ``[T]`` true rewards, None when unknown (human labeling)
    :param episode_id: identifies the episode
    :param start: step of the episode the first row is (0 when recorded from the reset)
    :param terminal_observation: the observation after the last step when the env TERMINATED the
        episode there (not a truncation); None otherwise
    :param render_states: ``[T, D]`` what it takes to draw each step (MuJoCo: ``qpos, qvel`` after
        the step, see :class:`core.envs.RenderStateInfo`); None when not recorded
    """

    observations: np.ndarray
    actions: np.ndarray
    rewards: np.ndarray | None = None
    episode_id: int = 0
    start: int = 0
    terminal_observation: np.ndarray | None = None
    render_states: np.ndarray | None = None


class Clip(NamedTuple):
    """``L`` consecutive steps of one episode.

    :param observations: ``[L, *obs_shape]``
    :param actions: ``[L, *action_shape]``
    :param true_rewards: ``[L]``, None when unknown
    :param episode_id: the episode the clip was cut from
    :param start: the episode step of the clip's first row
    :param padded: trailing rows past the episode's termination: the absorbing state (the terminal
        observation, a zero action, true reward 0)
    :param render_states: ``[L, D]`` states to draw the clip from (padded rows repeat the last one);
        None when not recorded (videos are then drawn from image observations, if any)
    """

    observations: np.ndarray
    actions: np.ndarray
    true_rewards: np.ndarray | None
    episode_id: int
    start: int
    padded: int = 0
    render_states: np.ndarray | None = None

    @property
    def length(self) -> int:
        return len(self.observations)


class QueryPair(NamedTuple):
    """A pair chosen to be labeled.

    :param left: shown on the left
    :param right: shown on the right
    :param score: variance of the members' predicted ``P[left > right]``; None for a random pick
    :param strategy: ``variance`` or ``random``: how this pair was chosen
    """

    left: Clip
    right: Clip
    score: float | None
    strategy: str

    @property
    def clips(self) -> tuple[Clip, Clip]:
        return self.left, self.right


class MemberPredictor(Protocol):
    """What query selection needs of a reward ensemble (:class:`rewards.models.RewardEnsemble`)."""

    def member_rewards(self, obs: np.ndarray, actions: np.ndarray | None = None) -> th.Tensor:
        """Each member's own (unnormalized) rewards ``[n, T]`` of ``obs`` ``[T, ...]``."""
        ...


def split_episodes(
    observations: np.ndarray,
    actions: np.ndarray,
    rewards: np.ndarray | None,
    dones: np.ndarray,
    first_episode_id: int = 0,
    render_states: np.ndarray | None = None,
) -> list[Trajectory]:
    """Cut a stream of ``T`` steps of one env into episodes after every ``dones[t]`` (True at an
    episode's last step); a trailing unfinished episode is kept. Episodes are numbered in order."""
    ends = np.flatnonzero(np.asarray(dones, dtype=bool)) + 1
    bounds = zip(np.concatenate([[0], ends]), np.concatenate([ends, [len(observations)]]), strict=True)
    pieces = [(int(a), int(b)) for a, b in bounds if b > a]
    return [
        Trajectory(
            observations[a:b],
            actions[a:b],
            None if rewards is None else rewards[a:b],
            first_episode_id + i,
            render_states=None if render_states is None else render_states[a:b],
        )
        for i, (a, b) in enumerate(pieces)
    ]


def cut_clips(
    trajectories: Sequence[Trajectory],
    length: int,
    n: int,
    rng: SeedLike = None,
    *,
    pad_terminal: bool = False,
) -> list[Clip]:
    """``n`` clips of ``length`` steps at start positions drawn uniformly over every position where
    a clip fits inside one trajectory (without replacement while there are enough positions).

    With ``pad_terminal``, a clip may also run past the end of an episode the env TERMINATED: the rows
    after it are the absorbing state (the terminal observation, a zero action, true reward 0), so a
    clip that ends early compares as the outcome it is (a fall is worse than staying up), and episodes
    shorter than a clip still give clips. Truncated and unfinished episodes are never padded.

    :param trajectories: recent episodes; those shorter than ``length`` (and not padded) are skipped
    :param length: steps per clip
    :param n: clips to cut
    :param rng: seed or generator
    :param pad_terminal: let clips run into the absorbing state after a termination
    """
    if length < 1 or n < 1:
        raise UsageError(f"clip length and count must be >= 1; got {length} and {n}")
    if not trajectories:
        raise UsageError("no trajectories to cut clips from")
    for trajectory in trajectories:
        sizes = {len(trajectory.observations), len(trajectory.actions)}
        if trajectory.rewards is not None:
            sizes.add(len(trajectory.rewards))
        if len(sizes) > 1:
            raise UsageError(
                f"episode {trajectory.episode_id}: observations, actions, rewards differ in length"
            )
    lengths = np.array([len(t.observations) for t in trajectories])
    paddable = np.array([pad_terminal and t.terminal_observation is not None for t in trajectories])
    positions = np.where(paddable, lengths, np.maximum(lengths - length + 1, 0))
    total = int(positions.sum())
    if total == 0:
        raise UsageError(
            f"clip length {length} is longer than the episodes allow (longest: {lengths.max()} steps)"
        )
    generator = np.random.default_rng(rng)
    flat = generator.choice(total, size=n, replace=n > total)
    ends = np.cumsum(positions)
    which = np.searchsorted(ends, flat, side="right")
    return [
        _clip_at(trajectories[index], int(offset), length)
        for index, offset in zip(which, flat - (ends[which] - positions[which]), strict=True)
    ]


def _clip_at(t: Trajectory, offset: int, length: int) -> Clip:
    """The clip of ``t`` from row ``offset``, padded with the absorbing state past its end."""
    window = slice(offset, offset + length)
    observations, actions = np.array(t.observations[window]), np.array(t.actions[window])
    rewards = None if t.rewards is None else np.array(t.rewards[window])
    states = None if t.render_states is None else np.array(t.render_states[window])
    padded = length - len(observations)
    if padded > 0:
        assert t.terminal_observation is not None
        terminal = np.asarray(t.terminal_observation, dtype=observations.dtype)[None]
        observations = np.concatenate([observations, np.repeat(terminal, padded, axis=0)])
        actions = np.concatenate([actions, np.zeros((padded, *actions.shape[1:]), dtype=actions.dtype)])
        if rewards is not None:
            rewards = np.concatenate([rewards, np.zeros(padded, dtype=rewards.dtype)])
        if states is not None:  # the absorbing state is drawn as the last state, held
            states = np.concatenate([states, np.repeat(states[-1:], padded, axis=0)])
    return Clip(observations, actions, rewards, t.episode_id, t.start + offset, padded, states)


def candidate_pairs(n_clips: int, n_pairs: int, rng: np.random.Generator) -> np.ndarray:
    """``[min(n_pairs, C), 2]`` distinct unordered pairs of clip indices (``C = n_clips (n_clips - 1) / 2``),
    drawn uniformly without replacement, each in random left/right order."""
    starts = np.concatenate([[0], np.cumsum(np.arange(n_clips - 1, 0, -1))])  # first flat index per row
    flat = rng.choice(int(starts[-1]), size=min(n_pairs, int(starts[-1])), replace=False)
    first = np.searchsorted(starts, flat, side="right") - 1
    pairs = np.stack([first, first + 1 + flat - starts[first]], axis=1)
    swap = rng.random(len(pairs)) < 0.5
    pairs[swap] = pairs[swap, ::-1]
    return pairs


def pair_variances(ensemble: MemberPredictor, clips: Sequence[Clip], pairs: np.ndarray) -> np.ndarray:
    """``[P]`` variance across members of their Bradley-Terry ``P[left > right]`` for each pair."""
    lengths = {clip.length for clip in clips}
    if len(lengths) > 1:
        raise UsageError(f"query selection needs clips of one length; got lengths {sorted(lengths)}")
    obs = np.concatenate([clip.observations for clip in clips])
    actions = np.concatenate([clip.actions for clip in clips])
    # The members' own rewards: their Bradley-Terry predictions are on that scale. (Standardized
    # rewards would inflate tiny differences when the members predict nearly constant rewards on the
    # normalization states, saturate every prediction and hide the disagreement.)
    per_step = ensemble.member_rewards(obs, actions)  # [n, K * L]
    returns = per_step.reshape(per_step.shape[0], len(clips), -1).sum(-1)  # [n, K] undiscounted sums
    left, right = (th.as_tensor(pairs[:, side], device=returns.device) for side in (0, 1))
    probability = preference_probability(returns[:, left], returns[:, right], random_answer_rate=0.0)
    # Paper Sec. 2.2.4: ask where the members' predicted preferences vary most.
    return probability.var(dim=0, unbiased=False).cpu().numpy()


def select_pairs(
    ensemble: MemberPredictor | None,
    candidates: Sequence[Clip],
    n_queries: int,
    strategy: str = "variance",
    oversampling: int = 10,
    mixed_fraction: float = 0.5,
    rng: SeedLike = None,
) -> list[QueryPair]:
    """Choose ``n_queries`` clip pairs to label.

    :param ensemble: the reward ensemble (unused, may be None, for ``random``)
    :param candidates: clips to pair up (all of one length for ``variance`` and ``mixed``)
    :param n_queries: pairs to return
    :param strategy: ``variance``, ``random`` or ``mixed``
    :param oversampling: candidate pairs drawn per query (fewer when the clips have fewer pairs)
    :param mixed_fraction: share of the ``mixed`` queries chosen by variance (rounded; the rest: random)
    :param rng: seed or generator
    :return: variance picks first (highest score first), then random picks
    """
    check_choice("query strategy", strategy, STRATEGIES)
    n_clips = len(candidates)
    n_possible = n_clips * (n_clips - 1) // 2
    if n_queries < 1 or oversampling < 1 or not 0.0 <= mixed_fraction <= 1.0:
        raise UsageError(
            f"need n_queries >= 1, oversampling >= 1, 0 <= mixed_fraction <= 1; "
            f"got {n_queries}, {oversampling}, {mixed_fraction}"
        )
    if n_queries > n_possible:
        raise UsageError(
            f"{n_queries} queries asked but {n_clips} clips make only {n_possible} distinct pairs"
        )
    if ensemble is None and strategy != "random":
        raise UsageError(f"query strategy {strategy} needs a reward ensemble")
    generator = np.random.default_rng(rng)
    pairs = candidate_pairs(n_clips, oversampling * n_queries, generator)
    n_variance = {"variance": n_queries, "random": 0, "mixed": round(mixed_fraction * n_queries)}[strategy]
    chosen: list[QueryPair] = []
    remaining = np.arange(len(pairs))
    if n_variance and ensemble is not None:
        scores = pair_variances(ensemble, candidates, pairs)
        best = np.argsort(-scores, kind="stable")[:n_variance]
        chosen += [
            QueryPair(candidates[pairs[i, 0]], candidates[pairs[i, 1]], float(scores[i]), "variance")
            for i in best
        ]
        remaining = np.setdiff1d(remaining, best)
    picks = generator.choice(remaining, size=n_queries - len(chosen), replace=False)
    chosen += [QueryPair(candidates[pairs[i, 0]], candidates[pairs[i, 1]], None, "random") for i in picks]
    return chosen


def comparisons_from_labels(
    pairs: Sequence[tuple[Clip, Clip]], choices: Sequence[str], device: th.device | str = "cpu"
) -> Comparisons:
    """The labeled pairs as a :class:`Comparisons` batch; ``cant_tell`` answers are dropped.

    :param pairs: ``(left, right)`` clips, all of one length
    :param choices: one of ``left``, ``right``, ``equal``, ``cant_tell`` per pair
    """
    if len(pairs) != len(choices) or not pairs:
        raise UsageError(
            f"need one choice per pair and at least one pair; got {len(pairs)} and {len(choices)}"
        )
    labeled = [
        (pair, mu)
        for pair, choice in zip(pairs, choices, strict=True)
        if (mu := choice_to_mu(choice)) is not None
    ]
    first = pairs[0][0]

    def stack(arrays: list[np.ndarray], like: np.ndarray) -> th.Tensor:
        stacked = np.stack(arrays) if arrays else np.empty((0, *like.shape), dtype=like.dtype)
        return th.as_tensor(stacked, device=device)

    return Comparisons(
        stack([left.observations for (left, _), _ in labeled], first.observations),
        stack([left.actions for (left, _), _ in labeled], first.actions),
        stack([right.observations for (_, right), _ in labeled], first.observations),
        stack([right.actions for (_, right), _ in labeled], first.actions),
        th.tensor([mu for _, mu in labeled], dtype=th.float32, device=device),
    )
