"""The NAC spec's CPU reproduction on CartPole-v1: learning from imperfect demonstrations.

Recipe (../shared/specs/nac.md, "Reproduction targets"), every step through the ``zoo`` CLI so the
benchmark measures what users run:

1. the demonstrator: ``zoo train scdqn --env CartPole-v1 --stop-at-return R`` (partially trained, so the
   demonstrations are imperfect twice: a mediocre policy, and noise), or a run passed as ``--demonstrator``;
   ``zoo eval`` of it (20 greedy episodes) goes on the dataset card;
2. ``zoo collect --mix noisy:1 --noise eps:0.3``: ``--demo-steps`` transitions (50k) of the demonstrator
   acting with 30% of its actions replaced by uniform random ones;
3. stage 1, for each seed: ``zoo train AGENT --demos ... --pretrain-steps P --steps P`` (P = 20k gradient
   steps on the demonstrations, no env step) for ``nac``, ``soft_q`` (NAC without the gradient through V),
   ``dqfd`` and ``bc`` (``nac --set loss=bc``), then ``zoo eval RUN --episodes 20`` (greedy);
4. stage 2, for each seed: NAC's stage-1 run folder is copied and resumed with ``--steps P+E`` (E = 100k env
   steps, the demonstrations kept at zoo.yaml's ``demo_share``), then evaluated the same way. A resumed run
   starts stage 2 with an empty replay, as an uninterrupted one does.

Reported: a markdown table of mean ± std over seeds of each run's greedy return, next to the
demonstrator's evaluation return and the demonstrations' mean episode return. Finished runs in ``--work``
are reused (and unfinished ones resumed), so the script continues after an interruption; use another
``--work`` for other settings. A tiny check of the whole pipeline (a minute or two):

    OMP_NUM_THREADS=1 python benchmarks/nac_cartpole.py --work /tmp/nac-tiny --demonstrator-return 30 \\
        --demo-steps 2000 --pretrain-steps 300 --env-steps 600 --seeds 0 --eval-episodes 3 \\
        --set policy_kwargs.net_arch=[32,32]

The full benchmark (about 25 minutes on 2 CPU cores; two sweeps over different ``--seeds`` may run
side by side once the demonstrations exist):

    OMP_NUM_THREADS=1 python benchmarks/nac_cartpole.py --work benchmarks/out/nac_cartpole
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import yaml

AGENTS = ("nac", "soft_q", "dqfd", "bc")
ENV = "CartPole-v1"


def zoo(*args: str) -> None:
    """Run one ``zoo`` command (the console script of this interpreter's environment)."""
    command = [str(Path(sys.executable).with_name("zoo")), *args]
    print("$", " ".join(command), flush=True)
    subprocess.run(command, check=True)


def read_json(path: Path) -> dict[str, Any]:
    return json.loads(path.read_text()) if path.is_file() else {}


def train(run: Path, command: list[str], steps: int) -> None:
    """Make ``run`` reach ``steps``: start it, resume it, or leave a finished one alone."""
    status = read_json(run / "run.json")
    if status.get("status") == "finished" and status.get("step") == steps:
        return
    if not status:
        zoo(*command, "--steps", str(steps), "--run-dir", str(run))
        return
    config = yaml.safe_load((run / "config.yaml").read_text())
    if config["steps"] > steps:
        raise SystemExit(f"{run} was made for {config['steps']} steps, not {steps}: use another --work")
    zoo("train", "--resume", str(run), "--steps", str(steps), "--quiet")


def evaluate(run: Path, episodes: int) -> float:
    """The run's greedy return over ``episodes`` (``zoo eval``, reused when already taken)."""
    report = read_json(run / "eval.json")
    status = read_json(run / "run.json")
    if report.get("episodes") != episodes or report.get("step") != status.get("step"):
        zoo("eval", str(run), "--episodes", str(episodes), "--quiet")
        report = read_json(run / "eval.json")
    return float(report["mean_return"])


def demonstrator(args: argparse.Namespace) -> Path:
    if args.demonstrator is not None:
        return args.demonstrator.resolve()
    run = (args.work / "demonstrator").resolve()
    if read_json(run / "run.json").get("status") != "finished":
        if run.exists():
            shutil.rmtree(run)  # an interrupted search for the threshold: start it again
        zoo(
            "train", "scdqn", "--env", ENV, "--seed", "0", "--device", "cpu", "--quiet",
            "--eval-every", "1000", "--stop-at-return", str(args.demonstrator_return), "--run-dir", str(run),
        )  # fmt: skip
    return run


def mean_std(values: list[float]) -> str:
    return f"{statistics.mean(values):.1f} ± {float(np.std(values)):.1f}" if values else "-"


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--work", type=Path, default=Path("benchmarks/out/nac_cartpole"))
    parser.add_argument("--demonstrator", type=Path, help="reuse this run folder as the demonstrator")
    parser.add_argument("--demonstrator-return", type=float, default=150.0, help="--stop-at-return of scdqn")
    parser.add_argument("--demo-steps", type=int, default=50_000)
    parser.add_argument("--random-fraction", type=float, default=0.3, help="share of actions made uniform")
    parser.add_argument("--pretrain-steps", type=int, default=20_000, help="stage-1 gradient steps")
    parser.add_argument("--env-steps", type=int, default=100_000, help="stage-2 env steps")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--agents", nargs="+", default=list(AGENTS), choices=AGENTS)
    parser.add_argument("--stage2-agents", nargs="+", default=["nac"], choices=AGENTS[:3])
    parser.add_argument("--eval-episodes", type=int, default=20)
    parser.add_argument(
        "--set", dest="overrides", action="append", default=[], help="key=value for every run"
    )
    args = parser.parse_args()
    args.work = args.work.resolve()

    source = demonstrator(args)
    evaluate(source, args.eval_episodes)  # the card records this evaluation
    root = args.work / "datasets"
    name = f"zoo/cartpole-nac-{args.demo_steps}-eps{round(args.random_fraction * 100)}-v0"
    if not (root / name).exists():
        zoo(
            "collect", "--run", str(source), "--steps", str(args.demo_steps), "--mix", "noisy:1",
            "--noise", f"eps:{args.random_fraction}", "--seed", "0", "--name", name, "--root", str(root),
            "--quiet",
        )  # fmt: skip

    from core.minari_io import summarize

    # Episodes the env ended (as `zoo dataset show`): the one the collection's step budget cut is left out.
    data = summarize(root / name)
    data_returns = data.returns
    card = data.card or {}
    overrides = [part for item in args.overrides for part in ("--set", item)]

    stage1: dict[str, list[float]] = {agent: [] for agent in args.agents}
    stage2: dict[str, list[float]] = {agent: [] for agent in args.stage2_agents}
    pretrain, total = args.pretrain_steps, args.pretrain_steps + args.env_steps
    for seed in args.seeds:
        for agent in args.agents:
            run = args.work / "runs" / "stage1" / f"{agent}-s{seed}"
            name_args = ["nac", "--set", "loss=bc"] if agent == "bc" else [agent]
            command = ["train", *name_args, "--demos", str(root / name), "--pretrain-steps", str(pretrain)]
            command += ["--seed", str(seed), "--device", "cpu", "--quiet", *overrides]
            train(run, command, pretrain)
            stage1[agent].append(evaluate(run, args.eval_episodes))
            print(f"stage 1 {agent} seed {seed}: greedy return {stage1[agent][-1]:.1f}", flush=True)
            if agent in stage2:
                continued = args.work / "runs" / "stage2" / f"{agent}-s{seed}"
                if not continued.exists():
                    shutil.copytree(run, continued)
                train(continued, [], total)
                stage2[agent].append(evaluate(continued, args.eval_episodes))
                print(f"stage 2 {agent} seed {seed}: greedy return {stage2[agent][-1]:.1f}", flush=True)

    evaluation = card.get("source_eval_return") or {}
    lines = [
        f"{ENV}, demonstrations {name}: {data.steps} transitions of the demonstrator with "
        f"{args.random_fraction:.0%} of its actions uniform; {len(data_returns)} complete episodes, mean "
        f"episode return {data_returns.mean():.1f} ± {data_returns.std():.1f}. Demonstrator: "
        f"{card.get('source_agent')} at step {card.get('source_checkpoint_step')}, greedy return "
        f"{evaluation.get('mean', float('nan')):.1f} ± {evaluation.get('std', float('nan')):.1f} "
        f"({evaluation.get('episodes')} episodes).",
        f"Greedy return of the last checkpoint over {args.eval_episodes} episodes, mean ± std over seeds "
        f"{args.seeds}. Stage 1: {pretrain} gradient steps on the demonstrations only; stage 2: then "
        f"{args.env_steps} env steps.",
        "",
        "| agent | after stage 1 | per seed | after stage 2 | per seed |",
        "|---|---|---|---|---|",
    ]
    for agent in args.agents:
        later = stage2.get(agent, [])
        lines.append(
            f"| {agent} | {mean_std(stage1[agent])} | {', '.join(f'{r:.0f}' for r in stage1[agent])} | "
            f"{mean_std(later)} | {', '.join(f'{r:.0f}' for r in later) or '-'} |"
        )
    lines.append(f"| demonstrator | {evaluation.get('mean', float('nan')):.1f} | | | |")
    lines.append(f"| demonstrations (mean episode) | {data_returns.mean():.1f} | | | |")
    table = "\n".join(lines)
    print(table)
    (args.work / "nac_cartpole.md").write_text(table + "\n")
    payload = {"stage1": stage1, "stage2": stage2, "card": card, "data_returns": data_returns.tolist()}
    (args.work / "nac_cartpole.json").write_text(json.dumps(payload, indent=2, default=str) + "\n")


if __name__ == "__main__":
    main()
