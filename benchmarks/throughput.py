"""Env steps per second of SB3's DQN and our SC-DQN on ALE/Pong-v5, side by side in one process.

Identical settings for both: Nature CNN, batch 32, one gradient update per 4 env steps, 1 env,
Adam lr 1e-4, the same warm-up (``--warmup`` steps of pure collection before updates start), the
same replay capacity. SB3 gets its standard Atari pipeline (``make_atari_env`` + ``VecFrameStack``
on ``ALE/Pong-v5`` with ``frameskip=1``); ours gets the zoo's Atari family with the ``wrappers``
backend. Before timing, both env pipelines are stepped with one random action sequence from the
same seed and must produce identical observations, rewards and episode ends.

Timing: after warm-up, each model learns ``--steps`` env steps; SB3 and ours alternate ``--pairs``
times and the median of the per-pair ratios is reported (the machines are shared and noisy).
Also reported: ours with 8 envs (the family's default backend) and, on a CUDA machine, GPU figures.

    python benchmarks/throughput.py --pairs 5 --steps 2000 --out benchmarks/out/throughput.json
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
import torch

GAME = "ALE/Pong-v5"


def sb3_env(seed: int) -> Any:
    import ale_py
    from stable_baselines3.common.env_util import make_atari_env
    from stable_baselines3.common.vec_env import VecFrameStack, VecTransposeImage

    gym.register_envs(ale_py)
    env = make_atari_env(
        GAME, n_envs=1, seed=seed, env_kwargs={"frameskip": 1, "repeat_action_probability": 0.0}
    )
    return VecTransposeImage(VecFrameStack(env, 4))


def zoo_env(seed: int, n_envs: int = 1, backend: str = "wrappers") -> Any:
    from envs.atari import FAMILY

    options = FAMILY.Options(backend=backend, repeat_action_probability=0.0)
    return FAMILY.make_vec_env(GAME, options=options, n_envs=n_envs, seed=seed, training=True)


def check_same_stream(seed: int, steps: int) -> dict[str, Any]:
    """Step both pipelines with one action sequence; return where (if anywhere) they differ."""
    theirs, ours = sb3_env(seed), zoo_env(seed)
    obs_a, obs_b = theirs.reset(), ours.reset()
    rng = np.random.default_rng(seed)
    episodes = 0
    for step in range(steps):
        if not np.array_equal(obs_a, obs_b):
            return {"identical": False, "first_difference_at_step": step, "what": "observation"}
        action = rng.integers(0, theirs.action_space.n, size=1)
        obs_a, rew_a, done_a, _ = theirs.step(action)
        obs_b, rew_b, done_b, _ = ours.step(action)
        if not (np.array_equal(rew_a, rew_b) and np.array_equal(done_a, done_b)):
            return {"identical": False, "first_difference_at_step": step, "what": "reward or done"}
        episodes += int(done_a[0])
    theirs.close()
    ours.close()
    return {"identical": True, "steps_compared": steps, "episode_ends_seen": episodes}


def common_kwargs(warmup: int, device: str) -> dict[str, Any]:
    return {
        "buffer_size": 100_000,
        "learning_starts": warmup,
        "batch_size": 32,
        "train_freq": 4,
        "gradient_steps": 1,
        "learning_rate": 1e-4,
        "exploration_fraction": 0.1,
        "gamma": 0.99,
        "device": device,
        "seed": 0,
        "verbose": 0,
    }


def make_sb3(warmup: int, device: str) -> Any:
    from stable_baselines3 import DQN

    # SB3 counts target_update_interval in env steps: 4,000 env steps = 1,000 updates.
    return DQN("CnnPolicy", sb3_env(0), target_update_interval=4_000, **common_kwargs(warmup, device))


def make_ours(warmup: int, device: str, n_envs: int = 1, backend: str = "wrappers", beta: float = 3.0) -> Any:
    from agents.scdqn import SCDQN
    from core.replay import EpisodicReplayBuffer

    kwargs = common_kwargs(warmup, device)
    if n_envs > 1:  # keep one update per 4 env steps: each VecEnv step is n_envs env steps
        kwargs.update(train_freq=1, gradient_steps=max(1, n_envs // 4))
    # What `zoo train` uses: the frame-deduplicating buffer; the target copy every 1,000 updates.
    return SCDQN(
        "CnnPolicy",
        zoo_env(0, n_envs, backend),
        beta=beta,
        target_update_interval=1_000,
        replay_buffer_class=EpisodicReplayBuffer,
        replay_buffer_kwargs={"frame_stack": 4},
        **kwargs,
    )


def timed_learn(model: Any, warmup: int, steps: int) -> float:
    """Env steps per second of ``steps`` learning steps after ``warmup`` collection steps."""
    model.learn(warmup)
    start = time.perf_counter()
    model.learn(steps, reset_num_timesteps=False)
    elapsed = time.perf_counter() - start
    return steps / elapsed


def machine() -> dict[str, Any]:
    info: dict[str, Any] = {
        "platform": platform.platform(),
        "processor": platform.processor() or platform.machine(),
        "cpu_count": __import__("os").cpu_count(),
        "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
    }
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                info["cpu"] = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    if torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name(0)
    return info


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--pairs", type=int, default=5)
    parser.add_argument("--steps", type=int, default=2000)
    parser.add_argument("--warmup", type=int, default=1000)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--out", type=Path, default=Path("benchmarks/out/throughput.json"))
    args = parser.parse_args()

    stream = check_same_stream(seed=0, steps=3000)
    print(f"same observation/reward stream: {stream}")
    if not stream["identical"]:
        raise SystemExit("the two pipelines differ; a throughput comparison would not be like for like")

    makers = {
        "sb3_dqn": lambda: make_sb3(args.warmup, args.device),
        "scdqn": lambda: make_ours(args.warmup, args.device),
        # beta = 0 is DQN in our code path: the same work per update as SB3's DQN (one forward pass
        # fewer than beta > 0, which also runs the online network on the next observations).
        "scdqn_beta0": lambda: make_ours(args.warmup, args.device, beta=0.0),
    }
    pairs = []
    for i in range(args.pairs):
        # Rotate who goes first, so slow drifts of a shared machine do not favour one side.
        names = list(makers)
        order = names[i % len(names) :] + names[: i % len(names)]
        pair: dict[str, float] = {}
        for name in order:
            model = makers[name]()
            pair[name] = timed_learn(model, args.warmup, args.steps)
            model.get_env().close()
        pair["ratio"] = pair["scdqn"] / pair["sb3_dqn"]
        pair["ratio_beta0"] = pair["scdqn_beta0"] / pair["sb3_dqn"]
        pairs.append(pair)
        print(
            f"round {i + 1}: SB3 DQN {pair['sb3_dqn']:.1f} steps/s, SC-DQN {pair['scdqn']:.1f} "
            f"(ratio {pair['ratio']:.2f}), SC-DQN beta=0 {pair['scdqn_beta0']:.1f} "
            f"(ratio {pair['ratio_beta0']:.2f})"
        )

    def ours_with(n_envs: int, backend: str) -> list[float]:
        rates = []
        for _ in range(max(3, args.pairs // 2)):
            model = make_ours(args.warmup, args.device, n_envs=n_envs, backend=backend)
            rates.append(timed_learn(model, args.warmup, args.steps))
            model.get_env().close()
        print(f"SC-DQN, {n_envs} env(s), {backend} backend: median {statistics.median(rates):.1f} steps/s")
        return rates

    native_one = ours_with(1, "auto")
    eight = ours_with(8, "auto")
    result = {
        "game": GAME,
        "device": args.device,
        "settings": common_kwargs(args.warmup, args.device),
        "steps_timed": args.steps,
        "stream_check": stream,
        "pairs": pairs,
        "median_sb3_dqn": statistics.median(p["sb3_dqn"] for p in pairs),
        "median_scdqn": statistics.median(p["scdqn"] for p in pairs),
        "median_ratio": statistics.median(p["ratio"] for p in pairs),
        "median_scdqn_beta0": statistics.median(p["scdqn_beta0"] for p in pairs),
        "median_ratio_beta0": statistics.median(p["ratio_beta0"] for p in pairs),
        "scdqn_1_env_default_backend": native_one,
        "median_scdqn_1_env_default_backend": statistics.median(native_one),
        "scdqn_8_envs": eight,
        "median_scdqn_8_envs": statistics.median(eight),
        "machine": machine(),
    }
    print(
        f"median: SB3 DQN {result['median_sb3_dqn']:.1f}, SC-DQN {result['median_scdqn']:.1f} steps/s, "
        f"ratio {result['median_ratio']:.2f}; beta=0 ratio {result['median_ratio_beta0']:.2f}; "
        f"SC-DQN default backend {statistics.median(native_one):.1f}, "
        f"8 envs {result['median_scdqn_8_envs']:.1f} steps/s"
    )
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
