"""BRAC and the offline baselines: divergence estimates, tanh-Gaussian densities, dataset checks, the
offline loop (gradient steps, callbacks, no env steps), a hand-computed BRAC-v target, save/load."""

from __future__ import annotations

import math
from typing import Any

import gymnasium as gym
import numpy as np
import pytest
import torch as th
from stable_baselines3.common.callbacks import BaseCallback
from stable_baselines3.common.env_util import make_vec_env
from stable_baselines3.common.logger import configure

from agents.bc import BC
from agents.brac import BRAC
from agents.brac import brac as brac_module
from agents.brac.divergences import dual_critic_loss, kl_dual, kl_primal, mmd_laplacian, w_dual
from agents.offline_sac import OfflineSAC
from core.agents import AGENTS
from core.datasets import TransitionDataset
from core.errors import UsageError
from core.networks import TanhGaussian
from core.offline import OfflineAlgorithm, OfflineBatch

th.set_num_threads(1)
SMALL = {"actor_net_arch": (32, 32), "critic_net_arch": (32, 32)}
BRAC_SMALL = {**SMALL, "behavior_net_arch": (32, 32), "dual_critic_net_arch": (32, 32)}


def pendulum_dataset(n: int = 2000, seed: int = 0) -> TransitionDataset:
    """``n`` transitions of uniformly random actions in Pendulum-v1 (episodes truncated at 200)."""
    env = gym.make("Pendulum-v1")
    rng = np.random.default_rng(seed)
    rows: dict[str, list[Any]] = {k: [] for k in ("obs", "act", "rew", "next", "term", "trunc")}
    obs, _ = env.reset(seed=seed)
    for _ in range(n):
        action = rng.uniform(-2.0, 2.0, size=1).astype(np.float32)
        next_obs, reward, terminated, truncated, _ = env.step(action)
        for key, value in zip(rows, (obs, action, reward, next_obs, terminated, truncated), strict=True):
            rows[key].append(value)
        obs = env.reset()[0] if terminated or truncated else next_obs
    env.close()
    return TransitionDataset(
        observations=np.array(rows["obs"], dtype=np.float32),
        actions=np.array(rows["act"], dtype=np.float32),
        rewards=np.array(rows["rew"], dtype=np.float32),
        next_observations=np.array(rows["next"], dtype=np.float32),
        terminated=np.array(rows["term"], dtype=bool),
        truncated=np.array(rows["trunc"], dtype=bool),
    )


@pytest.fixture(scope="module")
def dataset() -> TransitionDataset:
    return pendulum_dataset()


class CountSteps(gym.Wrapper):  # type: ignore[type-arg]
    steps = 0

    def step(self, action: Any) -> Any:
        CountSteps.steps += 1
        return self.env.step(action)


def make_model(cls: type[OfflineAlgorithm], dataset: TransitionDataset, **kwargs: Any) -> OfflineAlgorithm:
    env = make_vec_env("Pendulum-v1", n_envs=1, seed=0, wrapper_class=CountSteps)
    defaults = BRAC_SMALL if cls is BRAC else ({"net_arch": (32, 32)} if cls is BC else SMALL)
    model = cls("MlpPolicy", env, seed=0, device="cpu", batch_size=64, **{**defaults, **kwargs})
    model.set_logger(configure(None, []))
    model.set_dataset(dataset)
    return model


def gaussian(mean: float, log_std: float, batch: int, dim: int = 2, scale: float = 1.0) -> TanhGaussian:
    ones = th.ones(batch, dim)
    return TanhGaussian(mean * ones, log_std * ones, th.full((dim,), scale), th.zeros(dim))


# --------------------------------------------------------------------------------------------------
# Divergences and densities


def test_kl_estimator_matches_the_closed_form_of_the_underlying_gaussians() -> None:
    # KL is invariant under the (invertible) tanh and affine maps, so the tanh-Gaussian estimate must
    # match the closed form of the pre-tanh Gaussians (means and stds keep samples away from the clip).
    th.manual_seed(0)
    mu_p, log_std_p, mu_b, log_std_b = 0.1, math.log(0.2), -0.05, math.log(0.3)
    pi, pi_b = gaussian(mu_p, log_std_p, 20_000, scale=2.0), gaussian(mu_b, log_std_b, 20_000, scale=2.0)
    std_p, std_b = math.exp(log_std_p), math.exp(log_std_b)
    closed = 2 * (math.log(std_b / std_p) + (std_p**2 + (mu_p - mu_b) ** 2) / (2 * std_b**2) - 0.5)
    estimate = kl_primal(pi, pi_b, n_samples=4).mean().item()
    assert estimate == pytest.approx(closed, rel=0.03)
    assert kl_primal(pi, pi, n_samples=4).abs().max().item() < 1e-4  # same policy: log pi - log pi = 0


def test_mmd_is_zero_for_identical_samples_and_positive_for_different_policies() -> None:
    th.manual_seed(0)
    point = gaussian(0.3, -40.0, 8)  # std ~ 0: every sample is the same action
    assert mmd_laplacian(point, point).abs().max().item() < 1e-6
    near, far = gaussian(0.0, math.log(0.3), 512), gaussian(1.5, math.log(0.3), 512)
    same = mmd_laplacian(near, gaussian(0.0, math.log(0.3), 512)).mean().item()
    different = mmd_laplacian(near, far).mean().item()
    assert different > 0 and different > 3 * same


def test_dual_estimates_and_critic_loss() -> None:
    c_p, c_b = th.tensor([0.5, -1.0]), th.tensor([0.2, 2.0])
    softplus = th.nn.functional.softplus
    expected = -softplus(c_b) + th.log(softplus(c_p) + 1e-8) + 1.0
    assert th.allclose(kl_dual(c_p, c_b), expected)
    assert th.allclose(w_dual(c_p, c_b), c_p - c_b)
    # A critic linear in a with slope 3 has |grad| = 3 everywhere: penalty 5 * (3 - 1)^2 = 20.
    obs, a_p, a_b = th.zeros(4, 1), th.zeros(4, 1), th.ones(4, 1)
    loss = dual_critic_loss(lambda o, a: 3.0 * a[:, 0], w_dual, obs, a_p, a_b, penalty=5.0)
    assert loss.item() == pytest.approx(-(0.0 - 3.0) + 20.0, rel=1e-5)


def test_tanh_gaussian_log_prob_is_finite_at_the_bounds() -> None:
    mean = th.zeros(3, 2, requires_grad=True)
    dist = TanhGaussian(mean, th.full((3, 2), -5.0), th.tensor([2.0, 1.0]), th.tensor([0.0, 0.5]))
    bounds = th.tensor([[2.0, 1.5], [-2.0, -0.5], [2.0, -0.5]])  # exactly at high / low
    log_prob = dist.log_prob(bounds)
    log_prob.sum().backward()
    assert th.isfinite(log_prob).all() and mean.grad is not None and th.isfinite(mean.grad).all()
    actions, sampled_log_prob = dist.rsample(5)
    assert th.isfinite(sampled_log_prob).all() and actions.shape == (5, 3, 2)
    # Inside the bounds, the density integrates to ~1 (1-D check on a grid).
    one = TanhGaussian(th.zeros(1, 1), th.full((1, 1), -0.5), th.tensor([2.0]), th.tensor([0.0]))
    grid = th.linspace(-1.999, 1.999, 20_001).view(-1, 1, 1)
    assert th.trapezoid(one.log_prob(grid).exp().view(-1), grid.view(-1)).item() == pytest.approx(
        1.0, abs=1e-3
    )


# --------------------------------------------------------------------------------------------------
# set_dataset


def one_line_error(excinfo: pytest.ExceptionInfo[UsageError], *fragments: str) -> None:
    message = str(excinfo.value)
    assert "\n" not in message
    for fragment in fragments:
        assert fragment in message, message


def test_discrete_action_space_is_rejected() -> None:
    with pytest.raises(UsageError) as excinfo:
        BRAC("MlpPolicy", "CartPole-v1", device="cpu")
    one_line_error(excinfo, "Box", "Discrete")


def test_set_dataset_rejects_bad_data(dataset: TransitionDataset) -> None:
    model = make_model(BRAC, dataset)
    fields = dict(vars(dataset))
    wrong_shape = TransitionDataset(
        **{
            **fields,
            "observations": dataset.observations[:, :2],
            "next_observations": dataset.observations[:, :2],
        }
    )
    with pytest.raises(UsageError) as excinfo:
        model.set_dataset(wrong_shape)
    one_line_error(excinfo, "observations have shape (2,)", "Pendulum-v1 expects (3,)")
    rewards = dataset.rewards.copy()
    rewards[7] = np.nan
    with pytest.raises(UsageError) as excinfo:
        model.set_dataset(TransitionDataset(**{**fields, "rewards": rewards}))
    one_line_error(excinfo, "NaN", "transition 7")
    empty = TransitionDataset(**{key: value[:0] for key, value in fields.items() if key != "metadata"})
    with pytest.raises(UsageError) as excinfo:
        model.set_dataset(empty)
    one_line_error(excinfo, "empty")
    actions = dataset.actions.copy()
    actions[3] = 2.5
    with pytest.raises(UsageError) as excinfo:
        model.set_dataset(TransitionDataset(**{**fields, "actions": actions}))
    one_line_error(excinfo, "2.5", "transition 3", "[-2, 2]")
    with pytest.raises(UsageError) as excinfo:
        model.set_dataset(TransitionDataset(**{**fields, "actions": dataset.actions.astype(np.int64)}))
    one_line_error(excinfo, "dtype int64")


def test_set_dataset_discounts_and_next_actions() -> None:
    n = 6
    obs = np.arange(n + 1, dtype=np.float32)[:, None].repeat(3, axis=1)
    terminated = np.array([0, 0, 1, 0, 0, 0], dtype=bool)
    truncated = np.array([0, 0, 0, 0, 1, 0], dtype=bool)
    next_obs = obs[1:].copy()
    next_obs[2] = 99.0  # the terminal transition's s' is not the next row's s
    actions = np.linspace(-1, 1, n, dtype=np.float32)[:, None]
    data = TransitionDataset(obs[:-1], actions, np.zeros(n, np.float32), next_obs, terminated, truncated)
    model = BRAC("MlpPolicy", "Pendulum-v1", device="cpu", **BRAC_SMALL)
    model.set_dataset(data)
    stored = model.dataset_buffer
    assert stored is not None
    assert stored.discounts.tolist() == [1, 1, 0, 1, 1, 1]  # truncation bootstraps, termination does not
    expected_next = actions[[1, 2, 2, 4, 4, 5], 0]  # own action at episode ends and at the last row
    assert np.allclose(stored.next_actions[:, 0].numpy(), expected_next)


def test_set_dataset_of_a_large_dataset_is_fast() -> None:
    n = 200_000
    rng = np.random.default_rng(0)
    obs = rng.standard_normal((n, 3), dtype=np.float32)
    data = TransitionDataset(
        obs, rng.uniform(-2, 2, (n, 1)).astype(np.float32), np.zeros(n, np.float32), obs, np.zeros(n, bool),
        np.zeros(n, bool),
    )  # fmt: skip
    model = BRAC("MlpPolicy", "Pendulum-v1", device="cpu", **BRAC_SMALL)
    import time

    start = time.perf_counter()
    model.set_dataset(data)
    assert time.perf_counter() - start < 3.0  # 1M Hopper-sized transitions: see benchmarks/brac_speed.py


# --------------------------------------------------------------------------------------------------
# The offline loop


class EveryStep(BaseCallback):
    def __init__(self, stop_at: int | None = None) -> None:
        super().__init__()
        self.seen: list[int] = []
        self.stop_at = stop_at

    def _on_step(self) -> bool:
        self.seen.append(self.model.num_timesteps)
        return self.stop_at is None or self.model.num_timesteps < self.stop_at


def test_learn_offline_counts_gradient_steps_calls_back_every_step_and_never_steps_the_env(
    dataset: TransitionDataset,
) -> None:
    model = make_model(BRAC, dataset, behavior_steps=5, warm_start=3)
    CountSteps.steps = 0
    callback = EveryStep()
    model.learn_offline(12, callback=callback, log_interval=5)
    assert model.num_timesteps == 12 and model._n_updates == 12
    assert callback.seen == list(range(1, 13))
    model.learn(4, callback=(stopper := EveryStep(stop_at=14)), reset_num_timesteps=False)
    assert model.num_timesteps == 14 and stopper.seen == [13, 14]  # False stops after the step
    assert CountSteps.steps == 0


def test_learn_without_a_dataset_is_a_usage_error() -> None:
    model = BRAC("MlpPolicy", "Pendulum-v1", device="cpu", **BRAC_SMALL)
    with pytest.raises(UsageError) as excinfo:
        model.learn(10)
    one_line_error(excinfo, "set_dataset")


@pytest.mark.parametrize(
    ("cls", "kwargs"),
    [
        (BRAC, {"behavior_steps": 20, "warm_start": 10}),
        (BRAC, {"divergence": "mmd", "behavior_steps": 10, "warm_start": 0, "target_divergence": 0.05}),
        (
            BRAC,
            {"divergence": "kl_dual", "regularization": "policy", "test_policy": "max_q", "warm_start": 5},
        ),
        (BRAC, {"divergence": "w_dual", "warm_start": 5}),
        (BC, {}),
        (OfflineSAC, {"test_policy": "max_q"}),
    ],
)
def test_short_run_save_load_same_actions(
    cls: type[OfflineAlgorithm], kwargs: dict[str, Any], dataset: TransitionDataset, tmp_path: Any
) -> None:
    model = make_model(cls, dataset, **kwargs)
    model.learn_offline(40, log_interval=20)
    model.save(tmp_path / "model.zip")
    loaded = cls.load(tmp_path / "model.zip", env=model.get_env(), device="cpu")
    assert loaded.dataset_buffer is None  # the dataset is never pickled
    observations = dataset.observations[:16]
    actions, _ = model.predict(observations, deterministic=True)
    loaded_actions, _ = loaded.predict(observations, deterministic=True)
    assert actions.shape == (16, 1) and np.all(np.abs(actions) <= 2.0)
    if getattr(model, "test_policy", "deterministic") == "deterministic":
        assert np.array_equal(actions, loaded_actions)
    else:  # max_q samples: the same seed gives the same candidates
        th.manual_seed(1)
        a = model.predict(observations, deterministic=True)[0]
        th.manual_seed(1)
        assert np.array_equal(a, loaded.predict(observations, deterministic=True)[0])
    for name, parameter in model.policy.state_dict().items():
        assert th.equal(parameter, loaded.policy.state_dict()[name]), name
    loaded.set_dataset(dataset)
    loaded.set_logger(configure(None, []))
    loaded.learn_offline(5, reset_num_timesteps=False)  # the optimizers' state came back too
    assert loaded.num_timesteps == 45


def test_same_seed_same_training(dataset: TransitionDataset) -> None:
    first = make_model(BRAC, dataset, behavior_steps=5, warm_start=0).learn_offline(15)
    second = make_model(BRAC, dataset, behavior_steps=5, warm_start=0).learn_offline(15)
    for (name, a), b in zip(
        first.policy.state_dict().items(), second.policy.state_dict().values(), strict=True
    ):
        assert th.equal(a, b), name


def test_behavior_phase_fits_pi_b_then_freezes_it(dataset: TransitionDataset) -> None:
    model = make_model(BRAC, dataset, behavior_steps=30, warm_start=0)
    assert isinstance(model, BRAC) and model.behavior is not None
    before = [p.detach().clone() for p in model.behavior.parameters()]
    actor_before = [p.detach().clone() for p in model.actor.parameters()]
    model.learn_offline(30)
    after = [p.detach().clone() for p in model.behavior.parameters()]
    assert not all(th.equal(a, b) for a, b in zip(before, after, strict=True))
    assert all(th.equal(a, b.detach()) for a, b in zip(actor_before, model.actor.parameters(), strict=True))
    model.learn_offline(10, reset_num_timesteps=False)
    assert all(th.equal(a, b.detach()) for a, b in zip(after, model.behavior.parameters(), strict=True))


# --------------------------------------------------------------------------------------------------
# Hand-computed BRAC-v target


def member_q(model: BRAC, member: int, obs: th.Tensor, actions: th.Tensor) -> th.Tensor:
    """One Q-network of the target ensemble, computed layer by layer with plain matmuls."""
    x = th.cat([obs, actions], dim=-1)
    layers = list(model.critic_target.layers)
    for index, layer in enumerate(layers):
        x = x @ layer.weight[member] + layer.bias[member, 0]
        if index < len(layers) - 1:
            x = th.relu(x)
    return x[:, 0]


@pytest.mark.parametrize("regularization", ["value_penalty", "policy"])
def test_critic_target_matches_a_hand_computation(
    regularization: str, dataset: TransitionDataset, monkeypatch: pytest.MonkeyPatch
) -> None:
    model = make_model(BRAC, dataset, regularization=regularization, alpha=0.3, gamma=0.9, n_critics=3)
    assert isinstance(model, BRAC)
    with th.no_grad():  # make the target members differ
        for layer in model.critic_target.layers:
            layer.weight.add_(0.1 * th.randn_like(layer.weight))
    divergence = th.tensor([0.5, -1.0, 2.0, 0.25])
    monkeypatch.setattr(model, "_divergence", lambda *args: divergence)
    batch = OfflineBatch(
        observations=th.randn(4, 3),
        actions=th.rand(4, 1) * 4 - 2,
        rewards=th.tensor([1.0, -2.0, 0.5, 0.0]),
        next_observations=th.randn(4, 3),
        discounts=th.tensor([1.0, 0.0, 1.0, 1.0]),
        next_actions=th.zeros(4, 1),
    )
    th.manual_seed(5)
    target = model.critic_targets(batch)
    th.manual_seed(5)
    next_actions = model.actor(batch.next_observations).rsample(1)[0][0]
    q_min = (
        th.stack([member_q(model, j, batch.next_observations, next_actions) for j in range(3)]).min(0).values
    )
    penalty = 0.3 * divergence if regularization == "value_penalty" else 0.0
    expected = batch.rewards + 0.9 * batch.discounts * (q_min - penalty)
    assert th.allclose(target, expected, atol=1e-5)


def test_agents_are_registered_as_offline() -> None:
    for name, cls in (("brac", BRAC), ("bc", BC), ("offline_sac", OfflineSAC)):
        spec = AGENTS.get(name)
        assert spec.offline and spec.algorithm is cls
    assert brac_module.PRIMAL_DIVERGENCES == ("kl", "mmd")


def test_checkpoint_resume_is_exact(dataset: TransitionDataset, tmp_path: Any) -> None:
    from core.training_state import load_training_state, save_training_state

    straight = make_model(BRAC, dataset, behavior_steps=6, warm_start=2).learn_offline(16)
    first = make_model(BRAC, dataset, behavior_steps=6, warm_start=2).learn_offline(8)
    save_training_state(first, tmp_path / "checkpoint", include_replay=True)  # no replay: nothing to add
    resumed = load_training_state(BRAC, tmp_path / "checkpoint", first.get_env(), device="cpu")
    assert isinstance(resumed, BRAC) and resumed.num_timesteps == 8 and resumed._n_updates == 8
    resumed.set_logger(configure(None, []))
    resumed.set_dataset(dataset)
    resumed.learn_offline(8, reset_num_timesteps=False)
    for (name, a), b in zip(
        straight.policy.state_dict().items(), resumed.policy.state_dict().values(), strict=True
    ):
        assert th.equal(a, b), name
