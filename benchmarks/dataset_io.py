"""Write and load a 1M-transition Hopper-shaped Minari dataset (``core.minari_io``).

Synthetic arrays shaped like Hopper-v5 (11 float64 observations, 3 float32 actions) go through the
same writer as ``zoo collect`` (Minari's storage API, HDF5), then :func:`core.minari_io.load_dataset`
reads them back into a ``TransitionDataset``; the load is timed ``--repeats`` times and the median
reported. Episode layouts, since reading cost grows with the number of episodes:

- ``policy``: 1000-step episodes (a policy that survives the time limit), 1,000 episodes;
- ``mixture``: the paper's 2:4:4 recipe as it falls on Hopper: 20% random-action episodes of ~20
  steps, 80% policy episodes of ~500 steps;
- ``short``: every episode ~20 steps (a random policy throughout), the worst case.

Target (issue #3): loading 1M transitions takes under 30 s.
Usage: ``python benchmarks/dataset_io.py [--steps 1000000] [--repeats 3] [--layouts policy,mixture,short]``
Writes ``benchmarks/out/dataset_io.json``.
"""

from __future__ import annotations

import argparse
import json
import platform
import shutil
import statistics
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
from gymnasium import spaces

from core.minari_io import Episode, load_dataset, write_dataset

OBS_DIM, ACT_DIM = 11, 3


def episode_lengths(layout: str, steps: int, rng: np.random.Generator) -> list[int]:
    """Episode lengths summing to ``steps`` for a layout."""
    lengths: list[int] = []
    total = 0
    while total < steps:
        if layout == "policy":
            length = 1000
        elif layout == "short":
            length = int(rng.integers(10, 31))
        else:  # mixture: the first 20% of the steps random-action episodes, then policy episodes
            length = int(rng.integers(10, 31)) if total < 0.2 * steps else int(rng.integers(200, 1001))
        length = min(length, steps - total)
        lengths.append(length)
        total += length
    return lengths


def episodes(lengths: list[int], rng: np.random.Generator) -> Iterator[Episode]:
    for length in lengths:
        terminations = np.zeros(length, bool)
        truncations = np.zeros(length, bool)
        if length == 1000:
            truncations[-1] = True
        else:
            terminations[-1] = True
        yield Episode(
            observations=rng.standard_normal((length + 1, OBS_DIM)),
            actions=rng.uniform(-1, 1, (length, ACT_DIM)).astype(np.float32),
            rewards=rng.standard_normal(length).astype(np.float32),
            terminations=terminations,
            truncations=truncations,
            metadata={"source": "synthetic", "collection_cut": False},
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=1_000_000)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--layouts", default="policy,mixture,short")
    parser.add_argument("--out", type=Path, default=Path("benchmarks/out/dataset_io.json"))
    args = parser.parse_args()

    observation_space = spaces.Box(-np.inf, np.inf, (OBS_DIM,), np.float64)
    action_space = spaces.Box(-1.0, 1.0, (ACT_DIM,), np.float32)
    results = []
    root = Path(tempfile.mkdtemp(prefix="zoo-dataset-io-"))
    try:
        for layout in args.layouts.split(","):
            rng = np.random.default_rng(0)
            lengths = episode_lengths(layout, args.steps, rng)
            name = f"bench/hopper-{layout}-v0"
            start = time.perf_counter()
            path = write_dataset(
                name,
                episodes(lengths, rng),
                observation_space=observation_space,
                action_space=action_space,
                env_spec=None,
                card={"env_id": "Hopper-v5"},
                root=root,
            )
            write_seconds = time.perf_counter() - start
            size_mb = sum(p.stat().st_size for p in path.rglob("*") if p.is_file()) / 1e6
            times = []
            for _ in range(args.repeats):
                start = time.perf_counter()
                dataset = load_dataset(name, root)
                times.append(time.perf_counter() - start)
                assert len(dataset) == args.steps
                del dataset
            row = {
                "layout": layout,
                "transitions": args.steps,
                "episodes": len(lengths),
                "size_mb": round(size_mb, 1),
                "write_s": round(write_seconds, 2),
                "load_median_s": round(statistics.median(times), 2),
                "load_all_s": [round(t, 2) for t in times],
            }
            results.append(row)
            print(
                f"{layout:8s} {row['transitions']:>9d} transitions {row['episodes']:>6d} episodes "
                f"{row['size_mb']:>7.1f} MB  write {row['write_s']:>6.2f} s  load (median of "
                f"{args.repeats}) {row['load_median_s']:>6.2f} s",
                flush=True,
            )
            shutil.rmtree(path)
    finally:
        shutil.rmtree(root, ignore_errors=True)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(
        json.dumps(
            {"machine": platform.platform(), "processor": platform.processor(), "results": results}, indent=2
        )
        + "\n"
    )
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
