"""Memory and sampling speed of EpisodicReplayBuffer on Atari-shaped data, next to SB3's ReplayBuffer.

Fills a buffer (one env) with random 84x84 uint8 frames stacked 4 deep, in episodes of 1000-3000
steps, until ``--size`` transitions are stored, and prints:

- resident set size growth (``VmRSS`` from /proc/self/status before creating the buffer and after
  filling it) next to what SB3's ReplayBuffer would allocate for the same observations,
- the median time of ``add`` and of ``sample(32)`` (over 1000 calls) with 1-step and 3-step returns,
  and of ``sample_sequences(32, 50)``.

Usage: ``python benchmarks/replay_memory.py [--size 1000000]``
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable

import numpy as np
from gymnasium import spaces

from core.replay import EpisodicReplayBuffer

FRAME_STACK, HEIGHT, WIDTH = 4, 84, 84
CHUNK = 10_000  # frames generated at a time


def resident_bytes() -> int:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise RuntimeError("VmRSS not found in /proc/self/status")


def median_seconds(fn: Callable[[], object], calls: int) -> float:
    times = []
    for _ in range(calls):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return float(np.median(times))


def fill(buffer: EpisodicReplayBuffer, size: int, rng: np.random.Generator) -> float:
    """Add ``size`` transitions of random frames; return the median seconds per ``add``."""
    action, reward = np.zeros(1, dtype=np.int64), np.zeros(1, dtype=np.float32)
    stack = np.zeros((FRAME_STACK, HEIGHT, WIDTH), dtype=np.uint8)  # SB3 VecFrameStack: zero padding
    episode_left, new_episode, add_times = 0, True, []
    for chunk_start in range(0, size, CHUNK):
        frames = rng.integers(0, 256, size=(CHUNK, HEIGHT, WIDTH), dtype=np.uint8)
        for frame in frames[: size - chunk_start]:
            if new_episode:
                stack = np.zeros_like(stack)
                stack[-1] = frame
                episode_left, new_episode = int(rng.integers(1000, 3001)), False
                continue
            next_stack = np.concatenate([stack[1:], frame[None]])
            episode_left -= 1
            done = episode_left == 0
            infos = [{"TimeLimit.truncated": True}] if done and rng.random() < 0.2 else [{}]
            start = time.perf_counter()
            buffer.add(stack[None], next_stack[None], action, reward, np.array([done]), infos)
            add_times.append(time.perf_counter() - start)
            stack, new_episode = next_stack, done
    while buffer.size() < size:  # top up the transitions skipped at episode starts
        frame = rng.integers(0, 256, size=(HEIGHT, WIDTH), dtype=np.uint8)
        next_stack = np.concatenate([stack[1:], frame[None]])
        buffer.add(stack[None], next_stack[None], action, reward, np.array([False]), [{}])
        stack = next_stack
    return float(np.median(add_times))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size", type=int, default=1_000_000, help="transitions to store")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    rng = np.random.default_rng(args.seed)
    np.random.seed(args.seed)

    obs_space = spaces.Box(0, 255, (FRAME_STACK, HEIGHT, WIDTH), dtype=np.uint8)
    before = resident_bytes()
    buffer = EpisodicReplayBuffer(
        args.size, obs_space, spaces.Discrete(6), device="cpu", frame_stack=FRAME_STACK, gamma=0.99
    )
    start = time.perf_counter()
    add_seconds = fill(buffer, args.size, rng)
    fill_seconds = time.perf_counter() - start
    growth = resident_bytes() - before

    obs_bytes = args.size * FRAME_STACK * HEIGHT * WIDTH
    print(f"transitions stored: {buffer.size():,} (frame ring {buffer.frame_capacity:,} frames)")
    print(f"filled in {fill_seconds:.0f} s, median add {add_seconds * 1e6:.0f} us")
    print(f"resident memory growth: {growth / 1e9:.3f} GB ({growth / args.size:.0f} bytes per transition)")
    print(f"SB3 ReplayBuffer obs + next_obs: {2 * obs_bytes / 1e9:.3f} GB (optimize_memory_usage=False)")
    print(f"SB3 ReplayBuffer obs only:       {obs_bytes / 1e9:.3f} GB (optimize_memory_usage=True)")
    for n_steps in (1, 3):
        buffer.n_steps = n_steps
        seconds = median_seconds(lambda: buffer.sample(32), 1000)
        print(f"sample(32), n_steps={n_steps}: median {seconds * 1e6:.0f} us over 1000 calls")
    seconds = median_seconds(lambda: buffer.sample_sequences(32, 50), 100)
    print(f"sample_sequences(32, 50): median {seconds * 1e3:.2f} ms over 100 calls")


if __name__ == "__main__":
    main()
