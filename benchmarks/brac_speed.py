"""Gradient steps/s of BRAC (BRAC-v, KL, 2 Q-networks) vs SB3 SAC's ``train`` on Hopper-v5 shapes.

One process, same net sizes (Q 300x300, actor 200x200), batch 256, random data (obs 11, actions 3).
Several alternating repeats; medians and the ratio are printed as a markdown table and written to
``benchmarks/out/brac_speed.json``. Also times ``set_dataset`` of 1M synthetic Hopper-sized transitions.

    python benchmarks/brac_speed.py [--steps 300] [--repeats 5] [--threads 1] [--device cpu]
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch as th
from gymnasium import spaces
from stable_baselines3 import SAC
from stable_baselines3.common.env_util import make_vec_env
from stable_baselines3.common.logger import configure
from stable_baselines3.common.vec_env import VecEnv

from agents.brac import BRAC
from core.datasets import TransitionDataset

OBS_DIM, ACTION_DIM = 11, 3
OUT = Path(__file__).resolve().parent / "out" / "brac_speed.json"


def hopper_dataset(n: int, seed: int = 0) -> TransitionDataset:
    """``n`` random transitions with Hopper-v5's shapes, episodes of 1000 steps (truncated)."""
    rng = np.random.default_rng(seed)
    observations = rng.standard_normal((n, OBS_DIM), dtype=np.float32)
    truncated = np.zeros(n, dtype=bool)
    truncated[999::1000] = True
    return TransitionDataset(
        observations=observations,
        actions=rng.uniform(-1.0, 1.0, (n, ACTION_DIM)).astype(np.float32),
        rewards=rng.standard_normal(n, dtype=np.float32),
        next_observations=np.roll(observations, -1, axis=0),
        terminated=rng.random(n) < 0.001,
        truncated=truncated,
    )


def hopper_env() -> VecEnv:
    """Pendulum-v1 re-declared with Hopper-v5's spaces (no MuJoCo needed; the env is never stepped)."""
    import gymnasium as gym

    class HopperShaped(gym.Wrapper):
        def __init__(self, env: gym.Env) -> None:
            super().__init__(env)
            self.observation_space = spaces.Box(-np.inf, np.inf, (OBS_DIM,), np.float64)
            self.action_space = spaces.Box(-1.0, 1.0, (ACTION_DIM,), np.float32)

        def reset(self, **kwargs: Any) -> tuple[np.ndarray, dict[str, Any]]:
            _, info = self.env.reset(**kwargs)
            return np.zeros(OBS_DIM), info

    return make_vec_env("Pendulum-v1", n_envs=1, seed=0, wrapper_class=HopperShaped)


def time_brac(model: BRAC, steps: int) -> float:
    start = time.perf_counter()
    model.learn_offline(steps, reset_num_timesteps=False, log_interval=0)
    if model.device.type == "cuda":
        th.cuda.synchronize()
    return steps / (time.perf_counter() - start)


def time_sac(model: SAC, steps: int) -> float:
    start = time.perf_counter()
    model.train(gradient_steps=steps, batch_size=256)
    if model.device.type == "cuda":
        th.cuda.synchronize()
    return steps / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=300, help="gradient steps per timed repeat")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--dataset-size", type=int, default=1_000_000)
    parser.add_argument("--out", type=Path, default=OUT, help="write the results as JSON here")
    args = parser.parse_args()
    th.set_num_threads(args.threads)
    env = hopper_env()
    dataset = hopper_dataset(args.dataset_size)

    brac = BRAC("MlpPolicy", env, behavior_steps=0, warm_start=0, seed=0, device=args.device)
    brac.set_logger(configure(None, []))
    load_times = []
    for _ in range(3):
        start = time.perf_counter()
        brac.set_dataset(dataset)
        load_times.append(time.perf_counter() - start)

    sac = SAC(
        "MlpPolicy",
        env,
        buffer_size=args.dataset_size,
        learning_starts=0,
        policy_kwargs={"net_arch": {"pi": [200, 200], "qf": [300, 300]}},
        seed=0,
        device=args.device,
    )
    sac.set_logger(configure(None, []))
    replay = sac.replay_buffer
    assert replay is not None
    n = min(args.dataset_size, replay.buffer_size)
    replay.observations[:n, 0] = dataset.observations[:n]
    replay.next_observations[:n, 0] = dataset.next_observations[:n]
    replay.actions[:n, 0] = dataset.actions[:n]
    replay.rewards[:n, 0] = dataset.rewards[:n]
    replay.dones[:n, 0] = dataset.terminated[:n]
    replay.pos, replay.full = n % replay.buffer_size, n == replay.buffer_size

    time_brac(brac, 50)  # warm-up (allocator, fused kernels)
    time_sac(sac, 50)
    brac_rates, sac_rates = [], []
    for _ in range(args.repeats):
        brac_rates.append(time_brac(brac, args.steps))
        sac_rates.append(time_sac(sac, args.steps))
    result = {
        "device": args.device,
        "threads": args.threads,
        "torch": th.__version__,
        "steps_per_repeat": args.steps,
        "repeats": args.repeats,
        "brac_steps_per_s": brac_rates,
        "sac_steps_per_s": sac_rates,
        "brac_median": statistics.median(brac_rates),
        "sac_median": statistics.median(sac_rates),
        "ratio_brac_over_sac": statistics.median(brac_rates) / statistics.median(sac_rates),
        "set_dataset_transitions": args.dataset_size,
        "set_dataset_seconds": load_times,
        "set_dataset_median_s": statistics.median(load_times),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"| measure ({args.device}, {args.threads} thread(s), batch 256) | median |")
    print("|---|---|")
    print(f"| BRAC-v KL, 2 Q (300x300), actor 200x200: gradient steps/s | {result['brac_median']:.0f} |")
    print(f"| SB3 SAC train(), same sizes: gradient steps/s | {result['sac_median']:.0f} |")
    print(f"| ratio BRAC / SAC | {result['ratio_brac_over_sac']:.2f} |")
    load = f"{result['set_dataset_median_s']:.2f}"
    print(f"| set_dataset, {args.dataset_size:,} Hopper-shaped transitions (s) | {load} |")


if __name__ == "__main__":
    main()
