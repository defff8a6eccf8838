"""Offline datasets on disk in the Minari format (Farama's standard for offline RL).

A dataset lives in ``ROOT/<namespace>/<name>-v<N>/data/`` (``metadata.json`` + ``main_data.hdf5``)
exactly as ``minari.DataCollector`` or ``minari.create_dataset_from_buffers`` write it, so
``minari.load_dataset`` reads ours and :func:`load_dataset` reads theirs. ``ROOT`` is Minari's
(``$MINARI_DATASETS_PATH``, else ``~/.minari/datasets``) unless a ``root`` is given.

Writing goes through Minari's own storage API (``MinariStorage.new`` / ``update_episodes`` /
``update_metadata``) into a hidden temporary folder under ``ROOT`` that is renamed into place at the
end, so a failed write leaves nothing behind and an existing dataset is never overwritten.
The zoo's dataset card (source, mixture, noise, seed, versions, ...) is stored as a JSON string
under the ``zoo_card`` key of Minari's ``metadata.json``; per-episode ``source`` and
``collection_cut`` (the episode was cut by the step budget, not by the env) are Minari episode
metadata.

Reading turns episodes (``T + 1`` observations, ``T`` actions, rewards, terminations, truncations)
into a flat :class:`core.datasets.TransitionDataset` with ``next_observations``; terminations and
truncations stay apart.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import tempfile
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
from gymnasium import spaces

from core.datasets import TransitionDataset
from core.errors import UsageError, did_you_mean

CARD_KEY = "zoo_card"
METADATA_FILE = "metadata.json"


@dataclass
class Episode:
    """One episode as Minari stores it.

    :param observations: ``[T + 1, *obs_shape]``: the reset observation, then one per step (the last
        is the final observation of the episode, before any reset)
    :param actions: ``[T, *action_shape]`` (``[T]`` integers for Discrete actions)
    :param rewards: ``[T]``
    :param terminations: ``[T]`` bool
    :param truncations: ``[T]`` bool
    :param metadata: Minari episode metadata (e.g. ``{"source": "policy", "collection_cut": False}``)
    """

    observations: np.ndarray
    actions: np.ndarray
    rewards: np.ndarray
    terminations: np.ndarray
    truncations: np.ndarray
    metadata: dict[str, Any]


def default_root() -> Path:
    """Minari's datasets folder: ``$MINARI_DATASETS_PATH``, else ``~/.minari/datasets``."""
    configured = os.environ.get("MINARI_DATASETS_PATH")
    return Path(configured) if configured else Path.home() / ".minari" / "datasets"


def check_dataset_id(dataset_id: str) -> None:
    """Raise :class:`UsageError` unless ``dataset_id`` is ``namespace/name-vN`` (Minari's convention)."""
    from minari.dataset.minari_dataset import parse_dataset_id

    try:
        namespace, _, _ = parse_dataset_id(dataset_id)
    except (ValueError, TypeError):
        raise UsageError(
            f"dataset name {dataset_id!r}: expected NAMESPACE/NAME-vN, e.g. zoo/hopper-mixed-v0"
        ) from None
    if namespace is None:
        raise UsageError(f"dataset name {dataset_id!r}: needs a namespace, e.g. zoo/{dataset_id}")


def write_dataset(
    dataset_id: str,
    episodes: Iterable[Episode],
    *,
    observation_space: gym.Space,
    action_space: gym.Space,
    env_spec: gym.envs.registration.EnvSpec | None,
    card: dict[str, Any],
    root: Path | None = None,
    description: str = "",
) -> Path:
    """Write a Minari dataset ``ROOT/dataset_id`` and return its folder.

    Refuses (:class:`UsageError`) an existing dataset; nothing is left on disk if writing fails.
    """
    from minari import __version__ as minari_version
    from minari.dataset.minari_storage import MinariStorage

    check_dataset_id(dataset_id)
    root = default_root() if root is None else root
    target = root / dataset_id
    if target.exists():
        raise UsageError(f"dataset {dataset_id} already exists in {root}; choose another name or version")
    root.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".zoo-writing-", dir=root))
    try:
        storage = MinariStorage.new(
            staging / "data",
            observation_space=observation_space,
            action_space=action_space,
            env_spec=env_spec,
            data_format="hdf5",
            jpeg_encoding=False,  # lossless: offline agents learn from exactly what was observed
        )
        storage.update_metadata(
            {
                "dataset_id": dataset_id,
                "minari_version": minari_version,
                "algorithm_name": str(card.get("algorithm", "zoo collect")),
                "description": description,
                CARD_KEY: json.dumps(card),
            }
        )
        episode_metadata: list[dict[str, Any]] = []

        def buffers() -> Iterator[Any]:
            for episode in episodes:
                episode_metadata.append(episode.metadata)
                yield _episode_buffer(episode)

        storage.update_episodes(buffers())  # one pass, the HDF5 file opened once
        storage.update_episode_metadata(episode_metadata)
        target.parent.mkdir(parents=True, exist_ok=True)
        os.rename(staging, target)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return target


def _episode_buffer(episode: Episode) -> Any:
    from minari.data_collector.episode_buffer import EpisodeBuffer

    return EpisodeBuffer(
        observations=episode.observations,
        actions=episode.actions,
        rewards=episode.rewards,
        terminations=episode.terminations,
        truncations=episode.truncations,
    )


# --------------------------------------------------------------------------------------------------
# Reading


def resolve(name_or_path: str | Path, root: Path | None = None) -> tuple[str, Path]:
    """``(display name, data folder)`` of a dataset given by Minari id (in ``root``) or by path.

    A path may name the dataset folder (holding ``data/``) or its ``data/`` folder itself.
    """
    candidate = Path(name_or_path)
    for folder in (candidate, candidate / "data"):
        if (folder / METADATA_FILE).is_file():
            return str(name_or_path), folder
    root = default_root() if root is None else root
    data = root / str(name_or_path) / "data"
    if (data / METADATA_FILE).is_file():
        return str(name_or_path), data
    if candidate.exists():
        raise UsageError(f"{name_or_path}: not a Minari dataset (no {METADATA_FILE} in it or in its data/)")
    if candidate.is_absolute() or str(name_or_path).startswith("."):
        raise UsageError(f"{name_or_path}: no such dataset folder")
    known = list_datasets(root)
    raise UsageError(
        f"no dataset {str(name_or_path)!r} in {root}{did_you_mean(str(name_or_path), known)}; "
        "`zoo dataset list` shows them"
    )


def read_metadata(data_path: Path) -> dict[str, Any]:
    """Minari's raw ``metadata.json`` of a dataset's data folder."""
    try:
        metadata = json.loads((data_path / METADATA_FILE).read_text())
    except (OSError, json.JSONDecodeError) as error:
        raise UsageError(f"{data_path / METADATA_FILE}: unreadable ({error})") from None
    if not isinstance(metadata, dict):
        raise UsageError(f"{data_path / METADATA_FILE}: not a JSON object")
    return metadata


def read_card(metadata: dict[str, Any]) -> dict[str, Any]:
    """Our dataset card from Minari metadata (empty for datasets made elsewhere)."""
    raw = metadata.get(CARD_KEY)
    if not isinstance(raw, str):
        return {}
    try:
        card = json.loads(raw)
    except json.JSONDecodeError:
        return {}
    return card if isinstance(card, dict) else {}


def _env_id(metadata: dict[str, Any], card: dict[str, Any]) -> str | None:
    if card.get("env_id"):
        return str(card["env_id"])
    spec = metadata.get("env_spec")
    if isinstance(spec, str):
        try:
            return str(json.loads(spec).get("id")) or None
        except (json.JSONDecodeError, AttributeError):
            return None
    return None


def _storage(data_path: Path, where: str) -> Any:
    from minari.dataset.minari_storage import MinariStorage

    try:
        return MinariStorage.read(data_path)
    except ImportError as error:  # e.g. an arrow dataset without pyarrow
        raise UsageError(f"{where}: cannot read this dataset's format ({error})") from None
    except (ValueError, KeyError, AssertionError, OSError) as error:
        raise UsageError(
            f"{where}: not a readable Minari dataset ({type(error).__name__}: {error})"
        ) from None


def _check_spaces(storage: Any, where: str) -> None:
    observation_space, action_space = storage.observation_space, storage.action_space
    if not isinstance(observation_space, spaces.Box):
        raise UsageError(
            f"{where}: observations are a {type(observation_space).__name__} space; "
            "only Box observations are supported (flatten Dict/Tuple observations first)"
        )
    if not isinstance(action_space, spaces.Box | spaces.Discrete):
        raise UsageError(
            f"{where}: actions are a {type(action_space).__name__} space; "
            "Box or Discrete actions are supported"
        )


def iter_episodes(storage: Any, where: str) -> Iterable[Episode]:
    """The episodes of a Minari storage, checked for missing fields and consistent lengths."""
    total = int(storage.total_episodes)
    if total == 0:
        raise UsageError(f"{where}: the dataset is empty (no episodes)")
    observation_shape = storage.observation_space.shape
    fast = _hdf5_fields(storage)
    raw_episodes = iter(fast if fast is not None else storage.get_episodes(range(total)))
    index = 0
    while True:
        try:
            raw = next(raw_episodes)
        except StopIteration:
            return
        except KeyError as error:  # a field missing in the file (h5py names it in the message)
            found = re.search(r"'(\w+)'", str(error))
            field = found.group(1) if found else str(error)
            raise UsageError(f"{where}: episode {index} has no {field}") from None
        for key in FIELDS:
            if raw.get(key) is None:
                raise UsageError(f"{where}: episode {index} has no {key}")
        episode = Episode(
            observations=np.asarray(raw["observations"]),
            actions=np.asarray(raw["actions"]),
            rewards=np.asarray(raw["rewards"], dtype=np.float32),
            terminations=np.asarray(raw["terminations"], dtype=bool),
            truncations=np.asarray(raw["truncations"], dtype=bool),
            metadata={},
        )
        _check_lengths(episode, index, observation_shape, where)
        yield episode
        index += 1


FIELDS = ("observations", "actions", "rewards", "terminations", "truncations")


def _hdf5_fields(storage: Any) -> Iterator[dict[str, np.ndarray]] | None:
    """The five step fields of every episode of an HDF5 storage, read through h5py's low-level API.

    Minari's HDF5 layout keeps one group per episode and one chunked dataset per field; opening
    them through h5py's high-level objects costs ~0.3 ms per dataset, which dominates loading
    datasets of many short episodes. ``None`` where this path does not apply (another format, or
    JPEG-encoded image observations), and Minari's own ``get_episodes`` is used instead.
    """
    from minari.dataset.minari_storage import is_image_space

    if getattr(storage, "FORMAT", None) != "hdf5":
        return None
    if storage.jpeg_encoding and (
        is_image_space(storage.observation_space) or is_image_space(storage.action_space)
    ):
        return None

    def read() -> Iterator[dict[str, np.ndarray]]:
        import h5py

        file_id = h5py.h5f.open(str(storage.data_path / "main_data.hdf5").encode(), h5py.h5f.ACC_RDONLY)
        try:
            for index in range(int(storage.total_episodes)):
                try:
                    group = h5py.h5g.open(file_id, f"episode_{index}".encode())
                except KeyError:
                    raise KeyError(f"'episode_{index}'") from None
                fields: dict[str, np.ndarray] = {}
                for name in FIELDS:
                    try:
                        dataset = h5py.h5d.open(group, name.encode())
                    except KeyError:
                        raise KeyError(f"'{name}'") from None
                    array = np.empty(dataset.shape, dtype=dataset.dtype)
                    if array.size:
                        dataset.read(h5py.h5s.ALL, h5py.h5s.ALL, array)
                    fields[name] = array
                yield fields
        finally:
            file_id.close()

    return read()


def _check_lengths(episode: Episode, index: int, observation_shape: tuple[int, ...], where: str) -> None:
    steps = len(episode.rewards)
    if episode.observations.shape[1:] != observation_shape:
        raise UsageError(
            f"{where}: episode {index} observations have shape {episode.observations.shape[1:]}, "
            f"the observation space says {observation_shape}"
        )
    if steps == 0:
        raise UsageError(f"{where}: episode {index} has no steps")
    lengths = {
        "observations": (len(episode.observations), steps + 1),
        "actions": (len(episode.actions), steps),
        "terminations": (len(episode.terminations), steps),
        "truncations": (len(episode.truncations), steps),
    }
    for key, (length, expected) in lengths.items():
        if length != expected:
            raise UsageError(
                f"{where}: episode {index} has {length} {key} for {steps} rewards, expected {expected}"
            )


def load_dataset(name_or_path: str | Path, root: Path | None = None) -> TransitionDataset:
    """Load a Minari dataset (by id in ``root``, or by path) as flat transitions.

    Observations must be a Box space; actions a Box or a Discrete space (stored as ``[N]``
    integers). ``metadata`` holds ``name``, ``path``, ``env_id`` (from our card, else Minari's
    env spec), ``card`` (ours, or ``{}``), ``minari`` (Minari's own metadata, spaces as strings),
    ``episode_starts`` and ``episode_metadata``. Missing fields, an empty dataset or a NaN/inf value
    raise :class:`UsageError` with one line.
    """
    name, data_path = resolve(name_or_path, root)
    metadata = read_metadata(data_path)
    storage = _storage(data_path, name)
    _check_spaces(storage, name)
    episodes = list(iter_episodes(storage, name))
    dataset = episodes_to_transitions(episodes, storage.action_space)
    card = read_card(metadata)
    episode_metadata = episode_metadata_from_card(card, len(episodes))
    dataset.metadata.update(
        {
            "name": metadata.get("dataset_id", name),
            "path": str(data_path.parent),
            "env_id": _env_id(metadata, card),
            "card": card,
            "minari": {k: v for k, v in metadata.items() if k != CARD_KEY},
            "episode_metadata": episode_metadata,
        }
    )
    dataset.validate(name)
    return dataset


def episode_sources(episodes: Sequence[Episode]) -> dict[str, Any]:
    """Card fields that record each episode's source compactly: ``episode_sources`` as runs
    ``[source, first, end)`` of episode indices, ``collection_cut_episodes`` as indices.

    (Minari's per-episode metadata holds the same, but reading it costs ~0.5 ms per episode.)
    """
    runs: list[list[Any]] = []
    for index, episode in enumerate(episodes):
        source = episode.metadata.get("source")
        if runs and runs[-1][0] == source:
            runs[-1][2] = index + 1
        else:
            runs.append([source, index, index + 1])
    cut = [i for i, e in enumerate(episodes) if e.metadata.get("collection_cut")]
    return {"episode_sources": runs, "collection_cut_episodes": cut}


def episode_metadata_from_card(card: dict[str, Any], episodes: int) -> list[dict[str, Any]]:
    """Per-episode ``{"source", "collection_cut"}`` from :func:`episode_sources`' card fields
    (``{}`` for each episode of a dataset without them)."""
    metadata: list[dict[str, Any]] = [{} for _ in range(episodes)]
    for source, first, end in card.get("episode_sources") or []:
        for index in range(max(0, int(first)), min(episodes, int(end))):
            metadata[index] = {"source": source, "collection_cut": False}
    for index in card.get("collection_cut_episodes") or []:
        if 0 <= int(index) < episodes:
            metadata[int(index)]["collection_cut"] = True
    return metadata


def episodes_to_transitions(episodes: Sequence[Episode], action_space: gym.Space) -> TransitionDataset:
    """Concatenate episodes into ``(s, a, r, s', terminated, truncated)`` rows in episode order."""
    if not episodes:
        return TransitionDataset(
            np.zeros((0,)), np.zeros((0,)), np.zeros((0,), np.float32), np.zeros((0,)), np.zeros(0, bool),
            np.zeros(0, bool),
        )  # fmt: skip
    lengths = np.array([len(e.rewards) for e in episodes])
    actions = np.concatenate([e.actions for e in episodes])
    if isinstance(action_space, spaces.Discrete):
        actions = actions.reshape(len(actions)).astype(np.int64)
    starts = np.r_[0, np.cumsum(lengths)[:-1]]
    return TransitionDataset(
        observations=np.concatenate([e.observations[:-1] for e in episodes]),
        actions=actions,
        rewards=np.concatenate([e.rewards for e in episodes]).astype(np.float32),
        next_observations=np.concatenate([e.observations[1:] for e in episodes]),
        terminated=np.concatenate([e.terminations for e in episodes]),
        truncated=np.concatenate([e.truncations for e in episodes]),
        metadata={"episode_starts": starts},
    )


# --------------------------------------------------------------------------------------------------
# Listing and summaries


def list_datasets(root: Path | None = None) -> list[str]:
    """Ids of the Minari datasets under ``root`` (folders holding ``data/metadata.json``), sorted."""
    root = default_root() if root is None else root
    if not root.is_dir():
        return []
    found = []
    for metadata in root.rglob(f"data/{METADATA_FILE}"):
        relative = metadata.parent.parent.relative_to(root)
        if any(part.startswith(".") for part in relative.parts):
            continue  # a write in progress, or hidden
        found.append(relative.as_posix())
    return sorted(found)


@dataclass
class DatasetSummary:
    """What ``zoo dataset show`` prints: sizes and the return statistics of complete episodes."""

    name: str
    path: str
    env_id: str | None
    episodes: int
    steps: int
    terminated: int
    truncated: int
    returns: np.ndarray  # of episodes that ended in the env (not cut by the collection's step budget)
    returns_by_source: dict[str, np.ndarray]
    observation_shape: tuple[int, ...]
    action_space: str
    card: dict[str, Any]

    def return_stats(self, returns: np.ndarray | None = None) -> dict[str, float]:
        values = self.returns if returns is None else returns
        if values.size == 0:
            return {"mean": float("nan"), "std": float("nan"), "min": float("nan"), "max": float("nan")}
        return {
            "mean": float(values.mean()),
            "std": float(values.std()),
            "min": float(values.min()),
            "max": float(values.max()),
        }


def summarize(name_or_path: str | Path, root: Path | None = None) -> DatasetSummary:
    """Episodes, steps and return statistics of a dataset (loads it, so bad data is reported)."""
    dataset = load_dataset(name_or_path, root)
    starts = np.asarray(dataset.metadata["episode_starts"])
    sums = np.add.reduceat(dataset.rewards.astype(np.float64), starts)
    episode_metadata = dataset.metadata["episode_metadata"]
    complete = np.array([not bool(m.get("collection_cut", False)) for m in episode_metadata])
    sources = [str(m.get("source", "")) for m in episode_metadata]
    by_source: dict[str, np.ndarray] = {}
    for source in sorted({s for s in sources if s}):
        mask = np.array([s == source for s in sources]) & complete
        by_source[source] = sums[mask]
    minari_metadata = dataset.metadata["minari"]
    action_space = minari_metadata.get("action_space", "")
    return DatasetSummary(
        name=str(dataset.metadata["name"]),
        path=str(dataset.metadata["path"]),
        env_id=dataset.metadata["env_id"],
        episodes=len(starts),
        steps=len(dataset),
        terminated=int(dataset.terminated.sum()),
        truncated=int(dataset.truncated.sum()),
        returns=sums[complete],
        returns_by_source=by_source,
        observation_shape=tuple(dataset.observations.shape[1:]),
        action_space=_space_text(action_space),
        card=dataset.metadata["card"],
    )


def _space_text(serialized: Any) -> str:
    if not isinstance(serialized, str):
        return str(serialized)
    try:
        data = json.loads(serialized)
    except json.JSONDecodeError:
        return serialized
    kind = data.get("type", "?")
    if kind == "Discrete":
        return f"Discrete({data.get('n')})"
    return f"{kind}{tuple(data.get('shape', ()))}"
