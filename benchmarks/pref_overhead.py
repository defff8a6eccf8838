"""Cost of the preference-reward machinery against plain PPO, side by side on one machine.

Each repeat trains, one after the other (in an order that rotates from repeat to repeat) and
single-threaded, ``zoo train ppo`` on the true reward and ``zoo train pref`` (PPO on the learned
reward, synthetic labels) for the same env steps, in the same env (the preference run's: no
termination, no control cost on Hopper); with ``--background``, also ``zoo train pref --set
preference.background_fit=true`` (fits in a worker thread); with ``--control``, also ``zoo train pref
--set preference.agent_reward=env``: the whole loop runs (queries, labels, fits, per-step predictions)
while PPO learns from the env's reward, so it behaves exactly as the plain PPO run of the same seed and
the difference in wall time is the machinery's alone (a learned-reward run also differs from PPO in
what the agent does, and MuJoCo's step time depends on it: a hopper lying on the floor has more
contacts to solve than one hopping). The label budget follows the learning
benchmark's schedule scaled to the run's length (``--labels-per-step``: 700 labels per 250k steps by
default). Reported: the median over repeats of each pref run's wall time over PPO's, of its CPU time
(user + system, all threads) over PPO's, and of the time the run itself logs in ``reward/seconds``
(query rounds, fits or the waits for them, per-step predictions) as a share of its wall time.
Periodic evaluation is off in all, so only training is timed. A ``--work`` folder of an earlier
invocation is replaced; any other non-empty folder is refused.

    python benchmarks/pref_overhead.py --steps 100000 --repeats 4 --control
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

import yaml
from pref_mujoco import last_logged  # the sibling script's log reader

MARKER = ".pref_overhead"  # marks a --work folder as this script's, so a rerun may replace it


def zoo(*args: str) -> tuple[float, float]:
    """Run one ``zoo`` command single-threaded; returns its (wall, CPU) seconds."""
    command = [str(Path(sys.executable).with_name("zoo")), *args]
    print("$", " ".join(command), flush=True)
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.perf_counter()
    subprocess.run(command, check=True, env={**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"})
    wall = time.perf_counter() - started
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return wall, (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--env", default="Hopper-v5")
    parser.add_argument("--steps", type=int, default=100_000)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--labels-per-step", type=float, default=700 / 250_000)
    parser.add_argument("--work", type=Path, default=Path("benchmarks/out/pref_overhead"))
    parser.add_argument(
        "--background", action="store_true", help="also time pref with preference.background_fit=true"
    )
    parser.add_argument(
        "--control",
        action="store_true",
        help="also time pref with preference.agent_reward=env (the machinery's cost, behavior unchanged)",
    )
    options = parser.parse_args()
    from zoo.config import resolve

    work: Path = options.work
    marker = work / MARKER
    if work.exists() and any(work.iterdir()) and not marker.exists():
        sys.exit(
            f"pref_overhead.py: --work {work} holds files this script did not write; name another folder"
        )
    shutil.rmtree(work, ignore_errors=True)  # an earlier invocation's runs: timed afresh
    work.mkdir(parents=True)
    marker.write_text("written by benchmarks/pref_overhead.py; its next invocation replaces this folder\n")
    env_options = resolve("ppo", options.env, preference={}).env_options
    overlay = work / "ppo-env.yaml"
    overlay.write_text(yaml.safe_dump({"agents": {"ppo": {options.env: {"env": env_options}}}}))
    labels = max(1, round(options.labels_per_step * options.steps))
    common = ["--env", options.env, "--steps", str(options.steps), "--eval-every", "0", "--quiet"]
    variants: dict[str, list[str]] = {"pref": []}  # learner -> extra arguments of its zoo train
    if options.background:
        variants["pref_background"] = ["--set", "preference.background_fit=true"]
    if options.control:
        variants["pref_control"] = ["--set", "preference.agent_reward=env"]
    ratios: dict[str, list[float]] = {name: [] for name in variants}
    cpu_ratios: dict[str, list[float]] = {name: [] for name in variants}
    shares: dict[str, list[float]] = {name: [] for name in variants}
    records = []
    learners = ["ppo", *variants]
    for repeat in range(options.repeats):
        seed = ["--seed", str(repeat)]
        # the order rotates from repeat to repeat, so a drift of the machine's speed over an invocation
        # does not always favour the same learner
        order = learners[repeat % len(learners) :] + learners[: repeat % len(learners)]
        timed: dict[str, tuple[float, float]] = {}
        for name in order:
            run = work / f"{name}-{repeat}"
            if name == "ppo":
                args = ["train", "ppo", "--config", str(overlay)]
            else:
                args = ["train", "pref", "--labels", str(labels), *variants[name]]
            timed[name] = zoo(*args, *common, *seed, "--run-dir", str(run))
        ppo, ppo_cpu = timed["ppo"]
        record = {"order": order, "ppo_seconds": ppo, "ppo_cpu_seconds": ppo_cpu}
        line = f"repeat {repeat}: ppo {ppo:.1f} s (cpu {ppo_cpu:.1f} s)"
        for name in variants:
            wall, cpu = timed[name]
            machinery = last_logged(work / f"{name}-{repeat}", "reward/seconds") or float("nan")
            ratios[name].append(wall / ppo - 1.0)
            cpu_ratios[name].append(cpu / ppo_cpu - 1.0)
            shares[name].append(machinery / wall)
            record |= {
                f"{name}_seconds": wall,
                f"{name}_cpu_seconds": cpu,
                f"{name}_reward_seconds": machinery,
            }
            line += f", {name} {wall:.1f} s (cpu {cpu:.1f} s, reward machinery {machinery:.1f} s)"
        records.append(record)
        print(line, flush=True)
    summary = {
        "env": options.env,
        "steps": options.steps,
        "labels": labels,
        "repeats": records,
        **{f"{name}_median_wall_overhead": statistics.median(ratios[name]) for name in variants},
        **{f"{name}_median_cpu_overhead": statistics.median(cpu_ratios[name]) for name in variants},
        **{f"{name}_median_reward_share": statistics.median(shares[name]) for name in variants},
    }
    (work / "results.json").write_text(json.dumps(summary, indent=2) + "\n")
    for name in variants:
        per_repeat = ", ".join(f"{r:+.1%}" for r in ratios[name])
        print(
            f"{options.env}, {options.steps} steps, {labels} labels, {options.repeats} repeats, {name}: wall "
            f"time over PPO's {statistics.median(ratios[name]):+.1%} (median; per repeat {per_repeat}), CPU "
            f"time {statistics.median(cpu_ratios[name]):+.1%}; reward machinery "
            f"{statistics.median(shares[name]):.1%} of the run's wall time (median)"
        )


if __name__ == "__main__":
    main()
