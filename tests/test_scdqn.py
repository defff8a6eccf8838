"""SC-DQN: hand-computed targets, equivalence with DQN / Double DQN, exploration, save/load, seeding."""

from __future__ import annotations

from types import SimpleNamespace

import gymnasium as gym
import numpy as np
import pytest
import torch as th
from gymnasium import spaces
from stable_baselines3 import DQN
from stable_baselines3.common.buffers import NStepReplayBuffer, ReplayBuffer
from stable_baselines3.common.callbacks import BaseCallback, EvalCallback, StopTrainingOnRewardThreshold
from stable_baselines3.common.env_util import make_vec_env
from stable_baselines3.common.logger import configure
from stable_baselines3.common.type_aliases import ReplayBufferSamples
from stable_baselines3.dqn import dqn as sb3_dqn_module
from torch.nn import functional as F

from agents.scdqn import SCDQN, SPEC
from core.agents import AGENTS
from core.errors import UsageError


class Toy(gym.Env):
    """Any observation space, a few actions; dynamics do not matter for target tests."""

    def __init__(self, observation_space: spaces.Space, n_actions: int = 3) -> None:
        self.observation_space = observation_space
        self.action_space = spaces.Discrete(n_actions)

    def reset(self, *, seed: int | None = None, options: dict | None = None) -> tuple[np.ndarray, dict]:
        super().reset(seed=seed)
        return self.observation_space.sample(), {}

    def step(self, action: int) -> tuple[np.ndarray, float, bool, bool, dict]:
        return self.observation_space.sample(), 0.0, False, False, {}


def hand_model(beta: float) -> SCDQN:
    """Linear Q-networks on 2-d observations: Q(e1) and Q(e2) are the columns of the weight matrix.

    target:  Q_t(e1) = [1.0, 2.0, 0.5]   Q_t(e2) = [0.0, 1.0, 3.0]
    online:  Q_o(e1) = [2.0, 0.0, 1.8]   Q_o(e2) = [1.0, 1.5, 2.0]
    """
    env = Toy(spaces.Box(-1.0, 1.0, (2,), np.float32))
    model = SCDQN("MlpPolicy", env, beta=beta, gamma=0.5, policy_kwargs={"net_arch": []}, device="cpu")
    with th.no_grad():
        for net, weight in (
            (model.q_net_target, [[1.0, 0.0], [2.0, 1.0], [0.5, 3.0]]),
            (model.q_net, [[2.0, 1.0], [0.0, 1.5], [1.8, 2.0]]),
        ):
            (linear,) = net.q_net
            linear.weight.copy_(th.tensor(weight))
            linear.bias.zero_()
    return model


def hand_batch(discounts: list[float] | None = None) -> ReplayBufferSamples:
    """(r=1, s'=e1, not done), (r=-1, s'=e2, terminated), (r=0.5, s'=e2, not done)."""
    column = lambda values: th.tensor(values, dtype=th.float32).reshape(-1, 1)  # noqa: E731
    return ReplayBufferSamples(
        observations=th.zeros(3, 2),
        actions=th.zeros(3, 1, dtype=th.long),
        next_observations=th.tensor([[1.0, 0.0], [0.0, 1.0], [0.0, 1.0]]),
        dones=column([0.0, 1.0, 0.0]),
        rewards=column([1.0, -1.0, 0.5]),
        discounts=None if discounts is None else column(discounts),
    )


# By hand, gamma = 0.5. Selector q_b = q_t - beta (q_t - q_o); value q_t[argmax q_b].
#   beta 0: e1 argmax [1, 2, .5] = 1 -> 2.0;  e2 argmax [0, 1, 3] = 2 -> 3.0
#           y = [1 + .5*2, -1, .5 + .5*3] = [2.0, -1.0, 2.0]
#   beta 1: q_b = q_o. e1 argmax [2, 0, 1.8] = 0 -> q_t = 1.0;  e2 argmax [1, 1.5, 2] = 2 -> 3.0
#           y = [1 + .5*1, -1, .5 + .5*3] = [1.5, -1.0, 2.0]
#   beta 3: q_b = 3 q_o - 2 q_t. e1 [4, -4, 4.4] -> a=2, q_t = 0.5;  e2 [3, 2.5, 0] -> a=0, q_t = 0.0
#           y = [1 + .5*.5, -1, .5 + .5*0] = [1.25, -1.0, 0.5]
@pytest.mark.parametrize(
    ("beta", "expected"), [(0.0, [2.0, -1.0, 2.0]), (1.0, [1.5, -1.0, 2.0]), (3.0, [1.25, -1.0, 0.5])]
)
def test_hand_computed_targets(beta: float, expected: list[float]) -> None:
    target = hand_model(beta).target_q_values(hand_batch())
    assert target.shape == (3, 1)
    assert target.flatten().tolist() == pytest.approx(expected, abs=1e-6)


def test_n_step_discounts_replace_gamma() -> None:
    # beta 0 values as above (2.0 for e1, 3.0 for e2) with per-sample discounts gamma^n:
    # y = [1 + .25*2, -1 (terminated), .5 + .125*3] = [1.5, -1.0, 0.875]
    target = hand_model(0.0).target_q_values(hand_batch(discounts=[0.25, 0.25, 0.125]))
    assert target.flatten().tolist() == pytest.approx([1.5, -1.0, 0.875], abs=1e-6)
    model = SCDQN("MlpPolicy", "CartPole-v1", n_steps=3, device="cpu")
    assert isinstance(model.replay_buffer, NStepReplayBuffer) and model.replay_buffer.n_steps == 3


def test_truncation_bootstraps_termination_does_not() -> None:
    model = hand_model(3.0)
    buffer = ReplayBuffer(4, model.observation_space, model.action_space, device="cpu")
    e1, zero = np.array([[1.0, 0.0]]), np.zeros((1, 2))
    for infos in ([{"TimeLimit.truncated": True}], [{}]):  # truncated, then terminated
        buffer.add(zero, e1, np.array([0]), np.array([1.0]), np.array([True]), infos)
    batch = buffer._get_samples(np.array([0, 1]))
    assert batch.dones.flatten().tolist() == [0.0, 1.0]
    # truncated: 1 + 0.5 * Q_t(e1)[2] = 1.25; terminated: reward only
    assert model.target_q_values(batch).flatten().tolist() == pytest.approx([1.25, 1.0])


def random_batch(n: int, obs_dim: int, seed: int) -> ReplayBufferSamples:
    g = th.Generator().manual_seed(seed)
    return ReplayBufferSamples(
        observations=th.randn(n, obs_dim, generator=g),
        actions=th.randint(0, 2, (n, 1), generator=g),
        next_observations=th.randn(n, obs_dim, generator=g),
        dones=(th.rand(n, 1, generator=g) < 0.3).float(),
        rewards=th.randn(n, 1, generator=g),
    )


def perturb_target(model: SCDQN) -> None:
    with th.no_grad():
        for p in model.q_net_target.parameters():
            p.add_(0.3 * th.randn_like(p))


def test_beta0_equals_sb3_dqn_target(monkeypatch: pytest.MonkeyPatch) -> None:
    ours = SCDQN("MlpPolicy", "CartPole-v1", beta=0.0, seed=1, device="cpu")
    perturb_target(ours)
    theirs = DQN("MlpPolicy", "CartPole-v1", seed=2, device="cpu")
    theirs.policy.load_state_dict(ours.policy.state_dict())
    batch = random_batch(64, 4, seed=3)
    captured: dict[str, th.Tensor] = {}

    def recording_loss(current: th.Tensor, target: th.Tensor) -> th.Tensor:
        captured["target"] = target.clone()
        return F.smooth_l1_loss(current, target)

    # SB3's own train() computes the DQN target; record what it feeds to the Huber loss.
    monkeypatch.setattr(sb3_dqn_module, "F", SimpleNamespace(smooth_l1_loss=recording_loss))
    monkeypatch.setattr(theirs.replay_buffer, "sample", lambda *args, **kwargs: batch)
    theirs.set_logger(configure(None, [""]))
    theirs.train(gradient_steps=1, batch_size=64)
    assert th.equal(ours.target_q_values(batch), captured["target"])


def test_beta1_equals_double_dqn_target() -> None:
    model = SCDQN("MlpPolicy", "CartPole-v1", beta=1.0, seed=4, device="cpu")
    perturb_target(model)
    batch = random_batch(64, 4, seed=5)
    with th.no_grad():  # Double DQN: select with the online network, evaluate with the target network
        best = model.q_net(batch.next_observations).argmax(dim=1, keepdim=True)
        value = model.q_net_target(batch.next_observations).gather(1, best)
    expected = batch.rewards + (1 - batch.dones) * model.gamma * value
    assert th.allclose(model.target_q_values(batch), expected, atol=1e-6)
    model.beta = 3.0  # the test can tell the estimators apart on this batch
    assert not th.allclose(model.target_q_values(batch), expected, atol=1e-6)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"tau": 0.005}, "Polyak"),
        ({"beta": -1.0}, "beta"),
        ({"target_update_interval": 0}, "gradient updates"),
    ],
)
def test_bad_hyperparameters_rejected(kwargs: dict, message: str) -> None:
    with pytest.raises(UsageError, match=message):
        SCDQN("MlpPolicy", "CartPole-v1", device="cpu", **kwargs)


def filled(model: SCDQN, n: int = 64) -> SCDQN:
    rng = np.random.default_rng(0)
    shape, dtype = model.observation_space.shape, model.observation_space.dtype
    for _ in range(n):
        obs, nxt = (rng.integers(0, 256, (1, *shape)).astype(dtype) for _ in range(2))
        model.replay_buffer.add(
            obs, nxt, rng.integers(0, 2, 1), rng.normal(size=1), rng.random(1) < 0.1, [{}]
        )
    model.set_logger(configure(None, [""]))
    return model


def nets_equal(model: SCDQN) -> bool:
    pairs = zip(model.q_net.parameters(), model.q_net_target.parameters(), strict=True)
    return all(th.equal(a, b) for a, b in pairs)


def test_target_copied_every_interval_of_gradient_updates() -> None:
    model = filled(SCDQN("MlpPolicy", "CartPole-v1", target_update_interval=3, device="cpu"))
    model.train(gradient_steps=2, batch_size=8)
    assert not nets_equal(model)
    for _ in range(10):  # env steps do not copy the target (SB3's DQN would)
        model._on_step()
    assert not nets_equal(model)
    model.train(gradient_steps=1, batch_size=8)
    assert model._n_updates == 3 and nets_equal(model)


def test_predict_draws_epsilon_per_env() -> None:
    model = SCDQN("MlpPolicy", Toy(spaces.Box(-1.0, 1.0, (2,), np.float32)), seed=0, device="cpu")
    obs = np.tile(np.array([[0.3, -0.7]], np.float32), (300, 1))  # 300 envs, one observation
    greedy = int(model.q_values(obs[:1]).argmax())
    model.exploration_rate = 0.0
    assert (model.predict(obs)[0] == greedy).all()
    model.exploration_rate = 1.0
    actions = model.predict(obs)[0]
    assert set(actions.tolist()) == {0, 1, 2} and (actions == greedy).sum() < 150
    # eps 0.5: each env explores on its own coin, so ~2/3 of envs act greedily (SB3's DQN: all or ~1/3)
    model.exploration_rate = 0.5
    assert 150 < (model.predict(obs)[0] == greedy).sum() < 250
    assert model.predict(obs, deterministic=True)[0].tolist() == [greedy] * 300
    single, _ = model.predict(obs[0], deterministic=True)
    assert single.shape == () and int(single) == greedy


class ActionRecorder(BaseCallback):
    def __init__(self) -> None:
        super().__init__()
        self.actions: list[int] = []

    def _on_step(self) -> bool:
        self.actions.append(int(self.locals["actions"][0]))
        return True


def first_actions(seed: int) -> list[int]:
    model = SCDQN(
        "MlpPolicy", "CartPole-v1", seed=seed, learning_starts=5, train_freq=1, exploration_fraction=0.5,
        exploration_final_eps=0.0, device="cpu",
    )  # fmt: skip
    recorder = ActionRecorder()
    model.learn(20, callback=recorder)
    return recorder.actions


def test_same_seed_same_first_actions() -> None:
    assert first_actions(7) == first_actions(7)
    assert first_actions(7) != first_actions(8)


def test_learn_save_load_same_actions(tmp_path) -> None:
    model = SCDQN(
        "MlpPolicy", "CartPole-v1", seed=0, learning_starts=50, target_update_interval=20,
        policy_kwargs={"net_arch": [32]}, device="cpu",
    )  # fmt: skip
    model.learn(300)
    assert model._n_updates > 0
    obs = np.stack([model.observation_space.sample() for _ in range(50)])
    model.save(tmp_path / "model.zip")
    loaded = SCDQN.load(tmp_path / "model.zip", device="cpu")
    assert loaded.beta == model.beta and loaded.target_update_interval == 20
    np.testing.assert_array_equal(
        loaded.predict(obs, deterministic=True)[0], model.predict(obs, deterministic=True)[0]
    )
    np.testing.assert_array_equal(loaded.q_values(obs), model.q_values(obs))


def cnn_model(**kwargs) -> SCDQN:
    env = Toy(spaces.Box(0, 255, (4, 36, 36), np.uint8))
    return filled(SCDQN("CnnPolicy", env, seed=0, learning_rate=1e-3, device="cpu", **kwargs))


def train_same_batches(models: list[SCDQN], steps: int) -> None:
    for step in range(steps):
        for model in models:
            np.random.seed(step)  # SB3's buffer samples with the global numpy generator
            model.train(gradient_steps=1, batch_size=16)


def assert_same_parameters(a: SCDQN, b: SCDQN) -> None:
    # Float reordering moves Adam's near-zero-gradient coordinates by ~1e-5 (lr 1e-3); a layout mismatch
    # in the fused optimizer moves weights by ~lr per step.
    for p, q in zip(a.q_net.parameters(), b.q_net.parameters(), strict=True):
        assert th.allclose(p, q, atol=2e-4), (p - q).abs().max()


def test_channels_last_and_fused_optimizer_keep_the_math(tmp_path) -> None:
    fast = cnn_model()  # CPU + CNN: channels_last and fused Adam by default
    plain = cnn_model(channels_last=False, policy_kwargs={"optimizer_kwargs": {"foreach": False}})
    conv = fast.q_net.features_extractor.cnn[0].weight
    assert conv.is_contiguous(memory_format=th.channels_last) and not conv.is_contiguous()
    assert fast.policy.optimizer.defaults["fused"] and not plain.policy.optimizer.defaults.get("fused")
    x = th.randint(0, 256, (5, 4, 36, 36), dtype=th.uint8)
    assert th.equal(fast._preprocess(x), x.float() / 255.0)
    train_same_batches([fast, plain], steps=5)
    assert_same_parameters(fast, plain)
    # Load a channels_last checkpoint into contiguous weights: the fused optimizer's state must follow
    # the parameters' memory layout, or its updates are silently wrong.
    fast.save(tmp_path / "fast.zip")
    loaded = SCDQN.load(tmp_path / "fast.zip", env=fast.get_env(), custom_objects={"channels_last": False})
    assert loaded.q_net.features_extractor.cnn[0].weight.is_contiguous()
    loaded.replay_buffer = fast.replay_buffer
    loaded.set_logger(configure(None, [""]))
    train_same_batches([fast, loaded], steps=3)
    assert_same_parameters(fast, loaded)


def test_registered_spec() -> None:
    assert AGENTS.get("scdqn") is SPEC
    assert SPEC.algorithm is SCDQN and SPEC.value_based and SPEC.action_spaces == (spaces.Discrete,)


@pytest.mark.slow
def test_cartpole_reaches_475_within_100k_steps_on_most_seeds() -> None:
    """The spec's CPU target with zoo.yaml's classic settings (target copy every 128 updates); minutes."""
    reached = 0
    for seed in range(3):
        model = SCDQN(
            "MlpPolicy", "CartPole-v1", learning_rate=2.3e-3, batch_size=64, buffer_size=100_000,
            learning_starts=1000, target_update_interval=128, train_freq=256, gradient_steps=128,
            exploration_fraction=0.16, exploration_final_eps=0.04, policy_kwargs={"net_arch": [256, 256]},
            seed=seed, device="cpu",
        )  # fmt: skip
        evaluation = EvalCallback(
            make_vec_env("CartPole-v1", n_envs=1, seed=seed + 1000), n_eval_episodes=10, eval_freq=5000,
            callback_on_new_best=StopTrainingOnRewardThreshold(reward_threshold=475), verbose=0,
        )  # fmt: skip
        model.learn(100_000, callback=evaluation)
        reached += evaluation.best_mean_reward >= 475
    assert reached >= 2
