"""Training callbacks shared by every agent: progress bar, periodic evaluation, checkpoints, and a
graceful stop on SIGINT/SIGTERM. They extend SB3's callback protocol, so any agent gets them."""

from __future__ import annotations

import json
import math
import signal
import time
from collections.abc import Callable
from pathlib import Path
from types import FrameType
from typing import Any

import numpy as np
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
from stable_baselines3.common.callbacks import BaseCallback
from stable_baselines3.common.vec_env import VecEnv

from core.checkpoint import CheckpointManager
from core.evaluation import run_episodes, run_seeded_episodes


class RichProgressCallback(BaseCallback):
    """A progress bar with steps, steps/s, finished episodes, the recent mean return and the latest
    greedy evaluation. Offline runs (no episodes of their own) show steps, steps/s and evaluations.

    The bar is refreshed at most every ``interval`` seconds, so the per-step cost is one clock read.

    :param console: the console owned by the CLI
    :param total_steps: the run's total steps (the bar starts at the current step on resume)
    :param evaluation: the run's periodic evaluation, whose latest mean return the bar shows
    :param offline: the model learns from a dataset (steps are gradient steps, no episodes)
    :param interval: seconds between refreshes
    """

    def __init__(
        self,
        console: Console,
        total_steps: int,
        evaluation: EvalCallback | None = None,
        offline: bool = False,
        interval: float = 0.25,
    ) -> None:
        super().__init__()
        self.console = console
        self.total_steps = total_steps
        self.evaluation = evaluation
        self.offline = offline
        self.interval = interval
        self._progress: Progress | None = None
        self._task: Any = None
        self._next_refresh = 0.0
        self._start_time = 0.0
        self._start_steps = 0

    def _on_training_start(self) -> None:
        episode_columns = [
            TextColumn("episodes {task.fields[episodes]}"),
            TextColumn("return {task.fields[ret]}"),
        ]
        self._progress = Progress(
            TextColumn("[bold]{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("{task.fields[speed]} steps/s"),
            *([] if self.offline else episode_columns),
            TextColumn("eval {task.fields[eval]}"),
            TimeRemainingColumn(),
            console=self.console,
            transient=False,
        )
        self._progress.start()
        self._start_time = time.monotonic()
        self._start_steps = self.model.num_timesteps
        self._task = self._progress.add_task(
            "train",
            total=self.total_steps,
            completed=self.model.num_timesteps,
            speed="-",
            episodes=0,
            ret="-",
            eval="-",
        )

    def _on_step(self) -> bool:
        now = time.monotonic()
        if now >= self._next_refresh:
            self._next_refresh = now + self.interval
            self._refresh(now)
        return True

    def _refresh(self, now: float) -> None:
        if self._progress is None:
            return
        elapsed = max(now - self._start_time, 1e-9)
        speed = (self.model.num_timesteps - self._start_steps) / elapsed
        buffer: Any = self.model.ep_info_buffer or []
        recent = f"{np.mean([info['r'] for info in buffer]):.1f}" if buffer else "-"
        last = self.evaluation.last if self.evaluation is not None else None
        self._progress.update(
            self._task,
            completed=self.model.num_timesteps,
            speed=f"{speed:.0f}",
            episodes=getattr(self.model, "_episode_num", 0),
            ret=recent,
            eval=f"{last[1]:.1f}" if last is not None else "-",
        )

    def _on_training_end(self) -> None:
        if self._progress is not None:
            self._refresh(time.monotonic())
            self._progress.stop()
            self._progress = None


class CheckpointCallback(BaseCallback):
    """Saves a complete training state every ``every`` env steps through a :class:`CheckpointManager`.

    :param manager: where checkpoints go (atomic, keep-last-k)
    :param every: env steps between checkpoints (0 disables periodic saves)
    :param save: ``save(model, directory)`` writes a checkpoint's files
    """

    def __init__(self, manager: CheckpointManager, every: int, save: Callable[[Any, Path], None]) -> None:
        super().__init__()
        self.manager = manager
        self.every = every
        self.save = save
        self._next = 0

    def _on_training_start(self) -> None:
        self._next = self._next_multiple(self.model.num_timesteps)

    def _next_multiple(self, step: int) -> int:
        return (step // self.every + 1) * self.every if self.every > 0 else math.inf  # type: ignore[return-value]

    def _on_step(self) -> bool:
        if self.model.num_timesteps >= self._next:
            self.checkpoint()
            self._next = self._next_multiple(self.model.num_timesteps)
        return True

    def checkpoint(self) -> Path:
        model = self.model
        return self.manager.save(model.num_timesteps, lambda directory: self.save(model, directory))


class EvalCallback(BaseCallback):
    """Greedy evaluation on a separate env every ``every`` env steps; logs ``eval/*`` and keeps the
    best model (by mean return) in ``best_dir``; writes the history to ``evaluations.jsonl``.

    :param eval_env: evaluation env (evaluation protocol, its own seeds)
    :param every: env steps between evaluations (0 disables periodic evaluation)
    :param episodes: episodes per evaluation
    :param best_dir: folder holding ``model.zip`` of the best evaluation so far
    :param history: JSONL file with one line per evaluation
    :param stop_at_return: stop training at the first evaluation whose mean return reaches this value
    :param seeds: one seed per episode (the run's evaluation seeds): every evaluation then plays the
        same start states, so evaluations differ only by the policy; ``None``: ``episodes`` episodes
        following the env's own seeding
    :param algorithm: the model's class path, written to ``best.json`` so ``zoo eval`` can tell a
        checkpoint of another agent
    """

    def __init__(
        self,
        eval_env: VecEnv,
        every: int,
        episodes: int,
        best_dir: Path,
        history: Path,
        stop_at_return: float | None = None,
        seeds: list[int] | None = None,
        algorithm: str | None = None,
    ) -> None:
        super().__init__()
        if seeds is not None and len(seeds) != episodes:
            raise ValueError(f"{len(seeds)} evaluation seeds for {episodes} episodes")
        self.seeds = seeds
        self.algorithm = algorithm
        self.stop_at_return = stop_at_return
        self.reached: tuple[int, float] | None = None  # (step, mean return) that met stop_at_return
        self.last: tuple[int, float] | None = None  # (step, mean return) of the latest evaluation
        self.eval_env = eval_env
        self.every = every
        self.episodes = episodes
        self.best_dir = best_dir
        self.history = history
        self.best_mean = -math.inf
        self._next = 0

    def _on_training_start(self) -> None:
        if self.history.exists():
            for line in self.history.read_text().splitlines():
                if line.strip():
                    self.best_mean = max(self.best_mean, json.loads(line)["mean_return"])
        self._next = (self.model.num_timesteps // self.every + 1) * self.every if self.every > 0 else math.inf  # type: ignore[assignment]

    def _on_step(self) -> bool:
        if self.model.num_timesteps >= self._next:
            mean = self.evaluate()
            self._next = (self.model.num_timesteps // self.every + 1) * self.every
            if self.stop_at_return is not None and mean >= self.stop_at_return:
                self.reached = (self.model.num_timesteps, mean)
                return False
        return True

    def evaluate(self) -> float:
        if self.seeds is not None:
            result = run_seeded_episodes(self.model, self.eval_env, self.seeds, deterministic=True)
        else:
            result = run_episodes(self.model, self.eval_env, self.episodes, deterministic=True)
        step = self.model.num_timesteps
        self.last = (step, result.mean)
        self.logger.record("eval/mean_return", result.mean)
        self.logger.record("eval/std_return", result.std)
        self.logger.record("eval/mean_length", float(np.mean(result.lengths)))
        self.logger.record("time/total_timesteps", step, exclude="tensorboard")
        self.logger.dump(step)
        with open(self.history, "a") as handle:
            handle.write(
                json.dumps(
                    {
                        "step": step,
                        "mean_return": result.mean,
                        "std_return": result.std,
                        "returns": result.returns,
                    }
                )
                + "\n"
            )
        if result.mean > self.best_mean:
            self.best_mean = result.mean
            self.best_dir.mkdir(parents=True, exist_ok=True)
            temporary = self.best_dir / "model.tmp.zip"
            self.model.save(temporary)
            temporary.replace(self.best_dir / "model.zip")
            best = {"step": step, "mean_return": result.mean, "algorithm": self.algorithm}
            (self.best_dir / "best.json").write_text(json.dumps(best))
        return result.mean


class StopOnSignal(BaseCallback):
    """Turns SIGINT/SIGTERM into a clean stop: the current step finishes, ``learn`` returns, and the
    caller checkpoints. A second signal restores the default handler (a second Ctrl-C kills)."""

    def __init__(self) -> None:
        super().__init__()
        self.received: int | None = None
        self._previous: dict[int, Any] = {}

    def install(self) -> None:
        for sig in (signal.SIGINT, signal.SIGTERM):
            self._previous[sig] = signal.signal(sig, self._handle)

    def uninstall(self) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
        self._previous.clear()

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        self.received = signum
        signal.signal(signum, self._previous.get(signum, signal.SIG_DFL))

    def _on_step(self) -> bool:
        return self.received is None
