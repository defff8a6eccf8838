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
far (``initial_epochs`` for the first fit, ``epochs`` for later ones). Queries, their clips and the
answers live in the label store and the run's clip folder (:mod:`rewards.store`,
:mod:`rewards.clipfiles`); a checkpoint holds the rest (:meth:`PreferenceCallback.state_dict`).

Differences from the paper:
- The first round uses clips of the untrained policy's first rollout in place of a separate
  random-policy phase (an untrained policy acts nearly at random); the rewards of that first rollout
  come from the untrained reward model.
- Synthetic and simulated labelers answer at once (into the label store, like a human would); a human
  answers asynchronously and training goes on meanwhile, at most ``run_ahead`` labels ahead.
- The paper fits the reward model asynchronously. Here a fit runs in the round by default (the agent
  then learns from the new model at once); with ``background_fit`` it runs on a copy of the ensemble
  in a worker thread while the agent goes on, and is applied at the next rollout end (or at a
  checkpoint, if one comes first): one rollout later, always at the same point, so a seeded run stays
  reproducible.
"""

from __future__ import annotations

import copy
import math
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any, NamedTuple

import numpy as np
import torch as th
from stable_baselines3.common.callbacks import BaseCallback

from core.errors import UsageError
from rewards.clipfiles import ClipFolder
from rewards.clips import STRATEGIES, Clip, comparisons_from_labels, cut_clips, select_pairs
from rewards.labelers import Labeler
from rewards.models import FitReport, RewardEnsemble
from rewards.preferences import Comparisons
from rewards.rendering import QueryPublisher
from rewards.store import LabelStore, NewQuery
from rewards.wrapper import LearnedRewardVecEnv, relabel_replay

ABSORBING_KEPT = 2000  # absorbing-state rows the reward is centred on (the newest answered clips')


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


class PlannedQuery(NamedTuple):
    """A query of a round before it is stored.

    :param left: the left clip
    :param right: the right clip
    :param strategy: how it was chosen (``variance``, ``random``, ``repeat``, ``gold``)
    :param score: the selection score, if any
    :param kind: ``normal``, ``repeat`` or ``gold`` (see :mod:`rewards.store`)
    :param repeat_of: the query a repeat repeats
    :param gold_choice: the known answer of a gold query
    :param references: the clips' stored references when they are already on disk (repeats)
    """

    left: Clip
    right: Clip
    strategy: str
    score: float | None
    kind: str = "normal"
    repeat_of: int | None = None
    gold_choice: str | None = None
    references: tuple[str, str] | None = None


def _stochastic_round(value: float, rng: np.random.Generator) -> int:
    """``floor(value)``, plus one with probability ``value - floor(value)`` (unbiased in small rounds)."""
    whole = math.floor(value)
    return whole + int(rng.random() < value - whole)


class PreferenceCallback(BaseCallback):
    """Drives the preference loop for the agent that learns in ``env``.

    Every query goes through the label store: its clips are written to ``clips`` first, then the query
    is added; a synchronous labeler (synthetic, simulated teacher) answers into the store at once, a
    human answers later through the labeling page. The reward model learns from the store's live
    answers, so what it was fit on is exactly what the store holds.

    :param env: the agent's env, wrapped so its reward is ``ensemble``'s (with ``recent_steps`` > 0)
    :param ensemble: the reward ensemble, refit after every round that brought new answers
    :param labeler: answers each pair with ``left``, ``right``, ``equal`` or ``cant_tell`` at once;
        ``None`` for a human, whose answers arrive in the store asynchronously
    :param store: the label store queries and answers go to
    :param clips: the folder the clips are written to (the store holds their references)
    :param labeler_name: the name answers of ``labeler`` are stored under
    :param budget: total labels
    :param total_steps: env steps of the run (the schedule spends ``budget`` by then)
    :param clip_length: steps per clip (paper: 15-60 on MuJoCo, 25 on Atari)
    :param initial_share: share of the budget asked in the first round (paper, MuJoCo: 0.25)
    :param horizon: the label rate decays as ``horizon / (t + horizon)``
    :param query_every: env steps between rounds (at rollout ends)
    :param strategy: query selection: ``variance``, ``random`` or ``mixed``
    :param oversampling: candidate pairs per query
    :param initial_epochs: fitting epochs of the first fit (the paper's Atari: 200)
    :param epochs: fitting epochs of each later fit
    :param batch_size: comparisons per gradient step of the reward model
    :param run_ahead: training waits while more than this many asked labels are unanswered (``None``:
        never; only a human labeler leaves labels unanswered)
    :param poll_seconds: how often a waiting run reads the store
    :param should_stop: returns True when training must stop (ends a wait, e.g. on Ctrl-C)
    :param notify: shows a one-line message (a wait for labels); default ``print``
    :param relabel_replay: after each fit, give an off-policy agent's replay the new rewards
    :param absorbing_ends: clips may run past a termination into the absorbing state, and the learned
        reward is shifted so that the absorbing state's is 0 (see :func:`rewards.clips.cut_clips`)
    :param publisher: draws each query's videos before it is added (:mod:`rewards.rendering`)
    :param repeat_share: share of each round's queries that repeat an answered one, clips mirrored
        (the labelers' consistency, on the stats page)
    :param gold_share: share of each round's queries with a known answer: the pair whose true returns
        differ most among a few candidates (the labelers' accuracy)
    :param background_fit: fit on a copy of the ensemble in a worker thread while the agent trains, and
        apply the fit at the next rollout end (a spare core hides the fitting's wall time)
    :param seed: seed of clip cutting and selection
    """

    def __init__(
        self,
        env: LearnedRewardVecEnv,
        ensemble: RewardEnsemble,
        labeler: Labeler | None,
        *,
        store: LabelStore,
        clips: ClipFolder,
        labeler_name: str = "synthetic",
        budget: int,
        total_steps: int,
        clip_length: int = 25,
        initial_share: float = 0.25,
        horizon: float = 2e6,
        query_every: int = 2048,
        strategy: str = "variance",
        oversampling: int = 10,
        initial_epochs: int = 50,
        epochs: int = 5,
        batch_size: int = 64,
        run_ahead: int | None = None,
        poll_seconds: float = 2.0,
        should_stop: Callable[[], bool] | None = None,
        notify: Callable[[str], None] = print,
        relabel_replay: bool = True,
        absorbing_ends: bool = True,
        publisher: QueryPublisher | None = None,
        repeat_share: float = 0.0,
        gold_share: float = 0.0,
        background_fit: bool = False,
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
        if run_ahead is not None and run_ahead < 0:
            raise UsageError(f"run_ahead must be >= 0 labels (or None); got {run_ahead}")
        self.reward_env = env
        self.ensemble = ensemble
        self.labeler = labeler
        self.store, self.clips, self.labeler_name = store, clips, labeler_name
        self.budget, self.total_steps, self.clip_length = budget, total_steps, clip_length
        self.initial_share, self.horizon, self.query_every = initial_share, horizon, query_every
        self.strategy, self.oversampling = strategy, oversampling
        self.initial_epochs, self.epochs, self.batch_size = initial_epochs, epochs, batch_size
        self.run_ahead, self.poll_seconds = run_ahead, poll_seconds
        self.should_stop = should_stop or (lambda: False)
        self.notify = notify
        self.relabel_replay = relabel_replay
        self.absorbing_ends = absorbing_ends
        self.publisher = publisher
        if not (0.0 <= repeat_share <= 0.5 and 0.0 <= gold_share <= 0.5):
            shares = f"{repeat_share}, {gold_share}"
            raise UsageError(f"repeat_share and gold_share must be in [0, 0.5]; got {shares}")
        self.repeat_share, self.gold_share = repeat_share, gold_share
        self._absorbing: list[tuple[np.ndarray, np.ndarray]] = []  # absorbing rows of answered clips
        self.rng = np.random.default_rng(seed)
        self.generator = th.Generator().manual_seed(seed)
        self.comparisons: Comparisons | None = None
        self.asked = 0  # labels asked (cant_tell answers count: they were asked)
        self.answered = 0  # live answers read from the store (cant_tell included)
        self.rounds = 0
        self.fits = 0
        self.last_answer_id = 0
        self._last_round_step = -query_every
        self._written: dict[str, Clip] = {}  # clips this process wrote and has not yet read back
        self._postponed = False
        self._unfit = 0  # comparisons read since the last fit
        self.round_seconds = 0.0  # wall time of query rounds and fits
        # background_fit: one worker thread; the fit in flight (a fitted copy of the ensemble)
        self.background_fit = background_fit
        self._worker: ThreadPoolExecutor | None = None  # started at the first background fit
        self._pending: tuple[RewardEnsemble, Future[FitReport]] | None = None

    def _on_step(self) -> bool:
        return True

    def _on_rollout_end(self) -> None:
        if self.publisher is not None:
            self.publisher.check()
        if self._pending is not None:
            started = time.perf_counter()
            self.finish_fit()  # the fit started at the previous rollout end
            self.round_seconds += time.perf_counter() - started
        waited = self.num_timesteps - self._last_round_step >= self.query_every
        last = self.num_timesteps >= self.total_steps
        if self.rounds > 0 and not waited and not last:
            self._wait_for_answers()
            return  # the last rollout always gets its round: the budget is asked by ``total_steps``
        # The first round is the paper's "labels before RL": the initial share, on the first clips.
        step = self.num_timesteps if self.rounds > 0 else 0
        due = labels_due(step, self.total_steps, self.budget, self.initial_share, self.horizon)
        started = time.perf_counter()
        if due > self.asked:
            self.query_round(due - self.asked)
        elif self.labeler is None:
            self._learn_from_new_answers()
        self.round_seconds += time.perf_counter() - started
        self._wait_for_answers()
        # Wall time of the reward machinery (query rounds, fits, per-step predictions), waits for labels
        # excluded; a background fit counts only as long as the agent waits for it.
        self.logger.record("reward/seconds", self.round_seconds + self.reward_env.reward_seconds)

    def query_round(self, n_queries: int) -> None:
        """Cut clips, select ``n_queries`` pairs, store them as queries, get the synchronous labeler's
        answers, refit the ensemble on everything answered so far, log."""
        assert self.reward_env.recent is not None
        trajectories = self.reward_env.recent.trajectories()
        longest = max((len(t.observations) for t in trajectories), default=0)
        paddable = self.absorbing_ends and any(t.terminal_observation is not None for t in trajectories)
        if longest < self.clip_length and not paddable:
            # Episodes are shorter than a clip so far (e.g. an untrained policy falls at once): the
            # round waits for longer ones, at the next rollout end.
            if not self._postponed:
                self.notify(
                    f"query round postponed: the recent episodes have {longest} steps at most, "
                    f"clips need {self.clip_length} (preference.clip_length)"
                )
                self._postponed = True
            return
        self._postponed = False
        # Two fresh clips per candidate pair: the ``oversampling * n_queries`` candidates cover as much
        # of the recent behavior as they can (rare informative moments, e.g. the few steps before a
        # fall, are found only in a wide pool).
        n_clips = 2 * self.oversampling * n_queries
        clips = cut_clips(trajectories, self.clip_length, n_clips, self.rng, pad_terminal=self.absorbing_ends)
        fitted = self.fits > 0
        strategy = self.strategy if fitted else "random"  # an unfitted ensemble's variance means nothing
        pairs = select_pairs(
            self.ensemble if fitted else None, clips, n_queries, strategy, self.oversampling, rng=self.rng
        )
        planned = [PlannedQuery(pair.left, pair.right, pair.strategy, pair.score) for pair in pairs]
        planned = self._with_checks(planned, clips)
        query_ids = self._add_queries(planned)
        if self.labeler is not None:
            choices = self.labeler.label([(query.left, query.right) for query in planned])
            for query_id, choice in zip(query_ids, choices, strict=True):
                self.store.answer(query_id, self.labeler_name, choice)
        self.asked += len(planned)
        self.rounds += 1
        self._last_round_step = self.num_timesteps
        scores = [p.score for p in pairs if p.score is not None]
        if scores:
            self.logger.record("reward/disagreement", float(np.mean(scores)))
        self._learn_from_new_answers()

    def _with_checks(self, planned: list[PlannedQuery], candidates: list[Clip]) -> list[PlannedQuery]:
        """Replace some of a round's queries by consistency checks: ``repeat_share`` repeats of answered
        queries (clips mirrored) and ``gold_share`` gold queries (a pair whose true returns differ
        most among a few candidates, its answer known). At least one ordinary query stays."""
        n_repeat = _stochastic_round(len(planned) * self.repeat_share, self.rng)
        n_gold = _stochastic_round(len(planned) * self.gold_share, self.rng)
        checks: list[PlannedQuery] = []
        if n_repeat:
            answered = [p for p in self.store.answered_since(0) if p.kind == "normal"]
            picks = self.rng.permutation(len(answered))[:n_repeat]
            for pick in picks:
                original = answered[int(pick)]
                left, right = original.right_clip, original.left_clip  # mirrored
                checks.append(
                    PlannedQuery(
                        self.clips.load(left), self.clips.load(right), "repeat", None,
                        kind="repeat", repeat_of=original.query_id, references=(left, right),
                    )
                )  # fmt: skip
        with_returns = [clip for clip in candidates if clip.true_rewards is not None]
        if n_gold and len(with_returns) >= 2:
            returns = np.array([float(np.sum(np.asarray(clip.true_rewards))) for clip in with_returns])
            for _ in range(n_gold):
                drawn = self.rng.choice(len(with_returns), size=(self.oversampling, 2))
                gaps = np.abs(returns[drawn[:, 0]] - returns[drawn[:, 1]])
                i, j = drawn[int(np.argmax(gaps))]
                if returns[i] == returns[j]:
                    continue  # no clear answer among these
                choice = "left" if returns[i] > returns[j] else "right"
                left, right = with_returns[i], with_returns[j]
                checks.append(PlannedQuery(left, right, "gold", None, kind="gold", gold_choice=choice))
        checks = checks[: max(len(planned) - 1, 0)]
        return planned[: len(planned) - len(checks)] + checks

    def _add_queries(self, planned: list[PlannedQuery]) -> list[int]:
        """Write the queries' new clips, then add them as queries (so every stored query's clips exist);
        with a publisher, the queries reach the store once their videos are drawn (no ids then)."""
        queries = []
        for query in planned:
            references = query.references
            if references is None:
                saved = []
                for clip in (query.left, query.right):
                    reference = self.clips.save(clip)
                    self._written[reference] = clip
                    saved.append(reference)
                references = (saved[0], saved[1])
            metadata = {
                "clip_length": query.left.length,
                "episodes": [query.left.episode_id, query.right.episode_id],
                "starts": [query.left.start, query.right.start],
            }
            queries.append(
                NewQuery(
                    *references, query.strategy, query.score, self.num_timesteps, metadata,
                    query.kind, query.repeat_of, query.gold_choice,
                )
            )  # fmt: skip
        if self.publisher is not None:
            items = [(new, query.left, query.right) for new, query in zip(queries, planned, strict=True)]
            return self.publisher.publish(items)
        return self.store.add_queries(queries)

    def _clip(self, reference: str) -> Clip:
        clip = self._written.pop(reference, None)
        return self.clips.load(reference) if clip is None else clip

    def read_answers(self) -> int:
        """Add the store's live answers newer than the last one read to ``comparisons``; returns how
        many comparisons were added (``cant_tell`` answers are counted in ``answered``, not added)."""
        new = self.store.answered_since(self.last_answer_id)
        if not new:
            return 0
        self.last_answer_id = max(pair.answer_id for pair in new)
        self.answered += len(new)
        kept = [pair for pair in new if pair.target is not None]
        if not kept:
            return 0
        clip_pairs = [(self._clip(pair.left_clip), self._clip(pair.right_clip)) for pair in kept]
        self._remember_absorbing(clip_pairs)
        added = comparisons_from_labels(clip_pairs, [pair.choice for pair in kept])
        self._unfit += added.size
        if self.comparisons is None:
            self.comparisons = added
        else:
            self.comparisons = Comparisons(
                *(th.cat([old, add]) for old, add in zip(self.comparisons, added, strict=True))
            )
        return added.size

    def _remember_absorbing(self, clip_pairs: list[tuple[Clip, Clip]]) -> None:
        """Keep the absorbing rows of the newest answered clips (the states the reward is zero at)."""
        for pair in clip_pairs:
            for clip in pair:
                if clip.padded:
                    self._absorbing.append((clip.observations[-1:], clip.actions[-1:]))
        del self._absorbing[:-ABSORBING_KEPT]

    def _learn_from_new_answers(self) -> None:
        """Read new answers; refit when comparisons arrived since the last fit; log counts and fit."""
        self.read_answers()
        self.logger.record("label/count", self.asked)
        self.logger.record("label/answered", self.answered)
        self.logger.record("label/comparisons", 0 if self.comparisons is None else self.comparisons.size)
        if self._unfit == 0 or self.comparisons is None:
            return
        self.finish_fit()  # at most one fit in flight
        epochs = self.epochs if self.fits > 0 else self.initial_epochs
        self._unfit = 0
        if self.background_fit:
            if self._worker is None:
                self._worker = ThreadPoolExecutor(1, thread_name_prefix="zoo-reward-fit")
            # The copy learns while the agent goes on with the live ensemble (the comparisons are only
            # ever replaced, never changed in place, so the worker may read them).
            fitted = copy.deepcopy(self.ensemble)
            work = self._worker.submit(fitted.fit, self.comparisons, epochs, self.batch_size, self.generator)
            self._pending = (fitted, work)
            return
        report = self.ensemble.fit(
            self.comparisons, epochs=epochs, batch_size=self.batch_size, generator=self.generator
        )
        self._after_fit(report)

    def finish_fit(self) -> None:
        """Wait for the fit in flight (``background_fit``), if any, and make it the live ensemble."""
        if self._pending is None:
            return
        fitted, work = self._pending
        self._pending = None
        report = work.result()  # an error in the worker is raised here
        self.ensemble.load_state_dict(fitted.state_dict())
        for live, learned in zip(self.ensemble.optimizers, fitted.optimizers, strict=True):
            live.load_state_dict(learned.state_dict())
        self._after_fit(report)

    def _on_training_end(self) -> None:
        self.finish_fit()  # the last round's fit is part of the run
        if self._worker is not None:
            self._worker.shutdown()
            self._worker = None

    def _after_fit(self, report: FitReport) -> None:
        """Center on the absorbing states, relabel an off-policy agent's replay, log the fit."""
        self.fits += 1
        if self.absorbing_ends and self._absorbing:
            obs = np.concatenate([o for o, _ in self._absorbing])
            actions = np.concatenate([a for _, a in self._absorbing])
            self.ensemble.center_on(obs, actions)
        if self.relabel_replay:
            # Off-policy agents: the rewards stored at collection time came from the old model.
            relabeled = relabel_replay(self.model, self.ensemble.predict)
            if relabeled:
                self.logger.record("reward/relabeled", relabeled)
        self.logger.record("reward/train_loss", _finite_mean(report.train_loss))
        self.logger.record("reward/validation_loss", _finite_mean(report.validation_loss))
        self.logger.record("reward/validation_accuracy", _finite_mean(report.validation_accuracy))
        self.logger.record("reward/weight_decay", float(np.mean(report.weight_decay)))
        self.logger.record("reward/true_return_correlation", self.true_return_correlation())

    def _wait_for_answers(self) -> None:
        """With ``run_ahead`` set, block while more than ``run_ahead`` asked labels are unanswered."""
        if self.run_ahead is None:
            return
        announced = False
        while self.asked - self.answered > self.run_ahead and not self.should_stop():
            if self.read_answers() == 0:
                if not announced:
                    unanswered = self.asked - self.answered
                    self.notify(f"waiting for labels: {unanswered} unanswered, run_ahead is {self.run_ahead}")
                    announced = True
                time.sleep(self.poll_seconds)
        if announced:
            self._learn_from_new_answers()

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

    # ---------------------------------------------------------------------------------------------
    # Checkpoints: everything but the comparisons, which are rebuilt from the store

    def state_dict(self) -> dict[str, Any]:
        """The loop's state for a checkpoint: counters, generators, the ensemble (weights, optimizers,
        normalization, adaptive L2) and the recent steps clips are cut from."""
        assert self.reward_env.recent is not None
        self.finish_fit()  # a checkpoint holds the fit in flight, applied
        # Queries still being drawn are not in the store yet: a resumed run asks for them again.
        drawing = 0 if self.publisher is None else self.publisher.queued()
        return {
            "format": 1,
            "counters": {
                "asked": self.asked - drawing,
                "answered": self.answered,
                "rounds": self.rounds,
                "fits": self.fits,
                "last_answer_id": self.last_answer_id,
                "last_round_step": self._last_round_step,
            },
            "rng": self.rng.bit_generator.state,
            "generator": self.generator.get_state(),
            "ensemble": self.ensemble.state_dict(),
            "optimizers": [optimizer.state_dict() for optimizer in self.ensemble.optimizers],
            "recent": self.reward_env.recent.state_dict(),
            "labeler": getattr(self.labeler, "state_dict", dict)(),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore :meth:`state_dict`, then rebuild the comparisons from the store's live answers up to
        the checkpoint's last one. Answers the store received after the checkpoint are read at the
        next round: nothing answered is lost."""
        assert self.reward_env.recent is not None
        counters = state["counters"]
        self.ensemble.load_state_dict(state["ensemble"])
        for optimizer, saved in zip(self.ensemble.optimizers, state["optimizers"], strict=True):
            optimizer.load_state_dict(saved)
        self.rng.bit_generator.state = state["rng"]
        self.generator.set_state(state["generator"])
        self.reward_env.recent.load_state_dict(state["recent"])
        restore = getattr(self.labeler, "load_state_dict", None)
        if restore is not None:
            restore(state.get("labeler") or {})
        self.rounds, self.fits = int(counters["rounds"]), int(counters["fits"])
        self._last_round_step = int(counters["last_round_step"])
        # Queries asked after the checkpoint stay asked (their answers, if any, are kept and used).
        self.asked = max(int(counters["asked"]), self.store.progress().total)
        self.comparisons, self.answered, self.last_answer_id = None, 0, 0
        known = [p for p in self.store.answered_since(0) if p.answer_id <= int(counters["last_answer_id"])]
        kept = [pair for pair in known if pair.target is not None]
        self._absorbing = []
        if kept:
            clip_pairs = [(self.clips.load(p.left_clip), self.clips.load(p.right_clip)) for p in kept]
            self._remember_absorbing(clip_pairs)
            self.comparisons = comparisons_from_labels(clip_pairs, [p.choice for p in kept])
        self.answered = len(known)
        self.last_answer_id = int(counters["last_answer_id"])
        self._unfit = 0  # the checkpoint's ensemble was fit on these


def _finite_mean(values: tuple[float, ...]) -> float:
    """Mean of the members' finite values; NaN when none is (e.g. no validation comparisons yet)."""
    finite = [v for v in values if math.isfinite(v)]
    return float(np.mean(finite)) if finite else float("nan")


def ensemble_reward_function(ensemble: RewardEnsemble) -> Any:
    """The ensemble's ``predict`` as the wrapper's batched numpy reward function."""

    def reward(observations: np.ndarray, actions: np.ndarray) -> np.ndarray:
        return ensemble.predict_numpy(observations, actions)

    return reward
