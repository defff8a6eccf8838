"""Why a preference run falls short: its final learned reward scored on greedy episodes of several
policies (its own and, say, PPO's on the true reward), next to their true returns.

If the learned reward ranks a better policy (by true return) far above the run's own, the reward is
not what holds the run back: its policy is stuck in a local optimum of RL. For MuJoCo locomotion
(Hopper, Walker2d) the table also gives the share of steps the env calls healthy and of those with
the torso up (``qpos[1]`` above ``--upright-height``). Where the env reports its reward's terms
(``reward_forward`` and ``reward_survive`` in ``info``), the learned per-step reward is regressed on
them over all the policies' steps: what the learned reward pays for moving forward and for being
healthy. On Hopper it also reads the reward run's label store: in each quarter of its answered queries,
the share of clip steps that are healthy (the env's ``is_healthy`` rule applied to the stored
observations) and how many pairs put a mostly healthy clip against a mostly fallen one.

    python benchmarks/pref_diagnose.py --reward-run RUN/pref_synthetic-s1 \\
        --policies RUN/pref_synthetic-s1 RUN/ppo_true_reward-s1 --episodes 3

Each policy acts greedily from the last checkpoint of its run, in the env as the reward run saw it
(its ``env_options``), on episodes seeded ``--seed-base``, ``--seed-base + 1``, ...: the same episodes
for every policy.
"""

from __future__ import annotations

import argparse
import statistics
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
import torch as th
import yaml


def last_checkpoint(run: Path) -> Path:
    """The run's newest complete checkpoint folder."""
    complete = sorted(p.parent for p in (run / "checkpoints").glob("step-*/COMPLETE.json"))
    if not complete:
        raise SystemExit(f"{run}: no complete checkpoint under {run / 'checkpoints'}")
    return complete[-1]


def load_reward(run: Path, env: gym.Env) -> Any:
    """The run's final reward ensemble (its last checkpoint's preference state)."""
    from rewards.session import STATE_FILE, ensemble_from_settings
    from rewards.settings import PreferenceSettings

    config = yaml.safe_load((run / "config.yaml").read_text())
    if not config.get("preference"):
        raise SystemExit(f"{run}: not a preference run (its config.yaml has no preference settings)")
    settings = PreferenceSettings(**config["preference"])
    ensemble = ensemble_from_settings(settings, env.observation_space, env.action_space)
    state = th.load(last_checkpoint(run) / STATE_FILE, map_location="cpu", weights_only=True)
    ensemble.load_state_dict(state["ensemble"])
    return ensemble


def rollout(policy: Any, env: gym.Env, seed: int, upright_height: float) -> dict[str, Any]:
    """One greedy episode: true return, steps, healthy and upright steps, and its observations."""
    obs, _ = env.reset(seed=seed)
    observations, actions, rewards, healthy, upright, terms = [], [], [], 0, 0, []
    done = False
    while not done:
        action, _ = policy.predict(obs, deterministic=True)
        observations.append(obs)
        actions.append(action)
        obs, reward, terminated, truncated, info = env.step(action)
        rewards.append(float(reward))
        if "reward_forward" in info and "reward_survive" in info:
            terms.append((float(info["reward_forward"]), float(info["reward_survive"])))
        core = env.unwrapped
        healthy += int(bool(getattr(core, "is_healthy", False)))
        upright += int(float(core.data.qpos[1]) > upright_height) if hasattr(core, "data") else 0
        done = terminated or truncated
    return {
        "true": float(np.sum(rewards)),
        "steps": len(rewards),
        "healthy": healthy,
        "upright": upright,
        "observations": np.asarray(observations),
        "actions": np.asarray(actions),
        "terms": np.asarray(terms).reshape(-1, 2) if len(terms) == len(rewards) else None,
    }


def hopper_healthy(env: gym.Env, observations: np.ndarray) -> np.ndarray:
    """Hopper's ``is_healthy`` from observations ``[T, 11]`` (positions after x excluded: z, angle,
    then the rest of the state vector)."""
    core: Any = env.unwrapped
    z, angle, state = observations[:, 0], observations[:, 1], observations[:, 1:]
    low, high = core._healthy_state_range
    z_low, z_high = core._healthy_z_range
    angle_low, angle_high = core._healthy_angle_range
    return (
        np.all((low < state) & (state < high), axis=1)
        & (z_low < z) & (z < z_high) & (angle_low < angle) & (angle < angle_high)
    )  # fmt: skip


def labeled_clips_report(run: Path, env: gym.Env) -> None:
    """Per quarter of the run's answered queries: healthy share of clip steps, contrasting pairs."""
    from rewards.clipfiles import ClipFolder
    from rewards.store import LabelStore

    folder = ClipFolder(run)
    with LabelStore.for_run(run) as store:
        answered = sorted(store.answered_since(0), key=lambda pair: pair.answer_id)
    if not answered:
        print(f"{run}: no answered queries in its label store")
        return
    print("\n| queries (in answer order) | healthy share of clip steps | clips with any healthy step |"
          " pairs: a mostly healthy clip against a mostly fallen one |")  # fmt: skip
    print("|---|---|---|---|")
    quarter = max(1, -(-len(answered) // 4))
    for start in range(0, len(answered), quarter):
        shares = []
        contrasting = 0
        for pair in answered[start : start + quarter]:
            both = [
                hopper_healthy(env, folder.load(ref).observations).mean()
                for ref in (pair.left_clip, pair.right_clip)
            ]
            shares += both
            contrasting += int(max(both) > 0.5 > min(both))
        chunk = f"{start + 1}-{min(start + quarter, len(answered))}"
        any_healthy = np.mean([share > 0 for share in shares])
        print(f"| {chunk} | {np.mean(shares):.1%} | {any_healthy:.1%} | {contrasting} |")


def regress_on_terms(learned: np.ndarray, terms: np.ndarray, true: np.ndarray) -> str:
    """``learned ~ a * forward + b * healthy + c`` by least squares, and the per-step correlation."""
    design = np.column_stack([terms, np.ones(len(terms))])
    (forward, healthy, constant), *_ = np.linalg.lstsq(design, learned, rcond=None)
    correlation = float(np.corrcoef(learned, true)[0, 1])
    return (
        f"learned reward per step ~ {forward:.2f} x forward term {healthy:+.2f} x healthy term "
        f"{constant:+.2f} (least squares over the policies' steps; correlation with the true reward "
        f"{correlation:.2f})"
    )


def main() -> None:
    formatter = argparse.RawDescriptionHelpFormatter
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=formatter)
    parser.add_argument(
        "--reward-run", type=Path, required=True, help="the preference run whose reward scores"
    )
    parser.add_argument("--policies", type=Path, nargs="+", required=True, help="runs whose policies act")
    parser.add_argument("--episodes", type=int, default=3)
    parser.add_argument("--seed-base", type=int, default=10_000)
    parser.add_argument("--upright-height", type=float, default=1.0)
    options = parser.parse_args()
    from stable_baselines3 import PPO

    config = yaml.safe_load((options.reward_run / "config.yaml").read_text())
    env_kwargs = (config.get("env_options") or {}).get("env_kwargs") or {}
    env = gym.make(config["env"], **env_kwargs)
    ensemble = load_reward(options.reward_run, env)
    checkpoint = last_checkpoint(options.reward_run).name
    print(f"reward: {options.reward_run} ({checkpoint}); env {config['env']} {env_kwargs}\n")
    print("| policy | true return (per episode) | learned return (per episode) | healthy | upright |")
    print("|---|---|---|---|---|")
    steps_learned, steps_terms, steps_true = [], [], []
    for run in options.policies:
        policy = PPO.load(last_checkpoint(run) / "model.zip", device="cpu")
        episodes = [
            rollout(policy, env, options.seed_base + i, options.upright_height)
            for i in range(options.episodes)
        ]
        per_step = [ensemble.predict(e["observations"], e["actions"]).numpy() for e in episodes]
        learned = [float(r.sum()) for r in per_step]
        for episode, rewards in zip(episodes, per_step, strict=True):
            if episode["terms"] is not None:
                steps_learned.append(rewards)
                steps_terms.append(episode["terms"])
                steps_true.append(episode["terms"].sum(1))

        def cells(values: list[float]) -> str:
            return f"{statistics.fmean(values):.0f} ({', '.join(f'{v:.0f}' for v in values)})"

        steps = sum(e["steps"] for e in episodes)
        healthy = sum(e["healthy"] for e in episodes) / steps
        upright = sum(e["upright"] for e in episodes) / steps
        true = cells([e["true"] for e in episodes])
        print(f"| {run} | {true} | {cells(learned)} | {healthy:.0%} | {upright:.0%} |")
    if steps_terms:
        print()
        print(
            regress_on_terms(
                np.concatenate(steps_learned), np.concatenate(steps_terms), np.concatenate(steps_true)
            )
        )
    if config["env"].startswith("Hopper"):
        labeled_clips_report(options.reward_run, env)


if __name__ == "__main__":
    main()
