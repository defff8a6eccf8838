"""``zoo eval``: the evaluation protocol of a run.

An evaluation plays one episode per seed of the run's evaluation seeds (``eval_seeds.json``; the
same list for every run, so agents are compared on the same start states), greedy or stochastic,
on the evaluation env (Atari: full games, raw scores, no life-loss resets; a preference run: the
env's true reward). It evaluates a checkpoint the user picks: ``last`` (the newest complete one),
``best`` (the best periodic evaluation during training), a step, or a checkpoint folder's path.

It writes ``eval.json`` (the summary, replaced), ``eval-episodes.jsonl`` (one line per episode:
seed, return, length, truncation and the scalar ``info`` entries at the episode's end, replaced),
appends the summary to ``eval-history.jsonl``, and with ``videos > 0`` writes the first episodes
as MP4 files under ``videos/`` (off-screen rendering).
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from rich.console import Console
from stable_baselines3.common.base_class import BaseAlgorithm

from core.checkpoint import CheckpointManager, CorruptCheckpointError, step_of
from core.errors import UsageError, ZooError
from core.evaluation import overestimation_gap, run_seeded_episodes
from zoo.config import RunConfig
from zoo.runner import (
    Setup,
    algorithm_name,
    checkpoint_manager,
    make_env,
    prepare,
    q_value_function,
    set_test_policy,
)
from zoo.runs import eval_seeds, open_run, read_status, write_json_atomic

CHECKPOINT_CHOICES = "best, last, a step (e.g. 50000) or a checkpoint folder"
VIDEO_FPS_CAP = 60.0


@dataclass(frozen=True)
class Checkpoint:
    """A model file to evaluate: ``tag`` is ``last``, ``best`` or ``step-N`` (also in file names)."""

    model_file: Path
    tag: str
    algorithm: str | None  # the class path the checkpoint records, when it records one


def locate(target: Path) -> tuple[Path, Path | None]:
    """``(run folder, checkpoint path or None)`` for ``zoo eval TARGET``: a run folder, or a path
    inside one (a checkpoint folder, ``best/``, a ``model.zip``) whose run is the nearest parent
    with a ``config.yaml``."""
    if not target.exists():
        raise UsageError(f"{target}: no such run folder or checkpoint")
    if target.is_dir() and (target / "config.yaml").is_file():
        return target, None
    for parent in target.absolute().parents:
        if (parent / "config.yaml").is_file():
            return parent, target
    raise UsageError(
        f"{target}: not a run folder (no config.yaml) nor a checkpoint inside one; "
        "run folders are made by `zoo train`"
    )


def resolve_checkpoint(run_dir: Path, config: RunConfig, choice: str | Path) -> Checkpoint:
    """The checkpoint ``--checkpoint`` names (``best``, ``last``, a step or a path)."""
    manager = checkpoint_manager(run_dir, config)
    if isinstance(choice, Path):
        return _checkpoint_at(choice)
    if choice == "last":
        latest = manager.latest()
        if latest is None:
            status = read_status(run_dir).get("status", "unknown")
            raise UsageError(f"{run_dir}: no complete checkpoint to evaluate (run status: {status})")
        return Checkpoint(latest / "model.zip", "last", _recorded_algorithm(latest / "state.json"))
    if choice == "best":
        best = run_dir / "best"
        if not (best / "model.zip").is_file():
            raise UsageError(
                f"{run_dir}: no best checkpoint (best/ comes from periodic evaluations during training; "
                f"this run's eval_every is {config.eval_every})"
            )
        return Checkpoint(best / "model.zip", "best", _recorded_algorithm(best / "best.json"))
    if choice.isdigit():
        step = int(choice)
        complete = manager.complete()
        for folder in complete:
            if step_of(folder) == step:
                algorithm = _recorded_algorithm(folder / "state.json")
                return Checkpoint(folder / "model.zip", f"step-{step}", algorithm)
        steps = ", ".join(str(step_of(folder)) for folder in complete) or "none"
        raise UsageError(
            f"--checkpoint {step}: {run_dir} has no complete checkpoint at that step (steps: {steps})"
        )
    raise UsageError(f"--checkpoint {choice!r}: expected {CHECKPOINT_CHOICES}")


def _checkpoint_at(path: Path) -> Checkpoint:
    """A checkpoint given by its path: a ``step-N`` folder, ``best/``, or a ``model.zip`` in one."""
    folder = path.parent if path.is_file() and path.name == "model.zip" else path
    if (folder / "best.json").is_file() and (folder / "model.zip").is_file():
        return Checkpoint(folder / "model.zip", "best", _recorded_algorithm(folder / "best.json"))
    try:
        step = step_of(folder)
        CheckpointManager(folder.parent).verify(folder, hashes=False)
    except (UsageError, CorruptCheckpointError) as error:
        raise UsageError(f"{path}: not a usable checkpoint ({error})") from None
    return Checkpoint(folder / "model.zip", f"step-{step}", _recorded_algorithm(folder / "state.json"))


def _recorded_algorithm(record: Path) -> str | None:
    try:
        value = json.loads(record.read_text()).get("algorithm")
    except (OSError, ValueError, AttributeError):
        return None
    return value if isinstance(value, str) else None


def load_checkpoint(setup: Setup, config: RunConfig, checkpoint: Checkpoint, env: Any) -> BaseAlgorithm:
    """Load ``checkpoint`` as the run's agent; a checkpoint of another agent is a usage error."""
    expected = algorithm_name(setup.spec.algorithm)
    if checkpoint.algorithm is not None and checkpoint.algorithm != expected:
        raise UsageError(
            f"{checkpoint.model_file.parent}: a checkpoint of {checkpoint.algorithm}, not of the run's "
            f"agent {config.agent} ({expected})"
        )
    try:
        return setup.spec.algorithm.load(checkpoint.model_file, env=env, device=setup.device)
    except Exception as error:  # a corrupt zip, an older checkpoint of another agent, ...
        raise ZooError(
            f"{checkpoint.model_file}: cannot load it as a {config.agent} model "
            f"({type(error).__name__}: {error})"
        ) from None


def evaluate_run(
    target: Path,
    *,
    episodes: int,
    deterministic: bool,
    checkpoint: str = "last",
    seed: int | None = None,
    videos: int = 0,
    gap_episodes: int = 0,
    test_policy: str | None = None,
    console: Console | None = None,
) -> tuple[Path, dict[str, Any]]:
    """Evaluate the run at (or the checkpoint at) ``target``; returns the run folder and the report.

    :param checkpoint: ``best``, ``last`` or a step; ignored (and must stay ``last``) when ``target``
        is a checkpoint's path
    :param seed: evaluate on seeds ``seed, seed+1, ...`` instead of the run's evaluation seeds
    :param videos: write MP4s of the first ``videos`` episodes to ``RUN/videos/``
    """
    run_dir, checkpoint_path = locate(target)
    config = open_run(run_dir)
    if checkpoint_path is not None and checkpoint != "last":
        raise UsageError(
            f"--checkpoint {checkpoint}: {target} is already a checkpoint; pass the run folder instead"
        )
    if videos > episodes:
        raise UsageError(f"--video {videos}: more videos than --episodes {episodes}")
    seeds = _episode_seeds(run_dir, episodes, seed)
    setup = prepare(config)
    chosen = resolve_checkpoint(run_dir, config, checkpoint_path or checkpoint)
    render_mode = "rgb_array" if videos > 0 else None
    if videos > 0:
        os.environ.setdefault("MUJOCO_GL", "egl")  # off-screen MuJoCo rendering (no display needed)
    env = setup.family.make_vec_env(
        config.env,
        options=setup.family.Options.model_validate(config.env_options),
        n_envs=1,
        seed=seeds[0],
        training=False,
        render_mode=render_mode,
    )
    try:
        model = load_checkpoint(setup, config, chosen, env)
        if test_policy is not None:
            set_test_policy(model, config.agent, test_policy)
        recorder = _VideoRecorder(run_dir / "videos", chosen.tag, env, videos)
        try:
            with _progress(console, episodes) as advance:
                result = run_seeded_episodes(
                    model,
                    env,
                    seeds,
                    deterministic=deterministic,
                    on_frame=recorder.add if videos else None,
                    record=videos,
                    progress=advance,
                )
            video_files = recorder.finish()
        finally:
            recorder.abort()
    finally:
        env.close()
    step = int(model.num_timesteps)
    mode = "deterministic" if deterministic else "stochastic"
    report: dict[str, Any] = {
        "agent": config.agent,
        "env": config.env,
        "checkpoint": chosen.tag,
        "step": step,
        "episodes": episodes,
        "deterministic": deterministic,
        **({"test_policy": model.policy.test_policy} if hasattr(model.policy, "test_policy") else {}),
        "seeds": result.seeds,
        # A preference run learned from its learned reward; its evaluations use the env's true one.
        "reward": "true" if config.preference is None else "true (the run learned from preferences)",
        "mean_return": result.mean,
        "std_return": result.std,
        "returns": result.returns,
        "lengths": result.lengths,
        "videos": [str(path.relative_to(run_dir)) for path in video_files],
        "time": dt.datetime.now().isoformat(timespec="seconds"),
    }
    q_values = q_value_function(model)
    if setup.spec.value_based and q_values is not None and gap_episodes > 0:
        gap_env = make_env(setup, config, n_envs=1, seed=seeds[0], training=True)
        gap = overestimation_gap(model, q_values, gap_env, gap_episodes, gamma=float(model.gamma))  # type: ignore[attr-defined]
        gap_env.close()
        report["overestimation"] = {
            "mean_gap": gap.mean_gap,
            "mean_predicted_q": gap.mean_predicted,
            "mean_discounted_return": gap.mean_observed,
            "states": gap.states,
            "episodes": gap.episodes,
            "note": "Q(s_t,a_t) minus observed discounted return G_t, greedy policy, training-mode env",
        }
    lines = [
        {
            "episode": i,
            "seed": result.seeds[i],
            "return": result.returns[i],
            "length": result.lengths[i],
            "truncated": result.truncated[i],
            "info": result.infos[i],
            "checkpoint": chosen.tag,
            "step": step,
            "mode": mode,
        }
        for i in range(len(result.returns))
    ]
    _write_jsonl_atomic(run_dir / "eval-episodes.jsonl", [finite(line) for line in lines])
    write_json_atomic(run_dir / "eval.json", finite(report))
    with open(run_dir / "eval-history.jsonl", "a") as handle:
        handle.write(json.dumps(finite(report)) + "\n")
    return run_dir, report


def _episode_seeds(run_dir: Path, episodes: int, seed: int | None) -> list[int]:
    if seed is not None:
        return [seed + i for i in range(episodes)]
    stored = eval_seeds(run_dir)
    if episodes > len(stored):
        raise UsageError(
            f"--episodes {episodes}: the run stores {len(stored)} evaluation seeds; "
            "pass --seed S to evaluate on seeds S, S+1, ... instead"
        )
    return stored[:episodes]


@contextlib.contextmanager
def _progress(console: Console | None, episodes: int) -> Any:
    """A progress bar over episodes (nothing when ``console`` is None)."""
    if console is None:
        yield None
        return
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    columns = (TextColumn("evaluating"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
    with Progress(*columns, console=console, transient=True) as bar:
        task = bar.add_task("eval", total=episodes)
        yield lambda done: bar.update(task, completed=done)


class _VideoRecorder:
    """Streams the frames of the first ``count`` episodes into one MP4 per episode."""

    def __init__(self, folder: Path, tag: str, env: Any, count: int) -> None:
        self.folder = folder
        self.tag = tag
        self.count = count
        metadata = getattr(env, "metadata", None)
        fps = metadata.get("render_fps") if isinstance(metadata, dict) else None
        self.fps = min(float(fps), VIDEO_FPS_CAP) if fps else 30.0
        self.written: list[Path] = []
        self._episode = -1
        self._writer: Any = None

    def add(self, episode: int, frame: np.ndarray) -> None:
        from rewards.video import Mp4Writer

        if episode != self._episode:
            self._close_current()
            self.folder.mkdir(parents=True, exist_ok=True)
            self._writer = Mp4Writer(self.folder / f"{self.tag}-episode-{episode:03d}.mp4", fps=self.fps)
            self._episode = episode
        self._writer.add(frame)

    def _close_current(self) -> None:
        if self._writer is not None:
            self._writer.close()
            self.written.append(self._writer.target)
            self._writer = None

    def finish(self) -> list[Path]:
        self._close_current()
        return self.written

    def abort(self) -> None:
        if self._writer is not None:
            self._writer.abort()
            self._writer = None


def _write_jsonl_atomic(path: Path, rows: list[dict[str, Any]]) -> None:
    temporary = path.with_name(path.name + ".tmp")
    temporary.write_text("".join(json.dumps(row) + "\n" for row in rows))
    os.replace(temporary, path)


def finite(value: Any) -> Any:
    """JSON has no NaN: replace non-finite floats with None."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: finite(v) for k, v in value.items()}
    if isinstance(value, list):
        return [finite(v) for v in value]
    if isinstance(value, np.generic):
        return finite(value.item())
    return value
