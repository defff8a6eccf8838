"""The evaluation protocol of `zoo eval` and `zoo train --seeds`: stored evaluation seeds, repeatable
returns, the per-episode JSONL, checkpoint choice, MP4 videos, and one-line errors (exit 2)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from core.evaluation import evaluation_seeds
from rewards.video import count_frames
from zoo.cli import main

PPO_QUICK = [
    "--set",
    "n_envs=1",
    "--set",
    "n_steps=128",
    "--set",
    "batch_size=64",
    "--set",
    "n_epochs=2",
    "--quiet",
]


def run_cli(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    code = main(list(args))
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture(scope="module")
def ppo_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A PPO CartPole run with checkpoints at 256 and 512 and a best/ from periodic evaluations."""
    run = tmp_path_factory.mktemp("eval") / "ppo"
    every = ["--eval-every", "256", "--checkpoint-every", "256", "--set", "eval_episodes=3"]
    code = main(
        ["train", "ppo", "--env", "CartPole-v1", "--steps", "512", "--run-dir", str(run), *every, *PPO_QUICK]
    )
    assert code == 0
    return run


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_run_stores_its_evaluation_seeds(ppo_run: Path) -> None:
    stored = json.loads((ppo_run / "eval_seeds.json").read_text())["seeds"]
    assert stored == evaluation_seeds() and len(set(stored)) == len(stored) >= 100
    # The periodic evaluations during training played the first eval_episodes of them.
    history = read_jsonl(ppo_run / "evaluations.jsonl")
    assert [line["step"] for line in history] == [256, 512]
    assert all(len(line["returns"]) == 3 for line in history)


@pytest.mark.parametrize("mode", ["--deterministic", "--stochastic"])
def test_same_seeds_give_same_returns(capsys: pytest.CaptureFixture[str], ppo_run: Path, mode: str) -> None:
    runs = []
    for _ in range(2):
        code, _, err = run_cli(capsys, "eval", str(ppo_run), "--episodes", "4", mode, "--quiet")
        assert code == 0, err
        runs.append(read_jsonl(ppo_run / "eval-episodes.jsonl"))
    first, second = runs
    assert [e["return"] for e in first] == [e["return"] for e in second]
    assert [e["length"] for e in first] == [e["length"] for e in second]


def test_episode_jsonl_schema(capsys: pytest.CaptureFixture[str], ppo_run: Path) -> None:
    code, _, err = run_cli(capsys, "eval", str(ppo_run), "--episodes", "3", "--quiet")
    assert code == 0, err
    lines = read_jsonl(ppo_run / "eval-episodes.jsonl")
    summary = json.loads((ppo_run / "eval.json").read_text())
    assert [line["episode"] for line in lines] == [0, 1, 2]
    assert [line["seed"] for line in lines] == evaluation_seeds()[:3] == summary["seeds"]
    for line in lines:
        assert set(line) == {
            "episode",
            "seed",
            "return",
            "length",
            "truncated",
            "info",
            "checkpoint",
            "step",
            "mode",
        }
        assert isinstance(line["return"], float) and isinstance(line["length"], int) and line["length"] > 0
        assert isinstance(line["truncated"], bool) and isinstance(line["info"], dict)
        assert line["checkpoint"] == "last" and line["step"] == 512 and line["mode"] == "deterministic"
    assert summary["returns"] == [line["return"] for line in lines]
    history = read_jsonl(ppo_run / "eval-history.jsonl")
    assert history[-1]["returns"] == summary["returns"]  # every evaluation's summary is appended


def test_checkpoint_choice(capsys: pytest.CaptureFixture[str], ppo_run: Path) -> None:
    best = json.loads((ppo_run / "best" / "best.json").read_text())
    code, _, err = run_cli(capsys, "eval", str(ppo_run), "--checkpoint", "best", "--episodes", "3", "--quiet")
    assert code == 0, err
    report = json.loads((ppo_run / "eval.json").read_text())
    assert report["checkpoint"] == "best" and report["step"] == best["step"]
    # The best checkpoint is judged on the same seeds, so its evaluation repeats the training one.
    assert report["mean_return"] == pytest.approx(best["mean_return"])
    code, _, err = run_cli(capsys, "eval", str(ppo_run), "--checkpoint", "256", "--episodes", "2", "--quiet")
    assert code == 0, err
    assert json.loads((ppo_run / "eval.json").read_text())["step"] == 256
    folder = ppo_run / "checkpoints" / "step-000000000256"
    code, _, err = run_cli(capsys, "eval", str(folder), "--episodes", "2", "--quiet")
    assert code == 0, err
    assert json.loads((ppo_run / "eval.json").read_text())["checkpoint"] == "step-256"


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--checkpoint", "300"], "no complete checkpoint at that step (steps: 256, 512)"),
        (["--checkpoint", "newest"], "expected best, last, a step"),
        (["--video", "5", "--episodes", "2"], "more videos than --episodes"),
        (["--episodes", "5000"], "stores 1000 evaluation seeds"),
    ],
)
def test_bad_eval_options_are_one_line(
    capsys: pytest.CaptureFixture[str], ppo_run: Path, args: list[str], message: str
) -> None:
    before = (ppo_run / "eval.json").read_bytes() if (ppo_run / "eval.json").exists() else None
    code, _, err = run_cli(capsys, "eval", str(ppo_run), *args, "--quiet")
    assert code == 2 and message in err and len(err.strip().splitlines()) == 1
    after = (ppo_run / "eval.json").read_bytes() if (ppo_run / "eval.json").exists() else None
    assert after == before  # nothing written


def test_checkpoint_of_another_agent(
    capsys: pytest.CaptureFixture[str], ppo_run: Path, tmp_path: Path
) -> None:
    other = tmp_path / "a2c"
    code, _, err = run_cli(
        capsys, "train", "a2c", "--env", "CartPole-v1", "--steps", "64", "--run-dir", str(other), "--quiet"
    )
    assert code == 0, err
    foreign = next((other / "checkpoints").glob("step-*"))
    run = tmp_path / "ppo-copy"
    shutil.copytree(ppo_run, run)
    planted = run / "checkpoints" / foreign.name
    shutil.copytree(foreign, planted)
    code, _, err = run_cli(capsys, "eval", str(planted), "--episodes", "1", "--quiet")
    assert code == 2 and len(err.strip().splitlines()) == 1
    assert "a checkpoint of stable_baselines3.a2c.a2c.A2C, not of the run's agent ppo" in err


def test_video_decodes_to_the_episode_length(capsys: pytest.CaptureFixture[str], ppo_run: Path) -> None:
    code, _, err = run_cli(capsys, "eval", str(ppo_run), "--episodes", "2", "--video", "1", "--quiet")
    assert code == 0, err
    report = json.loads((ppo_run / "eval.json").read_text())
    assert report["videos"] == ["videos/last-episode-000.mp4"]
    video = ppo_run / report["videos"][0]
    # One frame per state the policy acted in: as many as the episode's steps.
    assert count_frames(video) == report["lengths"][0]
    assert not list((ppo_run / "videos").glob("*.partial.mp4"))


def test_train_seeds_groups_runs(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    group = tmp_path / "group"
    code, _, err = run_cli(
        capsys, "train", "ppo", "--env", "CartPole-v1", "--steps", "128", "--seeds", "3,5",
        "--run-dir", str(group), "--eval-every", "0", *PPO_QUICK,
    )  # fmt: skip
    assert code == 0, err
    assert json.loads((group / "group.json").read_text())["runs"] == ["s3", "s5"]
    for seed in (3, 5):
        config = (group / f"s{seed}" / "config.yaml").read_text()
        assert f"seed: {seed}" in config and (group / f"s{seed}" / "checkpoints").is_dir()
    code, _, err = run_cli(capsys, "eval", str(group), "--episodes", "1", "--quiet")
    assert code == 0, err
    assert (group / "s3" / "eval.json").exists() and (group / "s5" / "eval.json").exists()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--seeds", "0,a"], "expected comma-separated integers"),
        (["--seeds", "1,1"], "distinct non-negative integers"),
        (["--seeds", "0,1", "--seed", "2"], "takes neither --seed nor --resume"),
    ],
)
def test_bad_seeds_are_one_line(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, args: list[str], message: str
) -> None:
    group = tmp_path / "group"
    code, _, err = run_cli(capsys, "train", "ppo", "--env", "CartPole-v1", "--run-dir", str(group), *args)
    assert code == 2 and message in err and len(err.strip().splitlines()) == 1
    assert not group.exists()


def test_seed_group_refused_by_the_agent_leaves_nothing(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    group = tmp_path / "new" / "group"
    code, _, err = run_cli(
        capsys, "train", "ppo", "--env", "CartPole-v1", "--seeds", "0,1", "--run-dir", str(group),
        "--set", "n_steps=-1", "--quiet",
    )  # fmt: skip
    assert code == 2 and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "new").exists()


def test_not_a_run_is_one_line(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    (tmp_path / "stray").mkdir()
    code, _, err = run_cli(capsys, "eval", str(tmp_path / "stray"))
    assert code == 2 and "not a run folder" in err and len(err.strip().splitlines()) == 1
