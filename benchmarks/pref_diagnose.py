"""Why a preference run falls short: its final learned reward scored on greedy episodes of several
policies (its own and, say, PPO's on the true reward), next to their true returns.

If the learned reward ranks a better policy (by true return) far above the run's own, the reward is
not what holds the run back: its policy is stuck in a local optimum of RL. For MuJoCo locomotion
(Hopper, Walker2d) the table also gives the share of steps the env calls healthy and of those with
the torso up (``qpos[1]`` above ``--upright-height``).

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
    observations, actions, rewards, healthy, upright = [], [], [], 0, 0
    done = False
    while not done:
        action, _ = policy.predict(obs, deterministic=True)
        observations.append(obs)
        actions.append(action)
        obs, reward, terminated, truncated, _ = env.step(action)
        rewards.append(float(reward))
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
    }


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
    for run in options.policies:
        policy = PPO.load(last_checkpoint(run) / "model.zip", device="cpu")
        episodes = [
            rollout(policy, env, options.seed_base + i, options.upright_height)
            for i in range(options.episodes)
        ]
        learned = [float(ensemble.predict(e["observations"], e["actions"]).sum()) for e in episodes]

        def cells(values: list[float]) -> str:
            return f"{statistics.fmean(values):.0f} ({', '.join(f'{v:.0f}' for v in values)})"

        steps = sum(e["steps"] for e in episodes)
        healthy = sum(e["healthy"] for e in episodes) / steps
        upright = sum(e["upright"] for e in episodes) / steps
        true = cells([e["true"] for e in episodes])
        print(f"| {run} | {true} | {cells(learned)} | {healthy:.0%} | {upright:.0%} |")


if __name__ == "__main__":
    main()
