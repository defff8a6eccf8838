"""Maximization bias (Sutton & Barto 2018, Example 6.7): Q-learning, Double Q-learning, self-correcting Q.

The MDP: start in A with two actions. ``right`` ends the episode with reward 0; ``left`` moves to B with
reward 0. B has 10 actions, each ending the episode with reward ~ N(-0.1, 1). Going left is worth -0.1,
so the optimal policy goes right; an epsilon-greedy agent with epsilon 0.1 still goes left 5% of the time.
Q-learning's max over B's noisy estimates makes left look good early on (maximization bias).

Learners (tabular, epsilon 0.1, alpha 0.1, gamma 1, every Q initialised to 0, argmax ties broken
uniformly at random, as in the book's Figure 6.5):
- Q-learning: target ``max_b Q(B, b)``.
- Double Q-learning (van Hasselt 2010): behaviour epsilon-greedy on Q1 + Q2; a fair coin picks which
  table to update; target ``Q2(B, argmax_b Q1(B, b))`` (or with the roles swapped).
- Self-correcting Q-learning (Zhu & Rigotti, AAAI 2021), per the project's spec: besides Q_n keep, per
  (s, a), the value before that pair's last update, Q_{n-1}(s, a). Select
  ``a* = argmax_b [Q_n(B, b) - beta (Q_n(B, b) - Q_{n-1}(B, b))]`` and evaluate ``Q_n(B, a*)``.
  Behaviour epsilon-greedy on Q_n.

All runs are simulated at once with numpy (one row per run). Output: the % of episodes whose first action
is ``left``, per episode, for each learner; a PNG plot and a markdown table under ``--out``.

    python benchmarks/maximization_bias.py --runs 10000 --out benchmarks/out/
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

LEFT, RIGHT = 0, 1
N_B_ACTIONS = 10
EPSILON, ALPHA, GAMMA = 0.1, 0.1, 1.0
B_MEAN, B_STD = -0.1, 1.0

Learner = Callable[[np.random.Generator, int, int], np.ndarray]


def argmax_random_ties(values: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Row-wise argmax, choosing uniformly among tied maxima."""
    is_max = values == values.max(axis=1, keepdims=True)
    return np.argmax(rng.random(values.shape) * is_max, axis=1)


def epsilon_greedy(values: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Row-wise epsilon-greedy actions (greedy ties broken at random)."""
    greedy = argmax_random_ties(values, rng)
    explore = rng.random(len(values)) < EPSILON
    return np.where(explore, rng.integers(values.shape[1], size=len(values)), greedy)


def b_rewards(rng: np.random.Generator, n: int) -> np.ndarray:
    return rng.normal(B_MEAN, B_STD, size=n)


def q_learning(rng: np.random.Generator, runs: int, episodes: int) -> np.ndarray:
    """Fraction of runs choosing left in A, per episode."""
    rows = np.arange(runs)
    qa, qb = np.zeros((runs, 2)), np.zeros((runs, N_B_ACTIONS))
    left_rate = np.empty(episodes)
    for episode in range(episodes):
        a = epsilon_greedy(qa, rng)
        left = a == LEFT
        left_rate[episode] = left.mean()
        # A -> B (reward 0) bootstraps on max_b Q(B, b); A -> terminal (reward 0) on 0.
        bootstrap = np.where(left, qb.max(axis=1), 0.0)
        qa[rows, a] += ALPHA * (0.0 + GAMMA * bootstrap - qa[rows, a])
        b = epsilon_greedy(qb, rng)
        r = b_rewards(rng, runs)
        qb[rows, b] += np.where(left, ALPHA * (r - qb[rows, b]), 0.0)
    return left_rate


def double_q_learning(rng: np.random.Generator, runs: int, episodes: int) -> np.ndarray:
    rows = np.arange(runs)
    qa, qb = np.zeros((2, runs, 2)), np.zeros((2, runs, N_B_ACTIONS))  # [table, run, action]
    left_rate = np.empty(episodes)
    for episode in range(episodes):
        a = epsilon_greedy(qa[0] + qa[1], rng)
        left = a == LEFT
        left_rate[episode] = left.mean()
        first = rng.random(runs) < 0.5  # which table this transition updates
        upd, other = np.where(first, 0, 1), np.where(first, 1, 0)
        best = argmax_random_ties(np.where(first[:, None], qb[0], qb[1]), rng)
        bootstrap = np.where(left, qb[other, rows, best], 0.0)
        qa[upd, rows, a] += ALPHA * (0.0 + GAMMA * bootstrap - qa[upd, rows, a])
        b = epsilon_greedy(qb[0] + qb[1], rng)
        r = b_rewards(rng, runs)
        upd = np.where(rng.random(runs) < 0.5, 0, 1)
        qb[upd, rows, b] += np.where(left, ALPHA * (r - qb[upd, rows, b]), 0.0)
    return left_rate


def self_correcting_q_learning(beta: float) -> Learner:
    def learner(rng: np.random.Generator, runs: int, episodes: int) -> np.ndarray:
        rows = np.arange(runs)
        qa, qb = np.zeros((runs, 2)), np.zeros((runs, N_B_ACTIONS))
        qb_previous = np.zeros_like(qb)  # Q_{n-1}(B, b): value before (B, b)'s last update
        left_rate = np.empty(episodes)
        for episode in range(episodes):
            a = epsilon_greedy(qa, rng)
            left = a == LEFT
            left_rate[episode] = left.mean()
            selector = qb - beta * (qb - qb_previous)
            best = argmax_random_ties(selector, rng)
            bootstrap = np.where(left, qb[rows, best], 0.0)
            # (Q_{n-1}(A, .) would only matter for a transition into A; there is none.)
            qa[rows, a] += ALPHA * (0.0 + GAMMA * bootstrap - qa[rows, a])
            b = epsilon_greedy(qb, rng)
            r = b_rewards(rng, runs)
            qb_previous[rows, b] = np.where(left, qb[rows, b], qb_previous[rows, b])
            qb[rows, b] += np.where(left, ALPHA * (r - qb[rows, b]), 0.0)
        return left_rate

    return learner


def summary_row(name: str, percent: np.ndarray) -> str:
    peak = int(np.argmax(percent))
    return (
        f"| {name} | {percent[peak]:.1f} | {peak + 1} | {percent[:10].mean():.1f} "
        f"| {percent[:50].mean():.1f} | {percent[-100:].mean():.1f} |"
    )


def main() -> None:
    formatter = argparse.RawDescriptionHelpFormatter
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=formatter)
    parser.add_argument("--runs", type=int, default=10_000, help="independent runs (>= 1000 recommended)")
    parser.add_argument("--episodes", type=int, default=300)
    parser.add_argument("--betas", type=float, nargs="+", default=[1.0, 2.0, 3.0, 4.0])
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=Path("benchmarks/out"))
    args = parser.parse_args()
    if args.runs < 1 or args.episodes < 100:
        parser.error("need --runs >= 1 and --episodes >= 100")

    learners: dict[str, Learner] = {"Q-learning": q_learning, "Double Q-learning": double_q_learning}
    for beta in args.betas:
        learners[f"SC Q-learning, beta={beta:g}"] = self_correcting_q_learning(beta)
    streams = np.random.SeedSequence(args.seed).spawn(len(learners))  # one stream per learner
    start = time.perf_counter()
    curves = {
        name: 100.0 * learner(np.random.default_rng(stream), args.runs, args.episodes)
        for (name, learner), stream in zip(learners.items(), streams, strict=True)
    }
    elapsed = time.perf_counter() - start

    stderr = 100.0 * np.sqrt(0.25 / args.runs)
    header = [
        f"Maximization bias MDP (Sutton & Barto Example 6.7), {args.runs} runs x {args.episodes} episodes, "
        f"seed {args.seed}; % of episodes going left from A (optimal with epsilon 0.1: 5%). "
        f"Per-episode standard error <= {stderr:.2f} points.",
        "",
        "| learner | peak % left | peak episode | mean eps 1-10 | mean eps 1-50 "
        f"| mean eps {args.episodes - 99}-{args.episodes} |",
        "|---|---|---|---|---|---|",
    ]
    table = "\n".join(header + [summary_row(name, curve) for name, curve in curves.items()])
    print(table)
    print(f"\n({elapsed:.1f} s for all learners)")

    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "maximization_bias.md").write_text(table + "\n")
    np.savetxt(
        args.out / "maximization_bias.csv",
        np.column_stack([np.arange(1, args.episodes + 1), *curves.values()]),
        delimiter=",",
        header="episode," + ",".join(curves),
        comments="",
        fmt="%.4f",
    )
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 5))
    episodes = np.arange(1, args.episodes + 1)
    for name, curve in curves.items():
        ax.plot(episodes, curve, label=name, linewidth=1.2)
    ax.axhline(5.0, color="black", linestyle="--", linewidth=0.8, label="optimal (epsilon-greedy)")
    ax.set_xlabel("episode")
    ax.set_ylabel("% left actions from A")
    ax.set_title(f"Maximization bias (S&B Example 6.7), {args.runs} runs")
    ax.set_ylim(0, 100)
    ax.legend()
    fig.tight_layout()
    fig.savefig(args.out / "maximization_bias.png", dpi=120)
    print(f"wrote {args.out / 'maximization_bias.md'}, .csv and .png")


if __name__ == "__main__":
    main()
