"""Learning curves and statistical comparisons of finished runs (``zoo plot``, ``zoo compare``).

Runs are grouped by label (the agent's name, ``pref-<agent>`` for a preference run) and env id.

* A learning curve is ``RUN/evaluations.jsonl`` (greedy evaluations during training). A group's curve
  is the mean over its runs (seeds) on the union of their evaluation steps, cut at the shortest
  run's last step (linear interpolation between a run's own steps), with a 95% Student-t band.
* A run's final score is ``RUN/eval.json``'s mean return when ``zoo eval`` wrote one, else the last
  line of ``evaluations.jsonl``. Per env, :func:`compare` reports with rliable (Agarwal et al., 2021,
  "Deep RL at the Edge of the Statistical Precipice"): the interquartile mean (IQM) with a
  stratified-bootstrap 95% CI, the probability of improvement of every label over every other, and
  performance profiles (the fraction of runs scoring above each threshold).

Runs lacking the data a result needs are skipped and named in the result's ``warnings``; bad input
(a path that holds no run, runs of several envs in one comparison) is a one-line
:class:`~core.errors.UsageError`. Matplotlib and rliable are imported inside the functions that use
them, so importing this module stays cheap.
"""

from __future__ import annotations

import glob
import json
import math
import os
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from core.errors import UsageError
from zoo.runs import env_slug, open_run

if TYPE_CHECKING:
    from matplotlib.axes import Axes

GLOB_CHARACTERS = "*?["
EVALUATIONS = "evaluations.jsonl"
EVAL_REPORT = "eval.json"
CONFIDENCE = 0.95
PROFILE_POINTS = 101


# ------------------------------------------------------------------------------------------ runs


@dataclass(frozen=True)
class Run:
    """A run folder with what grouping needs from its config.

    :param path: the run folder
    :param label: the agent's name, or ``pref-<agent>`` for a preference run
    :param env: the env id
    :param seed: the run's seed
    """

    path: Path
    label: str
    env: str
    seed: int


def find_runs(paths: Sequence[str]) -> list[Path]:
    """The run folders that ``paths`` name, sorted and without duplicates.

    Each argument is a run folder (it holds ``config.yaml``), a folder holding run folders at any
    depth (a seeds group, ``runs/``), or a glob pattern. A named path that does not exist or holds
    no run is a :class:`UsageError`; a pattern's matches may include other things (they are
    ignored), but the pattern as a whole must yield a run. A run folder is never searched for runs.
    """
    found: dict[Path, Path] = {}
    for argument in paths:
        if any(character in argument for character in GLOB_CHARACTERS):
            runs = _runs_matching(argument)
        else:
            runs = _runs_under(Path(argument))
            if not runs:
                raise UsageError(_no_runs_message(argument))
        for run in runs:
            found.setdefault(run.resolve(), run)
    return sorted(found.values(), key=str)


def _runs_matching(pattern: str) -> list[Path]:
    """The runs at or below every match of a glob pattern; none at all is a :class:`UsageError`."""
    runs = [run for match in sorted(glob.glob(pattern)) for run in _runs_under(Path(match))]
    if not runs:
        raise UsageError(f"{pattern}: matches no run folder (run folders are made by `zoo train`)")
    return runs


def _runs_under(path: Path) -> list[Path]:
    """``path`` itself when it is a run folder, else the run folders below it (hidden folders and
    the insides of run folders are not searched)."""
    if not path.exists():
        raise UsageError(f"{path}: no such file or folder")
    if is_run_folder(path):
        return [path]
    runs: list[Path] = []
    for folder, subfolders, _ in os.walk(path):
        subfolders.sort()
        here = Path(folder)
        if is_run_folder(here):
            runs.append(here)
            subfolders.clear()
        else:
            subfolders[:] = [name for name in subfolders if not name.startswith(".")]
    return runs


def _no_runs_message(argument: str) -> str:
    return f"{argument}: not a run folder and holds no run folders (run folders are made by `zoo train`)"


def is_run_folder(path: Path) -> bool:
    """Whether ``path`` is a folder holding ``config.yaml``."""
    return path.is_dir() and (path / "config.yaml").is_file()


def load_runs(paths: Sequence[Path]) -> list[Run]:
    """Read each run folder's config (a bad one is a :class:`UsageError` naming it)."""
    runs = []
    for path in paths:
        config = open_run(path)
        label = config.agent if config.preference is None else f"pref-{config.agent}"
        runs.append(Run(path=path, label=label, env=config.env, seed=config.seed))
    return runs


# ------------------------------------------------------------------------------ learning curves


@dataclass(frozen=True)
class Curve:
    """One run's greedy evaluation returns.

    :param steps: env steps of the evaluations, shape ``(n_evaluations,)``, strictly increasing
    :param returns: mean greedy return at each step, shape ``(n_evaluations,)``
    """

    steps: np.ndarray
    returns: np.ndarray


@dataclass(frozen=True)
class CurveGroup:
    """The learning curve of one (label, env) group, aggregated over its runs.

    :param label: the runs' label
    :param env: the runs' env id
    :param runs: the runs that went in (one per seed)
    :param steps: the evaluation grid, shape ``(n_points,)``
    :param mean: mean return over runs at each step, shape ``(n_points,)``
    :param low: lower end of the 95% confidence band (``None`` for a single run)
    :param high: upper end of the 95% confidence band (``None`` for a single run)
    """

    label: str
    env: str
    runs: tuple[Run, ...]
    steps: np.ndarray
    mean: np.ndarray
    low: np.ndarray | None
    high: np.ndarray | None


@dataclass(frozen=True)
class CurveSet:
    """What :func:`learning_curves` found: the groups, and one warning per run left out."""

    groups: list[CurveGroup]
    warnings: list[str]


def read_evaluations(path: Path) -> list[dict[str, Any]]:
    """The records of an ``evaluations.jsonl`` file (a missing file has none). A truncated last line
    (a run killed mid-write) is dropped; a bad line elsewhere is a :class:`UsageError`."""
    if not path.is_file():
        return []
    lines = [line for line in path.read_text().splitlines() if line.strip()]
    records = []
    for number, line in enumerate(lines, start=1):
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            if number == len(lines):
                break
            raise UsageError(f"{path}:{number}: not a JSON line") from None
        if not isinstance(record, dict) or not {"step", "mean_return"} <= record.keys():
            raise UsageError(f"{path}:{number}: expected a JSON object with step and mean_return")
        records.append(record)
    return records


def read_curve(run: Path) -> Curve | None:
    """A run's learning curve, or ``None`` when it has no evaluations. When a step was evaluated
    twice (a resumed run), the later record counts."""
    by_step = {int(r["step"]): float(r["mean_return"]) for r in read_evaluations(run / EVALUATIONS)}
    if not by_step:
        return None
    steps = np.array(sorted(by_step), dtype=float)
    return Curve(steps=steps, returns=np.array([by_step[int(s)] for s in steps]))


def aggregate_curves(
    curves: Sequence[Curve],
) -> tuple[np.ndarray, np.ndarray, np.ndarray | None, np.ndarray | None]:
    """Mean and 95% band over runs: ``(steps, mean, low, high)``.

    The grid is the union of the runs' steps up to the shortest run's last step; each run is
    interpolated linearly onto it. The band is ``mean ± t(0.975, n-1) · sd / sqrt(n)`` (sample
    sd); with one run there is no band (``low`` and ``high`` are ``None``).
    """
    from scipy import stats

    last = min(curve.steps[-1] for curve in curves)
    union = np.unique(np.concatenate([curve.steps for curve in curves]))
    grid = union[union <= last]
    values = np.stack([np.interp(grid, curve.steps, curve.returns) for curve in curves])
    mean = values.mean(axis=0)
    n = len(curves)
    if n == 1:
        return grid, mean, None, None
    half_width = stats.t.ppf(0.5 + CONFIDENCE / 2, n - 1) * values.std(axis=0, ddof=1) / math.sqrt(n)
    return grid, mean, mean - half_width, mean + half_width


def learning_curves(paths: Sequence[Path]) -> CurveSet:
    """The aggregated learning curve of every (label, env) group of the runs at ``paths``.

    A run without evaluations is left out with a warning; when no run has any, that is a
    :class:`UsageError`.
    """
    warnings: list[str] = []
    members: dict[tuple[str, str], list[tuple[Run, Curve]]] = {}
    for run in load_runs(paths):
        curve = read_curve(run.path)
        if curve is None:
            warnings.append(f"{run.path}: no evaluations yet ({EVALUATIONS}); left out")
            continue
        members.setdefault((run.label, run.env), []).append((run, curve))
    if not members:
        raise UsageError(f"none of the {len(paths)} runs has evaluations ({EVALUATIONS}) to plot")
    groups = []
    for (label, env), pairs in sorted(members.items()):
        steps, mean, low, high = aggregate_curves([curve for _, curve in pairs])
        runs = tuple(run for run, _ in pairs)
        groups.append(CurveGroup(label, env, runs, steps, mean, low, high))
    return CurveSet(groups=groups, warnings=warnings)


def plot_curves(paths: Sequence[Path], out: Path) -> CurveSet:
    """Draw the learning curves of the runs at ``paths`` into the PNG ``out`` (its folders are
    made): one panel per env, one line per label with its 95% band. Returns what was drawn."""
    curves = learning_curves(paths)
    plt = _pyplot()
    envs = sorted({group.env for group in curves.groups})
    figure, axes = plt.subplots(1, len(envs), figsize=(6 * len(envs), 4.2), squeeze=False)
    for ax, env in zip(axes[0], envs, strict=True):
        for group in (g for g in curves.groups if g.env == env):
            _draw_curve(ax, group)
        ax.set_title(env)
        ax.set_xlabel("env steps")
        ax.set_ylabel("greedy eval return")
        ax.grid(alpha=0.3)
        ax.legend(fontsize="small")
    _save(figure, out)
    return curves


def _draw_curve(ax: Axes, group: CurveGroup) -> None:
    seeds = len(group.runs)
    (line,) = ax.plot(group.steps, group.mean, label=f"{group.label} (n={seeds} seed{'s' * (seeds > 1)})")
    if group.low is not None and group.high is not None:
        ax.fill_between(group.steps, group.low, group.high, color=line.get_color(), alpha=0.2)


# ----------------------------------------------------------------------------------- comparison


@dataclass(frozen=True)
class Score:
    """A run's final score and where it came from (``eval.json`` or ``evaluations.jsonl``)."""

    run: Run
    value: float
    source: str


@dataclass(frozen=True)
class EnvComparison:
    """The comparison of the labels on one env.

    :param env: the env id
    :param scores: label -> final scores of its runs, shape ``(n_runs, 1)`` (rliable's layout)
    :param sources: label -> the score source of each of its runs
    :param iqm: label -> interquartile mean of its scores
    :param iqm_ci: label -> (low, high) of the IQM's 95% stratified-bootstrap CI
    :param improvement: (x, y) -> probability of improvement P(X > Y), for every ordered pair
    :param improvement_ci: (x, y) -> (low, high) of its 95% bootstrap CI
    :param taus: thresholds of the performance profiles, shape ``(n_taus,)``
    :param profiles: label -> fraction of runs scoring above each threshold, shape ``(n_taus,)``
    :param profile_cis: label -> 95% CI of the profile, shape ``(2, n_taus)`` (low row, high row)
    """

    env: str
    scores: dict[str, np.ndarray]
    sources: dict[str, list[str]]
    iqm: dict[str, float]
    iqm_ci: dict[str, tuple[float, float]]
    improvement: dict[tuple[str, str], float]
    improvement_ci: dict[tuple[str, str], tuple[float, float]]
    taus: np.ndarray
    profiles: dict[str, np.ndarray]
    profile_cis: dict[str, np.ndarray]

    @property
    def labels(self) -> list[str]:
        return list(self.scores)


@dataclass(frozen=True)
class Comparison:
    """What :func:`compare` found: one comparison per env, one warning per run left out."""

    envs: list[EnvComparison]
    warnings: list[str]
    reps: int
    seed: int


def final_score(run: Run) -> Score | None:
    """``RUN/eval.json``'s mean return (the ``zoo eval`` protocol) when present, else the last
    evaluation during training; ``None`` when the run has neither."""
    report_path = run.path / EVAL_REPORT
    if report_path.is_file():
        try:
            value = json.loads(report_path.read_text())["mean_return"]
        except (json.JSONDecodeError, KeyError, TypeError):
            raise UsageError(f"{report_path}: expected a JSON object with mean_return") from None
        if value is not None:
            return Score(run, float(value), EVAL_REPORT)
    records = read_evaluations(run.path / EVALUATIONS)
    if not records:
        return None
    return Score(run, float(records[-1]["mean_return"]), EVALUATIONS)


def compare(paths: Sequence[Path], group_by: str | None, reps: int = 2000, seed: int = 0) -> Comparison:
    """Compare the final scores of the runs at ``paths``, per env, with rliable.

    :param group_by: ``None`` (all runs must be of one env) or ``"env"`` (one comparison per env)
    :param reps: bootstrap replications of every confidence interval
    :param seed: seed of the bootstrap; a fixed seed gives the same intervals
    """
    if group_by not in (None, "env"):
        raise UsageError(f"--group-by {group_by!r}: the only grouping is env")
    if reps < 1:
        raise UsageError(f"--reps {reps}: must be at least 1")
    scores, warnings = _collect_scores(load_runs(paths))
    by_env: dict[str, list[Score]] = {}
    for score in scores:
        by_env.setdefault(score.run.env, []).append(score)
    if len(by_env) > 1 and group_by != "env":
        raise UsageError(
            f"runs of {len(by_env)} envs ({', '.join(sorted(by_env))}): pass --group-by env to "
            "compare per env, or compare runs of one env"
        )
    envs = [_compare_env(env, by_env[env], reps, seed) for env in sorted(by_env)]
    return Comparison(envs=envs, warnings=warnings, reps=reps, seed=seed)


def _collect_scores(runs: Sequence[Run]) -> tuple[list[Score], list[str]]:
    scores, warnings = [], []
    for run in runs:
        score = final_score(run)
        if score is None:
            warnings.append(f"{run.path}: no {EVAL_REPORT} and no {EVALUATIONS} yet; left out")
        else:
            scores.append(score)
    if not scores:
        raise UsageError(f"none of the {len(runs)} runs has a score ({EVAL_REPORT} or {EVALUATIONS})")
    return scores, warnings


def _compare_env(env: str, scores: Sequence[Score], reps: int, seed: int) -> EnvComparison:
    from rliable import library, metrics

    by_label: dict[str, list[Score]] = {}
    for score in sorted(scores, key=lambda s: (s.run.label, str(s.run.path))):
        by_label.setdefault(score.run.label, []).append(score)
    matrix = {label: np.array([[s.value] for s in group]) for label, group in by_label.items()}
    with seeded_global_rng(seed):  # rliable resamples with numpy's global RNG
        points, intervals = library.get_interval_estimates(
            matrix, lambda x: np.array([metrics.aggregate_iqm(x)]), reps=reps
        )
        improvement, improvement_ci = _improvement(matrix, reps)
        taus = _tau_grid(matrix)
        profiles, profile_cis = library.create_performance_profile(
            matrix, taus, custom_profile_func=_score_distribution, reps=reps
        )
    return EnvComparison(
        env=env,
        scores=matrix,
        sources={label: [s.source for s in group] for label, group in by_label.items()},
        iqm={label: float(points[label][0]) for label in matrix},
        iqm_ci={label: (float(intervals[label][0, 0]), float(intervals[label][1, 0])) for label in matrix},
        improvement=improvement,
        improvement_ci=improvement_ci,
        taus=taus,
        profiles={label: np.asarray(profiles[label]) for label in matrix},
        profile_cis={label: np.asarray(profile_cis[label]) for label in matrix},
    )


def _improvement(
    matrix: dict[str, np.ndarray], reps: int
) -> tuple[dict[tuple[str, str], float], dict[tuple[str, str], tuple[float, float]]]:
    """P(X > Y) with its bootstrap CI for every ordered pair of labels. The bootstrap runs once per
    unordered pair: with ties counted as 1/2, P(Y > X) = 1 - P(X > Y) on every resample, so the
    reverse interval is the mirror image."""
    from rliable import library, metrics

    labels = list(matrix)
    pairs = [(x, y) for i, x in enumerate(labels) for y in labels[i + 1 :]]
    point = {
        (x, y): float(metrics.probability_of_improvement(matrix[x], matrix[y]))
        for x in labels
        for y in labels
        if x != y
    }
    interval: dict[tuple[str, str], tuple[float, float]] = {}
    if pairs:
        keyed = {f"{i}": [matrix[x], matrix[y]] for i, (x, y) in enumerate(pairs)}
        _, bounds = library.get_interval_estimates(
            keyed, lambda x, y: np.array([metrics.probability_of_improvement(x, y)]), reps=reps
        )
        for i, (x, y) in enumerate(pairs):
            low, high = (float(v) for v in np.ravel(bounds[f"{i}"]))
            interval[(x, y)] = (low, high)
            interval[(y, x)] = (1.0 - high, 1.0 - low)
    return point, interval


def _tau_grid(matrix: dict[str, np.ndarray]) -> np.ndarray:
    """Thresholds from just below the lowest score to the highest (a 1-wide span when all are equal)."""
    values = np.concatenate([scores.ravel() for scores in matrix.values()])
    low, high = float(values.min()), float(values.max())
    if high - low < 1e-12:
        low, high = low - 0.5, high + 0.5
    margin = 0.01 * (high - low)
    return np.linspace(low - margin, high, PROFILE_POINTS)


def _score_distribution(scores: np.ndarray, taus: np.ndarray) -> np.ndarray:
    """The fraction of runs scoring above each threshold (rliable's score distribution, vectorized)."""
    return np.mean(scores.reshape(-1, 1) > np.asarray(taus).reshape(1, -1), axis=0)


@contextmanager
def seeded_global_rng(seed: int) -> Iterator[None]:
    """Seed numpy's global RNG for the block, then put its previous state back."""
    state = np.random.get_state()
    np.random.seed(seed)
    try:
        yield
    finally:
        np.random.set_state(state)


# ------------------------------------------------------------------------------------- reporting


def markdown(comparison: Comparison) -> str:
    """The comparison as markdown: per env, a table of labels (runs, IQM [95% CI], mean ± std,
    score source) and a table of probabilities of improvement P(row > column) [95% CI]."""
    parts = [
        "# Comparison\n",
        f"Final score per run: `eval.json` mean return (from `zoo eval`) when present, else the last "
        f"evaluation during training. IQM: interquartile mean over runs; intervals: 95% stratified "
        f"bootstrap CIs ({comparison.reps} reps, seed {comparison.seed}; rliable).\n",
    ]
    for result in comparison.envs:
        parts.append(_markdown_env(result))
    if comparison.warnings:
        parts.append("## Left out\n\n" + "\n".join(f"- {w}" for w in comparison.warnings) + "\n")
    return "\n".join(parts)


def _markdown_env(result: EnvComparison) -> str:
    rows = [
        f"## {result.env}\n",
        "| agent | runs | IQM [95% CI] | mean ± std | score source |",
        "|---|---:|---|---|---|",
    ]
    for label in result.labels:
        values = result.scores[label].ravel()
        std = float(values.std())  # population std over seeds, as everywhere in the zoo
        low, high = result.iqm_ci[label]
        rows.append(
            f"| {label} | {values.size} | {result.iqm[label]:.2f} [{low:.2f}, {high:.2f}] "
            f"| {values.mean():.2f} ± {std:.2f} | {_sources(result.sources[label])} |"
        )
    if len(result.labels) < 2:
        return "\n".join(rows) + "\n"
    rows += ["", "Probability of improvement P(row > column) [95% CI]:", ""]
    rows.append("| | " + " | ".join(result.labels) + " |")
    rows.append("|---|" + "---|" * len(result.labels))
    for x in result.labels:
        cells = [_improvement_cell(result, x, y) for y in result.labels]
        rows.append(f"| {x} | " + " | ".join(cells) + " |")
    return "\n".join(rows) + "\n"


def _improvement_cell(result: EnvComparison, x: str, y: str) -> str:
    if x == y:
        return "–"
    low, high = result.improvement_ci[(x, y)]
    return f"{result.improvement[(x, y)]:.2f} [{low:.2f}, {high:.2f}]"


def _sources(sources: Sequence[str]) -> str:
    """``eval.json`` when all runs agree, else the count of each (``eval.json ×2, evaluations.jsonl ×1``)."""
    kinds = sorted(set(sources))
    if len(kinds) == 1:
        return kinds[0]
    return ", ".join(f"{kind} ×{sources.count(kind)}" for kind in kinds)


def figure_names(env: str) -> dict[str, str]:
    """The PNG file names :func:`plot_comparison` writes for ``env`` (kind -> name)."""
    slug = env_slug(env)
    return {kind: f"{slug}-{kind}.png" for kind in ("iqm", "improvement", "profile")}


def plot_comparison(comparison: Comparison, out_dir: Path) -> list[Path]:
    """Per env, write the IQM intervals, the probabilities of improvement (with two labels or
    more) and the performance profiles as PNGs in ``out_dir`` (made when missing); returns them.
    Only the names of :func:`figure_names` are written (or, for a stale figure, removed)."""
    written = []
    for result in comparison.envs:
        names = figure_names(result.env)
        written.append(_plot_iqm(result, out_dir / names["iqm"]))
        if len(result.labels) > 1:
            written.append(_plot_improvement(result, out_dir / names["improvement"]))
        else:  # a figure of an earlier comparison with more labels would be stale
            (out_dir / names["improvement"]).unlink(missing_ok=True)
        written.append(_plot_profile(result, out_dir / names["profile"]))
    return written


def _plot_iqm(result: EnvComparison, out: Path) -> Path:
    plt = _pyplot()
    labels = result.labels
    figure, ax = plt.subplots(figsize=(6, 0.6 * len(labels) + 1.5))
    for row, label in enumerate(labels):
        low, high = result.iqm_ci[label]
        ax.hlines(row, low, high, color=f"C{row}", linewidth=12, alpha=0.6)
        ax.plot(result.iqm[label], row, marker="|", markersize=22, markeredgewidth=2, color="black")
    ax.margins(x=0.08, y=0.25)
    ax.set_yticks(range(len(labels)), labels)
    ax.set_xlabel("IQM of final greedy return (95% CI)")
    ax.set_title(result.env)
    ax.grid(axis="x", alpha=0.3)
    return _save(figure, out)


def _plot_improvement(result: EnvComparison, out: Path) -> Path:
    plt = _pyplot()
    labels = result.labels
    table = np.array([[result.improvement.get((x, y), 0.5) for y in labels] for x in labels])
    size = 1.2 * len(labels) + 2
    figure, ax = plt.subplots(figsize=(size, size * 0.8))
    image = ax.imshow(table, vmin=0, vmax=1, cmap="RdBu")
    for i, x in enumerate(labels):
        for j, y in enumerate(labels):
            ax.text(
                j,
                i,
                _improvement_cell(result, x, y).replace(" [", "\n["),
                ha="center",
                va="center",
                fontsize="small",
            )
    ax.set_xticks(range(len(labels)), labels, rotation=30, ha="right")
    ax.set_yticks(range(len(labels)), labels)
    ax.set_xlabel("Y")
    ax.set_ylabel("X")
    ax.set_title(f"{result.env}: P(X > Y)")
    figure.colorbar(image, ax=ax)
    return _save(figure, out)


def _plot_profile(result: EnvComparison, out: Path) -> Path:
    plt = _pyplot()
    figure, ax = plt.subplots(figsize=(6, 4.2))
    for row, label in enumerate(result.labels):
        color = f"C{row}"
        ax.plot(result.taus, result.profiles[label], color=color, label=label)
        low, high = result.profile_cis[label]
        ax.fill_between(result.taus, low, high, color=color, alpha=0.2)
    ax.set_xlabel("final greedy return τ")
    ax.set_ylabel("fraction of runs with score > τ")
    ax.set_ylim(-0.02, 1.02)
    ax.set_title(result.env)
    ax.grid(alpha=0.3)
    ax.legend(fontsize="small")
    return _save(figure, out)


def _pyplot() -> Any:
    """matplotlib.pyplot on the Agg backend (no display needed)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(figure: Any, out: Path) -> Path:
    """Write ``figure`` as PNG to ``out`` (folders made), close it and return ``out``."""
    plt = _pyplot()
    out.parent.mkdir(parents=True, exist_ok=True)
    figure.tight_layout()
    figure.savefig(out, format="png", dpi=120)
    plt.close(figure)
    return out
