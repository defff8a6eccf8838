"""The `zoo` CLI in-process: listing, config commands, bad input (exit 2, nothing written), and a
short train -> eval -> resume smoke run. Signal handling runs `zoo` in a subprocess."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from zoo.cli import main

QUICK = ["--set", "learning_starts=100", "--set", "train_freq=64", "--set", "gradient_steps=8", "--quiet"]


def run_cli(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    code = main(list(args))
    out, err = capsys.readouterr()
    return code, out, err


def snapshot(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def test_list(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run_cli(capsys, "list")
    assert code == 0
    for word in ("scdqn", "classic", "atari", "mujoco", "CartPole-v1", "ALE/Pong-v5", "Hopper-v5"):
        assert word in out


def test_config_show_and_validate(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    code, out, _ = run_cli(capsys, "config", "show", "scdqn", "--env", "CartPole-v1", "--set", "beta=1")
    assert code == 0 and "beta: 1" in out and "agent: scdqn" in out
    code, out, _ = run_cli(capsys, "config", "validate", "zoo.yaml")
    assert code == 0 and "ok" in out
    bad = tmp_path / "bad.yaml"
    bad.write_text("agents:\n  scdqn:\n    atari:\n      bta: 3\n")
    code, _, err = run_cli(capsys, "config", "validate", str(bad))
    assert code == 2
    assert "agents.scdqn.atari.bta: unknown key (did you mean beta?)" in err
    assert len(err.strip().splitlines()) == 1


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["train", "scdqm", "--env", "CartPole-v1"], "unknown agent 'scdqm' (did you mean scdqn?)"),
        (
            ["train", "scdqn", "--env", "CartPol-v1"],
            "unknown env id 'CartPol-v1' (did you mean CartPole-v1?)",
        ),
        (["train", "scdqn", "--env", "CartPole-v1", "--steps", "-5"], "--steps -5: must be a positive"),
        (["train", "scdqn", "--env", "CartPole-v1", "--device", "cuda"], "no CUDA device"),
        (["train", "scdqn", "--env", "CartPole-v1", "--device", "tpu"], "expected auto, cpu or cuda"),
        (["train", "scdqn", "--env", "Pendulum-v1", "--steps", "10"], "scdqn needs a Discrete action space"),
        (["train", "scdqn", "--env", "CartPole-v1", "--set", "bta=2"], "did you mean beta?"),
        # refused by the agent's constructor, after the run folder was made: the folder goes again
        (["train", "scdqn", "--env", "CartPole-v1", "--set", "beta=-1"], "beta must be a finite number >= 0"),
        (
            ["train", "scdqn", "--env", "CartPole-v1", "--config", "missing.yaml"],
            "missing.yaml: no such file",
        ),
        (["train", "scdqn"], "needs an AGENT and --env"),
    ],
)
def test_train_bad_input_exits_2(
    capsys: pytest.CaptureFixture[str],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    args: list[str],
    message: str,
) -> None:
    monkeypatch.chdir(tmp_path)
    code, _, err = run_cli(capsys, *args)
    assert code == 2, err
    assert message in err
    assert "Traceback" not in err
    assert not (tmp_path / "runs").exists()


def test_a_refused_run_leaves_a_given_empty_run_dir_empty(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    target = tmp_path / "mine"
    target.mkdir()
    code, _, err = run_cli(
        capsys,
        "train",
        "scdqn",
        "--env",
        "CartPole-v1",
        "--set",
        "beta=-1",
        "--run-dir",
        str(target),
        "--quiet",
    )
    assert code == 2 and "beta must be" in err
    assert target.is_dir() and not any(target.iterdir())


def test_existing_run_dir_is_never_overwritten(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    target = tmp_path / "taken"
    target.mkdir()
    (target / "precious.txt").write_text("keep me")
    before = snapshot(target)
    code, _, err = run_cli(
        capsys, "train", "scdqn", "--env", "CartPole-v1", "--steps", "50", "--run-dir", str(target)
    )
    assert code == 2 and "already exists" in err
    assert snapshot(target) == before


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["train", "scdqn", "--no-such-flag"], "No such option: --no-such-flag"),
        (["train", "scdqn", "--env", "CartPole-v1", "--steps", "many"], "Invalid value for '--steps'"),
        (["no-such-command"], "No such command 'no-such-command'"),
    ],
)
def test_command_line_parse_errors_exit_2(
    capsys: pytest.CaptureFixture[str],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    args: list[str],
    message: str,
) -> None:
    monkeypatch.chdir(tmp_path)
    code, _, err = run_cli(capsys, *args)
    assert code == 2
    assert message in err
    assert "Traceback" not in err
    assert list(tmp_path.iterdir()) == []


def test_resume_rejects_non_runs(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    (tmp_path / "notes.txt").write_text("not a run")
    before = snapshot(tmp_path)
    code, _, err = run_cli(capsys, "train", "--resume", str(tmp_path), "--quiet")
    assert code == 2 and "not a run folder" in err
    assert len(err.strip().splitlines()) == 1
    assert snapshot(tmp_path) == before
    code, _, err = run_cli(capsys, "train", "--resume", str(tmp_path / "missing"), "--quiet")
    assert code == 2 and "no such run folder" in err


def test_eval_rejects_non_runs(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    code, _, err = run_cli(capsys, "eval", str(tmp_path / "nope"))
    assert code == 2 and "no such run folder" in err
    code, _, err = run_cli(capsys, "eval", str(tmp_path))
    assert code == 2 and "not a run folder" in err


def test_train_eval_resume_smoke(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    run = tmp_path / "run"
    code, out, err = run_cli(
        capsys,
        "train",
        "scdqn",
        "--env",
        "CartPole-v1",
        "--steps",
        "600",
        "--run-dir",
        str(run),
        "--eval-every",
        "300",
        "--checkpoint-every",
        "300",
        *QUICK,
    )
    assert code == 0, err
    for name in (
        "config.yaml",
        "command.txt",
        "versions.json",
        "run.json",
        "progress.csv",
        "evaluations.jsonl",
    ):
        assert (run / name).is_file(), name
    assert json.loads((run / "run.json").read_text())["status"] == "finished"
    assert "stable-baselines3" in json.loads((run / "versions.json").read_text())
    checkpoints = sorted((run / "checkpoints").glob("step-*"))
    assert [c.name for c in checkpoints][-1] == "step-000000000600"

    code, out, err = run_cli(capsys, "eval", str(run), "--episodes", "3", "--quiet")
    assert code == 0, err
    report = json.loads((run / "eval.json").read_text())
    assert report["episodes"] == 3 and len(report["returns"]) == 3 and report["step"] == 600
    assert "return" in out and "±" in out
    assert report["overestimation"]["states"] > 0
    # The same seed gives the same returns.
    run_cli(capsys, "eval", str(run), "--episodes", "3", "--quiet")
    assert json.loads((run / "eval.json").read_text())["returns"] == report["returns"]

    rows_before = (run / "progress.csv").read_text().count("\n")
    code, out, err = run_cli(capsys, "train", "--resume", str(run), "--steps", "900", "--quiet")
    assert code == 0, err
    assert json.loads((run / "run.json").read_text())["step"] == 900
    assert (run / "progress.csv").read_text().count("\n") > rows_before  # appended, not truncated

    # Reproduce from the stored config into a new folder.
    code, _, err = run_cli(
        capsys,
        "train",
        "--config",
        str(run / "config.yaml"),
        "--steps",
        "200",
        "--run-dir",
        str(tmp_path / "again"),
        "--quiet",
    )
    assert code == 0, err


def test_eval_of_corrupt_checkpoint_is_one_line(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    run = tmp_path / "run"
    code, _, err = run_cli(
        capsys, "train", "scdqn", "--env", "CartPole-v1", "--steps", "200", "--run-dir", str(run), *QUICK
    )
    assert code == 0, err
    model = next((run / "checkpoints").glob("step-*")) / "model.zip"
    model.write_bytes(model.read_bytes()[:100])  # truncated file
    code, _, err = run_cli(capsys, "eval", str(run), "--episodes", "1", "--quiet")
    assert code in (1, 2)
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1


def _zoo(*args: str, cwd: Path) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "zoo.cli", *args],
        cwd=cwd,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )


def _wait_for_checkpoint(run: Path, timeout: float = 90.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if any((run / "checkpoints").glob("step-*/COMPLETE.json")):
            return
        time.sleep(0.2)
    raise AssertionError("no checkpoint appeared")


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_signal_checkpoints_and_exits_0(tmp_path: Path, signum: signal.Signals) -> None:
    run = tmp_path / "run"
    process = _zoo(
        "train",
        "scdqn",
        "--env",
        "CartPole-v1",
        "--steps",
        "200000",
        "--run-dir",
        str(run),
        "--checkpoint-every",
        "500",
        "--eval-every",
        "0",
        *QUICK,
        cwd=tmp_path,
    )
    _wait_for_checkpoint(run)
    process.send_signal(signum)
    out, err = process.communicate(timeout=60)
    assert process.returncode == 0, err
    assert "zoo train --resume" in out
    status = json.loads((run / "run.json").read_text())
    assert status["status"] == "interrupted"
    newest = sorted((run / "checkpoints").glob("step-*"))[-1]
    assert int(newest.name.split("-")[1]) == status["step"]  # the interrupt itself was checkpointed


def test_sigkill_loses_at_most_one_interval(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    run = tmp_path / "run"
    process = _zoo(
        "train",
        "scdqn",
        "--env",
        "CartPole-v1",
        "--steps",
        "200000",
        "--run-dir",
        str(run),
        "--checkpoint-every",
        "300",
        "--eval-every",
        "0",
        *QUICK,
        cwd=tmp_path,
    )
    _wait_for_checkpoint(run)
    time.sleep(1.0)
    process.kill()
    process.communicate(timeout=30)
    newest = max(
        int(p.name.split("-")[1])
        for p in (run / "checkpoints").glob("step-*")
        if (p / "COMPLETE.json").exists()
    )
    code, _, err = run_cli(capsys, "train", "--resume", str(run), "--steps", str(newest + 300), "--quiet")
    assert code == 0, err
    assert json.loads((run / "run.json").read_text())["step"] == newest + 300
