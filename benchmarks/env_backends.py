"""Env steps per second of the Atari family's two vector-env backends, random actions.

For each backend (``wrappers``: SB3's Atari wrappers in a DummyVecEnv; ``native``: ale-py's C++
AtariVectorEnv behind our SB3 adapter) and each ``n_envs``, a training VecEnv (sticky actions, life
loss, clipping: the defaults) is reset and stepped with pre-drawn uniformly random actions for
``--steps`` env steps in total (``--steps / n_envs`` vector steps); env construction and reset are
not timed. Each setting is repeated ``--repeats`` times, alternating backends, and the median is
reported. The result decides ``envs.atari.resolve_backend``'s ``auto`` choice.

    python benchmarks/env_backends.py --game ALE/Pong-v5 --n-envs 1 8 --steps 4000 --repeats 3
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time
from pathlib import Path
from typing import Any

import numpy as np
from gymnasium import spaces

from envs.atari import FAMILY, AtariOptions, Backend

BACKENDS: tuple[Backend, ...] = ("wrappers", "native")


def steps_per_second(game: str, backend: Backend, n_envs: int, steps: int, seed: int) -> float:
    """Env steps per second of one timed run."""
    env = FAMILY.make_vec_env(
        game, options=AtariOptions(backend=backend), n_envs=n_envs, seed=seed, training=True
    )
    env.reset()
    n_vector_steps = max(1, steps // n_envs)
    assert isinstance(env.action_space, spaces.Discrete)
    n_actions = int(env.action_space.n)
    actions = np.random.default_rng(seed).integers(0, n_actions, size=(n_vector_steps, n_envs))
    start = time.perf_counter()
    for step_actions in actions:
        env.step(step_actions)
    elapsed = time.perf_counter() - start
    env.close()
    return n_vector_steps * n_envs / elapsed


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--game", default="ALE/Pong-v5")
    parser.add_argument("--n-envs", type=int, nargs="+", default=[1, 8])
    parser.add_argument("--steps", type=int, default=4000, help="env steps per timed run")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--out", type=Path, default=None, help="write the results as JSON here")
    args = parser.parse_args()

    runs: dict[str, dict[int, list[float]]] = {backend: {n: [] for n in args.n_envs} for backend in BACKENDS}
    for n_envs in args.n_envs:
        for repeat in range(args.repeats):
            for backend in BACKENDS:
                runs[backend][n_envs].append(steps_per_second(args.game, backend, n_envs, args.steps, repeat))

    print(f"{args.game}, random actions, env steps/s, median of {args.repeats} x {args.steps} steps")
    print(f"{'n_envs':>6}  {'wrappers':>9}  {'native':>9}  native/wrappers")
    rows: list[dict[str, Any]] = []
    for n_envs in args.n_envs:
        medians = {backend: statistics.median(runs[backend][n_envs]) for backend in BACKENDS}
        ratio = medians["native"] / medians["wrappers"]
        print(f"{n_envs:>6}  {medians['wrappers']:>9.0f}  {medians['native']:>9.0f}  {ratio:.2f}")
        rows.append({"n_envs": n_envs, "median": medians, "runs": {b: runs[b][n_envs] for b in BACKENDS}})
    if args.out is not None:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        machine = {"platform": platform.platform(), "processor": platform.processor(), "cpus": os.cpu_count()}
        result = {"game": args.game, "steps": args.steps, "repeats": args.repeats, "machine": machine}
        args.out.write_text(json.dumps({**result, "results": rows}, indent=2))


if __name__ == "__main__":
    main()
