"""``zoo collect``'s application side: a run folder's policy, the env, the dataset card, the write.

The env is built by the run's (or ``--env``'s) env family with ``training=True``: the dataset holds
what an agent trains on (identical to the evaluation env for classic control and MuJoCo; for Atari
the training protocol: clipped rewards, a life loss ends the episode, stacked 84x84 frames).

The source run's evaluation return on the card is, in this order: ``RUN/eval.json`` when it was
taken at the newest checkpoint's step; the ``evaluations.jsonl`` entry at that step; otherwise it
is measured during collect with ``MEASURED_EVAL_EPISODES`` greedy episodes on the run's evaluation
env and seed (as ``zoo eval`` would).
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Callable
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np
from stable_baselines3.common.base_class import BaseAlgorithm
from stable_baselines3.common.vec_env import VecEnv

from core.collect import Noise, check_sources, collect
from core.envs import family_for
from core.errors import UsageError
from core.evaluation import run_episodes
from core.minari_io import check_dataset_id, default_root, episode_sources, write_dataset

MEASURED_EVAL_EPISODES = 5


@dataclass
class CollectRequest:
    """What ``zoo collect`` was asked for."""

    steps: int
    weights: dict[str, float]
    noise: Noise | None
    seed: int
    name: str
    root: Path | None = None
    run: Path | None = None
    env_id: str | None = None
    command: str = ""


@dataclass
class CollectOutcome:
    path: Path
    card: dict[str, Any]


def default_name(env_id: str, weights: dict[str, float], noise: Noise | None, seed: int) -> str:
    """``zoo/<env>-<sources>[-<noise>]-s<seed>-v0``, e.g. ``zoo/pendulum-random-s0-v0``."""
    env = env_id.split("/")[-1].rsplit("-v", 1)[0].lower()
    sources = "-".join(f"{s}{round(w * 100)}" if w < 1 else s for s, w in weights.items() if w > 0)
    suffix = f"-{noise.kind}{noise.scale:g}".replace(".", "p") if noise is not None else ""
    return f"zoo/{env}-{sources}{suffix}-s{seed}-v0"


def _source_eval_return(run: Path, step: int, measure: Callable[[], tuple[float, float]]) -> dict[str, Any]:
    eval_json = run / "eval.json"
    if eval_json.is_file():
        report = json.loads(eval_json.read_text())
        if report.get("step") == step and report.get("mean_return") is not None:
            return {
                "mean": report["mean_return"],
                "std": report.get("std_return"),
                "episodes": report.get("episodes"),
                "deterministic": report.get("deterministic", True),
                "from": "eval.json",
            }
    history = run / "evaluations.jsonl"
    if history.is_file():
        for line in reversed(history.read_text().splitlines()):
            entry = json.loads(line) if line.strip() else {}
            if entry.get("step") == step and entry.get("mean_return") is not None:
                return {
                    "mean": entry["mean_return"],
                    "std": entry.get("std_return"),
                    "episodes": len(entry.get("returns") or []) or None,
                    "deterministic": True,
                    "from": "evaluations.jsonl",
                }
    mean, std = measure()
    return {
        "mean": mean,
        "std": std,
        "episodes": MEASURED_EVAL_EPISODES,
        "deterministic": True,
        "from": "measured by zoo collect",
    }


def versions() -> dict[str, Any]:
    """Python, torch, SB3, gymnasium, minari, h5py, numpy versions and the zoo's git commit."""
    from zoo.runs import collect_versions

    found = collect_versions()
    for package in ("minari", "h5py"):
        try:
            found[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            found[package] = None
    return found


def run_collect(request: CollectRequest, progress: Callable[[int], None] | None = None) -> CollectOutcome:
    """Collect by ``request`` and write the dataset; nothing is written if anything fails."""
    from zoo import runner, runs

    check_dataset_id(request.name)
    root = default_root() if request.root is None else request.root
    if (root / request.name).exists():
        raise UsageError(f"dataset {request.name} already exists in {root}; choose another name or version")

    model: BaseAlgorithm | None = None
    source: dict[str, Any] = {"run": None, "agent": None, "checkpoint_step": None, "eval_return": None}
    env: VecEnv
    if request.run is not None:
        config = runs.open_run(request.run)
        if request.env_id is not None and request.env_id != config.env:
            raise UsageError(f"--env {request.env_id}: the run {request.run} was trained on {config.env}")
        env_id = config.env
        setup = runner.prepare(config)
        env = runner.make_env(setup, config, n_envs=1, seed=request.seed, training=True)
        check_sources(request.weights, request.noise, env.action_space, has_policy=True)
        model, step = runner.load_for_eval(setup, request.run, config, env)
        env_options = dict(config.env_options)
        family = setup.family

        def measure() -> tuple[float, float]:
            eval_env = runner.make_env(
                setup, config, n_envs=1, seed=config.seed + runner.EVAL_SEED_OFFSET, training=False
            )
            result = run_episodes(model, eval_env, MEASURED_EVAL_EPISODES, deterministic=True)
            eval_env.close()
            return result.mean, result.std

        source = {
            "run": str(request.run.resolve()),
            "agent": config.agent,
            "checkpoint_step": step,
            "eval_return": _source_eval_return(request.run, step, measure),
        }
    else:
        if request.env_id is None:
            raise UsageError(
                "zoo collect needs --run RUN_DIR (a trained policy) or --env ENV_ID (random actions)"
            )
        env_id = request.env_id
        family = family_for(env_id)
        options = family.Options()
        env_options = options.model_dump()
        env = family.make_vec_env(env_id, options=options, n_envs=1, seed=request.seed, training=True)
        check_sources(request.weights, request.noise, env.action_space, has_policy=False)

    try:
        collection = collect(
            env,
            steps=request.steps,
            weights=request.weights,
            seed=request.seed,
            model=model,
            noise=request.noise,
            progress=progress,
        )
        observation_space, action_space = env.observation_space, env.action_space
    finally:
        env.close()

    returns = collection.returns()
    card: dict[str, Any] = {
        "format": "zoo-dataset-card/1",
        "name": request.name,
        "env_id": env_id,
        "env_options": env_options,
        "env_protocol": "training",
        "source_run": source["run"],
        "source_agent": source["agent"],
        "source_checkpoint_step": source["checkpoint_step"],
        "source_eval_return": source["eval_return"],
        "mixture": request.weights,
        "mixing": "per-source blocks of int(steps * weight) transitions, as BRAC's collect_data",
        "noise": str(request.noise) if request.noise is not None else None,
        "policy_sampling": "model.predict(deterministic=False)" if model is not None else None,
        "seed": request.seed,
        "steps": collection.steps,
        "episodes": len(collection.episodes),
        "complete_episodes": int(returns.size),
        "data_mean_return": float(returns.mean()) if returns.size else None,
        "data_return_by_source": {
            s: (float(r.mean()) if (r := collection.returns(s)).size else None)
            for s, w in request.weights.items()
            if w > 0
        },
        **episode_sources(collection.episodes),
        "versions": versions(),
        "created": dt.datetime.now().isoformat(timespec="seconds"),
        "command": request.command,
    }
    description = (
        f"{env_id}: {collection.steps} transitions, mixture "
        + ",".join(f"{s}:{w:g}" for s, w in request.weights.items())
        + (f", noise {request.noise}" if request.noise else "")
        + (f", policy from {source['agent']} run {source['run']}" if source["run"] else "")
    )
    path = write_dataset(
        request.name,
        collection.episodes,
        observation_space=observation_space,
        action_space=action_space,
        env_spec=_env_spec(env_id) if family.observation_kind == "vector" else None,
        card=_jsonable(card),
        root=root,
        description=description,
    )
    return CollectOutcome(path, card)


def _env_spec(env_id: str) -> Any:
    import gymnasium as gym

    try:
        return gym.spec(env_id)
    except gym.error.Error:
        return None


def _jsonable(value: Any) -> Any:
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, float) and not np.isfinite(value):
        return None
    return value
