"""The experiment runner: builds envs and the agent from a resolved config, trains with the shared
callbacks into a run folder, resumes from checkpoints, and evaluates runs."""

from __future__ import annotations

import datetime as dt
import inspect
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from gymnasium import spaces
from rich.console import Console
from stable_baselines3.common.base_class import BaseAlgorithm
from stable_baselines3.common.callbacks import CallbackList
from stable_baselines3.common.off_policy_algorithm import OffPolicyAlgorithm
from stable_baselines3.common.vec_env import VecEnv

from core.agents import AGENTS, AgentSpec
from core.callbacks import CheckpointCallback, EvalCallback, RichProgressCallback, StopOnSignal
from core.checkpoint import CheckpointManager
from core.datasets import TransitionDataset
from core.envs import EnvFamily, family_for
from core.errors import UsageError, ZooError, check_choice
from core.logging import configure_run_logger
from core.noise import SizedActionNoise
from core.replay import EpisodicReplayBuffer
from core.training_state import load_training_state, save_training_state
from rewards.settings import PreferenceSettings
from zoo.config import RunConfig, materialize_hyperparameters
from zoo.runs import eval_seeds, read_status, write_status

EVAL_SEED_OFFSET = 10_000  # evaluation envs use seeds disjoint from the training envs'


def resolve_device(device: str) -> str:
    """``auto`` -> ``cuda`` when a GPU is visible, else ``cpu``; ``cuda`` without a GPU is an error."""
    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cuda" and not torch.cuda.is_available():
        raise UsageError(
            "--device cuda: no CUDA device is available on this machine (use --device cpu or auto)"
        )
    return device


@dataclass
class Setup:
    spec: AgentSpec
    family: EnvFamily
    device: str


def prepare(config: RunConfig) -> Setup:
    return Setup(AGENTS.get(config.agent), family_for(config.env), resolve_device(config.device))


def make_env(setup: Setup, config: RunConfig, *, n_envs: int, seed: int, training: bool) -> VecEnv:
    options = setup.family.Options.model_validate(config.env_options)
    env = setup.family.make_vec_env(config.env, options=options, n_envs=n_envs, seed=seed, training=training)
    supported = setup.spec.action_spaces
    if not isinstance(env.action_space, supported):
        env.close()
        names = " or ".join(space.__name__ for space in supported)
        raise UsageError(
            f"{config.agent} needs a {names} action space; {config.env} has {type(env.action_space).__name__}"
        )
    return env


def build_model(setup: Setup, config: RunConfig, env: VecEnv) -> BaseAlgorithm:
    hyperparameters = materialize_hyperparameters(config.hyperparameters, f"agents.{config.agent}")
    policy = setup.spec.policy_for(setup.family.observation_kind)
    hyperparameters = with_episodic_replay(setup, config, env, hyperparameters)
    noise = hyperparameters.get("action_noise")
    if isinstance(noise, SizedActionNoise):
        if not isinstance(env.action_space, spaces.Box):
            raise UsageError(f"agents.{config.agent}.action_noise: needs a Box action space")
        noise.bind(env.action_space.shape)
    try:
        return setup.spec.algorithm(
            policy, env, seed=config.seed, device=setup.device, verbose=0, **hyperparameters
        )
    except (ValueError, AssertionError) as error:
        raise UsageError(f"{config.agent}: {error}") from None


def with_episodic_replay(
    setup: Setup, config: RunConfig, env: VecEnv, hyperparameters: dict[str, Any]
) -> dict[str, Any]:
    """Off-policy agents store replay in :class:`EpisodicReplayBuffer` (each frame once, n-step returns).

    Left alone when the config picks its own buffer or SB3's ``optimize_memory_usage``, or when the
    observations are not a Box/Discrete space (Dict observations need SB3's ``DictReplayBuffer``).
    """
    algorithm = setup.spec.algorithm
    wanted = setup.spec.episodic_replay
    if (
        wanted == "never"
        or (wanted == "images" and setup.family.observation_kind != "image")
        or not issubclass(algorithm, OffPolicyAlgorithm)
        or hyperparameters.get("replay_buffer_class") is not None
        or hyperparameters.get("optimize_memory_usage", False)
        or not isinstance(env.observation_space, spaces.Box | spaces.Discrete)
    ):
        return hyperparameters
    parameters = inspect.signature(algorithm).parameters
    defaults = {name: p.default for name, p in parameters.items() if p.default is not inspect.Parameter.empty}
    n_steps = int(hyperparameters.get("n_steps", defaults.get("n_steps", 1)))
    gamma = float(hyperparameters.get("gamma", defaults.get("gamma", 0.99)))
    frame_stack = 1
    if setup.family.observation_kind == "image":
        frame_stack = int(getattr(setup.family.Options.model_validate(config.env_options), "frame_stack", 1))
    replay_kwargs = {"frame_stack": frame_stack, "n_steps": n_steps, "gamma": gamma}
    replay_kwargs.update(hyperparameters.get("replay_buffer_kwargs") or {})
    updated = {
        **hyperparameters,
        "replay_buffer_class": EpisodicReplayBuffer,
        "replay_buffer_kwargs": replay_kwargs,
    }
    if "n_steps" in parameters:
        updated["n_steps"] = 1  # the buffer computes the n-step returns; SB3 would otherwise warn and ignore
    return updated


def algorithm_name(algorithm: type) -> str:
    """The class path a checkpoint records for its model (``state.json``'s ``algorithm``)."""
    return f"{algorithm.__module__}.{algorithm.__qualname__}"


def checkpoint_manager(run_dir: Path, config: RunConfig) -> CheckpointManager:
    return CheckpointManager(run_dir / "checkpoints", keep_last=config.keep_checkpoints)


@dataclass
class TrainOutcome:
    status: str  # "finished" or "interrupted"
    steps: int
    final_eval: float | None
    checkpoint: Path | None
    stopped_at_return: bool = False


def open_offline_dataset(config: RunConfig) -> TransitionDataset:
    """The dataset of an offline run (or the demonstrations of a run that learns from them), loaded and
    checked against the run's env (one-line errors)."""
    from core.minari_io import load_dataset

    if config.dataset is None:
        if AGENTS.get(config.agent).demonstrations:
            raise UsageError(
                f"{config.agent} learns from demonstrations: pass --demos NAME_OR_PATH "
                "(see `zoo dataset list`)"
            )
        raise UsageError(
            f"{config.agent} learns offline: pass --dataset NAME_OR_PATH (see `zoo dataset list`)"
        )
    dataset = load_dataset(config.dataset)
    check_offline_dataset(config, dataset)
    return dataset


def check_offline_dataset(config: RunConfig, dataset: TransitionDataset) -> None:
    """Raise :class:`UsageError` if ``dataset`` does not fit ``config``'s agent and env."""
    setup = prepare(config)
    env = make_env(setup, config, n_envs=1, seed=config.seed, training=False)
    try:
        dataset.check_spaces(env.observation_space, env.action_space, config.env)
    finally:
        env.close()


def train(
    config: RunConfig,
    run_dir: Path,
    *,
    console: Console,
    quiet: bool,
    resume: bool,
    dataset: TransitionDataset | None = None,
) -> TrainOutcome:
    """Train (or resume) the run in ``run_dir`` until ``config.steps`` env steps (gradient steps for
    an offline agent, which learns from ``dataset``, or ``config.dataset`` when none is given; for an
    agent that learns from demonstrations, stage-1 gradient steps then env steps, see ``core.demos``)."""
    setup = prepare(config)
    manager = checkpoint_manager(run_dir, config)
    offline = setup.spec.offline
    if (offline or setup.spec.demonstrations) and dataset is None:
        dataset = open_offline_dataset(config)
    # An offline agent never steps its env: it only gives the model its spaces.
    n_envs = 1 if offline else config.n_envs
    env = make_env(setup, config, n_envs=n_envs, seed=config.seed, training=not offline)
    eval_env = make_env(setup, config, n_envs=1, seed=config.seed + EVAL_SEED_OFFSET, training=False)
    seeds = eval_seeds(run_dir)
    stop = StopOnSignal()
    preference = None
    if config.preference is not None:
        # The agent learns from the learned reward; the eval env keeps the true one.
        from rewards.session import PreferenceSession

        preference = PreferenceSession(
            config.preference,
            env,
            run_dir,
            total_steps=config.steps,
            device=setup.device,
            seed=config.seed,
            should_stop=lambda: stop.received is not None,
            notify=console.print,
            env_id=config.env,
            env_kwargs=dict(config.env_options.get("env_kwargs") or {}),
        )
        env = preference.env
    stop_server: Callable[[], None] | None = None
    if config.preference is not None and config.preference.labeler == "human" and config.preference.serve:
        try:
            stop_server = start_label_server(config.preference, run_dir, console)
        except BaseException:
            assert preference is not None
            preference.close()
            raise
    latest = manager.latest() if resume else None
    if latest is not None:
        model = load_training_state(setup.spec.algorithm, latest, env, device=setup.device)
        if preference is not None:
            preference.load(latest)
    else:
        model = build_model(setup, config, env)
    model.set_logger(configure_run_logger(run_dir))
    learn = model.learn
    if offline:
        assert dataset is not None
        model.set_dataset(dataset)  # type: ignore[attr-defined]
        learn = model.learn_offline  # type: ignore[attr-defined]
    elif setup.spec.demonstrations:
        assert dataset is not None
        model.set_demonstrations(dataset)  # type: ignore[attr-defined]

    remaining = config.steps - model.num_timesteps

    def save(m: BaseAlgorithm, directory: Path) -> None:
        save_training_state(m, directory, include_replay=config.save_replay)
        if preference is not None:
            preference.save(directory)

    checkpoints = CheckpointCallback(manager, config.checkpoint_every, save)
    evaluation = EvalCallback(
        eval_env,
        config.eval_every,
        config.eval_episodes,
        run_dir / "best",
        run_dir / "evaluations.jsonl",
        stop_at_return=config.stop_at_return,
        seeds=seeds[: config.eval_episodes] if len(seeds) >= config.eval_episodes else None,
        algorithm=algorithm_name(setup.spec.algorithm),
    )
    callbacks: list[Any] = [stop, checkpoints, evaluation]
    if preference is not None:
        callbacks.append(preference.callback)
    if not quiet:
        callbacks.append(RichProgressCallback(console, config.steps, evaluation, offline=offline))
    write_status(
        run_dir,
        status="running",
        step=model.num_timesteps,
        device=setup.device,
        started=dt.datetime.now().isoformat(timespec="seconds"),
    )
    stop.install()
    try:
        if remaining > 0:
            learn(
                remaining,
                callback=CallbackList(callbacks),
                reset_num_timesteps=latest is None,
            )
        else:
            checkpoints.init_callback(model)
            evaluation.init_callback(model)
    except BaseException:
        write_status(run_dir, status="failed", step=model.num_timesteps)
        if preference is not None:
            preference.close()
        raise
    finally:
        stop.uninstall()
        if stop_server is not None:
            stop_server()
    interrupted = stop.received is not None
    checkpoint = checkpoints.checkpoint()
    final_eval = None
    extra: dict[str, Any] = {}
    if evaluation.reached is not None:  # stopped at the threshold: that evaluation is the final one
        final_eval = evaluation.reached[1]
        extra["stopped_at_return"] = {"step": evaluation.reached[0], "mean_return": final_eval}
    elif evaluation.last is not None and evaluation.last[0] == model.num_timesteps:
        final_eval = evaluation.last[1]  # the periodic evaluation just ran at this step
    elif not interrupted:
        final_eval = evaluation.evaluate()
    status = "interrupted" if interrupted else "finished"
    write_status(run_dir, status=status, step=model.num_timesteps, **extra)
    env.close()
    eval_env.close()
    if preference is not None:
        preference.close()
    return TrainOutcome(status, model.num_timesteps, final_eval, checkpoint, evaluation.reached is not None)


def start_label_server(settings: PreferenceSettings, run_dir: Path, console: Console) -> Callable[[], None]:
    """Serve the labeling page of a human-labeled run while it trains; prints the URL to open (with a
    fresh token for the labeler ``local`` when the page is bound beyond loopback).

    :return: stops the server and closes its connections
    """
    from labeling.server import LabelServer
    from rewards.session import open_store

    store = open_store(settings, run_dir)  # the server's own connections, apart from training's
    server = LabelServer(
        run_dir,
        store,
        host=settings.host,
        port=settings.port,
        budget=settings.labels,
        instructions=settings.instructions,
        lease_seconds=settings.lease_seconds,
    )
    try:
        server.start()
    except OSError as error:  # e.g. the port is taken
        store.close()
        raise UsageError(f"labeling page: {error} (set preference.port, 0 for any free port)") from None
    except BaseException:
        store.close()
        raise
    more = f"more labelers: zoo label add-labeler {run_dir} NAME"
    console.print(f"label clips at {server.local_url()}  ({more})", soft_wrap=True, highlight=False)

    def stop() -> None:
        server.stop()
        store.close()

    return stop


# --------------------------------------------------------------------------------------------------
# Evaluation of a finished (or interrupted) run


def load_for_eval(setup: Setup, run_dir: Path, config: RunConfig, env: VecEnv) -> tuple[BaseAlgorithm, int]:
    """The newest complete checkpoint's model, and the step it was taken at."""
    latest = checkpoint_manager(run_dir, config).latest()
    if latest is None:
        status = read_status(run_dir).get("status", "unknown")
        raise UsageError(f"{run_dir}: no complete checkpoint to evaluate (run status: {status})")
    try:
        model = setup.spec.algorithm.load(latest / "model.zip", env=env, device=setup.device)
    except Exception as error:  # a corrupt zip, a pickle from another agent, ...
        raise ZooError(
            f"{latest / 'model.zip'}: cannot load the model ({type(error).__name__}: {error})"
        ) from None
    return model, int(model.num_timesteps)


def q_value_function(model: BaseAlgorithm) -> Callable[[np.ndarray], np.ndarray] | None:
    """``observations -> Q-values [n, n_actions]`` of a value-based model: its own ``q_values``
    (SC-DQN), or its online ``q_net`` (SB3's DQN); ``None`` for other models."""
    own = getattr(model, "q_values", None)
    if callable(own):
        return own
    q_net = getattr(model, "q_net", None)
    if q_net is None:
        return None

    def q_values(observations: np.ndarray) -> np.ndarray:
        obs_tensor, _ = model.policy.obs_to_tensor(observations)
        with torch.no_grad():
            return q_net(obs_tensor).float().cpu().numpy()

    return q_values


def set_test_policy(model: BaseAlgorithm, agent: str, test_policy: str) -> None:
    """Switch an offline actor-critic's greedy action rule; a usage error for other agents."""
    policy: Any = model.policy
    if not hasattr(policy, "test_policy"):
        raise UsageError(f"--test-policy: {agent} has no test policies (bc, brac and offline_sac have them)")
    check_choice("--test-policy", test_policy, ("deterministic", "max_q"))
    if test_policy == "max_q" and getattr(policy, "critic", None) is None:
        raise UsageError(f"--test-policy max_q: {agent} has no Q-network to pick actions with")
    policy.test_policy = test_policy
