"""Run folders: ``runs/<agent>/<env>/<timestamp>-s<seed>/``.

A run folder holds ``config.yaml`` (the fully resolved config: ``zoo train --config`` reproduces the
run), ``command.txt``, ``versions.json``, ``run.json`` (status and step), ``progress.csv``, ``tb/``
(TensorBoard), ``checkpoints/`` (atomic, keep-last-k), ``best/`` (best periodic evaluation),
``evaluations.jsonl`` (evaluations during training), ``eval_seeds.json`` (the evaluation seeds: episode
``i`` of every evaluation resets with ``seeds[i]``), ``eval.json`` and ``eval-episodes.jsonl`` (the
last ``zoo eval``: summary, one line per episode), ``eval-history.jsonl`` (every ``zoo eval``'s summary)
and ``videos/`` (``zoo eval --video``).
"""

from __future__ import annotations

import datetime as dt
import json
import os
import platform
import shutil
import subprocess
import sys
from importlib import metadata
from pathlib import Path
from typing import Any

from core.errors import UsageError
from core.evaluation import evaluation_seeds
from zoo.config import RunConfig, dump_config, load_run_config

RUNS_ROOT = Path("runs")
EVAL_SEEDS_FILE = "eval_seeds.json"
VERSIONED_PACKAGES = ("torch", "stable-baselines3", "gymnasium", "ale-py", "mujoco", "numpy", "rl-zoo-agents")


def env_slug(env_id: str) -> str:
    """``ALE/Pong-v5`` -> ``ALE-Pong-v5`` (safe as one folder name)."""
    return env_id.replace("/", "-").replace("\\", "-")


def new_run_dir(config: RunConfig, root: Path = RUNS_ROOT) -> Path:
    """A fresh folder name for a run; never an existing folder (a suffix is added on collision)."""
    stamp = dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    agent = config.agent if config.preference is None else f"pref-{config.agent}"
    base = root / agent / env_slug(config.env) / f"{stamp}-s{config.seed}"
    candidate, n = base, 1
    while candidate.exists():
        n += 1
        candidate = base.with_name(f"{base.name}-{n}")
    return candidate


def create_run_dir(run_dir: Path, config: RunConfig, command: str) -> None:
    """Create ``run_dir`` and write its identity files. Refuses a folder that exists and is not
    empty, so a new run never writes into an existing one."""
    if run_dir.exists() and (not run_dir.is_dir() or any(run_dir.iterdir())):
        raise UsageError(
            f"{run_dir}: already exists and is not empty; a new run needs a new folder (or use --resume)"
        )
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "config.yaml").write_text(dump_config(config))
    (run_dir / "command.txt").write_text(command + "\n")
    (run_dir / "versions.json").write_text(json.dumps(collect_versions(), indent=2) + "\n")
    write_json_atomic(run_dir / EVAL_SEEDS_FILE, {"seeds": evaluation_seeds()})
    write_status(run_dir, status="created", step=0)


def eval_seeds(run_dir: Path) -> list[int]:
    """The run's evaluation seeds (``eval_seeds.json``); runs made before the file existed get the
    list it would hold (the same for every run)."""
    path = run_dir / EVAL_SEEDS_FILE
    if not path.exists():
        return evaluation_seeds()
    try:
        seeds = json.loads(path.read_text())["seeds"]
        if not isinstance(seeds, list) or not all(isinstance(seed, int) for seed in seeds):
            raise TypeError("not a list of integers")
    except (ValueError, KeyError, TypeError) as error:
        raise UsageError(f"{path}: malformed evaluation seeds ({error})") from None
    return seeds


def first_missing_folder(path: Path) -> Path | None:
    """The outermost folder of ``path`` (itself included) that does not exist yet, or ``None``."""
    missing = None
    for candidate in (path, *path.parents):
        if candidate.exists():
            break
        missing = candidate
    return missing


def discard_unstarted_run(run_dir: Path, *, created: Path | None) -> None:
    """Undo :func:`create_run_dir` for a run that failed before its first checkpoint (e.g. a bad
    hyperparameter the agent's constructor refused): bad input leaves no half-made run behind.

    :param created: the outermost folder that making ``run_dir`` created, or ``None`` when ``run_dir``
        existed (empty) before: then only its contents go. ``run_dir`` goes whole, and each parent up
        to ``created`` while it is empty (another run may have been made there meanwhile). A run with
        a checkpoint is kept, and so is one whose label store holds queries (labels are never lost).
    """
    if any((run_dir / "checkpoints").glob("*")) or _holds_queries(run_dir / "labels.sqlite"):
        return
    if created is None:
        for child in run_dir.iterdir():
            if child.is_dir() and not child.is_symlink():
                shutil.rmtree(child, ignore_errors=True)
            else:
                child.unlink(missing_ok=True)
        return
    shutil.rmtree(run_dir, ignore_errors=True)
    folder = run_dir.absolute()
    while folder != created.absolute() and created.absolute() in folder.parents:
        folder = folder.parent
        try:
            folder.rmdir()
        except OSError:  # not empty: something else lives there now
            return


def _holds_queries(store_path: Path) -> bool:
    """Whether the run's label store exists and holds at least one query (unreadable: assume so)."""
    if not store_path.exists():
        return False
    from rewards.store import LabelStore

    try:
        with LabelStore(store_path) as store:
            return store.progress().total > 0
    except Exception:
        return True


def collect_versions() -> dict[str, Any]:
    versions: dict[str, Any] = {"python": sys.version.split()[0], "platform": platform.platform()}
    for package in VERSIONED_PACKAGES:
        try:
            versions[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            versions[package] = None
    versions["git_commit"] = _git_commit()
    return versions


def _git_commit() -> str | None:
    here = Path(__file__).resolve().parents[1]
    try:
        out = subprocess.run(
            ["git", "-C", str(here), "rev-parse", "HEAD"],
            capture_output=True,
            text=True,
            timeout=5,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    if out.returncode != 0:
        return None
    dirty = subprocess.run(
        ["git", "-C", str(here), "status", "--porcelain", "--untracked-files=no"],
        capture_output=True,
        text=True,
        check=False,
    )
    return out.stdout.strip() + ("-dirty" if dirty.stdout.strip() else "")


def write_status(run_dir: Path, **fields: Any) -> None:
    """Update ``run.json`` atomically (write a temp file, then rename)."""
    path = run_dir / "run.json"
    current = json.loads(path.read_text()) if path.exists() else {}
    current.update(fields)
    current["updated"] = dt.datetime.now().isoformat(timespec="seconds")
    temporary = path.with_suffix(".json.tmp")
    temporary.write_text(json.dumps(current, indent=2) + "\n")
    os.replace(temporary, path)


def read_status(run_dir: Path) -> dict[str, Any]:
    path = run_dir / "run.json"
    return json.loads(path.read_text()) if path.exists() else {}


def open_run(run_dir: Path) -> RunConfig:
    """The config of an existing run folder; anything that is not a run is a :class:`UsageError`."""
    if not run_dir.exists():
        raise UsageError(f"{run_dir}: no such run folder")
    if not run_dir.is_dir() or not (run_dir / "config.yaml").is_file():
        raise UsageError(f"{run_dir}: not a run folder (no config.yaml); run folders are made by `zoo train`")
    return load_run_config(run_dir / "config.yaml")


def write_json_atomic(path: Path, data: Any) -> None:
    temporary = path.with_name(path.name + ".tmp")
    temporary.write_text(json.dumps(data, indent=2) + "\n")
    os.replace(temporary, path)
