"""Cost of the preference-reward machinery against plain PPO, side by side on one machine.

Each repeat trains, one after the other and single-threaded, ``zoo train ppo`` on the true reward and
``zoo train pref`` (PPO on the learned reward, synthetic labels) for the same env steps, in the same env
(the preference run's: no termination, no control cost on Hopper). The label budget follows the
learning benchmark's schedule scaled to the run's length (``--labels-per-step``: 700 labels per 250k
steps by default). Reported: the median over repeats of the pref run's wall time over PPO's, and of
the time the run itself logs in ``reward/seconds`` (query rounds, fits, per-step predictions) as a
share of its wall time. Periodic evaluation is off in both, so only training is timed.

    python benchmarks/pref_overhead.py --steps 100000 --repeats 3
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
from pathlib import Path

import yaml
from pref_mujoco import last_logged, zoo  # the sibling script: same runner and log reader


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--env", default="Hopper-v5")
    parser.add_argument("--steps", type=int, default=100_000)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--labels-per-step", type=float, default=700 / 250_000)
    parser.add_argument("--work", type=Path, default=Path("benchmarks/out/pref_overhead"))
    options = parser.parse_args()
    from zoo.config import resolve

    work: Path = options.work
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    env_options = resolve("ppo", options.env, preference={}).env_options
    overlay = work / "ppo-env.yaml"
    overlay.write_text(yaml.safe_dump({"agents": {"ppo": {options.env: {"env": env_options}}}}))
    labels = max(1, round(options.labels_per_step * options.steps))
    common = ["--env", options.env, "--steps", str(options.steps), "--eval-every", "0", "--quiet"]
    ratios, shares, records = [], [], []
    for repeat in range(options.repeats):
        ppo_run, pref_run = work / f"ppo-{repeat}", work / f"pref-{repeat}"
        ppo = zoo(
            "train",
            "ppo",
            "--config",
            str(overlay),
            *common,
            "--seed",
            str(repeat),
            "--run-dir",
            str(ppo_run),
        )
        seed = ["--seed", str(repeat)]
        pref = zoo("train", "pref", "--labels", str(labels), *common, *seed, "--run-dir", str(pref_run))
        machinery = last_logged(pref_run, "reward/seconds")
        ratios.append(pref / ppo - 1.0)
        shares.append(machinery / pref)
        records.append({"ppo_seconds": ppo, "pref_seconds": pref, "reward_seconds": machinery})
        print(
            f"repeat {repeat}: ppo {ppo:.1f} s, pref {pref:.1f} s, reward machinery {machinery:.1f} s",
            flush=True,
        )
    summary = {
        "env": options.env,
        "steps": options.steps,
        "labels": labels,
        "repeats": records,
        "median_wall_overhead": statistics.median(ratios),
        "median_reward_share": statistics.median(shares),
    }
    (work / "results.json").write_text(json.dumps(summary, indent=2) + "\n")
    per_repeat = ", ".join(f"{r:+.1%}" for r in ratios)
    print(
        f"{options.env}, {options.steps} steps, {labels} labels, {options.repeats} repeats: pref wall time "
        f"over PPO's {statistics.median(ratios):+.1%} (median; per repeat {per_repeat}); reward machinery "
        f"{statistics.median(shares):.1%} of the pref run's wall time (median)"
    )


if __name__ == "__main__":
    main()
