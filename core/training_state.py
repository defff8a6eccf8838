"""Save and restore everything needed to resume an SB3 algorithm (off-policy or on-policy).

A training-state folder (usually a checkpoint written through :class:`core.checkpoint.CheckpointManager`)
holds:

- ``model.zip``: SB3's own ``model.save`` (hyperparameters, counters, schedules, policy weights and
  optimizer state; see ``BaseAlgorithm._get_torch_save_params``);
- ``replay_buffer.pkl``: SB3's ``save_replay_buffer`` (off-policy only, when asked for);
- ``rng.pkl``: the states of Python's ``random``, NumPy's global generator, torch CPU (and CUDA)
  generators, the model's action/observation space generators and each sub-env's ``np_random``;
- ``vecnormalize.pkl``: the ``VecNormalize`` running statistics, when the env is normalized;
- ``state.json``: the counters (``num_timesteps``, ``_n_updates``, ...) in a readable form.

What is not restored: the sub-envs' internal state (the physics of the episode in progress), which
gymnasium offers no general way to copy. So a resumed run starts a new episode (SB3 resets the env
on load, ``force_reset``); with the env generators restored, that reset is the one the saved run
would have made had it reset at the same moment. Envs whose randomness lives outside ``np_random``
(ALE keeps its own seed) resume with their own generators.
"""

from __future__ import annotations

import json
import pickle
import random
import zipfile
import zlib
from pathlib import Path
from typing import Any

import numpy as np
import stable_baselines3
import torch as th
from gymnasium import spaces
from stable_baselines3.common.base_class import BaseAlgorithm
from stable_baselines3.common.vec_env import VecEnv, VecEnvWrapper, VecNormalize

from core.checkpoint import CorruptCheckpointError
from core.errors import UsageError, ZooError

MODEL_FILE = "model.zip"
REPLAY_FILE = "replay_buffer.pkl"
RNG_FILE = "rng.pkl"
STATE_FILE = "state.json"
VECNORMALIZE_FILE = "vecnormalize.pkl"
FORMAT_VERSION = 1
COUNTERS = ("num_timesteps", "_n_updates", "_episode_num", "exploration_rate", "_n_calls")

_READ_ERRORS = (OSError, EOFError, ValueError, pickle.UnpicklingError, zipfile.BadZipFile, zlib.error)


def save_training_state(model: BaseAlgorithm, directory: Path, *, include_replay: bool) -> None:
    """Write ``model``'s full training state into ``directory`` (created if needed).

    :param model: the algorithm to save, between two ``learn`` calls or from a callback
    :param directory: the folder to write into (e.g. the temp dir of a checkpoint)
    :param include_replay: also save the replay buffer (exact resume; can be gigabytes)
    """
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    # RNG first: nothing below draws random numbers, but capture before anything could.
    rng = _capture_rng(model)
    model.save(directory / MODEL_FILE)
    replay_saved = False
    if include_replay and getattr(model, "replay_buffer", None) is not None:
        model.save_replay_buffer(directory / REPLAY_FILE)  # type: ignore[attr-defined]
        replay_saved = True
    vec_normalize = model.get_vec_normalize_env()
    if vec_normalize is not None:
        vec_normalize.save(str(directory / VECNORMALIZE_FILE))
    with open(directory / RNG_FILE, "wb") as handle:
        pickle.dump(rng, handle, protocol=pickle.HIGHEST_PROTOCOL)
    state = {
        "format": FORMAT_VERSION,
        "algorithm": f"{type(model).__module__}.{type(model).__qualname__}",
        "sb3_version": stable_baselines3.__version__,
        "n_envs": model.n_envs,
        "replay_buffer": replay_saved,
        "vec_normalize": vec_normalize is not None,
        "counters": {name: _plain(getattr(model, name)) for name in COUNTERS if hasattr(model, name)},
    }
    (directory / STATE_FILE).write_text(json.dumps(state, indent=1, sort_keys=True) + "\n", encoding="utf-8")


def load_training_state(
    algorithm_class: type[BaseAlgorithm],
    directory: Path,
    env: VecEnv,
    *,
    device: str,
    custom_objects: dict[str, Any] | None = None,
) -> BaseAlgorithm:
    """Rebuild the algorithm saved by :func:`save_training_state`, ready for
    ``learn(..., reset_num_timesteps=False)``.

    :param algorithm_class: the class that saved it (e.g. ``DQN``)
    :param directory: the training-state folder
    :param env: a fresh env built like the saved one (wrapped in ``VecNormalize`` if the saved one was)
    :param device: torch device for the model
    :param custom_objects: passed to SB3's ``load`` (objects not to unpickle)
    :return: the restored algorithm
    """
    directory = Path(directory)
    state = _read_state(directory)
    model_path = directory / MODEL_FILE
    if not model_path.is_file():
        raise UsageError(f"{directory} is not a training-state folder (no {MODEL_FILE})")
    _check_zip(model_path)
    try:
        model = algorithm_class.load(model_path, env=env, device=device, custom_objects=custom_objects)
    except ValueError as error:
        if "spaces do not match" in str(error):
            raise UsageError(f"{directory}: the env does not match the checkpoint: {error}") from None
        raise _corrupt(model_path, error) from None
    except Exception as error:  # a pickle from another class or version, a tampered member, ...
        name = algorithm_class.__name__
        raise ZooError(
            f"{model_path}: cannot load as {name} ({type(error).__name__}: {_line(error)})"
        ) from None

    replay_path = directory / REPLAY_FILE
    if replay_path.is_file():
        if not hasattr(model, "load_replay_buffer"):
            raise UsageError(f"{directory} has a replay buffer but {algorithm_class.__name__} has none")
        try:
            model.load_replay_buffer(replay_path)
        except (*_READ_ERRORS, AssertionError) as error:
            raise _corrupt(replay_path, error) from None
    elif state.get("replay_buffer"):
        raise _corrupt(replay_path, FileNotFoundError("state.json lists it but it is missing"))

    _restore_vec_normalize(model, directory)
    for name, value in state.get("counters", {}).items():
        if hasattr(model, name):
            setattr(model, name, value)
    _restore_rng(model, directory / RNG_FILE)
    return model


def read_counters(directory: Path) -> dict[str, Any]:
    """The counters saved with a training state (``num_timesteps``, ``_n_updates``, ...)."""
    return dict(_read_state(Path(directory)).get("counters", {}))


# --------------------------------------------------------------------------------------------------
# Pieces


def _read_state(directory: Path) -> dict[str, Any]:
    path = directory / STATE_FILE
    if not path.is_file():
        raise UsageError(f"{directory} is not a training-state folder (no {STATE_FILE})")
    try:
        state = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as error:
        raise _corrupt(path, error) from None
    if not isinstance(state, dict) or not isinstance(state.get("counters", {}), dict):
        raise _corrupt(path, ValueError("not a state object"))
    return state


def _check_zip(path: Path) -> None:
    """Read every member of the zip and check its CRC, so truncation is reported as such."""
    try:
        with zipfile.ZipFile(path) as archive:
            bad = archive.testzip()
            names = archive.namelist()
    except _READ_ERRORS as error:
        raise _corrupt(path, error) from None
    if bad is not None:
        raise _corrupt(path, zipfile.BadZipFile(f"member {bad} fails its CRC check"))
    if "data" not in names:
        # A truncated SB3 zip can still open: the embedded torch .pth files are zips themselves.
        raise _corrupt(path, zipfile.BadZipFile("no 'data' member (truncated?)"))


def _restore_vec_normalize(model: BaseAlgorithm, directory: Path) -> None:
    path = directory / VECNORMALIZE_FILE
    if not path.is_file():
        return
    target = model.get_vec_normalize_env()
    if target is None:
        raise UsageError(
            f"{directory} has VecNormalize statistics but the env it is loaded into has no VecNormalize"
        )
    try:
        with open(path, "rb") as handle:
            saved = pickle.load(handle)
    except _READ_ERRORS as error:
        raise _corrupt(path, error) from None
    if not isinstance(saved, VecNormalize):
        raise _corrupt(path, ValueError(f"holds a {type(saved).__name__}, not VecNormalize"))
    target.obs_rms = saved.obs_rms
    target.ret_rms = saved.ret_rms


def _capture_rng(model: BaseAlgorithm) -> dict[str, Any]:
    cuda = None
    if th.cuda.is_available():
        cuda = [state.numpy() for state in th.cuda.get_rng_state_all()]
    env = model.get_env()
    return {
        "python": random.getstate(),
        "numpy": np.random.get_state(),
        "torch": th.get_rng_state().numpy(),
        "torch_cuda": cuda,
        "action_space": _space_states(model.action_space),
        "observation_space": _space_states(model.observation_space),
        "env": _env_generators(env) if env is not None else None,
    }


def _restore_rng(model: BaseAlgorithm, path: Path) -> None:
    try:
        with open(path, "rb") as handle:
            rng = pickle.load(handle)
        random.setstate(rng["python"])
        np.random.set_state(rng["numpy"])
        th.set_rng_state(th.from_numpy(np.array(rng["torch"], dtype=np.uint8)))
    except FileNotFoundError:
        raise _corrupt(path, FileNotFoundError("missing")) from None
    except (*_READ_ERRORS, KeyError, TypeError, RuntimeError) as error:
        raise _corrupt(path, error) from None
    cuda = rng.get("torch_cuda")
    if cuda is not None and th.cuda.is_available() and len(cuda) == th.cuda.device_count():
        th.cuda.set_rng_state_all([th.from_numpy(np.array(state, dtype=np.uint8)) for state in cuda])
    _restore_space_states(model.action_space, rng.get("action_space"))
    _restore_space_states(model.observation_space, rng.get("observation_space"))
    env = model.get_env()
    generators = rng.get("env")
    if env is not None and generators is not None and len(generators) == env.num_envs:
        for index, generator in enumerate(generators):
            env.set_attr("np_random", generator, indices=[index])
        # ``load`` re-seeds the env (``set_random_seed`` -> ``env.seed``), which would override the
        # restored generators at the next reset; drop those pending seeds.
        _innermost(env)._reset_seeds()


def _space_states(space: spaces.Space[Any]) -> dict[str, Any]:
    """Bit-generator states of a space and its sub-spaces (Dict/Tuple), keyed by a path."""
    states: dict[str, Any] = {"": space.np_random.bit_generator.state}
    children: dict[str, spaces.Space[Any]] = {}
    if isinstance(space, spaces.Dict):
        children = dict(space.spaces)
    elif isinstance(space, spaces.Tuple):
        children = {str(index): sub for index, sub in enumerate(space.spaces)}
    for key, sub in children.items():
        for sub_key, state in _space_states(sub).items():
            states[f"{key}/{sub_key}"] = state
    return states


def _restore_space_states(space: spaces.Space[Any], states: dict[str, Any] | None) -> None:
    if not states:
        return
    for key, state in states.items():
        target = space
        for part in key.split("/")[:-1]:
            if isinstance(target, spaces.Dict):
                target = target.spaces[part]
            elif isinstance(target, spaces.Tuple):
                target = target.spaces[int(part)]
        try:
            target.np_random.bit_generator.state = state
        except (ValueError, TypeError, KeyError):  # another bit generator kind: leave it seeded
            continue


def _env_generators(env: VecEnv) -> list[np.random.Generator] | None:
    """Each sub-env's ``np_random`` (copied when pickled), or None when an env does not expose one."""
    try:
        generators = env.get_attr("np_random")
    except Exception:  # an env without gymnasium's np_random (a native vector env, ...)
        return None
    if not all(isinstance(generator, np.random.Generator) for generator in generators):
        return None
    return list(generators)


def _innermost(env: VecEnv) -> VecEnv:
    while isinstance(env, VecEnvWrapper):
        env = env.venv
    return env


def _plain(value: Any) -> Any:
    """A JSON-friendly copy of a counter (NumPy scalars become Python numbers)."""
    return value.item() if isinstance(value, np.generic) else value


def _line(error: BaseException) -> str:
    text = str(error).strip().splitlines()
    return text[0] if text else ""


def _corrupt(path: Path, error: BaseException) -> CorruptCheckpointError:
    return CorruptCheckpointError(f"checkpoint {path} is corrupt: {type(error).__name__}: {_line(error)}")
