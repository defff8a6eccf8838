"""EpisodicReplayBuffer against a naive buffer that keeps every (obs, next_obs) stack in lists."""

from __future__ import annotations

import itertools
import pickle
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import pytest
from gymnasium import spaces
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from stable_baselines3 import DQN
from stable_baselines3.common.buffers import NStepReplayBuffer, ReplayBuffer
from stable_baselines3.common.env_util import make_vec_env

from core.errors import UsageError
from core.replay import EpisodicReplayBuffer

FRAME_SHAPE = (2, 3)
N_ACTIONS = 5
EPISODE_KINDS = ("terminated", "truncated", "cut")  # cut: the env is reset without `done`


def make_frame(counter: int) -> np.ndarray:
    """A frame no other frame equals, so reading an overwritten slot can never pass unnoticed."""
    return np.frombuffer(counter.to_bytes(6, "little"), dtype=np.uint8).reshape(FRAME_SHAPE).copy()


@dataclass
class Record:
    obs: np.ndarray
    next_obs: np.ndarray
    action: int
    reward: float
    terminated: bool
    truncated: bool
    cut: bool
    starts_episode: bool


class StackedEpisodes:
    """One env playing ``(length, kind)`` episodes in a loop, with frames stacked like
    SB3's VecFrameStack (``padding="zero"``) or gymnasium's FrameStackObservation (``"repeat"``)."""

    def __init__(self, episodes: list[tuple[int, str]], k: int, padding: str, counter: Iterator[int]):
        self.specs = itertools.cycle(episodes)
        self.k, self.padding, self.counter = k, padding, counter
        self.obs = self._reset()

    def _reset(self) -> np.ndarray:
        self.length, self.kind = next(self.specs)
        self.t = 0
        first = make_frame(next(self.counter))
        if self.k == 1:
            return first
        stack = (
            np.zeros((self.k, *FRAME_SHAPE), np.uint8)
            if self.padding == "zero"
            else np.stack([first] * self.k)
        )
        stack[-1] = first
        return stack

    def step(self, action: int, reward: float) -> tuple[Record, bool, dict]:
        frame = make_frame(next(self.counter))
        next_obs = frame if self.k == 1 else np.concatenate([self.obs[1:], frame[None]])
        self.t += 1
        ended = self.t == self.length
        kind = self.kind if ended else None
        record = Record(
            self.obs,
            next_obs,
            action,
            reward,
            kind == "terminated",
            kind == "truncated",
            kind == "cut",
            self.t == 1,
        )
        self.obs = self._reset() if ended else next_obs
        info = {"TimeLimit.truncated": True} if kind == "truncated" else {}
        return record, kind in ("terminated", "truncated"), info


def fill(
    buffer: EpisodicReplayBuffer, envs: list[StackedEpisodes], n_adds: int, seed: int
) -> list[list[Record]]:
    """Step all envs together ``n_adds`` times, as SB3's collect_rollouts does; return the naive record."""
    rng = np.random.default_rng(seed)
    records: list[list[Record]] = [[] for _ in envs]
    for _ in range(n_adds):
        actions = rng.integers(0, N_ACTIONS, len(envs))
        rewards = rng.normal(size=len(envs)).astype(np.float32)
        steps = [env.step(int(a), float(r)) for env, a, r in zip(envs, actions, rewards, strict=True)]
        for record_list, (record, _, _) in zip(records, steps, strict=True):
            record_list.append(record)
        buffer.add(
            np.stack([r.obs for r, _, _ in steps]),
            np.stack([r.next_obs for r, _, _ in steps]),
            actions,
            rewards,
            np.array([done for _, done, _ in steps]),
            [info for _, _, info in steps],
        )
    return records


def naive_end(records: list[Record], t: int) -> bool:
    """An episode ends after step t; a cut is only visible to the buffer once the next step arrives."""
    r = records[t]
    return r.terminated or r.truncated or (r.cut and t < len(records) - 1)


def naive_retained(records: list[Record], capacity: int, frame_capacity: int, k: int) -> list[int]:
    """Steps among the last ``capacity`` whose frames (k per window, 1 per step, k per new episode) fit."""
    total = len(records)
    retained = []
    for t in range(max(total - capacity, 0), total):
        new_episodes = sum(records[u].starts_episode for u in range(t + 1, total))
        if k + (total - t) + k * new_episodes <= frame_capacity:
            retained.append(t)
    return retained


def naive_n_step(records: list[Record], t: int, n: int, gamma: float, timeouts: bool):
    ret, j = 0.0, 0
    while True:
        ret += gamma**j * records[t + j].reward
        if j == n - 1 or naive_end(records, t + j) or t + j == len(records) - 1:
            break
        j += 1
    last = records[t + j]
    done = last.terminated or (last.truncated and not timeouts)
    return ret, last.next_obs, done, gamma ** (j + 1)


episode_lists = st.lists(
    st.tuples(st.integers(1, 12), st.sampled_from(EPISODE_KINDS)), min_size=1, max_size=6
)


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    n_envs=st.integers(1, 3),
    k=st.sampled_from([1, 2, 4]),
    padding=st.sampled_from(["zero", "repeat"]),
    n_steps=st.integers(1, 4),
    capacity=st.integers(3, 40),
    n_adds=st.integers(1, 80),
    timeouts=st.booleans(),
    episodes=st.lists(episode_lists, min_size=3, max_size=3),
    seed=st.integers(0, 2**16),
)
def test_matches_naive_buffer(n_envs, k, padding, n_steps, capacity, n_adds, timeouts, episodes, seed):
    obs_shape = FRAME_SHAPE if k == 1 else (k, *FRAME_SHAPE)
    buffer = EpisodicReplayBuffer(
        capacity * n_envs,
        spaces.Box(0, 255, obs_shape, np.uint8),
        spaces.Discrete(N_ACTIONS),
        device="cpu",
        n_envs=n_envs,
        handle_timeout_termination=timeouts,
        frame_stack=k,
        n_steps=n_steps,
        gamma=0.9,
    )
    counter = itertools.count()
    envs = [StackedEpisodes(episodes[e], k, padding, counter) for e in range(n_envs)]
    records = fill(buffer, envs, n_adds, seed)

    # Retention: exactly the steps whose frames have not been overwritten; size() counts them.
    env_indices, steps = buffer.transition_indices()
    expected = [
        (e, t) for e in range(n_envs) for t in naive_retained(records[e], capacity, buffer.frame_capacity, k)
    ]
    assert list(zip(env_indices.tolist(), steps.tolist(), strict=True)) == expected
    assert buffer.size() == len(expected) > 0
    assert buffer.pos == n_adds % capacity and buffer.full == (n_adds >= capacity)

    # Every retained transition reconstructs exactly, with naive n-step targets.
    samples = buffer.get_transitions(env_indices, steps)
    assert (samples.discounts is None) == (n_steps == 1)
    for i, (e, t) in enumerate(expected):
        ret, next_obs, done, discount = naive_n_step(records[e], t, n_steps, 0.9, timeouts)
        np.testing.assert_array_equal(samples.observations[i].numpy(), records[e][t].obs)
        np.testing.assert_array_equal(samples.next_observations[i].numpy(), next_obs)
        assert samples.actions[i, 0].item() == records[e][t].action
        assert samples.rewards[i, 0].item() == pytest.approx(ret, rel=1e-5, abs=1e-5)
        assert samples.dones[i, 0].item() == float(done)
        if samples.discounts is not None:
            assert samples.discounts[i, 0].item() == pytest.approx(discount)

    # Random sampling only returns retained transitions.
    sampled_envs, sampled_steps = buffer.sample_indices(64)
    assert set(zip(sampled_envs.tolist(), sampled_steps.tolist(), strict=True)) <= set(expected)
    assert buffer.sample(8).observations.shape == (8, *obs_shape)

    # Sequences: windows inside one episode (the last step may end it), contents as recorded.
    for horizon in (1, 2, 5):
        valid = [
            (e, t)
            for e, t in expected
            if t + horizon - 1 in [u for f, u in expected if f == e]
            and not any(naive_end(records[e], u) for u in range(t, t + horizon - 1))
        ]
        starts = buffer.sequence_starts(horizon)
        assert list(zip(starts[0].tolist(), starts[1].tolist(), strict=True)) == valid
        if not valid:
            with pytest.raises(ValueError, match="no stored window"):
                buffer.sample_sequences(4, horizon)
            continue
        seq_envs, seq_steps = buffer.sample_sequence_indices(16, horizon)
        assert set(zip(seq_envs.tolist(), seq_steps.tolist(), strict=True)) <= set(valid)
        seqs = buffer.get_sequences(*starts, horizon=horizon)
        for i, (e, t) in enumerate(valid):
            window = records[e][t : t + horizon]
            expected_obs = np.stack([r.obs for r in window] + [window[-1].next_obs])
            np.testing.assert_array_equal(seqs.observations[i].numpy(), expected_obs)
            assert seqs.actions[i, :, 0].tolist() == [r.action for r in window]
            np.testing.assert_allclose(seqs.rewards[i].numpy(), [r.reward for r in window])
            ends = [naive_end(records[e], u) for u in range(t, t + horizon)]
            term = [r.terminated or (r.truncated and not timeouts) for r in window]
            assert seqs.terminated[i].tolist() == term
            assert seqs.truncated[i].tolist() == [end and not te for end, te in zip(ends, term, strict=True)]
        assert buffer.sample_sequences(3, horizon).observations.shape == (3, horizon + 1, *obs_shape)


@pytest.mark.parametrize("n_steps", [1, 3])
@settings(max_examples=25, deadline=None)
@given(
    episodes=st.lists(st.tuples(st.integers(1, 8), st.sampled_from(["terminated", "truncated"])), min_size=1)
)
def test_same_samples_as_sb3(n_steps, episodes):
    """Without wrap-around, SB3's (N-step) ReplayBuffer with full stacks gives identical batches."""
    k, n_adds = 3, 40
    space, actions = spaces.Box(0, 255, (k, *FRAME_SHAPE), np.uint8), spaces.Discrete(N_ACTIONS)
    ours = EpisodicReplayBuffer(256, space, actions, device="cpu", frame_stack=k, n_steps=n_steps, gamma=0.9)
    sb3_kwargs = {"n_steps": n_steps, "gamma": 0.9} if n_steps > 1 else {}
    sb3 = (NStepReplayBuffer if n_steps > 1 else ReplayBuffer)(64, space, actions, device="cpu", **sb3_kwargs)
    records = fill(ours, [StackedEpisodes(episodes, k, "zero", itertools.count())], n_adds, seed=0)
    for r in records[0]:
        done = r.terminated or r.truncated
        info = {"TimeLimit.truncated": True} if r.truncated else {}
        sb3.add(
            r.obs[None],
            r.next_obs[None],
            np.array([r.action]),
            np.array([r.reward]),
            np.array([done]),
            [info],
        )
    assert ours.size() == n_adds
    expected = sb3._get_samples(np.arange(n_adds))
    got = ours.get_transitions(np.zeros(n_adds, dtype=np.int64), np.arange(n_adds))
    for name in ("observations", "next_observations", "actions", "dones", "rewards", "discounts"):
        a, b = getattr(got, name), getattr(expected, name)
        if a is None or b is None:
            assert a is None and b is None, name
        else:
            np.testing.assert_allclose(a.numpy(), b.numpy(), rtol=1e-5, atol=1e-6, err_msg=name)


def test_sampling_is_uniform_over_retained_transitions():
    np.random.seed(0)
    space = spaces.Box(0, 255, (2, *FRAME_SHAPE), np.uint8)
    buffer = EpisodicReplayBuffer(
        60, space, spaces.Discrete(N_ACTIONS), device="cpu", n_envs=2, frame_stack=2
    )
    counter = itertools.count()
    # env 0 starts an episode every step, so it retains fewer steps than env 1.
    envs = [
        StackedEpisodes([(1, "terminated")], 2, "zero", counter),
        StackedEpisodes([(50, "cut")], 2, "zero", counter),
    ]
    fill(buffer, envs, 45, seed=0)
    env_indices, steps = buffer.transition_indices()
    assert 0 < (env_indices == 0).sum() < (env_indices == 1).sum() == 30
    sampled_envs, sampled_steps = buffer.sample_indices(100_000)
    counts = {key: 0 for key in zip(env_indices.tolist(), steps.tolist(), strict=True)}
    for key in zip(sampled_envs.tolist(), sampled_steps.tolist(), strict=True):
        counts[key] += 1
    expected = 100_000 / len(counts)
    assert len(counts) == buffer.size()
    assert all(abs(c - expected) < 6 * expected**0.5 for c in counts.values())


def test_pickle_round_trip_and_continue():
    space = spaces.Box(0, 255, (4, *FRAME_SHAPE), np.uint8)
    buffer = EpisodicReplayBuffer(
        30, space, spaces.Discrete(N_ACTIONS), device="cpu", frame_stack=4, n_steps=2
    )
    env = StackedEpisodes([(7, "terminated"), (5, "cut")], 4, "repeat", itertools.count())
    records = fill(buffer, [env], 25, seed=1)
    restored = pickle.loads(pickle.dumps(buffer))
    assert restored.device == buffer.device and restored.size() == buffer.size()
    indices = buffer.transition_indices()
    for a, b in zip(buffer.get_transitions(*indices), restored.get_transitions(*indices), strict=True):
        np.testing.assert_array_equal(a.numpy(), b.numpy())
    more = fill(restored, [env], 20, seed=2)
    env_indices, steps = restored.transition_indices()
    samples = restored.get_transitions(env_indices, steps)
    all_records = records[0] + more[0]
    for i, t in enumerate(steps.tolist()):
        np.testing.assert_array_equal(samples.observations[i].numpy(), all_records[t].obs)


def test_n_step_returns_ignore_slots_never_written():
    """Slots after the newest step hold whatever np.empty left there (NaN here): the n-step sum must
    not read them, not even as 0 * NaN."""
    space = spaces.Box(-1, 1, (3,), np.float32)
    buffer = EpisodicReplayBuffer(50, space, spaces.Discrete(2), device="cpu", n_steps=10, gamma=0.5)
    buffer.rewards[:] = np.nan
    buffer.terminated[:] = True
    obs = np.zeros((1, 3), np.float32)
    for _ in range(3):
        buffer.add(obs, obs, np.array([0]), np.array([1.0]), np.array([False]), [{}])
    samples = buffer.get_transitions(*buffer.transition_indices())
    np.testing.assert_allclose(samples.rewards.numpy()[:, 0], [1.75, 1.5, 1.0])
    np.testing.assert_allclose(samples.discounts.numpy()[:, 0], [0.125, 0.25, 0.5])
    np.testing.assert_array_equal(samples.dones.numpy()[:, 0], [0, 0, 0])


def test_memory_is_about_one_frame_per_transition():
    space = spaces.Box(0, 255, (4, 84, 84), np.uint8)
    buffer = EpisodicReplayBuffer(100_000, space, spaces.Discrete(6), device="cpu", frame_stack=4)
    frame_bytes = buffer.frames.nbytes / (100_000 * 84 * 84)
    step_bytes = sum(a.nbytes for a in (buffer.actions, buffer.rewards, buffer.terminated, buffer.ends))
    assert 1.0 < frame_bytes < 1.011
    assert step_bytes + buffer.obs_start.nbytes + buffer.episode_begin.nbytes < 32 * 100_000
    assert not hasattr(buffer, "observations") and not hasattr(buffer, "next_observations")
    assert buffer.frame_capacity == 100_000 + 1_000 + 4 + 1


def test_keeps_buffer_size_transitions_with_episodes_of_100_frame_stacks():
    space = spaces.Box(0, 255, (4, *FRAME_SHAPE), np.uint8)
    buffer = EpisodicReplayBuffer(2000, space, spaces.Discrete(N_ACTIONS), device="cpu", frame_stack=4)
    fill(buffer, [StackedEpisodes([(400, "terminated")], 4, "zero", itertools.count())], 5000, seed=0)
    assert buffer.size() == 2000 and buffer.transition_indices()[1][0] == 3000


def test_normalizes_with_vec_normalize_like_env():
    class Normalizer:
        def normalize_obs(self, obs):
            return obs.astype(np.float32) * 2

        def normalize_reward(self, reward):
            return reward * 3

    buffer = EpisodicReplayBuffer(20, spaces.Box(-5, 5, (3,), np.float32), spaces.Discrete(2), device="cpu")
    buffer.add(np.ones((1, 3)), np.full((1, 3), 2.0), np.array([1]), np.array([0.5]), np.array([True]), [{}])
    samples = buffer.sample(2, env=Normalizer())  # type: ignore[arg-type]
    assert samples.observations.tolist() == [[2.0] * 3] * 2
    assert samples.next_observations.tolist() == [[4.0] * 3] * 2
    assert samples.rewards.tolist() == [[1.5]] * 2 and samples.dones.tolist() == [[1.0]] * 2


def test_rejects_bad_configuration():
    box = spaces.Box(0, 255, (4, 8, 8), np.uint8)
    with pytest.raises(UsageError, match="optimize_memory_usage=False"):
        EpisodicReplayBuffer(10, box, spaces.Discrete(2), optimize_memory_usage=True, frame_stack=4)
    with pytest.raises(UsageError, match="observation shape"):
        EpisodicReplayBuffer(10, box, spaces.Discrete(2), frame_stack=3)
    with pytest.raises(UsageError, match="Box or Discrete"):
        EpisodicReplayBuffer(10, spaces.Dict({"a": box}), spaces.Discrete(2))
    with pytest.raises(UsageError, match="n_steps"):
        EpisodicReplayBuffer(10, box, spaces.Discrete(2), n_steps=0)
    with pytest.raises(ValueError, match="empty"):
        EpisodicReplayBuffer(10, box, spaces.Discrete(2), frame_stack=4).sample(4)


@pytest.mark.parametrize(("n_steps", "n_envs"), [(1, 1), (3, 2)])
def test_dqn_on_cartpole(n_steps, n_envs):
    env = make_vec_env("CartPole-v1", n_envs=n_envs, seed=0)
    model = DQN(
        "MlpPolicy",
        env,
        buffer_size=2000,
        learning_starts=100,
        replay_buffer_class=EpisodicReplayBuffer,
        replay_buffer_kwargs={"n_steps": n_steps, "gamma": 0.99},
        policy_kwargs={"net_arch": [32]},
        device="cpu",
        seed=0,
    )
    model.learn(500)
    buffer = model.replay_buffer
    assert isinstance(buffer, EpisodicReplayBuffer) and buffer.n_steps == n_steps
    assert buffer.size() == model.num_timesteps and model._n_updates > 0
    # A second learn() resets the env without `done`: the buffer must end the running episodes there.
    steps_before = buffer.steps_written.copy()
    model.learn(100, reset_num_timesteps=True)
    last = (steps_before - 1) % buffer.buffer_size
    assert buffer.ends[np.arange(n_envs), last].all()
    assert buffer.sample(16).observations.shape == (16, 4)
