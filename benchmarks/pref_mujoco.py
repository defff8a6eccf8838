"""Preference-learned reward against the true reward (Christiano et al. 2017; spec's CPU reproduction).

For each env and seed, through the ``zoo`` CLI as users run it:

1. ``zoo train ppo`` on the TRUE reward, in the env as the preference run sees it (the paper's
   changes from zoo.yaml's ``preference:`` blocks: no termination, no control cost), passed as an
   overlay so both learners face the same task;
2. ``zoo train pref --labeler synthetic --labels N`` (PPO on the learned reward, the oracle labels);
3. ``zoo train pref --labeler teacher:NAME`` (a simulated imperfect teacher), for ``--teacher-seeds``;
4. ``zoo eval RUN --episodes 10``: greedy, last checkpoint, true return, the same protocol for all.

Reported per env: mean ± std over seeds of the true greedy return, the preference runs' ratio to PPO's
mean, and the cost of the reward machinery: the median over seeds of the preference run's wall time
over the PPO run's (both in this invocation, one thread each) and of ``reward/seconds`` (time in query
rounds, fits and per-step predictions, logged by the run) over the run's wall time. Finished runs in
``--work`` are reused (their recorded wall times too), so the script can be resumed.

    python benchmarks/pref_mujoco.py --work benchmarks/out/pref_mujoco
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import yaml

ENVS = {"InvertedPendulum-v5": 100_000, "Hopper-v5": 250_000}
LEARNERS = ("ppo_true_reward", "pref_synthetic", "pref_teacher")


def zoo(*args: str) -> float:
    """Run one ``zoo`` command single-threaded; returns its wall time in seconds."""
    command = [str(Path(sys.executable).with_name("zoo")), *args]
    print("$", " ".join(command), flush=True)
    started = time.perf_counter()
    subprocess.run(command, check=True, env={**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"})
    return time.perf_counter() - started


def preference_env_options(env_id: str) -> dict[str, Any]:
    """The env options a preference run on ``env_id`` gets from zoo.yaml."""
    from zoo.config import resolve

    return resolve("ppo", env_id, preference={}).env_options


def last_logged(run: Path, key: str) -> float | None:
    with open(run / "progress.csv", newline="") as handle:
        values = [float(row[key]) for row in csv.DictReader(handle) if row.get(key)]
    return values[-1] if values else None


def train_once(run: Path, args: list[str]) -> float:
    """Train into ``run`` unless it finished before; returns (and records) the training wall time."""
    timing = run / "benchmark-wall.json"
    if timing.exists():
        return float(json.loads(timing.read_text())["seconds"])
    if run.exists():  # an interrupted earlier attempt: start over
        import shutil

        shutil.rmtree(run)
    seconds = zoo(*args, "--run-dir", str(run), "--quiet")
    timing.write_text(json.dumps({"seconds": seconds}) + "\n")
    return seconds


def evaluate(run: Path, episodes: int) -> float:
    zoo("eval", str(run), "--episodes", str(episodes), "--quiet")
    return float(json.loads((run / "eval.json").read_text())["mean_return"])


def mean_std(values: list[float]) -> str:
    return f"{statistics.fmean(values):.1f} ± {statistics.pstdev(values):.1f}" if values else "n/a"


def main() -> None:
    formatter = argparse.RawDescriptionHelpFormatter
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=formatter)
    parser.add_argument("--work", type=Path, default=Path("benchmarks/out/pref_mujoco"))
    parser.add_argument("--envs", nargs="+", default=list(ENVS), choices=list(ENVS))
    parser.add_argument("--steps", type=int, default=None, help="env steps (default: per env, see ENVS)")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--labels", type=int, default=700)
    parser.add_argument("--teacher", default="stoc", help="simulated teacher preset")
    parser.add_argument("--teacher-seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--episodes", type=int, default=10)
    parser.add_argument(
        "--learners", nargs="+", default=list(LEARNERS), choices=LEARNERS,
        help="run only these (parallel invocations can split the work by learner or seed; results are merged "
        "per learner and seed)",
    )  # fmt: skip
    parser.add_argument(
        "--pref-set", action="append", default=[], metavar="KEY=VALUE",
        help="a preference setting for the pref runs, e.g. clip_length=100 (repeatable)",
    )  # fmt: skip
    parser.add_argument(
        "--agent-set", action="append", default=[], metavar="KEY=VALUE",
        help="a PPO hyperparameter for EVERY learner (true reward and pref alike, so the comparison "
        "stays fair), e.g. ent_coef=0.01 (repeatable)",
    )  # fmt: skip
    options = parser.parse_args()
    work: Path = options.work
    work.mkdir(parents=True, exist_ok=True)
    saved = work / "results.json"  # results of envs and learners run by earlier invocations are kept
    results: dict[str, Any] = json.loads(saved.read_text()) if saved.exists() else {}
    for env_id in options.envs:
        steps = options.steps or ENVS[env_id]
        slug = env_id.replace("/", "-")
        overlay = work / f"{slug}-ppo-env.yaml"
        env_options = preference_env_options(env_id)
        overlay.write_text(yaml.safe_dump({"agents": {"ppo": {env_id: {"env": env_options}}}}))
        learners = {
            "ppo_true_reward": (options.seeds, ["train", "ppo", "--config", str(overlay)]),
            "pref_synthetic": (options.seeds, ["train", "pref", "--labeler", "synthetic"]),
            f"pref_teacher_{options.teacher}": (
                options.teacher_seeds,
                ["train", "pref", "--labeler", f"teacher:{options.teacher}"],
            ),
        }
        header = {"steps": steps, "env_options": env_options, "labels": options.labels}
        if options.pref_set:
            header["preference_settings"] = sorted(options.pref_set)
        if options.agent_set:
            header["agent_settings"] = sorted(options.agent_set)
        for name, (seeds, command) in learners.items():
            if name.removesuffix(f"_{options.teacher}") not in options.learners:
                continue
            runs = []
            for seed in seeds:
                run = work / slug / f"{name}-s{seed}"
                args = [*command, "--env", env_id, "--steps", str(steps), "--seed", str(seed)]
                for assignment in options.agent_set:
                    args += ["--set", assignment]
                if name != "ppo_true_reward":
                    args += ["--labels", str(options.labels)]
                    for assignment in options.pref_set:
                        args += ["--set", f"preference.{assignment}"]
                wall = train_once(run, args)
                record = {"seed": seed, "wall_seconds": wall, "return": evaluate(run, options.episodes)}
                if name != "ppo_true_reward":
                    record["reward_seconds"] = last_logged(run, "reward/seconds")
                    record["final_correlation"] = last_logged(run, "reward/true_return_correlation")
                runs.append(record)
            # re-read: a parallel invocation may have saved other learners meanwhile
            results = json.loads(saved.read_text()) if saved.exists() else {}
            merged = dict(results.get(env_id, {}))
            if any(merged.get(key) != value for key, value in header.items()):
                merged = dict(header)  # measured under other settings: not comparable, start over
            # per seed: runs of seeds this invocation did not run (a parallel one may have) are kept
            ran = {record["seed"] for record in runs}
            kept = [record for record in merged.get(name, []) if record["seed"] not in ran]
            merged[name] = sorted(kept + runs, key=lambda record: record["seed"])
            results[env_id] = merged
            partial = saved.with_suffix(".json.partial")
            partial.write_text(json.dumps(results, indent=2) + "\n")
            partial.replace(saved)
    report(results)


def report(results: dict[str, Any]) -> None:
    for env_id, env_results in results.items():
        ppo = env_results.get("ppo_true_reward", [])
        ppo_mean = statistics.fmean(r["return"] for r in ppo) if ppo else float("nan")
        print(f"\n### {env_id}: {env_results['steps']} env steps, {env_results['labels']} labels")
        print(f"env options: {env_results['env_options']}")
        print(f"preference settings: {env_results.get('preference_settings', 'zoo.yaml defaults')}")
        print(f"PPO settings (every learner): {env_results.get('agent_settings', 'zoo.yaml defaults')}\n")
        print("| learner | true greedy return (mean ± std) | per seed | vs PPO | wall time (median) |")
        print("|---|---|---|---|---|")
        for name, runs in env_results.items():
            if name not in ("ppo_true_reward", "pref_synthetic") and not name.startswith("pref_teacher_"):
                continue
            returns = [r["return"] for r in runs]
            ratio = statistics.fmean(returns) / ppo_mean if ppo_mean else float("nan")
            wall = statistics.median(r["wall_seconds"] for r in runs)
            seeds = ", ".join(f"{r:.0f}" for r in returns)
            print(f"| {name} | {mean_std(returns)} | {seeds} | {ratio:.0%} | {wall:.0f} s |")
        synthetic = env_results.get("pref_synthetic", [])
        by_seed = {r["seed"]: r["wall_seconds"] for r in ppo}
        overhead = [r["wall_seconds"] / by_seed[r["seed"]] - 1 for r in synthetic if r["seed"] in by_seed]
        share = [r["reward_seconds"] / r["wall_seconds"] for r in synthetic if r.get("reward_seconds")]
        if overhead:
            print(f"\npref wall time over PPO's, median over seeds: {statistics.median(overhead):+.1%}")
        if share:
            median_share = statistics.median(share)
            print(f"reward machinery (reward/seconds) share of the pref run's wall time: {median_share:.1%}")


if __name__ == "__main__":
    main()
