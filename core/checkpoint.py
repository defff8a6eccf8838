"""Atomic, verifiable checkpoints in a folder, keeping the newest ``k``.

Protocol (one writer per folder; any number of readers):

1. **Temp dir.** A checkpoint is written into ``.tmp-<step>-<pid>-<token>/`` inside the checkpoint
   folder, so it is on the same file system as its final place. Readers never look at ``.tmp-*``.
2. **Completion marker.** When the caller's ``write(tmpdir)`` returns, the manager lists every file
   with its size and SHA-256 in ``COMPLETE.json`` (plus the step and the time), fsyncs every file,
   the marker and every directory. A checkpoint without a readable marker is not a checkpoint.
3. **Rename.** The temp dir is renamed to ``step-<step:012d>/`` (``os.rename`` is atomic on POSIX
   and Windows), and the parent folder is fsynced so the rename survives a power cut.

A reader (:meth:`CheckpointManager.latest`) takes the newest ``step-*`` whose marker exists and whose
files match the manifest (sizes by default; sizes and hashes with ``hashes=True``), so a half-written,
truncated or tampered checkpoint is skipped, never picked.

Saving a step that already exists (a resumed run saving at the step it resumed from) never leaves a
moment without that step's checkpoint: the new copy is first renamed to ``step-<step>.incoming`` (a
complete checkpoint readers accept, preferred over ``step-<step>``), then the old copy is renamed
away and the new one takes its name. A crash in between leaves ``.incoming``, which the next save
finishes swapping in.

After a save, complete checkpoints beyond the newest ``keep_last`` are deleted (never the one just
written), together with temp dirs of dead writers and step folders that fail verification. Deletion
first renames a folder to ``.trash-*`` so a half-deleted checkpoint is never seen under a step name.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import secrets
import shutil
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from core.errors import UsageError, ZooError

MARKER = "COMPLETE.json"
FORMAT_VERSION = 1
_STEP_DIR = re.compile(r"^step-(\d{12})(\.incoming)?$")
_TMP_DIR = re.compile(r"^\.tmp-\d+-(\d+)-[0-9a-f]+$")
_CHUNK = 1 << 20


class CorruptCheckpointError(ZooError):
    """A checkpoint folder is incomplete or does not match its completion marker."""


class CheckpointManager:
    """Writes checkpoints atomically into ``directory`` and finds the newest complete one.

    See the module docstring for the protocol. Only one process may write into a folder at a time.

    :param directory: the checkpoint folder (created on the first save)
    :param keep_last: how many complete checkpoints to keep (at least 1)
    """

    def __init__(self, directory: Path, keep_last: int = 3) -> None:
        if keep_last < 1:
            raise UsageError(f"keep_last must be at least 1, got {keep_last}")
        self.directory = Path(directory)
        self.keep_last = keep_last

    # ----------------------------------------------------------------------------------------------
    # Writing

    def save(self, step: int, write: Callable[[Path], None]) -> Path:
        """Write the checkpoint for ``step`` and return its final folder ``step-<step:012d>``.

        :param step: the training step (env steps) the checkpoint belongs to; not negative
        :param write: fills the (empty) folder it is given; if it raises, nothing is published,
            the partial folder is deleted and the exception propagates
        :return: the checkpoint's final path
        """
        if step < 0:
            raise UsageError(f"checkpoint step must not be negative, got {step}")
        self.directory.mkdir(parents=True, exist_ok=True)
        self._finish_interrupted_swaps()
        tmp = self.directory / f".tmp-{step}-{os.getpid()}-{secrets.token_hex(4)}"
        tmp.mkdir()
        try:
            write(tmp)
            _write_marker(tmp, step)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        final = self.directory / _step_name(step)
        if final.exists():
            self._replace(tmp, final)
        else:
            os.rename(tmp, final)
            _fsync_dir(self.directory)
        self.prune(keep=final)
        return final

    def _replace(self, new: Path, final: Path) -> None:
        """Swap ``new`` in for the existing ``final`` without a moment where neither is readable."""
        incoming = final.with_name(final.name + ".incoming")
        if incoming.exists():
            self._discard(incoming)
        os.rename(new, incoming)
        _fsync_dir(self.directory)
        self._discard(final)
        os.rename(incoming, final)
        _fsync_dir(self.directory)

    def _finish_interrupted_swaps(self) -> None:
        """Complete replacements a crashed writer left half done (``step-N.incoming`` still there)."""
        for entry in self._entries():
            match = _STEP_DIR.match(entry.name)
            if match is None or match.group(2) is None:
                continue
            final = entry.with_name(entry.name.removesuffix(".incoming"))
            if _problem(entry, hashes=False) is not None:
                self._discard(entry)
            else:
                if final.exists():
                    self._discard(final)
                os.rename(entry, final)
                _fsync_dir(self.directory)

    def prune(self, keep: Path | None = None) -> list[Path]:
        """Delete all but the newest ``keep_last`` complete checkpoints, dead writers' temp dirs and
        step folders that fail verification; never ``keep``. Returns what was deleted."""
        kept = set(self.complete()[-self.keep_last :])
        if keep is not None:
            kept.add(keep)
        removed: list[Path] = []
        for entry in self._entries():
            if entry in kept:
                continue
            if _is_stale_tmp(entry.name) or entry.name.startswith(".trash-") or _STEP_DIR.match(entry.name):
                self._discard(entry)
                removed.append(entry)
        return removed

    def _discard(self, path: Path) -> None:
        """Rename ``path`` out of the step namespace, then delete it."""
        if path.name.startswith(".trash-"):
            trash = path
        else:
            trash = self.directory / f".trash-{path.name}-{secrets.token_hex(4)}"
            os.rename(path, trash)
            _fsync_dir(self.directory)
        shutil.rmtree(trash, ignore_errors=True)

    # ----------------------------------------------------------------------------------------------
    # Reading

    def complete(self, *, hashes: bool = False) -> list[Path]:
        """Complete checkpoints sorted by step (one per step; ``.incoming`` wins over its old copy).

        :param hashes: also check every file's SHA-256 (reads everything; default checks sizes)
        """
        candidates: dict[int, list[Path]] = {}
        for entry in self._entries():
            match = _STEP_DIR.match(entry.name)
            if match is not None and entry.is_dir():
                candidates.setdefault(int(match.group(1)), []).append(entry)
        found: list[Path] = []
        for step in sorted(candidates):
            # ".incoming" sorts after the bare name; it is the newer copy, so try it first.
            for path in sorted(candidates[step], key=lambda p: p.name, reverse=True):
                if _problem(path, hashes=hashes) is None:
                    found.append(path)
                    break
        return found

    def latest(self, *, hashes: bool = False) -> Path | None:
        """The newest complete checkpoint, or None when there is none.

        :param hashes: also check every file's SHA-256 (reads everything; default checks sizes)
        """
        complete = self.complete(hashes=hashes)
        return complete[-1] if complete else None

    def verify(self, path: Path, *, hashes: bool = True) -> None:
        """Raise :class:`CorruptCheckpointError` saying what is wrong with the checkpoint at ``path``.

        :param path: a checkpoint folder
        :param hashes: check SHA-256 as well as sizes
        """
        problem = _problem(Path(path), hashes=hashes)
        if problem is not None:
            raise CorruptCheckpointError(f"checkpoint {path} is corrupt: {problem}")

    def _entries(self) -> list[Path]:
        if not self.directory.is_dir():
            return []
        return sorted(self.directory.iterdir())


def step_of(path: Path) -> int:
    """The step a checkpoint folder belongs to (from its name)."""
    match = _STEP_DIR.match(Path(path).name)
    if match is None:
        raise UsageError(f"{path} is not a checkpoint folder (expected a name like step-000000001000)")
    return int(match.group(1))


def read_marker(path: Path) -> dict[str, Any]:
    """The parsed ``COMPLETE.json`` of a checkpoint; raises :class:`CorruptCheckpointError`."""
    marker, problem = _load_marker(Path(path))
    if marker is None:
        raise CorruptCheckpointError(f"checkpoint {path} is corrupt: {problem}")
    return marker


def _load_marker(path: Path) -> tuple[dict[str, Any] | None, str]:
    try:
        data = json.loads((path / MARKER).read_text(encoding="utf-8"))
    except FileNotFoundError:
        return None, f"missing marker {MARKER}"
    except (OSError, ValueError) as error:
        return None, f"unreadable {MARKER} ({error})"
    if not isinstance(data, dict) or not isinstance(data.get("files"), dict):
        return None, f"{MARKER} has no file manifest"
    return data, ""


def _step_name(step: int) -> str:
    return f"step-{step:012d}"


def _problem(path: Path, *, hashes: bool) -> str | None:
    """What is wrong with the checkpoint at ``path`` (one line), or None when it verifies."""
    marker, problem = _load_marker(path)
    if marker is None:
        return problem
    match = _STEP_DIR.match(path.name)
    if match is not None and marker.get("step") != int(match.group(1)):
        return f"{MARKER} says step {marker.get('step')} but the folder is step {int(match.group(1))}"
    for relative, expected in marker["files"].items():
        file = path / relative
        try:
            size = file.stat().st_size
        except FileNotFoundError:
            return f"missing file {relative}"
        if size != expected.get("size"):
            return f"size mismatch for {relative}: {size} bytes, marker says {expected.get('size')}"
        if hashes and _sha256(file) != expected.get("sha256"):
            return f"hash mismatch for {relative}"
    return None


def _write_marker(folder: Path, step: int) -> None:
    """Fsync every file and folder under ``folder``, then write and fsync the completion marker."""
    files: dict[str, dict[str, Any]] = {}
    for file in sorted(p for p in folder.rglob("*") if p.is_file() and not p.is_symlink()):
        relative = file.relative_to(folder).as_posix()
        if relative == MARKER:
            continue
        digest, size = _hash_and_fsync(file)
        files[relative] = {"size": size, "sha256": digest}
    for sub in sorted(p for p in folder.rglob("*") if p.is_dir()):
        _fsync_dir(sub)
    now = time.time()
    marker = {
        "format": FORMAT_VERSION,
        "step": step,
        "time": now,
        "time_iso": time.strftime("%Y-%m-%dT%H:%M:%S%z", time.localtime(now)),
        "files": files,
    }
    with open(folder / MARKER, "w", encoding="utf-8") as handle:
        json.dump(marker, handle, indent=1, sort_keys=True)
        handle.flush()
        os.fsync(handle.fileno())
    _fsync_dir(folder)


def _hash_and_fsync(file: Path) -> tuple[str, int]:
    digest = hashlib.sha256()
    size = 0
    with open(file, "rb") as handle:
        while chunk := handle.read(_CHUNK):
            digest.update(chunk)
            size += len(chunk)
        os.fsync(handle.fileno())
    return digest.hexdigest(), size


def _sha256(file: Path) -> str:
    digest = hashlib.sha256()
    with open(file, "rb") as handle:
        while chunk := handle.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def _fsync_dir(path: Path) -> None:
    """Make a folder's entries (creations, renames) durable. A no-op where folders cannot be opened."""
    if os.name == "nt":
        return
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _is_stale_tmp(name: str) -> bool:
    """A ``.tmp-*`` folder whose writer is gone: any but those named with another live process's id.

    Our own process has no temp dir in flight when it prunes (one writer per folder), so a name with
    our pid comes from an earlier process that had the same pid (e.g. in a container).
    """
    if not name.startswith(".tmp-"):
        return False
    match = _TMP_DIR.match(name)
    if match is None:
        return True
    pid = int(match.group(1))
    return pid == os.getpid() or not _pid_alive(pid)


def _pid_alive(pid: int) -> bool:
    """Whether process ``pid`` exists (on Windows, where there is no cheap probe, assume not)."""
    if os.name == "nt":
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # EPERM: it exists but belongs to someone else
        return True
    return True
