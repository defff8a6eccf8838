"""SB3's own algorithms as zoo agents: train -> eval through the CLI, zoo.yaml defaults, action noise,
and --stop-at-return."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from stable_baselines3.common.buffers import ReplayBuffer

from core.noise import SizedActionNoise
from core.replay import EpisodicReplayBuffer
from zoo.cli import main
from zoo.config import resolve
from zoo.runner import build_model, make_env, prepare


def run_cli(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    code = main(list(args))
    out, err = capsys.readouterr()
    return code, out, err


@pytest.mark.parametrize(
    ("agent", "env_id", "overrides"),
    [
        ("ppo", "CartPole-v1", ["n_envs=2", "n_steps=64", "batch_size=64", "n_epochs=2"]),
        ("a2c", "CartPole-v1", ["n_envs=2"]),
        ("dqn", "CartPole-v1", ["learning_starts=50", "train_freq=16", "gradient_steps=4"]),
        ("sac", "Pendulum-v1", ["learning_starts=50", "batch_size=32"]),
        ("td3", "Pendulum-v1", ["learning_starts=50", "batch_size=32"]),
    ],
)
def test_train_and_eval(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, agent: str, env_id: str, overrides: list[str]
) -> None:
    run = tmp_path / agent
    sets = [item for key in overrides for item in ("--set", key)]
    code, _, err = run_cli(
        capsys, "train", agent, "--env", env_id, "--steps", "256", "--run-dir", str(run), "--quiet", *sets
    )
    assert code == 0, err
    assert json.loads((run / "run.json").read_text())["status"] == "finished"
    code, _, err = run_cli(capsys, "eval", str(run), "--episodes", "2", "--quiet")
    assert code == 0, err
    report = json.loads((run / "eval.json").read_text())
    assert len(report["returns"]) == 2 and report["agent"] == agent
    assert ("overestimation" in report) == (agent == "dqn")  # SB3's DQN gets the gap through its q_net


def test_sb3_agents_keep_their_buffer_except_for_images() -> None:
    config = resolve("sac", "Pendulum-v1", device="cpu")
    setup = prepare(config)
    env = make_env(setup, config, n_envs=1, seed=0, training=True)
    model = build_model(setup, config, env)
    assert type(model.replay_buffer) is ReplayBuffer
    env.close()
    config = resolve("dqn", "ALE/Pong-v5", device="cpu", overrides=["buffer_size=1000"])
    setup = prepare(config)
    env = make_env(setup, config, n_envs=1, seed=0, training=True)
    model = build_model(setup, config, env)
    assert isinstance(model.replay_buffer, EpisodicReplayBuffer) and model.replay_buffer.frame_stack == 4
    env.close()


def test_td3_gets_sized_gaussian_noise_from_zoo_yaml() -> None:
    config = resolve("td3", "Hopper-v5", device="cpu", overrides=["buffer_size=1000"])
    assert config.hyperparameters["action_noise"] == {"kind": "normal", "sigma": 0.1}
    setup = prepare(config)
    env = make_env(setup, config, n_envs=1, seed=0, training=True)
    model = build_model(setup, config, env)
    noise = model.action_noise
    assert isinstance(noise, SizedActionNoise)
    samples = np.stack([noise() for _ in range(2000)])
    assert samples.shape == (2000, 3)
    assert np.allclose(samples.std(axis=0), 0.1, atol=0.01)
    assert np.allclose(samples.mean(axis=0), 0.0, atol=0.01)
    env.close()


def test_stop_at_return_keeps_the_checkpoint_of_the_first_good_evaluation(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    run = tmp_path / "run"
    # Any CartPole policy survives at least 8 steps, so the first evaluation (at step 128) reaches 5.
    code, out, err = run_cli(
        capsys,
        *("train", "ppo", "--env", "CartPole-v1", "--steps", "5000", "--run-dir", str(run)),
        *("--eval-every", "128", "--stop-at-return", "5", "--quiet"),
        *("--set", "n_envs=1", "--set", "n_steps=64", "--set", "batch_size=64", "--set", "n_epochs=1"),
    )
    assert code == 0, err
    assert "stopped at step 128" in out
    status = json.loads((run / "run.json").read_text())
    assert status["status"] == "finished" and status["stopped_at_return"]["step"] == 128
    assert status["stopped_at_return"]["mean_return"] >= 5
    checkpoints = sorted(p.name for p in (run / "checkpoints").glob("step-*"))
    assert checkpoints[-1] == "step-000000000128"
    assert len((run / "evaluations.jsonl").read_text().splitlines()) == 1


def test_stop_at_return_without_evaluations_is_a_usage_error(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    code, _, err = run_cli(
        capsys,
        *("train", "ppo", "--env", "CartPole-v1", "--run-dir", str(tmp_path / "r")),
        *("--eval-every", "0", "--stop-at-return", "100"),
    )
    assert code == 2 and "stop_at_return needs periodic evaluations" in err
    assert not (tmp_path / "r").exists()
