"""The learned-reward VecEnv wrapper: the agent sees r_hat(o_t, a_t), info keeps the true reward, the
monitor keeps true returns, and the recorded recent steps split into whole-episode trajectories."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest
from stable_baselines3.common.vec_env import DummyVecEnv, VecMonitor

from core.errors import UsageError
from rewards.clips import cut_clips
from rewards.wrapper import LearnedRewardVecEnv, RecentSteps


def cartpole(n_envs: int = 2) -> VecMonitor:
    env = DummyVecEnv([lambda: gym.make("CartPole-v1") for _ in range(n_envs)])
    env.seed(0)
    return VecMonitor(env)


def fake_reward(observations: np.ndarray, actions: np.ndarray) -> np.ndarray:
    return (10 * observations[:, 0] + actions).astype(np.float32)


def test_rewards_come_from_the_observation_acted_in_and_the_action() -> None:
    env = LearnedRewardVecEnv(cartpole(), fake_reward, recent_steps=50)
    obs = env.reset()
    rng = np.random.default_rng(0)
    true_total, episodes = 0.0, []
    for _ in range(200):
        actions = rng.integers(0, 2, size=2)
        next_obs, rewards, _, infos = env.step(actions)
        np.testing.assert_allclose(rewards, fake_reward(obs, actions), rtol=1e-6)
        assert all(info["true_reward"] == 1.0 for info in infos)  # CartPole pays 1 per step
        true_total += sum(info["true_reward"] for info in infos)
        episodes += [info["episode"] for info in infos if "episode" in info]
        obs = next_obs
    # The monitor under the wrapper reports TRUE returns (CartPole: return == length).
    assert episodes and all(e["r"] == e["l"] for e in episodes)
    assert true_total == 400.0


def test_a_control_run_returns_the_env_reward_but_still_predicts_and_records() -> None:
    calls = []

    def counted(observations: np.ndarray, actions: np.ndarray) -> np.ndarray:
        calls.append(len(observations))
        return fake_reward(observations, actions)

    env = LearnedRewardVecEnv(cartpole(), counted, recent_steps=50, agent_reward="env")
    env.reset()
    for _ in range(30):
        _, rewards, _, infos = env.step(np.array([0, 1]))
        np.testing.assert_array_equal(rewards, [info["true_reward"] for info in infos])
        assert rewards.dtype == np.float32
    assert calls == [2] * 30  # the prediction's cost is paid every step, as in a learned-reward run
    assert env.recent is not None and env.recent.added == 30
    with pytest.raises(UsageError, match="agent_reward must be one of learned, env"):
        LearnedRewardVecEnv(cartpole(), counted, agent_reward="true")


def test_recent_steps_keep_episodes_apart_across_the_ring() -> None:
    recent = RecentSteps(n_envs=2, capacity=7, observation_shape=(1,), action_shape=())
    # env 0: episodes of 3 steps; env 1: one long episode. 10 steps overwrite the first 3.
    for t in range(10):
        dones = np.array([t % 3 == 2, False])
        recent.add(np.array([[t], [100 + t]], dtype=np.float32), np.array([t, t]), np.ones(2), dones)
    trajectories = recent.trajectories()
    env0 = [tr for tr in trajectories if tr.episode_id % 2 == 0]
    env1 = [tr for tr in trajectories if tr.episode_id % 2 == 1]
    # Stored steps 3..9 of env 0: episodes [3,4,5], [6,7,8] and the unfinished [9].
    assert [tr.observations[:, 0].tolist() for tr in env0] == [[3, 4, 5], [6, 7, 8], [9]]
    assert [tr.start for tr in env0] == [0, 0, 0]
    assert len({tr.episode_id for tr in env0}) == 3
    # env 1: one episode, its first 3 steps overwritten, so the kept part starts at episode step 3.
    assert len(env1) == 1 and env1[0].start == 3
    assert env1[0].observations[:, 0].tolist() == [103, 104, 105, 106, 107, 108, 109]
    clips = cut_clips(trajectories, length=3, n=20, rng=0)
    for clip in clips:  # a clip is consecutive steps of one episode
        values = clip.observations[:, 0]
        assert np.all(np.diff(values) == 1)
        assert values[0] >= 100 or values[0] // 3 == values[-1] // 3


def test_wrapper_records_what_the_agent_did() -> None:
    env = LearnedRewardVecEnv(cartpole(n_envs=1), fake_reward, recent_steps=1000)
    obs = env.reset()
    seen = []
    for action in [0, 1, 1, 0, 1]:
        seen.append((obs[0].copy(), action))
        obs, *_ = env.step(np.array([action]))
    assert env.recent is not None
    (trajectory,) = env.recent.trajectories()
    np.testing.assert_array_equal(trajectory.observations, np.stack([o for o, _ in seen]))
    assert trajectory.actions.tolist() == [a for _, a in seen]
    assert trajectory.rewards is not None and trajectory.rewards.tolist() == [1.0] * 5


def test_terminated_episodes_keep_their_terminal_observation_through_a_checkpoint() -> None:
    env = LearnedRewardVecEnv(cartpole(), fake_reward, recent_steps=400)
    env.reset()
    rng = np.random.default_rng(0)
    terminal_seen = []
    for _ in range(300):
        env.step_async(rng.integers(0, 2, size=2))
        _, _, dones, infos = env.step_wait()
        ended = zip(dones, infos, strict=True)
        terminal_seen += [info["terminal_observation"] for done, info in ended if done]
    assert env.recent is not None
    finished = [t for t in env.recent.trajectories() if t.terminal_observation is not None]
    assert len(finished) >= 10  # random CartPole falls within ~20 steps
    stored = {tuple(np.asarray(t.terminal_observation).round(6)) for t in finished}
    assert stored <= {tuple(np.asarray(o).round(6)) for o in terminal_seen}
    unfinished = env.recent.trajectories()[-1]
    assert unfinished.terminal_observation is None  # the episode in progress has none
    restored = RecentSteps(2, 400, (4,), ())
    restored.load_state_dict(env.recent.state_dict())
    again = [t for t in restored.trajectories() if t.terminal_observation is not None]
    assert len(again) == len(finished)
    for a, b in zip(again, finished, strict=True):
        np.testing.assert_array_equal(a.terminal_observation, b.terminal_observation)
