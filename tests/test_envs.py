"""Env families: gymnasium's env checker, Atari training vs evaluation protocols, both Atari backends,
the exact SB3 stream of the ``wrappers`` backend, and lookup through the ``zoo.envs`` entry points."""

from __future__ import annotations

from importlib.util import find_spec
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
import pytest
from gymnasium.utils.env_checker import check_env
from pydantic import ValidationError
from stable_baselines3.common.atari_wrappers import ClipRewardEnv
from stable_baselines3.common.monitor import Monitor
from stable_baselines3.common.vec_env import VecEnv

from core.envs import EnvOptions, family_for
from core.errors import UsageError
from envs.atari import FAMILY as ATARI
from envs.atari import AtariOptions, NativeAtariVecEnv
from envs.classic import FAMILY as CLASSIC
from envs.mujoco import FAMILY as MUJOCO

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning:gymnasium.*")

ATARI_CHECKED = ["ALE/Pong-v5", "ALE/Breakout-v5", "ALE/SpaceInvaders-v5"]
BACKENDS = ["wrappers", "native"]


def random_actions(env: VecEnv | gym.Env, steps: int, seed: int = 0) -> np.ndarray:
    n_actions = int(env.action_space.n)
    return np.random.default_rng(seed).integers(0, n_actions, size=steps)


def atari_vec_env(game: str, backend: str, *, training: bool, seed: int = 0, **options: Any) -> VecEnv:
    atari = AtariOptions(backend=backend, **options)
    return ATARI.make_vec_env(game, options=atari, n_envs=1, seed=seed, training=training)


def play_until_game_over(env: VecEnv, max_steps: int = 3000) -> tuple[list[float], list[dict[str, Any]]]:
    """Random play from reset until the first ``info["episode"]``; rewards and the infos of dones."""
    env.reset()
    rewards: list[float] = []
    done_infos: list[dict[str, Any]] = []
    for action in random_actions(env, max_steps):
        _, reward, done, infos = env.step(np.array([action]))
        rewards.append(float(reward[0]))
        if done[0]:
            done_infos.append(infos[0])
            if "episode" in infos[0]:
                return rewards, done_infos
    raise AssertionError(f"no game over within {max_steps} steps")


# ---------------------------------------------------------------- classic control and MuJoCo


@pytest.mark.parametrize("env_id", CLASSIC.env_ids())
def test_classic_envs_pass_the_env_checker(env_id: str) -> None:
    env = CLASSIC.make_env(env_id, options=EnvOptions(), training=True, seed=0)
    check_env(env, skip_render_check=True)  # render_mode "human" would open a window
    assert isinstance(env.observation_space, gym.spaces.Box)
    assert CLASSIC.observation_kind == "vector"


def test_classic_lists_lunar_lander_only_with_box2d() -> None:
    listed = "LunarLander-v3" in CLASSIC.env_ids()
    assert listed == (find_spec("Box2D") is not None)


def test_classic_seed_gives_a_reproducible_stream() -> None:
    def rollout(seed: int) -> list[np.ndarray]:
        env = CLASSIC.make_env("CartPole-v1", options=EnvOptions(), training=True, seed=seed)
        return [env.reset()[0], *(env.step(env.action_space.sample())[0] for _ in range(5))]

    assert all(np.array_equal(a, b) for a, b in zip(rollout(3), rollout(3), strict=True))
    assert not np.array_equal(rollout(3)[0], rollout(4)[0])


@pytest.mark.parametrize("env_id", MUJOCO.env_ids())
def test_mujoco_envs_pass_the_env_checker(
    env_id: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    pytest.importorskip("mujoco")
    monkeypatch.chdir(tmp_path)  # MuJoCo writes its warnings to ./MUJOCO_LOG.TXT
    env = MUJOCO.make_env(env_id, options=EnvOptions(), training=True, seed=0)
    check_env(env, skip_render_check=True)  # render_mode "human" needs a display
    assert len(MUJOCO.env_ids()) == 11


def test_mujoco_env_kwargs_reach_the_constructor() -> None:
    pytest.importorskip("mujoco")
    options = EnvOptions(env_kwargs={"terminate_when_unhealthy": False, "ctrl_cost_weight": 0.0})
    env = MUJOCO.make_env("Hopper-v5", options=options, training=True)
    assert env.unwrapped._terminate_when_unhealthy is False
    assert env.unwrapped._ctrl_cost_weight == 0.0
    with pytest.raises(UsageError, match="bad env_kwargs"):
        MUJOCO.make_env("Hopper-v5", options=EnvOptions(env_kwargs={"bogus": 1}), training=True)


# ---------------------------------------------------------------- Atari: single env (make_env)


@pytest.mark.parametrize("training", [True, False], ids=["training", "eval"])
@pytest.mark.parametrize("env_id", ATARI_CHECKED)
def test_atari_env_passes_the_env_checker(env_id: str, training: bool) -> None:
    env = ATARI.make_env(env_id, options=AtariOptions(), training=training, seed=0)
    assert env.observation_space == gym.spaces.Box(0, 255, (4, 84, 84), np.uint8)
    # Skipped: rendering in "human" mode (a window) and re-making the env from env.spec (SB3's
    # wrappers do not record their constructor arguments); rgb_array rendering is tested below.
    check_env(env, skip_render_check=True, skip_close_check=True)
    obs, _ = env.reset(seed=1)
    assert obs.shape == (4, 84, 84) and obs.dtype == np.uint8
    assert not obs[:3].any() and obs[3].any()  # zero-padded stack, as VecFrameStack
    next_obs = env.step(0)[0]
    np.testing.assert_array_equal(next_obs[:3], obs[1:])  # channel-first, oldest frame first


def test_atari_env_renders_rgb_frames_and_closes_twice() -> None:
    env = ATARI.make_env("ALE/Pong-v5", options=AtariOptions(), training=False, render_mode="rgb_array")
    env.reset(seed=0)
    frame = env.render()
    assert isinstance(frame, np.ndarray) and frame.shape == (210, 160, 3) and frame.dtype == np.uint8
    env.close()
    env.close()


def test_atari_eval_env_plays_all_lives_in_one_episode() -> None:
    env = ATARI.make_env("ALE/Breakout-v5", options=AtariOptions(), training=False, seed=0)
    env.reset()
    lives_seen = []
    for action in random_actions(env, 3000):
        _, _, terminated, truncated, info = env.step(int(action))
        lives_seen.append(info["lives"])
        if terminated or truncated:
            break
    assert terminated and lives_seen[0] == 5 and sorted(set(lives_seen)) == [0, 1, 2, 3, 4, 5]


def test_atari_training_env_ends_episode_on_life_loss() -> None:
    env = ATARI.make_env("ALE/Breakout-v5", options=AtariOptions(), training=True, seed=0)
    env.reset()
    for action in random_actions(env, 1000):
        _, _, terminated, _, info = env.step(int(action))
        if terminated:
            break
    assert terminated and info["lives"] == 4


# ---------------------------------------------------------------- Atari: vector envs, both backends


@pytest.mark.parametrize("backend", BACKENDS)
def test_atari_vec_env_observations(backend: str) -> None:
    env = ATARI.make_vec_env(
        "ALE/Pong-v5",
        options=AtariOptions(backend=backend),
        n_envs=2,
        seed=0,
        training=True,
    )
    assert env.observation_space == gym.spaces.Box(0, 255, (4, 84, 84), np.uint8)
    obs = env.reset()
    assert obs.shape == (2, 4, 84, 84) and obs.dtype == np.uint8
    obs, reward, done, _ = env.step(np.array([0, 1]))
    assert obs.shape == (2, 4, 84, 84) and reward.dtype == np.float32 and done.shape == (2,)
    env.close()


@pytest.mark.parametrize("backend", BACKENDS)
def test_atari_eval_gives_raw_scores_and_whole_games(backend: str) -> None:
    env = atari_vec_env("ALE/SpaceInvaders-v5", backend, training=False)
    rewards, done_infos = play_until_game_over(env)
    assert len(done_infos) == 1  # the first episode end is the game over: no life-loss ends
    assert max(rewards) > 1  # invaders are worth 5 to 30 points
    assert done_infos[0]["episode"]["r"] == pytest.approx(sum(rewards))
    assert done_infos[0]["terminal_observation"].shape == (4, 84, 84)


@pytest.mark.parametrize("backend", BACKENDS)
def test_atari_training_clips_rewards_ends_on_life_loss_and_logs_raw_scores(backend: str) -> None:
    env = atari_vec_env("ALE/SpaceInvaders-v5", backend, training=True)
    rewards, done_infos = play_until_game_over(env)
    assert set(rewards) <= {-1.0, 0.0, 1.0} and sum(rewards) > 0
    assert len(done_infos) > 1 and all("episode" not in info for info in done_infos[:-1])
    assert all("terminal_observation" in info for info in done_infos)
    # The logged score is the raw one: each clipped +1 was worth at least 5 points.
    assert done_infos[-1]["episode"]["r"] >= 5 * sum(rewards)


@pytest.mark.parametrize("n_envs", [1, 2])
def test_wrappers_backend_gives_exactly_the_sb3_atari_stream(n_envs: int) -> None:
    import ale_py
    from stable_baselines3.common.env_util import make_atari_env
    from stable_baselines3.common.vec_env import VecFrameStack, VecTransposeImage

    gym.register_envs(ale_py)
    seed, sticky = 5, 0.25
    env_kwargs = {"frameskip": 1, "repeat_action_probability": sticky}
    theirs = VecTransposeImage(
        VecFrameStack(make_atari_env("ALE/Breakout-v5", n_envs=n_envs, seed=seed, env_kwargs=env_kwargs), 4)
    )
    options = AtariOptions(backend="wrappers", repeat_action_probability=sticky)
    ours = ATARI.make_vec_env("ALE/Breakout-v5", options=options, n_envs=n_envs, seed=seed, training=True)
    np.testing.assert_array_equal(theirs.reset(), ours.reset())
    actions = np.random.default_rng(0).integers(0, 4, size=(400, n_envs))
    life_losses = game_overs = 0
    for step, action in enumerate(actions):
        obs_a, reward_a, done_a, infos_a = theirs.step(action)
        obs_b, reward_b, done_b, infos_b = ours.step(action)
        assert np.array_equal(obs_a, obs_b), f"observations differ at step {step}"
        assert np.array_equal(reward_a, reward_b) and np.array_equal(done_a, done_b), f"step {step}"
        for i in np.flatnonzero(done_a):
            np.testing.assert_array_equal(
                infos_a[i]["terminal_observation"], infos_b[i]["terminal_observation"]
            )
            assert ("episode" in infos_a[i]) == ("episode" in infos_b[i])
            if "episode" in infos_a[i]:
                assert infos_a[i]["episode"]["r"] == infos_b[i]["episode"]["r"]
            game_overs += "episode" in infos_a[i]
            life_losses += "episode" not in infos_a[i]
    assert life_losses >= 3 and game_overs >= 1  # the comparison crossed life losses and a reset


def test_native_backend_life_loss_semantics() -> None:
    env = atari_vec_env("ALE/Breakout-v5", "native", training=True)
    assert isinstance(env, NativeAtariVecEnv)
    previous = env.reset()
    for action in random_actions(env, 500):
        obs, _, done, infos = env.step(np.array([action]))
        if done[0]:
            break
        previous = obs
    info = infos[0]
    assert done[0] and "episode" not in info and info["TimeLimit.truncated"] is False
    terminal = info["terminal_observation"]
    np.testing.assert_array_equal(terminal[:3], previous[0, 1:])  # the last stack of the lost life
    # The next life starts like a new episode of VecFrameStack: zero padding, then the newest frame.
    assert not obs[0, :3].any()
    np.testing.assert_array_equal(obs[0, 3], terminal[3])
    after, *_ = env.step(np.array([0]))
    assert not after[0, :2].any()
    np.testing.assert_array_equal(after[0, 2], terminal[3])


def test_native_backend_truncation_and_episode_info() -> None:
    env = atari_vec_env("ALE/Pong-v5", "native", training=False, max_episode_frames=200)
    env.reset()
    steps = 0
    for action in random_actions(env, 100):
        _, _, done, infos = env.step(np.array([action]))
        steps += 1
        if done[0]:
            break
    assert done[0] and infos[0]["TimeLimit.truncated"] is True
    assert infos[0]["episode"]["l"] == steps == 50  # 200 frames at frame skip 4
    # evaluate_policy trusts info["episode"] when the env reports being Monitor-wrapped.
    assert env.env_is_wrapped(Monitor) == [True] and env.env_is_wrapped(ClipRewardEnv) == [False]


def test_native_backend_seeds_are_reproducible() -> None:
    def stream(seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        env = ATARI.make_vec_env(
            "ALE/Breakout-v5", options=AtariOptions(backend="native"), n_envs=2, seed=seed, training=True
        )
        observations, rewards, dones = [env.reset()], [], []
        for action in np.random.default_rng(0).integers(0, 4, size=(300, 2)):
            obs, reward, done, _ = env.step(action)
            observations.append(obs)
            rewards.append(reward)
            dones.append(done)
        env.close()
        return np.array(observations), np.array(rewards), np.array(dones)

    first, again, other = stream(3), stream(3), stream(4)
    assert first[2].any()
    for a, b in zip(first, again, strict=True):
        np.testing.assert_array_equal(a, b)
    assert not np.array_equal(first[0], other[0])


def test_backend_choice() -> None:
    auto = ATARI.make_vec_env("ALE/Pong-v5", options=AtariOptions(), n_envs=1, seed=0, training=True)
    assert isinstance(auto, NativeAtariVecEnv)
    with_kwargs = AtariOptions(env_kwargs={"mode": 0})
    assert not isinstance(
        ATARI.make_vec_env("ALE/Pong-v5", options=with_kwargs, n_envs=1, seed=0, training=True),
        NativeAtariVecEnv,
    )
    with pytest.raises(UsageError, match="native"):
        native = AtariOptions(backend="native", env_kwargs={"mode": 0})
        ATARI.make_vec_env("ALE/Pong-v5", options=native, n_envs=1, seed=0, training=True)


def test_atari_options_are_validated() -> None:
    with pytest.raises(ValidationError):
        AtariOptions(sticky_actions=0.1)
    with pytest.raises(ValidationError):
        AtariOptions(frame_skip=0)
    with pytest.raises(ValidationError):
        AtariOptions(backend="gpu")


# ---------------------------------------------------------------- lookup through entry points


def test_atari_lists_every_v5_game() -> None:
    ids = ATARI.env_ids()
    assert len(ids) > 100 and {"ALE/Pong-v5", "ALE/MontezumaRevenge-v5", "ALE/Tetris-v5"} <= set(ids)
    assert all(env_id.startswith("ALE/") and env_id.endswith("-v5") for env_id in ids)
    assert len(set(ids)) == len(ids) and ids[:3] == ATARI_CHECKED  # familiar games first


@pytest.mark.parametrize(
    ("env_id", "family"),
    [("ALE/Pong-v5", ATARI), ("CartPole-v1", CLASSIC), ("Pendulum-v1", CLASSIC), ("Hopper-v5", MUJOCO)],
)
def test_family_for_finds_the_family_through_entry_points(env_id: str, family: Any) -> None:
    assert family_for(env_id) is family


@pytest.mark.parametrize(
    ("typo", "suggestion"), [("ALE/Pnog-v5", "ALE/Pong-v5"), ("CartPol-v1", "CartPole-v1")]
)
def test_family_for_suggests_the_closest_id(typo: str, suggestion: str) -> None:
    with pytest.raises(UsageError, match=f"did you mean {suggestion}"):
        family_for(typo)
