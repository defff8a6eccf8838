"""The BRAC spec's CPU reproduction on Hopper-v5: BRAC-v against BC and naive offline SAC.

Recipe (../shared/specs/brac.md, "Reproduction targets"), every step through the ``zoo`` CLI so the
benchmark measures what users run:

1. the behavior policy: a partially trained SAC run (``zoo train sac --env Hopper-v5
   --stop-at-return 1000``), passed as ``--behavior RUN``;
2. ``zoo collect``: ``--transitions`` transitions of the eps1 mixture (20% uniform random, 40% the
   policy sampling, 40% the policy with probability 0.1 of a uniform random action);
3. ``zoo train brac|bc|offline_sac --dataset ...`` for ``--steps`` gradient steps on each seed
   (BRAC-v: KL value penalty, alpha 0.1, 2 Q nets, warm start 20k: zoo.yaml's defaults; BRAC first
   fits pi_b for ``--behavior-steps`` more steps, 20k here against zoo.yaml's 300k, to fit a CPU);
4. ``zoo eval RUN --episodes 20``: greedy (deterministic) evaluation of the last checkpoint, the
   same protocol for every learner.

Reported: mean ± std over seeds of the greedy return, next to the dataset's mean episode return and
the behavior policy's evaluation return. Runs already finished in ``--work`` are reused, so the
script can be resumed after an interruption.

    python benchmarks/brac_hopper.py --behavior runs/sac/Hopper-v5/RUN --work /tmp/brac-hopper
"""

from __future__ import annotations

import argparse
import csv
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

LEARNERS = ("brac", "bc", "offline_sac")
DATASET = "zoo/hopper-eps1-v0"


def zoo(*args: str) -> None:
    """Run one ``zoo`` command (the console script of this interpreter's environment)."""
    command = [str(Path(sys.executable).with_name("zoo")), *args]
    print("$", " ".join(command), flush=True)
    subprocess.run(command, check=True)


def read_json(path: Path) -> dict[str, Any]:
    return json.loads(path.read_text())


def training_summary(run: Path) -> dict[str, Any]:
    """The best periodic evaluation during training and the last logged mean Q estimate (``train/q``)."""
    evaluations = [json.loads(line) for line in (run / "evaluations.jsonl").read_text().splitlines() if line]
    with open(run / "progress.csv", newline="") as handle:
        q_values = [float(row["train/q"]) for row in csv.DictReader(handle) if row.get("train/q")]
    return {
        "best_eval_return": max(e["mean_return"] for e in evaluations),
        "eval_curve": [(e["step"], e["mean_return"]) for e in evaluations],
        "final_q": q_values[-1] if q_values else None,
    }


def behavior_return(card: dict[str, Any]) -> str:
    """The source run's evaluation return as the card records it, ``mean ± std (N episodes)``."""
    source = card.get("source_eval_return")
    if not isinstance(source, dict):
        return "n/a"
    return f"{source['mean']:.1f} ± {source['std']:.1f} ({source['episodes']} greedy episodes)"


def main() -> None:
    formatter = argparse.RawDescriptionHelpFormatter
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=formatter)
    parser.add_argument("--behavior", type=Path, required=True, help="run folder of the partial SAC policy")
    parser.add_argument("--work", type=Path, default=Path("benchmarks/out/brac_hopper"))
    parser.add_argument("--transitions", type=int, default=200_000)
    parser.add_argument("--steps", type=int, default=50_000, help="gradient steps of each learner")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--learners", nargs="+", default=list(LEARNERS), choices=LEARNERS)
    parser.add_argument("--eval-episodes", type=int, default=20)
    parser.add_argument(
        "--behavior-steps",
        type=int,
        default=20_000,
        help="BRAC's behavior-cloning steps of pi_b, added to its --steps (zoo.yaml's default is 300k)",
    )
    parser.add_argument(
        "--set", dest="overrides", action="append", default=[], help="LEARNER:key=value for zoo train"
    )
    parser.add_argument("--out", type=Path, default=Path("benchmarks/out/brac_hopper.json"))
    args = parser.parse_args()

    root = (args.work / "datasets").resolve()
    dataset_dir = root / DATASET
    if not dataset_dir.exists():
        zoo(
            "collect", "--run", str(args.behavior), "--steps", str(args.transitions),
            "--mix", "random:0.2,policy:0.4,noisy:0.4", "--noise", "eps:0.1",
            "--seed", "0", "--name", DATASET, "--root", str(root),
        )  # fmt: skip

    from core.minari_io import summarize

    # Episodes the env ended (as `zoo dataset show`): the one the collection's step budget cut is left out.
    data = summarize(dataset_dir)
    data_returns = data.returns
    card = data.card or {}

    results: dict[str, list[dict[str, Any]]] = {learner: [] for learner in args.learners}
    for learner in args.learners:
        extra = [item.split(":", 1)[1] for item in args.overrides if item.split(":", 1)[0] == learner]
        for seed in args.seeds:
            run = (args.work / "runs" / f"{learner}-s{seed}").resolve()
            status = read_json(run / "run.json").get("status") if (run / "run.json").exists() else None
            started = time.perf_counter()
            if status != "finished":
                steps = args.steps + (args.behavior_steps if learner == "brac" else 0)
                command = ["train", learner, "--dataset", str(dataset_dir), "--steps", str(steps)]
                if learner == "brac":
                    command += ["--set", f"behavior_steps={args.behavior_steps}"]
                command += ["--seed", str(seed), "--device", "cpu", "--quiet"]
                for assignment in extra:
                    command += ["--set", assignment]
                if status is None:
                    zoo(*command, "--run-dir", str(run))
                else:
                    zoo("train", "--resume", str(run), "--quiet")
            seconds = time.perf_counter() - started
            zoo("eval", str(run), "--episodes", str(args.eval_episodes), "--quiet")
            report = read_json(run / "eval.json")
            record = {"seed": seed, "mean_return": report["mean_return"], "step": report["step"]}
            record |= training_summary(run)
            results[learner].append({**record, "train_seconds": seconds})
            print(f"{learner} seed {seed}: greedy return {report['mean_return']:.1f}", flush=True)

    lines = [
        f"{card.get('env_id', '?')}, dataset {DATASET}: {data.steps} transitions, {len(data_returns)} "
        f"complete episodes, mean episode return {data_returns.mean():.1f} ± {data_returns.std():.1f}; "
        f"behavior policy evaluation return {behavior_return(card)}",
        f"Greedy evaluation of the last checkpoint, {args.eval_episodes} episodes, after {args.steps} "
        f"gradient steps (BRAC: after {args.behavior_steps} more steps fitting pi_b); mean ± std over "
        f"seeds {args.seeds}",
        "",
        "| learner | greedy return, last checkpoint | per seed | best periodic evaluation (mean over seeds) "
        "| final mean Q estimate |",
        "|---|---|---|---|---|",
    ]
    for learner, records in results.items():
        returns = [r["mean_return"] for r in records]
        per_seed = ", ".join(f"{r:.0f}" for r in returns)
        best = statistics.mean(r["best_eval_return"] for r in records)
        q_values = [r["final_q"] for r in records if r["final_q"] is not None]
        q_text = ", ".join(f"{q:.0f}" for q in q_values) if q_values else "-"
        lines.append(
            f"| {learner} | {statistics.mean(returns):.1f} ± {float(np.std(returns)):.1f} | {per_seed} "
            f"| {best:.1f} | {q_text} |"
        )
    table = "\n".join(lines)
    print(table)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    payload = {
        "table": table,
        "dataset": {"transitions": data.steps, "episode_returns": data_returns.tolist(), "card": card},
        "results": results,
    }
    args.out.write_text(json.dumps(payload, indent=2, default=str) + "\n")


if __name__ == "__main__":
    main()
