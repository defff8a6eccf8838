"""The application's offline path: datasets checked against the env before a run folder exists."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import h5py
import numpy as np
import pytest
import yaml
from gymnasium import spaces

from core.datasets import TransitionDataset
from core.errors import UsageError
from zoo.cli import main


def dataset(observations: np.ndarray, actions: np.ndarray) -> TransitionDataset:
    n = len(observations)
    done = np.zeros(n, dtype=bool)
    done[-1] = True
    return TransitionDataset(
        observations=observations,
        actions=actions,
        rewards=np.zeros(n, dtype=np.float32),
        next_observations=observations,
        terminated=done,
        truncated=np.zeros(n, dtype=bool),
    )


BOX_OBS = spaces.Box(-np.inf, np.inf, (3,), np.float32)
BOX_ACT = spaces.Box(-2.0, 2.0, (1,), np.float32)


def test_fitting_box_dataset_passes() -> None:
    data = dataset(np.zeros((5, 3), np.float32), np.linspace(-2, 2, 5, dtype=np.float32)[:, None])
    data.check_spaces(BOX_OBS, BOX_ACT, "Pendulum-v1")


@pytest.mark.parametrize(
    ("observations", "actions", "message"),
    [
        (np.zeros((4, 11)), np.zeros((4, 1)), r"observations have shape \(11,\), Pendulum-v1 expects \(3,\)"),
        (np.zeros((4, 3)), np.zeros((4, 2)), r"actions have shape \(2,\), Pendulum-v1 expects \(1,\)"),
        (np.zeros((4, 3)), np.array([[0.0], [2.5], [0.0], [0.0]]), r"outside .* \(first at transition 1\)"),
    ],
)
def test_box_mismatches_are_one_line_errors(observations, actions, message) -> None:
    with pytest.raises(UsageError, match=message) as caught:
        dataset(observations, actions).check_spaces(BOX_OBS, BOX_ACT, "Pendulum-v1")
    assert "\n" not in str(caught.value)


def test_discrete_actions_must_be_valid_indices() -> None:
    observations = np.zeros((3, 4), np.float32)
    obs_space = spaces.Box(-np.inf, np.inf, (4,), np.float32)
    two = spaces.Discrete(2)
    dataset(observations, np.array([0, 1, 1])).check_spaces(obs_space, two, "CartPole-v1")
    with pytest.raises(UsageError, match="action 2 at transition 2 is not one of CartPole-v1's 2 actions"):
        dataset(observations, np.array([0, 1, 2])).check_spaces(obs_space, two, "CartPole-v1")
    with pytest.raises(UsageError, match="2 discrete actions"):
        dataset(observations, np.array([0.5, 1, 1])).check_spaces(obs_space, two, "CartPole-v1")


# --- `zoo train AGENT --dataset` as a user runs it -------------------------------------------

QUICK_BRAC = ("--set", "behavior_steps=100", "--set", "warm_start=50", "--set", "eval_episodes=1")


def run_cli(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    code = main(list(args))
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture(scope="module")
def datasets(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A random Pendulum dataset, a random CartPole one, and one with a NaN reward."""
    root = tmp_path_factory.mktemp("datasets")
    for env_id, name in (("Pendulum-v1", "test/pendulum-v0"), ("CartPole-v1", "test/cartpole-v0")):
        assert (
            main(
                ["collect", "--env", env_id, "--steps", "400", "--name", name, "--root", str(root), "--quiet"]
            )
            == 0
        )
    bad = shutil.copytree(root / "test" / "pendulum-v0", root / "test" / "nan-v0")
    with h5py.File(bad / "data" / "main_data.hdf5", "a") as file:
        file["episode_1"]["rewards"][5] = np.nan
    return root


def test_offline_train_eval_resume(
    capsys: pytest.CaptureFixture[str], datasets: Path, tmp_path: Path
) -> None:
    run = tmp_path / "brac"
    dataset = str(datasets / "test" / "pendulum-v0")
    code, _, err = run_cli(
        capsys, "train", "brac", "--dataset", dataset, "--steps", "200", "--eval-every", "100",
        "--checkpoint-every", "100", "--run-dir", str(run), "--quiet", *QUICK_BRAC,
    )  # fmt: skip
    assert code == 0, err
    config = yaml.safe_load((run / "config.yaml").read_text())
    assert config["env"] == "Pendulum-v1"  # from the dataset's card
    status = json.loads((run / "run.json").read_text())
    assert (status["status"], status["step"]) == ("finished", 200)
    header = (run / "progress.csv").read_text().splitlines()[0].split(",")
    assert {"train/critic_loss", "train/divergence", "eval/mean_return"} <= set(header)
    evaluations = [json.loads(line) for line in (run / "evaluations.jsonl").read_text().splitlines()]
    assert [e["step"] for e in evaluations] == [100, 200]  # the final evaluation is not repeated

    code, _, err = run_cli(capsys, "eval", str(run), "--episodes", "2", "--quiet")
    assert code == 0, err
    assert json.loads((run / "eval.json").read_text())["step"] == 200
    # Both of the paper's evaluation policies on the same checkpoint; a bad choice writes nothing.
    reports = {}
    for rule in ("deterministic", "max_q"):
        code, out, err = run_cli(
            capsys, "eval", str(run), "--episodes", "2", "--test-policy", rule, "--quiet"
        )
        assert code == 0, err
        assert f"{rule} test policy" in out
        reports[rule] = json.loads((run / "eval.json").read_text())
        assert reports[rule]["test_policy"] == rule
    assert reports["deterministic"]["returns"] != reports["max_q"]["returns"]
    before = (run / "eval.json").read_bytes()
    code, _, err = run_cli(capsys, "eval", str(run), "--test-policy", "best", "--quiet")
    assert code == 2 and "--test-policy must be one of deterministic, max_q" in err
    assert (run / "eval.json").read_bytes() == before

    code, _, err = run_cli(capsys, "train", "--resume", str(run), "--steps", "300", "--quiet")
    assert code == 0, err
    assert json.loads((run / "run.json").read_text())["step"] == 300
    assert (run / "checkpoints" / "step-000000000300").is_dir()


@pytest.mark.parametrize("agent", ["bc", "offline_sac"])
def test_offline_baselines_train_from_a_dataset_name(
    capsys: pytest.CaptureFixture[str],
    datasets: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    agent: str,
) -> None:
    monkeypatch.setenv("MINARI_DATASETS_PATH", str(datasets))
    run = tmp_path / agent
    code, _, err = run_cli(
        capsys, "train", agent, "--dataset", "test/pendulum-v0", "--steps", "100", "--eval-every", "100",
        "--run-dir", str(run), "--quiet", "--set", "eval_episodes=1",
    )  # fmt: skip
    assert code == 0, err
    status = json.loads((run / "run.json").read_text())
    assert (status["status"], status["step"]) == ("finished", 100)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (
            ("brac", "--dataset", "{root}/test/cartpole-v0"),
            "brac needs a Box action space; CartPole-v1 has Discrete",
        ),
        (
            ("brac", "--dataset", "{root}/test/pendulum-v0", "--env", "MountainCarContinuous-v0"),
            "observations have shape (3,), MountainCarContinuous-v0 expects (2,)",
        ),
        (("bc", "--dataset", "{root}/test/nan-v0"), "rewards has a NaN or inf value"),
        (("brac", "--dataset", "{root}/test/nothing-v0"), "test/nothing-v0: no such dataset folder"),
        (("brac", "--env", "Pendulum-v1"), "brac learns offline: pass --dataset"),
        (("scdqn", "--dataset", "{root}/test/cartpole-v0"), "scdqn learns online"),
    ],
)
def test_bad_offline_input_is_one_line_exit_2_and_writes_nothing(
    capsys: pytest.CaptureFixture[str], datasets: Path, tmp_path: Path, args: tuple[str, ...], message: str
) -> None:
    before = {p: p.stat().st_mtime_ns for p in datasets.rglob("*")}
    run = tmp_path / "run"
    argv = [a.format(root=datasets) for a in args]
    code, _, err = run_cli(capsys, "train", *argv, "--steps", "10", "--run-dir", str(run), "--quiet")
    assert code == 2
    assert message in err and len(err.strip().splitlines()) == 1, err
    assert not run.exists()
    assert {p: p.stat().st_mtime_ns for p in datasets.rglob("*")} == before
