"""Atomic checkpoints (crashes at every stage, a SIGKILLed writer, pruning, same-step replacement) and
resumable training state (exact resume equivalence for DQN and PPO on CartPole)."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch as th
from stable_baselines3 import DQN, PPO
from stable_baselines3.common.base_class import BaseAlgorithm
from stable_baselines3.common.env_util import make_vec_env
from stable_baselines3.common.vec_env import VecEnv, VecNormalize

import core.checkpoint as checkpoint_module
import core.training_state as training_state_module
from core.checkpoint import MARKER, CheckpointManager, CorruptCheckpointError, read_marker, step_of
from core.errors import UsageError, ZooError
from core.training_state import load_training_state, read_counters, save_training_state

# --------------------------------------------------------------------------------------------------
# CheckpointManager


def writer(payload: bytes, *, sub: bool = True) -> Callable[[Path], None]:
    """A checkpoint writer that puts ``payload`` in two files, one in a subfolder."""

    def write(directory: Path) -> None:
        (directory / "model.bin").write_bytes(payload)
        if sub:
            (directory / "extra").mkdir()
            (directory / "extra" / "notes.txt").write_bytes(payload[::-1] + b"!")

    return write


def steps(manager: CheckpointManager) -> list[int]:
    return [step_of(path) for path in manager.complete()]


def test_save_publishes_a_verified_checkpoint_with_a_manifest(tmp_path: Path) -> None:
    manager = CheckpointManager(tmp_path / "ckpt")
    path = manager.save(42, writer(b"hello"))
    assert path == tmp_path / "ckpt" / "step-000000000042"
    marker = read_marker(path)
    assert marker["step"] == 42 and marker["time"] <= time.time()
    assert marker["files"]["model.bin"]["size"] == 5
    assert set(marker["files"]) == {"model.bin", "extra/notes.txt"}
    manager.verify(path)
    assert manager.latest() == path == manager.latest(hashes=True)
    assert [p.name for p in (tmp_path / "ckpt").iterdir()] == [path.name]  # no temp dir left


def test_latest_is_none_without_checkpoints(tmp_path: Path) -> None:
    assert CheckpointManager(tmp_path / "missing").latest() is None
    with pytest.raises(UsageError):
        CheckpointManager(tmp_path, keep_last=0)


def test_writer_that_raises_publishes_nothing(tmp_path: Path) -> None:
    manager = CheckpointManager(tmp_path)
    first = manager.save(10, writer(b"first"))

    def half_writer(directory: Path) -> None:
        (directory / "model.bin").write_bytes(b"partial")
        raise RuntimeError("disk full")

    with pytest.raises(RuntimeError, match="disk full"):
        manager.save(20, half_writer)
    assert manager.latest() == first
    assert sorted(p.name for p in tmp_path.iterdir()) == [first.name]


def _corrupt_case(kind: str, manager: CheckpointManager, root: Path) -> None:
    """Leave the wreck of a crashed or tampered step-30 checkpoint next to a good step-20 one."""
    if kind == "unrenamed temp dir":
        # a writer that finished (even the marker) and died before the rename
        done = manager.save(30, writer(b"x" * 100))
        os.rename(done, root / ".tmp-30-999999-abcd")
    elif kind == "renamed without marker":
        manager.save(30, writer(b"x" * 100))
        (root / "step-000000000030" / MARKER).unlink()
    elif kind == "truncated after marker":
        path = manager.save(30, writer(b"x" * 100))
        with open(path / "model.bin", "r+b") as handle:
            handle.truncate(60)
    elif kind == "missing file":
        path = manager.save(30, writer(b"x" * 100))
        (path / "extra" / "notes.txt").unlink()
    elif kind == "unreadable marker":
        path = manager.save(30, writer(b"x" * 100))
        text = (path / MARKER).read_text()
        (path / MARKER).write_text(text[: len(text) // 2])
    elif kind == "marker for another step":
        path = manager.save(30, writer(b"x" * 100))
        marker = json.loads((path / MARKER).read_text())
        marker["step"] = 31
        (path / MARKER).write_text(json.dumps(marker))
    else:
        raise AssertionError(kind)


@pytest.mark.parametrize(
    ("kind", "problem"),
    [
        ("unrenamed temp dir", None),
        ("renamed without marker", "missing marker COMPLETE.json"),
        ("truncated after marker", "size mismatch for model.bin: 60 bytes, marker says 100"),
        ("missing file", "missing file extra/notes.txt"),
        ("unreadable marker", "unreadable COMPLETE.json"),
        ("marker for another step", "COMPLETE.json says step 31 but the folder is step 30"),
    ],
)
def test_crash_leftovers_are_never_picked(tmp_path: Path, kind: str, problem: str | None) -> None:
    manager = CheckpointManager(tmp_path, keep_last=5)
    good = manager.save(20, writer(b"good"))
    _corrupt_case(kind, manager, tmp_path)
    assert manager.latest() == good
    assert manager.latest(hashes=True) == good
    assert manager.complete() == [good]
    if problem is not None:
        with pytest.raises(CorruptCheckpointError, match="corrupt") as caught:
            manager.verify(tmp_path / "step-000000000030")
        assert problem in str(caught.value)
        assert "\n" not in str(caught.value)
        assert isinstance(caught.value, ZooError)


def test_same_size_tampering_is_caught_by_the_hash_check(tmp_path: Path) -> None:
    manager = CheckpointManager(tmp_path)
    good = manager.save(20, writer(b"good"))
    path = manager.save(30, writer(b"abcdef"))
    (path / "model.bin").write_bytes(b"abcdeX")
    assert manager.latest() == path  # sizes only: fast, misses same-size corruption
    assert manager.latest(hashes=True) == good
    with pytest.raises(CorruptCheckpointError, match=r"hash mismatch for model\.bin"):
        manager.verify(path)
    manager.verify(path, hashes=False)


def test_keeps_the_newest_k(tmp_path: Path) -> None:
    manager = CheckpointManager(tmp_path, keep_last=2)
    for step in (100, 200, 300, 400):
        manager.save(step, writer(str(step).encode()))
        assert len(manager.complete()) <= 2
    assert steps(manager) == [300, 400]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["step-000000000300", "step-000000000400"]


def test_never_prunes_the_checkpoint_just_written(tmp_path: Path) -> None:
    manager = CheckpointManager(tmp_path, keep_last=1)
    manager.save(500, writer(b"new"))
    older = manager.save(100, writer(b"older"))  # e.g. a run resumed from an earlier checkpoint
    assert older.is_dir()
    assert steps(manager) == [100, 500]
    manager.save(600, writer(b"next"))
    assert steps(manager) == [600]


def test_prune_removes_broken_step_folders(tmp_path: Path) -> None:
    manager = CheckpointManager(tmp_path, keep_last=3)
    manager.save(1, writer(b"a"))
    broken = manager.save(2, writer(b"b"))
    (broken / MARKER).unlink()
    manager.save(3, writer(b"c"))
    assert not broken.exists()
    assert steps(manager) == [1, 3]


def test_same_step_is_replaced(tmp_path: Path) -> None:
    manager = CheckpointManager(tmp_path)
    manager.save(5, writer(b"old"))
    path = manager.save(5, writer(b"new!"))
    assert (path / "model.bin").read_bytes() == b"new!"
    manager.verify(path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["step-000000000005"]


class Crash(BaseException):
    """Stands for the process dying at a given line."""


def test_crash_before_the_old_copy_moves_keeps_both_readable(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    manager = CheckpointManager(tmp_path)
    manager.save(5, writer(b"old"))

    def crash(self: CheckpointManager, path: Path) -> None:
        raise Crash

    monkeypatch.setattr(CheckpointManager, "_discard", crash)
    with pytest.raises(Crash):
        manager.save(5, writer(b"new!"))
    monkeypatch.undo()
    assert {p.name for p in tmp_path.iterdir()} == {"step-000000000005", "step-000000000005.incoming"}
    latest = manager.latest()
    assert latest is not None and (latest / "model.bin").read_bytes() == b"new!"
    assert manager.complete() == [latest]
    manager.save(6, writer(b"six"))  # the next save finishes the swap
    assert {p.name for p in tmp_path.iterdir()} == {"step-000000000005", "step-000000000006"}
    assert (tmp_path / "step-000000000005" / "model.bin").read_bytes() == b"new!"


def test_crash_between_the_two_renames_keeps_the_new_copy(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    manager = CheckpointManager(tmp_path)
    manager.save(4, writer(b"four"))
    manager.save(5, writer(b"old"))
    real_rename = os.rename

    def rename(src: Any, dst: Any) -> None:
        if str(src).endswith(".incoming"):
            raise Crash
        real_rename(src, dst)

    monkeypatch.setattr(checkpoint_module.os, "rename", rename)
    with pytest.raises(Crash):
        manager.save(5, writer(b"new!"))
    monkeypatch.undo()
    assert not (tmp_path / "step-000000000005").exists()  # only the .incoming copy is left
    latest = manager.latest()
    assert latest is not None and latest.name == "step-000000000005.incoming"
    assert (latest / "model.bin").read_bytes() == b"new!"
    assert steps(manager) == [4, 5]
    manager.save(6, writer(b"six"))
    assert (tmp_path / "step-000000000005" / "model.bin").read_bytes() == b"new!"
    assert not any(p.name.startswith((".", "step-000000000005.")) for p in tmp_path.iterdir())


def test_stale_temp_dirs_are_removed_but_a_live_writers_are_kept(tmp_path: Path) -> None:
    sleeper = subprocess.Popen([sys.executable, "-c", "pass"])
    sleeper.wait()  # a pid that is certainly dead now (and not reused within this test, in practice)
    stale = [tmp_path / ".tmp-crashed", tmp_path / f".tmp-7-{sleeper.pid}-ab12", tmp_path / ".trash-step-x"]
    live = tmp_path / f".tmp-7-{os.getppid()}-cd34"  # another process that is alive
    for folder in [*stale, live]:
        folder.mkdir()
        (folder / "model.bin").write_bytes(b"junk")
    CheckpointManager(tmp_path).save(1, writer(b"one"))
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([live.name, "step-000000000001"])


KILL_CHILD = textwrap.dedent(
    """
    import os, sys, time
    from pathlib import Path
    import core.checkpoint
    from core.checkpoint import CheckpointManager

    root, start, slow = Path(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
    manager = CheckpointManager(root, keep_last=2)
    if slow == "commit":  # stretch the publish/replace/prune phase so kills land inside it
        rename, fsync_dir = os.rename, core.checkpoint._fsync_dir
        os.rename = lambda src, dst: (rename(src, dst), time.sleep(0.004))[0]
        core.checkpoint._fsync_dir = lambda path: (fsync_dir(path), time.sleep(0.002))[0]

    def writer(step):
        def write(directory):
            for name in ("a.bin", "b.bin", "c.bin"):
                with open(directory / name, "wb") as handle:
                    for chunk in range(8):
                        handle.write(f"{step}:{name}:{chunk};".encode() * 2000)
                        if slow == "write":
                            time.sleep(0.001)
        return write

    for i in range(1_000_000):
        step = start + i // 2  # every step twice, so same-step replacement is exercised too
        manager.save(step, writer(step))
    """
)


@pytest.mark.parametrize("slow", ["write", "commit"])
def test_a_writer_killed_at_a_random_moment_leaves_a_complete_checkpoint(tmp_path: Path, slow: str) -> None:
    """SIGKILL a process that saves in a loop, six times; each time a complete checkpoint remains.

    ``slow="write"`` makes the caller's writer the slow part (most kills land inside ``write``);
    ``slow="commit"`` delays every rename and folder fsync (kills land in publish, swap and prune).
    """
    rng = random.Random(1234)
    manager = CheckpointManager(tmp_path, keep_last=2)
    environment = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    start = 0
    for _ in range(6):
        child = subprocess.Popen(
            [sys.executable, "-c", KILL_CHILD, str(tmp_path), str(start), slow], env=environment
        )
        try:
            deadline = time.monotonic() + 20
            while not any(p.name.startswith("step-") for p in tmp_path.iterdir()):
                assert child.poll() is None, "the writer died on its own"
                assert time.monotonic() < deadline, "the writer never finished a checkpoint"
                time.sleep(0.01)
            time.sleep(rng.uniform(0.0, 0.4))
        finally:
            child.send_signal(signal.SIGKILL)
            child.wait()
        latest = manager.latest()
        assert latest is not None
        manager.verify(latest, hashes=True)
        step = step_of(latest)
        assert (latest / "a.bin").read_bytes().startswith(f"{step}:a.bin:0;".encode())
        for path in manager.complete(hashes=True):
            manager.verify(path)
        start = step + 1
    # The next writer cleans up after the dead one.
    manager.save(start, writer(b"after"))
    leftovers = [p.name for p in tmp_path.iterdir() if not p.name.startswith("step-")]
    assert leftovers == []
    assert len(manager.complete()) <= 2


# --------------------------------------------------------------------------------------------------
# Training state

DQN_KWARGS: dict[str, Any] = dict(
    learning_starts=100,
    buffer_size=2_000,
    train_freq=4,
    target_update_interval=50,
    batch_size=32,
    exploration_fraction=0.5,
    policy_kwargs=dict(net_arch=[32]),
)
PPO_KWARGS: dict[str, Any] = dict(n_steps=64, batch_size=32, n_epochs=2, policy_kwargs=dict(net_arch=[32]))


@pytest.fixture(autouse=True)
def deterministic_torch() -> Iterator[None]:
    previous = th.are_deterministic_algorithms_enabled()
    th.use_deterministic_algorithms(True)
    yield
    th.use_deterministic_algorithms(previous)


def cartpole(seed: int, *, normalize: bool = False) -> VecEnv:
    env: VecEnv = make_vec_env("CartPole-v1", n_envs=2, seed=seed)
    return VecNormalize(env) if normalize else env


def trained(algorithm: type[BaseAlgorithm], steps: int, *, normalize: bool = False) -> BaseAlgorithm:
    kwargs = DQN_KWARGS if algorithm is DQN else PPO_KWARGS
    model = algorithm("MlpPolicy", cartpole(0, normalize=normalize), seed=0, device="cpu", **kwargs)
    return model.learn(steps)


def assert_same_tensors(left: Any, right: Any) -> None:
    """Equal nested state dicts (tensors compared exactly)."""
    if isinstance(left, th.Tensor):
        assert isinstance(right, th.Tensor) and th.equal(left, right)
    elif isinstance(left, dict):
        assert isinstance(right, dict) and left.keys() == right.keys()
        for key in left:
            assert_same_tensors(left[key], right[key])
    elif isinstance(left, list | tuple):
        assert isinstance(right, list | tuple) and len(left) == len(right)
        for a, b in zip(left, right, strict=True):
            assert_same_tensors(a, b)
    else:
        assert left == right


def rng_snapshot(model: BaseAlgorithm) -> dict[str, Any]:
    env = model.get_env()
    assert env is not None
    return {
        "python": random.getstate(),
        "numpy": pickle_safe(np.random.get_state()),
        "torch": th.get_rng_state().tolist(),
        "action_space": model.action_space.np_random.bit_generator.state,
        "env": [generator.bit_generator.state for generator in env.get_attr("np_random")],
    }


def pickle_safe(state: tuple[Any, ...]) -> tuple[Any, ...]:
    return tuple(item.tolist() if isinstance(item, np.ndarray) else item for item in state)


def test_dqn_state_round_trip_through_a_checkpoint(tmp_path: Path) -> None:
    model = trained(DQN, 300)
    manager = CheckpointManager(tmp_path)
    path = manager.save(model.num_timesteps, lambda d: save_training_state(model, d, include_replay=True))
    saved_rng = rng_snapshot(model)
    assert sorted(p.name for p in path.iterdir()) == [
        MARKER,
        "model.zip",
        "replay_buffer.pkl",
        "rng.pkl",
        "state.json",
    ]
    random.random(), np.random.rand(), th.rand(1)  # move every generator on

    loaded = load_training_state(DQN, manager.latest() or path, cartpole(99), device="cpu")
    assert isinstance(loaded, DQN)
    assert_same_tensors(model.policy.state_dict(), loaded.policy.state_dict())
    assert_same_tensors(model.policy.optimizer.state_dict(), loaded.policy.optimizer.state_dict())
    assert loaded.policy.optimizer.state_dict()["state"], "the optimizer state (Adam moments) is empty"
    original, restored = model.replay_buffer, loaded.replay_buffer
    assert original is not None and restored is not None
    assert (restored.pos, restored.full) == (original.pos, original.full)
    assert restored.pos == model.num_timesteps // 2 > 100  # 2 envs per slot, nothing overwritten
    for name in ("observations", "next_observations", "actions", "rewards", "dones", "timeouts"):
        assert np.array_equal(getattr(original, name), getattr(restored, name)), name
    for name in ("num_timesteps", "_n_updates", "_episode_num", "exploration_rate", "_n_calls"):
        assert getattr(loaded, name) == getattr(model, name), name
    assert read_counters(path) == {
        "num_timesteps": model.num_timesteps,
        "_n_updates": model._n_updates,
        "_episode_num": model._episode_num,
        "exploration_rate": model.exploration_rate,
        "_n_calls": model.num_timesteps // 2,
    }
    assert rng_snapshot(loaded) == saved_rng


def test_without_replay_the_buffer_starts_empty(tmp_path: Path) -> None:
    model = trained(DQN, 150)
    save_training_state(model, tmp_path, include_replay=False)
    assert not (tmp_path / "replay_buffer.pkl").exists()
    loaded = load_training_state(DQN, tmp_path, cartpole(1), device="cpu")
    assert loaded.replay_buffer is not None and loaded.replay_buffer.pos == 0
    assert loaded.num_timesteps == model.num_timesteps > 0


@pytest.mark.parametrize(("algorithm", "normalize"), [(DQN, False), (PPO, True)])
def test_resume_equals_continuing(tmp_path: Path, algorithm: type[BaseAlgorithm], normalize: bool) -> None:
    """Continuing from a loaded state gives bit-identical parameters to continuing the original.

    One thing is not restorable: the sub-envs' internal state (CartPole's pole, mid-episode), so SB3
    resets the env on load. The original is given the same reset (``_last_obs = None``); with the env
    generators restored, both then see the same episodes, and the global, torch and action-space
    generators, optimizer, replay, counters and VecNormalize statistics make the rest identical.
    """
    model = trained(algorithm, 300 if algorithm is DQN else 128, normalize=normalize)
    save_training_state(model, tmp_path, include_replay=True)
    probe = np.random.default_rng(5).normal(size=(16, 4)).astype(np.float32)
    model._last_obs = None  # type: ignore[assignment]  # the reset that loading implies
    model.learn(200 if algorithm is DQN else 128, reset_num_timesteps=False)

    env = cartpole(42, normalize=normalize)  # a different seed: the checkpoint must override it
    loaded = load_training_state(algorithm, tmp_path, env, device="cpu")
    loaded.learn(200 if algorithm is DQN else 128, reset_num_timesteps=False)

    assert loaded.num_timesteps == model.num_timesteps
    assert loaded._n_updates == model._n_updates > 0
    assert_same_tensors(model.policy.state_dict(), loaded.policy.state_dict())
    assert_same_tensors(model.policy.optimizer.state_dict(), loaded.policy.optimizer.state_dict())
    assert np.array_equal(
        model.predict(probe, deterministic=True)[0], loaded.predict(probe, deterministic=True)[0]
    )
    if normalize:
        original, restored = model.get_vec_normalize_env(), loaded.get_vec_normalize_env()
        assert original is not None and restored is not None
        assert np.array_equal(original.obs_rms.mean, restored.obs_rms.mean)
        assert original.obs_rms.count == restored.obs_rms.count > 256


def test_resume_equivalence_depends_on_the_restored_rng(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Negative control for the test above: skip the RNG restore and the runs part ways."""
    model = trained(DQN, 300)
    save_training_state(model, tmp_path, include_replay=True)
    model._last_obs = None  # type: ignore[assignment]
    model.learn(200, reset_num_timesteps=False)
    monkeypatch.setattr(training_state_module, "_restore_rng", lambda model, path: None)
    loaded = load_training_state(DQN, tmp_path, cartpole(42), device="cpu")
    loaded.learn(200, reset_num_timesteps=False)
    original, resumed = model.policy.state_dict(), loaded.policy.state_dict()
    assert any(not th.equal(original[key], resumed[key]) for key in original)


def test_corrupt_or_mismatched_state_gives_one_readable_line(tmp_path: Path) -> None:
    model = trained(DQN, 120)
    save_training_state(model, tmp_path, include_replay=True)
    zip_bytes = (tmp_path / "model.zip").read_bytes()

    flipped = bytearray(zip_bytes)
    flipped[len(flipped) // 3] ^= 0xFF
    cuts = (0, 100, len(zip_bytes) // 2, len(zip_bytes) - 1)
    expected = r"^checkpoint .*model\.zip is corrupt: BadZipFile"
    for content in [zip_bytes[:cut] for cut in cuts] + [bytes(flipped)]:
        (tmp_path / "model.zip").write_bytes(content)
        with pytest.raises(CorruptCheckpointError, match=expected) as caught:
            load_training_state(DQN, tmp_path, cartpole(0), device="cpu")
        assert "\n" not in str(caught.value)
    (tmp_path / "model.zip").write_bytes(zip_bytes)

    replay = (tmp_path / "replay_buffer.pkl").read_bytes()
    (tmp_path / "replay_buffer.pkl").write_bytes(replay[:1000])
    with pytest.raises(CorruptCheckpointError, match=r"replay_buffer\.pkl is corrupt"):
        load_training_state(DQN, tmp_path, cartpole(0), device="cpu")
    (tmp_path / "replay_buffer.pkl").write_bytes(replay)

    (tmp_path / "rng.pkl").write_bytes(b"not a pickle")
    with pytest.raises(CorruptCheckpointError, match=r"rng\.pkl is corrupt"):
        load_training_state(DQN, tmp_path, cartpole(0), device="cpu")

    mountain_car = make_vec_env("MountainCar-v0", n_envs=2, seed=0)
    with pytest.raises(UsageError, match="the env does not match the checkpoint"):
        load_training_state(DQN, tmp_path, mountain_car, device="cpu")

    with pytest.raises(UsageError, match="not a training-state folder"):
        load_training_state(DQN, tmp_path / "nowhere", cartpole(0), device="cpu")


def test_vec_normalize_statistics_need_a_normalized_env(tmp_path: Path) -> None:
    model = trained(PPO, 64, normalize=True)
    save_training_state(model, tmp_path, include_replay=True)
    assert (tmp_path / "vecnormalize.pkl").is_file() and not (tmp_path / "replay_buffer.pkl").exists()
    with pytest.raises(UsageError, match="VecNormalize"):
        load_training_state(PPO, tmp_path, cartpole(0), device="cpu")
