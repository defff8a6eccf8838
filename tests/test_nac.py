"""NAC and its baselines (dqfd, soft_q, bc): the normalization effect, hand-computed losses, the two
stages, save/load, exact resume, and `zoo train nac --demos` end to end with its bad input."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import gymnasium as gym
import h5py
import numpy as np
import pytest
import torch as th
import yaml
from stable_baselines3.common.callbacks import BaseCallback
from stable_baselines3.common.env_util import make_vec_env
from stable_baselines3.common.logger import configure
from stable_baselines3.common.type_aliases import ReplayBufferSamples

from agents.nac import NAC, NACContinuous
from core.datasets import TransitionDataset
from core.demos import DemoBatch
from core.errors import UsageError
from core.training_state import load_training_state, save_training_state
from zoo.cli import main

th.set_num_threads(1)
SMALL = {"net_arch": [16, 16]}
STATE = np.array([0.1, -0.2, 0.3, 0.05], dtype=np.float32)


class CountSteps(gym.Wrapper):  # type: ignore[type-arg]
    steps = 0

    def step(self, action: Any) -> Any:
        CountSteps.steps += 1
        return self.env.step(action)


def cartpole_demos(n: int = 300, seed: int = 0) -> TransitionDataset:
    """``n`` transitions of CartPole-v1 with uniformly random actions (episodes in order)."""
    env = gym.make("CartPole-v1")
    rng = np.random.default_rng(seed)
    rows: dict[str, list[Any]] = {k: [] for k in ("obs", "act", "rew", "next", "term", "trunc")}
    obs, _ = env.reset(seed=seed)
    for _ in range(n):
        action = int(rng.integers(2))
        next_obs, reward, terminated, truncated, _ = env.step(action)
        for key, value in zip(rows, (obs, action, reward, next_obs, terminated, truncated), strict=True):
            rows[key].append(value)
        obs = env.reset()[0] if terminated or truncated else next_obs
    env.close()
    return TransitionDataset(
        observations=np.array(rows["obs"], dtype=np.float32),
        actions=np.array(rows["act"], dtype=np.int64),
        rewards=np.array(rows["rew"], dtype=np.float32),
        next_observations=np.array(rows["next"], dtype=np.float32),
        terminated=np.array(rows["term"], dtype=bool),
        truncated=np.array(rows["trunc"], dtype=bool),
    )


def one_transition(action: int = 0, reward: float = 1.0) -> TransitionDataset:
    """A single terminal transition from ``STATE``: its target is the reward itself."""
    return TransitionDataset(
        observations=STATE[None],
        actions=np.array([action]),
        rewards=np.array([reward], np.float32),
        next_observations=STATE[None],
        terminated=np.array([True]),
        truncated=np.array([False]),
    )


def make_nac(
    loss: str = "nac", demos: TransitionDataset | None = None, env_id: str = "CartPole-v1", **kwargs: Any
) -> NAC:
    env = make_vec_env(env_id, n_envs=1, seed=0, wrapper_class=CountSteps)
    settings: dict[str, Any] = {"policy_kwargs": SMALL, "batch_size": 8, "buffer_size": 1000, **kwargs}
    model = NAC("MlpPolicy", env, loss=loss, seed=0, device="cpu", **settings)  # type: ignore[arg-type]
    model.set_logger(configure(None, []))
    model.set_demonstrations(demos if demos is not None else cartpole_demos())
    return model


# --------------------------------------------------------------------------------------------------
# The normalization effect and the losses


@pytest.mark.parametrize(("loss", "others_go_down"), [("nac", True), ("soft_q", False)])
def test_an_update_on_a_demonstrated_action_lowers_the_others_only_with_normalization(
    loss: str, others_go_down: bool
) -> None:
    # A linear Q-network (no hidden layer) and plain SGD: soft Q-learning's gradient reaches only Q(s, a),
    # NAC's "- grad V" term reaches every action by its probability under pi_Q.
    kwargs = {"net_arch": [], "optimizer_class": th.optim.SGD}
    model = make_nac(
        loss, one_transition(action=1), pretrain_steps=1, learning_rate=0.1, alpha=1.0, policy_kwargs=kwargs
    )
    before = model.q_values(STATE)[0]
    CountSteps.steps = 0
    model.learn(1)  # one stage-1 gradient step on the demonstration
    after = model.q_values(STATE)[0]
    assert (model.num_timesteps, model._n_updates, CountSteps.steps) == (1, 1, 0)
    assert after[1] > before[1]  # the demonstrated action (target 1 > Q) goes up in both
    others = np.delete(after - before, 1)
    if others_go_down:
        assert (others < -1e-3).all(), after - before
    else:
        np.testing.assert_allclose(others, 0.0, atol=1e-7)


def linear_batch(model: NAC) -> tuple[DemoBatch, dict[str, np.ndarray]]:
    """A hand-made batch of 3 transitions (one terminal, two demonstrated) and its arrays."""
    arrays = {
        "obs": np.array([[0.1, 0.2, -0.3, 0.4], [1.0, -0.5, 0.2, 0.0], [-0.3, 0.3, 0.8, -1.0]]),
        "next": np.array([[0.2, 0.1, -0.2, 0.5], [0.9, -0.4, 0.1, 0.1], [-0.2, 0.2, 0.7, -0.9]]),
        "actions": np.array([0, 1, 1]),
        "rewards": np.array([1.0, 0.5, -1.0]),
        "dones": np.array([0.0, 1.0, 0.0]),
        "discounts": np.array([0.99, 0.99, 0.99**2]),
        "is_demo": np.array([True, False, True]),
    }

    def column(key: str, dtype: th.dtype = th.float32) -> th.Tensor:
        return th.as_tensor(arrays[key], dtype=dtype).reshape(3, -1)

    samples = ReplayBufferSamples(
        observations=th.as_tensor(arrays["obs"], dtype=th.float32),
        actions=column("actions", th.int64),
        next_observations=th.as_tensor(arrays["next"], dtype=th.float32),
        dones=column("dones"),
        rewards=column("rewards"),
        discounts=column("discounts"),
    )
    return DemoBatch((samples, samples), th.as_tensor(arrays["is_demo"])), arrays


def linear_q(model: NAC, target: bool = False) -> tuple[np.ndarray, np.ndarray]:
    net = model.q_net_target if target else model.q_net
    layer = net.q_net[0]
    return layer.weight.detach().double().numpy(), layer.bias.detach().double().numpy()


@pytest.mark.parametrize("loss", ["nac", "soft_q", "dqfd", "bc"])
def test_loss_equals_a_hand_computation(loss: str) -> None:
    model = make_nac(loss, policy_kwargs={"net_arch": []}, alpha=0.5, margin=0.8, l2_coef=1e-3)
    with th.no_grad():  # a target network that differs from the online one
        for p in model.q_net_target.parameters():
            p.add_(0.3 * th.randn_like(p))
    batch, a = linear_batch(model)
    w, b = linear_q(model)
    wt, bt = linear_q(model, target=True)
    q, q_next, q_next_target = a["obs"] @ w.T + b, a["next"] @ w.T + b, a["next"] @ wt.T + bt
    rows = np.arange(3)
    q_taken = q[rows, a["actions"]]
    alpha = 0.5

    def logsumexp(x: np.ndarray) -> np.ndarray:
        return np.log(np.exp(x).sum(axis=1))

    not_done = 1 - a["dones"]
    if loss in ("nac", "soft_q"):
        q_hat = a["rewards"] + not_done * a["discounts"] * alpha * logsumexp(q_next_target / alpha)
        value = alpha * logsumexp(q / alpha)
        if loss == "nac":  # stopgrad(Q - Qhat)(Q - V) + 1/2 (V - Vhat)^2, Vhat = Qhat
            expected = np.mean((q_taken - q_hat) * (q_taken - value)) + 0.5 * np.mean((value - q_hat) ** 2)
        else:
            expected = 0.5 * np.mean((q_taken - q_hat) ** 2)
    elif loss == "dqfd":
        best = q_next.argmax(axis=1)  # double DQN: the online network picks, the target evaluates
        y = a["rewards"] + not_done * a["discounts"] * q_next_target[rows, best]
        error = np.abs(q_taken - y)
        huber = np.mean(np.where(error < 1, 0.5 * error**2, error - 0.5))
        margins = np.full_like(q, 0.8)
        margins[rows, a["actions"]] = 0
        large_margin = np.mean(((q + margins).max(axis=1) - q_taken) * a["is_demo"])
        l2 = (w**2).sum() + (b**2).sum()
        expected = huber + huber + large_margin + 1e-3 * l2  # the same batch serves as 1-step and n-step
    else:
        expected = np.mean(logsumexp(q) - q_taken)
    loss_value, _ = model.compute_loss(batch)
    assert loss_value.item() == pytest.approx(expected, rel=1e-5, abs=1e-6)

    if loss == "nac":  # the gradient is the paper's: (grad Q - grad V)(Q - Qhat) + (V - Vhat) grad V
        model.q_net.zero_grad()
        loss_value.backward()
        pi = np.exp((q - value[:, None]) / alpha)
        onehot = np.eye(2)[a["actions"]]
        coefficient = (q_taken - q_hat)[:, None] * (onehot - pi) + (value - q_hat)[:, None] * pi  # [B, A]
        weight_grad = model.q_net.q_net[0].weight.grad
        assert weight_grad is not None
        np.testing.assert_allclose(weight_grad.numpy(), coefficient.T @ a["obs"] / 3, rtol=1e-4, atol=1e-6)


def test_demonstration_buffer_holds_every_transition_with_n_step_returns() -> None:
    demos = cartpole_demos(120)
    model = make_nac(demos=demos, gamma=0.9)
    buffer = model.demo_buffer
    assert buffer is not None and buffer.size() == 120
    steps = np.arange(120)
    one = buffer.get_transitions(np.zeros(120, int), steps)
    np.testing.assert_array_equal(one.observations.numpy(), demos.observations)
    np.testing.assert_array_equal(one.next_observations.numpy(), demos.next_observations)
    np.testing.assert_array_equal(one.actions.numpy()[:, 0], demos.actions)
    np.testing.assert_array_equal(one.dones.numpy()[:, 0], demos.terminated)
    three = buffer.get_transitions(np.zeros(120, int), steps, n_steps=3)  # the same transitions, n = 3
    ends = np.flatnonzero(demos.terminated | demos.truncated)
    for i in steps:
        end = ends[ends >= i][0] if (ends >= i).any() else 119
        k = min(3, end - i + 1)
        expected = sum(0.9**j * demos.rewards[i + j] for j in range(k))
        assert three.rewards[i, 0].item() == pytest.approx(expected)
        assert three.discounts is not None and three.discounts[i, 0].item() == pytest.approx(0.9**k)
        np.testing.assert_array_equal(three.next_observations[i].numpy(), demos.next_observations[i + k - 1])


def test_bad_hyperparameters_are_one_line_errors() -> None:
    for kwargs, message in (
        ({"loss": "nca"}, "loss must be one of nac, soft_q, dqfd, bc"),
        ({"demo_share": 1.5}, "demo_share"),
        ({"alpha": 0.0}, "alpha"),
        ({"pretrain_steps": -1}, "pretrain_steps"),
    ):
        with pytest.raises(UsageError, match=message):
            NAC("MlpPolicy", "CartPole-v1", **kwargs)  # type: ignore[arg-type]


# --------------------------------------------------------------------------------------------------
# The two stages


class RecordStages(BaseCallback):
    def __init__(self) -> None:
        super().__init__()
        self.stages: list[int] = []

    def _on_step(self) -> bool:
        self.stages.append(self.model.stage)  # type: ignore[attr-defined]
        return True


def test_stage_one_uses_only_demonstrations_then_stage_two_steps_the_env() -> None:
    model = make_nac(pretrain_steps=40, demo_share=0.25, learning_starts=10, train_freq=1)
    shares: list[float] = []
    sample = model.sample_batch

    def spy(batch_size: int, n_steps: Any = (1,)) -> DemoBatch:
        batch = sample(batch_size, n_steps)
        shares.append(batch.is_demo.float().mean().item())
        return batch

    model.sample_batch = spy  # type: ignore[method-assign]
    stages = RecordStages()
    CountSteps.steps = 0
    model.learn(100, callback=stages)
    assert stages.stages == [1] * 40 + [2] * 60
    assert CountSteps.steps == 60 and model.num_timesteps == 100
    assert shares[:40] == [1.0] * 40  # stage 1: every transition from the demonstrations
    assert set(shares[40:]) == {0.25} and len(shares) == 40 + 60 - 9  # 2 of 8; trains once 10 are stored
    assert model._n_updates == len(shares)


def test_demo_share_zero_and_behavior_cloning_never_acting() -> None:
    model = make_nac(pretrain_steps=5, demo_share=0.0, learning_starts=1, train_freq=1)
    model.learn(10)
    assert model.sample_batch(8).is_demo.sum().item() == 0  # stage 2 now: own experience only
    bc = make_nac("bc", pretrain_steps=5)
    CountSteps.steps = 0
    bc.learn(30)  # behavior cloning: every step is a gradient step on the demonstrations
    assert (CountSteps.steps, bc._n_updates, bc.num_timesteps) == (0, 30, 30)


def test_save_load_gives_identical_actions(tmp_path: Path) -> None:
    observations = np.random.default_rng(1).normal(size=(32, 4)).astype(np.float32)
    model = make_nac(pretrain_steps=30, learning_starts=5)
    model.learn(60)
    model.save(tmp_path / "nac.zip")
    loaded = NAC.load(tmp_path / "nac.zip", device="cpu")
    assert loaded.loss == "nac" and loaded.alpha == model.alpha and loaded.demo_buffer is None
    np.testing.assert_array_equal(
        loaded.predict(observations, deterministic=True)[0],
        model.predict(observations, deterministic=True)[0],
    )
    np.testing.assert_array_equal(loaded.q_values(observations), model.q_values(observations))


def test_checkpoint_in_stage_one_resumes_exactly(tmp_path: Path) -> None:
    demos = cartpole_demos()
    straight = make_nac(pretrain_steps=50, demos=demos, target_update_interval=7)
    straight.learn(80)
    first = make_nac(pretrain_steps=50, demos=demos, target_update_interval=7)
    first.learn(30)  # in stage 1
    save_training_state(first, tmp_path / "ckpt", include_replay=True)
    env = make_vec_env("CartPole-v1", n_envs=1, seed=0, wrapper_class=CountSteps)
    resumed = load_training_state(NAC, tmp_path / "ckpt", env, device="cpu")
    assert isinstance(resumed, NAC) and resumed.stage == 1
    resumed.set_demonstrations(demos)
    resumed.learn(50, reset_num_timesteps=False)
    assert resumed.num_timesteps == straight.num_timesteps == 80
    for a, b in zip(straight.policy.parameters(), resumed.policy.parameters(), strict=True):
        np.testing.assert_array_equal(a.detach().numpy(), b.detach().numpy())


def test_continuous_variant_learns_in_both_stages_and_reloads(tmp_path: Path) -> None:
    env = make_vec_env("Pendulum-v1", n_envs=1, seed=0, wrapper_class=CountSteps)
    rng = np.random.default_rng(0)
    n = 60
    observations = rng.normal(size=(n, 3)).astype(np.float32)
    demos = TransitionDataset(
        observations=observations,
        actions=rng.uniform(-2, 2, size=(n, 1)).astype(np.float32),
        rewards=-np.ones(n, np.float32),
        next_observations=np.roll(observations, -1, axis=0),
        terminated=np.zeros(n, bool),
        truncated=np.r_[np.zeros(n - 1, bool), True],
    )
    model = NACContinuous(
        "MlpPolicy", env, batch_size=8, particles=4, pretrain_steps=10, learning_starts=5, buffer_size=100,
        policy_kwargs={"net_arch": [16]}, seed=0, device="cpu",
    )  # fmt: skip
    model.set_logger(configure(None, []))
    model.set_demonstrations(demos)
    stored = model.demo_buffer.get_transitions(np.zeros(n, int), np.arange(n))  # type: ignore[union-attr]
    np.testing.assert_allclose(stored.actions.numpy(), demos.actions / 2.0, atol=1e-6)  # SB3's [-1, 1] scale
    CountSteps.steps = 0
    model.learn(30)
    assert CountSteps.steps == 20 and model._n_updates == 10 + 16
    values = model.soft_values(model.critic, th.as_tensor(observations[:5]))
    assert values.shape == (2, 5) and th.isfinite(values).all()
    model.save(tmp_path / "continuous.zip")
    loaded = NACContinuous.load(tmp_path / "continuous.zip", device="cpu")
    np.testing.assert_array_equal(
        loaded.predict(observations, deterministic=True)[0],
        model.predict(observations, deterministic=True)[0],
    )


# --------------------------------------------------------------------------------------------------
# `zoo train nac --demos` as a user runs it

QUICK = (
    "--quiet", "--set", "policy_kwargs.net_arch=[16,16]", "--set", "batch_size=16",
    "--set", "learning_starts=50", "--set", "eval_episodes=1", "--set", "train_freq=2",
)  # fmt: skip


def run_cli(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    code = main(list(args))
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture(scope="module")
def demos_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Random CartPole and MountainCarContinuous demonstrations, an empty dataset, one without rewards."""
    from core.minari_io import write_dataset

    root = tmp_path_factory.mktemp("demos")
    for env_id, name in (("CartPole-v1", "test/cartpole-v0"), ("MountainCarContinuous-v0", "test/mcc-v0")):
        args = ["collect", "--env", env_id, "--steps", "300", "--name", name, "--root", str(root), "--quiet"]
        assert main(args) == 0
    cartpole = gym.make("CartPole-v1")
    write_dataset(
        "test/empty-v0", [], observation_space=cartpole.observation_space, action_space=cartpole.action_space,
        env_spec=None, card={"env_id": "CartPole-v1"}, root=root,
    )  # fmt: skip
    no_rewards = shutil.copytree(root / "test" / "cartpole-v0", root / "test" / "norewards-v0")
    with h5py.File(no_rewards / "data" / "main_data.hdf5", "a") as file:
        del file["episode_1"]["rewards"]
    return root


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("nac", "--env", "CartPole-v1"), "nac learns from demonstrations: pass --demos"),
        (("nac", "--demos", "{root}/test/empty-v0"), "the dataset is empty"),
        (("nac", "--demos", "{root}/test/norewards-v0"), "episode 1 has no rewards"),
        (
            ("nac", "--demos", "{root}/test/mcc-v0", "--env", "MountainCar-v0"),
            "MountainCar-v0 has 3 discrete actions; the dataset's actions have shape (1,)",
        ),
        (("dqfd", "--demos", "{root}/test/mcc-v0"), "dqfd needs a Discrete action space"),
        (
            ("soft_q", "--demos", "{root}/test/cartpole-v0", "--env", "Acrobot-v1"),
            "observations have shape (4,), Acrobot-v1 expects (6,)",
        ),
        (("nac_continuous", "--demos", "{root}/test/cartpole-v0"), "nac_continuous needs a Box action space"),
        (
            ("nac", "--demos", "{root}/test/cartpole-v0", "--pretrain-steps", "-5"),
            "pretrain_steps must be >= 0 gradient steps, got -5",
        ),
    ],
)
def test_bad_demonstrations_are_one_line_exit_2_and_write_nothing(
    capsys: pytest.CaptureFixture[str], demos_root: Path, tmp_path: Path, args: tuple[str, ...], message: str
) -> None:
    run = tmp_path / "run"
    argv = [a.format(root=demos_root) for a in args]
    code, _, err = run_cli(capsys, "train", *argv, "--steps", "10", "--run-dir", str(run), "--quiet")
    assert code == 2
    assert message in err and len(err.strip().splitlines()) == 1, err
    assert not run.exists()


def progress_rows(run: Path) -> list[dict[str, str]]:
    lines = (run / "progress.csv").read_text().splitlines()
    header = lines[0].split(",")
    return [dict(zip(header, line.split(","), strict=True)) for line in lines[1:]]


def test_train_nac_from_demos_through_both_stages_eval_and_resume(
    capsys: pytest.CaptureFixture[str], demos_root: Path, tmp_path: Path
) -> None:
    run = tmp_path / "nac"
    demos = str(demos_root / "test" / "cartpole-v0")
    code, _, err = run_cli(
        capsys, "train", "nac", "--env", "CartPole-v1", "--demos", demos, "--pretrain-steps", "200",
        "--steps", "150", "--eval-every", "100", "--checkpoint-every", "100", "--run-dir", str(run), *QUICK,
    )  # fmt: skip
    assert code == 0, err
    config = yaml.safe_load((run / "config.yaml").read_text())
    assert config["hyperparameters"]["pretrain_steps"] == 200 and config["hyperparameters"]["loss"] == "nac"
    assert config["dataset"] == str(Path(demos).resolve())
    assert json.loads((run / "run.json").read_text())["step"] == 150  # stopped inside stage 1

    # Resume: the rest of stage 1 (150 -> 200), then 200 env steps of stage 2.
    code, _, err = run_cli(capsys, "train", "--resume", str(run), "--steps", "400", "--quiet")
    assert code == 0, err
    status = json.loads((run / "run.json").read_text())
    assert (status["status"], status["step"]) == ("finished", 400)
    rows = progress_rows(run)
    stages = {(int(r["time/total_timesteps"]), r["train/stage"]) for r in rows if r.get("train/stage")}
    assert (200, "1") in stages and any(step > 200 and stage == "2" for step, stage in stages)
    assert all(stage == "1" for step, stage in stages if step <= 200)
    assert any(r.get("rollout/ep_rew_mean") for r in rows) and any(r.get("train/loss") for r in rows)
    evaluations = [json.loads(line)["step"] for line in (run / "evaluations.jsonl").read_text().splitlines()]
    assert {100, 200, 300, 400} <= set(evaluations)
    assert (run / "checkpoints" / "step-000000000400").is_dir()

    code, _, err = run_cli(capsys, "eval", str(run), "--episodes", "2", "--quiet")
    assert code == 0, err
    report = json.loads((run / "eval.json").read_text())
    assert report["step"] == 400 and len(report["returns"]) == 2 and "overestimation" in report


@pytest.mark.parametrize(
    ("agent", "extra", "loss", "logged"),
    [
        ("dqfd", (), "dqfd", "train/margin_loss"),
        ("soft_q", (), "soft_q", "train/value"),
        ("nac", ("--set", "loss=bc"), "bc", "train/loss"),
    ],
)
def test_baselines_are_selected_by_name_or_flag(
    capsys: pytest.CaptureFixture[str],
    demos_root: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    agent: str,
    extra: tuple[str, ...],
    loss: str,
    logged: str,
) -> None:
    monkeypatch.setenv("MINARI_DATASETS_PATH", str(demos_root))
    run = tmp_path / agent
    code, _, err = run_cli(
        capsys, "train", agent, "--demos", "test/cartpole-v0", "--pretrain-steps", "60", "--steps", "100",
        "--eval-every", "0", "--run-dir", str(run), *QUICK, *extra,
    )  # fmt: skip
    assert code == 0, err
    assert yaml.safe_load((run / "config.yaml").read_text())["hyperparameters"]["loss"] == loss
    assert any(r.get(logged) for r in progress_rows(run))
    status = json.loads((run / "run.json").read_text())
    assert (status["status"], status["step"]) == ("finished", 100)
