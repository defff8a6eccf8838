"""CartPole-v1 learning check: SC-DQN (beta 3), our DQN (beta 0) and SB3's DQN, same protocol.

Every learner trains with zoo.yaml's CartPole configuration (``agents.scdqn.classic``) for
``--steps`` env steps on each seed, and is evaluated greedily every ``--eval-every`` steps on
``--eval-episodes`` episodes of a separate evaluation env (seeded once with seed + 10,000; ``zoo train``
now resets every evaluation episode with one of the run's stored evaluation seeds instead).
SB3's DQN gets the same hyperparameters; its ``target_update_interval`` counts env steps, so it gets
10 env steps (rl-baselines3-zoo's CartPole value, one copy per rollout), where ours counts 128
gradient updates (also one copy per rollout). Replay: ours uses ``EpisodicReplayBuffer`` (what
``zoo train`` uses), SB3 its own ``ReplayBuffer``.

Reported per learner: the greedy return at the end (mean ± std over seeds), how many seeds reach a
mean greedy return of at least 475 at some evaluation within the budget, and the first step they do.

    python benchmarks/cartpole_learning.py --seeds 0 1 2 --steps 100000 --out benchmarks/out/cartpole.json
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path
from typing import Any

import numpy as np

ENV_ID = "CartPole-v1"
THRESHOLD = 475.0


def build(learner: str, seed: int) -> tuple[Any, Any]:
    """The model and its evaluation env for ``learner`` on ``seed``."""
    from stable_baselines3 import DQN

    from zoo.config import materialize_hyperparameters, resolve
    from zoo.runner import EVAL_SEED_OFFSET, build_model, make_env, prepare

    beta = {"scdqn": 3.0, "scdqn_beta0": 0.0, "sb3_dqn": None}[learner]
    overrides = [f"beta={beta}"] if beta is not None else []
    config = resolve("scdqn", ENV_ID, seed=seed, device="cpu", overrides=overrides)
    setup = prepare(config)
    env = make_env(setup, config, n_envs=config.n_envs, seed=seed, training=True)
    eval_env = make_env(setup, config, n_envs=1, seed=seed + EVAL_SEED_OFFSET, training=False)
    if beta is not None:
        return build_model(setup, config, env), eval_env
    hyperparameters = materialize_hyperparameters(config.hyperparameters, "agents.scdqn")
    hyperparameters.pop("beta")
    hyperparameters["target_update_interval"] = 10  # env steps (SB3's unit)
    return DQN("MlpPolicy", env, seed=seed, device="cpu", verbose=0, **hyperparameters), eval_env


def run(learner: str, seed: int, steps: int, eval_every: int, eval_episodes: int) -> dict[str, Any]:
    from stable_baselines3.common.callbacks import BaseCallback

    from core.evaluation import run_episodes

    model, eval_env = build(learner, seed)
    curve: list[dict[str, float]] = []

    class Evaluate(BaseCallback):
        """Greedy evaluation every ``eval_every`` env steps, inside one ``learn`` call (one schedule)."""

        next_at = eval_every

        def _on_step(self) -> bool:
            if self.num_timesteps >= self.next_at:
                self.next_at += eval_every
                result = run_episodes(self.model, eval_env, eval_episodes, deterministic=True)
                curve.append({"step": self.num_timesteps, "mean_return": result.mean})
            return True

    start = time.perf_counter()
    model.learn(steps, callback=Evaluate())
    eval_env.close()
    reached = next((point["step"] for point in curve if point["mean_return"] >= THRESHOLD), None)
    record = {
        "learner": learner,
        "seed": seed,
        "final_return": curve[-1]["mean_return"],
        "first_step_at_475": reached,
        "curve": curve,
        "seconds": time.perf_counter() - start,
    }
    print(
        f"{learner:12s} seed {seed}: final greedy return {record['final_return']:.1f}, "
        f"first >= 475 at {reached}, {record['seconds']:.0f} s"
    )
    return record


def cached_run(args: argparse.Namespace, learner: str, seed: int) -> dict[str, Any]:
    """``run``, reusing a finished run's record kept next to ``--out`` (an interrupted sweep resumes)."""
    settings = f"{learner}-s{seed}-{args.steps}-{args.eval_every}-{args.eval_episodes}"
    record_path = args.out.parent / "cartpole_runs" / f"{settings}.json"
    if record_path.exists():
        record: dict[str, Any] = json.loads(record_path.read_text())
        print(f"{learner:12s} seed {seed}: reusing {record_path}")
        return record
    record = run(learner, seed, args.steps, args.eval_every, args.eval_episodes)
    record_path.parent.mkdir(parents=True, exist_ok=True)
    record_path.write_text(json.dumps(record, indent=2) + "\n")
    return record


def main() -> None:
    formatter = argparse.RawDescriptionHelpFormatter
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=formatter)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--steps", type=int, default=100_000)
    parser.add_argument("--eval-every", type=int, default=10_000)
    parser.add_argument("--eval-episodes", type=int, default=10)
    parser.add_argument("--learners", nargs="+", default=["scdqn", "scdqn_beta0", "sb3_dqn"])
    parser.add_argument("--out", type=Path, default=Path("benchmarks/out/cartpole.json"))
    args = parser.parse_args()

    records = [cached_run(args, learner, seed) for learner in args.learners for seed in args.seeds]
    lines = [
        f"CartPole-v1, {args.steps} steps, seeds {args.seeds}, greedy evaluation of {args.eval_episodes} "
        f"episodes every {args.eval_every} steps",
        "",
        "| learner | final greedy return (mean ± std over seeds) | seeds reaching >= 475 "
        "| first step at >= 475 |",
        "|---|---|---|---|",
    ]
    for learner in args.learners:
        mine = [r for r in records if r["learner"] == learner]
        finals = [r["final_return"] for r in mine]
        reached = [r["first_step_at_475"] for r in mine if r["first_step_at_475"] is not None]
        first = ", ".join(str(r["first_step_at_475"]) for r in mine)
        lines.append(
            f"| {learner} | {statistics.mean(finals):.1f} ± {float(np.std(finals)):.1f} "
            f"| {len(reached)}/{len(mine)} | {first} |"
        )
    table = "\n".join(lines)
    print(table)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"table": table, "runs": records}, indent=2) + "\n")


if __name__ == "__main__":
    main()
