"""Frame-efficient replay: every observation frame is stored once, as a stream per env.

SB3's ``ReplayBuffer`` keeps ``observations`` and ``next_observations`` as separate arrays of full
(stacked) observations, so a 1M-transition Atari buffer with 4 stacked 84x84 frames holds 8 copies
of every frame (~56 GB). :class:`EpisodicReplayBuffer` keeps one copy (~7.1 GB) behind the same
interface, so it plugs into any SB3 off-policy algorithm through ``replay_buffer_class``.

Layout (per env ``e``, ``k = frame_stack``; "frame" is one ``(H, W)`` slice of a ``(k, H, W)``
observation, or the whole observation when ``k == 1``):

- A frame stream, stored in a ring of ``F`` frames. At the first step of an episode the whole
  ``obs`` stack (``k`` frames, with whatever padding the env used) is appended; every step then
  appends only the newest frame of ``next_obs``. Absolute frame ``f`` lives in slot ``f % F``.
- Step arrays, a ring of ``C = buffer_size // n_envs`` steps: action, reward, ``terminated``
  (true termination only), ``ends`` (the episode stream ends after this step: termination,
  truncation, or a reset the buffer detected), ``obs_start`` (absolute index of the oldest frame
  of the step's ``obs``) and ``episode_begin`` (absolute index of the episode's first step).
  Absolute step ``t`` (the ``t``-th ``add`` for that env) lives in slot ``t % C``.

Within an episode the obs of step ``t`` is frames ``[obs_start, obs_start + k)`` and its next_obs
the same window shifted by one, so reconstruction is exact whatever padding the env used.

Validity rules:

- A step is retained while it is among the last ``C`` steps of its env AND its obs window has not
  been overwritten in the frame ring (``obs_start >= frames_written - F``). The retained steps
  form one contiguous range ``[lo, steps_written)`` per env; ``size()`` counts them.
- ``F = C + C // 100 + k + 1``: every episode costs ``k`` frames more than its step count, so
  with episodes of at least ``100 * k`` steps the frame ring never limits the buffer; shorter
  episodes make ``size()`` settle slightly below ``buffer_size`` (never above ``F`` frames).
- n-step windows stop at the first episode end, and also at the newest step of an env whose
  episode is still running (the lookahead is truncated and bootstraps from that step's next_obs,
  as SB3's ``NStepReplayBuffer`` does with ``pos - 1``), so no unwritten data is ever read.
- Sequence windows never contain steps of two episodes; the last step may be an episode's end.

SB3 gives ``add`` no "episode start" flag: an episode starts after a ``done``, and also whenever
``obs`` differs from the buffer's newest window (e.g. ``learn()`` called again resets the env), in
which case the previous step is marked as an end (a truncation, so it bootstraps).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import numpy as np
import torch as th
from gymnasium import spaces
from stable_baselines3.common.buffers import BaseBuffer, ReplayBuffer
from stable_baselines3.common.type_aliases import ReplayBufferSamples
from stable_baselines3.common.utils import get_device
from stable_baselines3.common.vec_env import VecNormalize

from core.errors import UsageError


class SequenceSamples(NamedTuple):
    """Contiguous windows of ``horizon`` steps from single episodes (B = batch size).

    :param observations: ``[B, horizon + 1, *obs_shape]``: obs of each step, then the next obs of
        the last step (the terminal observation when the window ends an episode)
    :param actions: ``[B, horizon, *action_shape]`` (``action_shape = (action_dim,)``)
    :param rewards: ``[B, horizon]`` float32
    :param terminated: ``[B, horizon]`` bool, true termination (only ever on the last step)
    :param truncated: ``[B, horizon]`` bool, episode cut without termination (only on the last step)
    """

    observations: th.Tensor
    actions: th.Tensor
    rewards: th.Tensor
    terminated: th.Tensor
    truncated: th.Tensor


class EpisodicReplayBuffer(ReplayBuffer):
    """Drop-in ``ReplayBuffer`` storing each frame once, with n-step returns and sequence sampling.

    :param buffer_size: Max number of transitions over all envs (each env keeps ``buffer_size // n_envs``)
    :param observation_space: Observation space (Box or Discrete; with ``frame_stack > 1`` a Box of
        shape ``(frame_stack, ...)``, stacked along the first axis)
    :param action_space: Action space
    :param device: PyTorch device for sampled tensors
    :param n_envs: Number of parallel environments (one stream each)
    :param optimize_memory_usage: Must be False: this buffer is already memory-efficient, and SB3's
        ``optimize_memory_usage=True`` code path writes to arrays this buffer does not have
    :param handle_timeout_termination: Treat ``infos[i]["TimeLimit.truncated"]`` as a truncation
        (bootstrap) rather than a termination
    :param frame_stack: Number of frames stacked along the first observation axis (1: no stacking)
    :param n_steps: Number of steps in the n-step return (1: plain one-step transitions)
    :param gamma: Discount factor for the n-step return
    """

    def __init__(
        self,
        buffer_size: int,
        observation_space: spaces.Space,
        action_space: spaces.Space,
        device: th.device | str = "auto",
        n_envs: int = 1,
        optimize_memory_usage: bool = False,
        handle_timeout_termination: bool = True,
        *,
        frame_stack: int = 1,
        n_steps: int = 1,
        gamma: float = 0.99,
    ) -> None:
        if optimize_memory_usage:
            raise UsageError(
                "EpisodicReplayBuffer already stores each frame once; set optimize_memory_usage=False"
            )
        if not isinstance(observation_space, spaces.Box | spaces.Discrete):
            raise UsageError(
                f"EpisodicReplayBuffer needs a Box or Discrete observation space, got {observation_space}"
            )
        if frame_stack < 1 or n_steps < 1 or not 0.0 <= gamma <= 1.0:
            raise UsageError(
                f"need frame_stack >= 1, n_steps >= 1, 0 <= gamma <= 1; got {frame_stack}, {n_steps}, {gamma}"
            )
        # BaseBuffer, not ReplayBuffer.__init__: the latter would allocate SB3's obs arrays.
        BaseBuffer.__init__(self, buffer_size, observation_space, action_space, device, n_envs=n_envs)
        if frame_stack > 1 and (len(self.obs_shape) < 2 or self.obs_shape[0] != frame_stack):
            raise UsageError(
                f"{frame_stack=} needs observation shape ({frame_stack}, ...), got {self.obs_shape}"
            )
        self.optimize_memory_usage = False
        self.handle_timeout_termination = handle_timeout_termination
        self.frame_stack = frame_stack
        self.n_steps = n_steps
        self.gamma = gamma
        self.buffer_size = max(buffer_size // n_envs, 1)  # steps per env, as in SB3
        self.frame_capacity = self.buffer_size + self.buffer_size // 100 + frame_stack + 1
        frame_shape = self.obs_shape[1:] if frame_stack > 1 else self.obs_shape
        obs_dtype = observation_space.dtype
        steps = (n_envs, self.buffer_size)
        # np.empty: pages are only committed (resident) once written.
        self.frames = np.empty((n_envs, self.frame_capacity, *frame_shape), dtype=obs_dtype)
        self.actions = np.empty((*steps, self.action_dim), dtype=self._maybe_cast_dtype(action_space.dtype))
        self.rewards = np.empty(steps, dtype=np.float32)
        self.terminated = np.empty(steps, dtype=bool)
        self.ends = np.empty(steps, dtype=bool)
        self.obs_start = np.empty(steps, dtype=np.int64)
        self.episode_begin = np.empty(steps, dtype=np.int64)
        self.reset()

    def reset(self) -> None:
        """Forget all stored transitions (memory stays allocated)."""
        super().reset()
        self.steps_written = np.zeros(self.n_envs, dtype=np.int64)
        self.frames_written = np.zeros(self.n_envs, dtype=np.int64)
        self.first_retained = np.zeros(self.n_envs, dtype=np.int64)  # ``lo`` in the module docstring
        self.in_episode = np.zeros(self.n_envs, dtype=bool)

    def size(self) -> int:
        """:return: Number of retained (sampleable) transitions over all envs."""
        return int((self.steps_written - self.first_retained).sum())

    def add(
        self,
        obs: np.ndarray,
        next_obs: np.ndarray,
        action: np.ndarray,
        reward: np.ndarray,
        done: np.ndarray,
        infos: list[dict[str, Any]],
    ) -> None:
        """Store one step of every env (same signature as SB3's ``ReplayBuffer.add``)."""
        obs = np.asarray(obs).reshape((self.n_envs, *self.obs_shape))
        next_obs = np.asarray(next_obs).reshape((self.n_envs, *self.obs_shape))
        action = np.asarray(action).reshape((self.n_envs, self.action_dim))
        reward = np.asarray(reward, dtype=np.float32).reshape(self.n_envs)
        done = np.asarray(done, dtype=bool).reshape(self.n_envs)
        truncated = np.array(
            [
                self.handle_timeout_termination and bool(info.get("TimeLimit.truncated", False))
                for info in infos
            ]
        )
        k, cap = self.frame_stack, self.buffer_size
        for e in range(self.n_envs):
            t = int(self.steps_written[e])
            f = int(self.frames_written[e])
            if not (self.in_episode[e] and np.array_equal(self._stack(e, f - k), obs[e])):
                if self.in_episode[e]:  # reset without `done`: the previous step ends a truncated episode
                    self.ends[e, (t - 1) % cap] = True
                self._write_frames(e, f, obs[e] if k > 1 else obs[e][None])
                f += k
                self.in_episode[e] = True
                self.episode_begin[e, t % cap] = t
            else:
                self.episode_begin[e, t % cap] = self.episode_begin[e, (t - 1) % cap]
            self._write_frames(e, f, next_obs[e][-1:] if k > 1 else next_obs[e][None])
            s = t % cap
            self.obs_start[e, s] = f - k
            self.actions[e, s] = action[e]
            self.rewards[e, s] = reward[e]
            self.terminated[e, s] = done[e] and not truncated[e]
            self.ends[e, s] = done[e]
            self.in_episode[e] = not done[e]
            self.steps_written[e] = t + 1
            self.frames_written[e] = f + 1
            self._drop_overwritten(e)
        self.pos = int(self.steps_written[0] % cap)
        self.full = bool(self.steps_written[0] >= cap)

    def _write_frames(self, env: int, start: int, frames: np.ndarray) -> None:
        slots = np.arange(start, start + len(frames)) % self.frame_capacity
        self.frames[env, slots] = frames

    def _stack(self, env: int, start: int) -> np.ndarray:
        """The stored observation whose oldest frame is absolute frame ``start``."""
        slots = np.arange(start, start + self.frame_stack) % self.frame_capacity
        return self.frames[env, slots].reshape(self.obs_shape)

    def _drop_overwritten(self, env: int) -> None:
        lo = int(self.first_retained[env])
        oldest_step = int(self.steps_written[env]) - self.buffer_size
        oldest_frame = int(self.frames_written[env]) - self.frame_capacity
        while lo < oldest_step or self.obs_start[env, lo % self.buffer_size] < oldest_frame:
            lo += 1
        self.first_retained[env] = lo

    def transition_indices(self) -> tuple[np.ndarray, np.ndarray]:
        """:return: ``(env_indices, steps)`` of every retained transition (absolute per-env steps)."""
        envs = [np.full(n, e) for e, n in enumerate(self.steps_written - self.first_retained)]
        steps = [np.arange(lo, hi) for lo, hi in zip(self.first_retained, self.steps_written, strict=True)]
        return np.concatenate(envs).astype(np.int64), np.concatenate(steps).astype(np.int64)

    def relabel_rewards(
        self, reward_fn: Callable[[th.Tensor, np.ndarray], np.ndarray], chunk_size: int = 1024
    ) -> int:
        """Replace the reward of every retained transition by ``reward_fn(obs [B, *obs_shape], actions
        [B, action_dim]) -> [B]`` (e.g. a learned reward after it was refit); returns how many.

        n-step returns are summed from the stored rewards when sampled, so they follow at once.
        """
        env_indices, steps = self.transition_indices()
        for start in range(0, len(steps), chunk_size):
            envs = env_indices[start : start + chunk_size]
            slots = steps[start : start + chunk_size] % self.buffer_size
            obs = self._gather_obs(envs, self.obs_start[envs, slots], 1)[:, 0]
            rewards = reward_fn(obs, self.actions[envs, slots])
            self.rewards[envs, slots] = np.asarray(rewards, dtype=np.float32)
        return len(steps)

    def sample_indices(self, batch_size: int) -> tuple[np.ndarray, np.ndarray]:
        """:return: ``(env_indices, steps)`` drawn uniformly over all retained transitions."""
        counts = self.steps_written - self.first_retained
        total = int(counts.sum())
        if total == 0:
            raise ValueError("cannot sample from an empty replay buffer")
        draws = np.random.randint(0, total, size=batch_size)
        ends = np.cumsum(counts)
        env_indices = np.searchsorted(ends, draws, side="right")
        steps = self.first_retained[env_indices] + draws - (ends - counts)[env_indices]
        return env_indices, steps

    def sample(
        self, batch_size: int, env: VecNormalize | None = None, n_steps: int | None = None
    ) -> ReplayBufferSamples:
        """Sample ``batch_size`` (n-step) transitions uniformly over retained transitions.

        :param batch_size: Number of transitions
        :param env: VecNormalize to normalize observations and rewards with, as in SB3
        :param n_steps: The n of the n-step return (``None``: the buffer's ``n_steps``)
        :return: SB3's samples; ``discounts`` is ``gamma ** steps_included`` when ``n_steps > 1``
        """
        return self.get_transitions(*self.sample_indices(batch_size), env=env, n_steps=n_steps)

    def _get_samples(self, batch_inds: np.ndarray, env: VecNormalize | None = None) -> ReplayBufferSamples:
        # SB3's slot indices are not meaningful here; draw fresh indices of the same count.
        return self.sample(len(batch_inds), env=env)

    def _tensor(self, array: np.ndarray) -> th.Tensor:
        """A fresh numpy array (from fancy indexing) as a tensor on ``self.device``, without a copy on CPU."""
        return th.from_numpy(np.ascontiguousarray(array)).to(self.device)

    def _gather_obs(
        self, env_indices: np.ndarray, starts: np.ndarray, count: int, env: VecNormalize | None = None
    ) -> th.Tensor:
        """Observations with oldest frames ``starts + i`` for ``i < count``: ``[B, count, *obs_shape]``."""
        frame_ids = starts[:, None, None] + np.arange(count)[:, None] + np.arange(self.frame_stack)
        flat_ids = env_indices[:, None, None] * self.frame_capacity + frame_ids % self.frame_capacity
        all_frames = th.from_numpy(self.frames.reshape(-1, *self.frames.shape[2:]))
        # index_select: faster than numpy fancy indexing + a copy to torch, and than tensor[ids].
        obs = th.index_select(all_frames, 0, th.from_numpy(flat_ids.reshape(-1)))
        obs = obs.view(len(starts), count, *self.obs_shape)
        if env is not None:
            return self.to_torch(self._normalize_obs(obs.numpy(), env))  # type: ignore[arg-type]
        return obs.to(self.device)

    def get_transitions(
        self,
        env_indices: np.ndarray,
        steps: np.ndarray,
        env: VecNormalize | None = None,
        n_steps: int | None = None,
    ) -> ReplayBufferSamples:
        """The (n-step) transitions starting at absolute ``steps`` of ``env_indices``; must be retained.

        The n-step window stops at the first episode end and at the env's newest step; ``dones`` is 1
        only if it stopped at a true termination; ``next_observations`` follow its last step.
        ``n_steps`` overrides the buffer's own (e.g. DQfD reads 1-step and n-step returns of the same
        transitions); ``discounts`` is set whenever the n used is above 1.
        """
        n_steps = self.n_steps if n_steps is None else n_steps
        if n_steps < 1:
            raise ValueError(f"n_steps must be >= 1, got {n_steps}")
        env_col = env_indices[:, None]
        offsets = np.arange(n_steps)
        window = steps[:, None] + offsets
        slots = window % self.buffer_size
        stop = self.ends[env_col, slots] | (window == self.steps_written[env_col] - 1)
        n_included = np.where(stop.any(axis=1), stop.argmax(axis=1), n_steps - 1) + 1
        last = slots[np.arange(len(steps)), n_included - 1]
        first = slots[:, 0]
        reward_seq = self._normalize_reward(self.rewards[env_col, slots], env)
        included = offsets < n_included[:, None]
        # np.where, not a product: slots past the window may never have been written (np.empty).
        rewards = (np.where(included, reward_seq, 0.0) * self.gamma**offsets).sum(axis=1, keepdims=True)
        discounts = self.gamma ** n_included[:, None]
        next_starts = self.obs_start[env_indices, last] + 1
        return ReplayBufferSamples(
            observations=self._gather_obs(env_indices, self.obs_start[env_indices, first], 1, env)[:, 0],
            actions=self._tensor(self.actions[env_indices, first]),
            next_observations=self._gather_obs(env_indices, next_starts, 1, env)[:, 0],
            dones=self._tensor(self.terminated[env_indices, last, None].astype(np.float32)),
            rewards=self._tensor(rewards.astype(np.float32)),
            discounts=self._tensor(discounts.astype(np.float32)) if n_steps > 1 else None,
        )

    def sequence_starts(self, horizon: int) -> tuple[np.ndarray, np.ndarray]:
        """:return: ``(env_indices, steps)`` of every retained window of ``horizon`` steps in one episode."""
        env_parts, step_parts = [], []
        for e in range(self.n_envs):
            starts = np.arange(self.first_retained[e], self.steps_written[e] - horizon + 1)
            ok = self.episode_begin[e, (starts + horizon - 1) % self.buffer_size] <= starts
            env_parts.append(np.full(int(ok.sum()), e, dtype=np.int64))
            step_parts.append(starts[ok].astype(np.int64))
        return np.concatenate(env_parts), np.concatenate(step_parts)

    def sample_sequence_indices(self, batch_size: int, horizon: int) -> tuple[np.ndarray, np.ndarray]:
        """:return: ``(env_indices, steps)`` drawn uniformly over windows valid for ``sample_sequences``."""
        if horizon < 1:
            raise ValueError(f"horizon must be >= 1, got {horizon}")
        env_parts, step_parts, found = [], [], 0
        for _ in range(4):  # rejection sampling: uniform, and cheap when most windows are valid
            if self.size() == 0:
                break
            env_indices, steps = self.sample_indices(2 * batch_size)
            ok = steps + horizon <= self.steps_written[env_indices]
            ok[ok] = (
                self.episode_begin[env_indices[ok], (steps[ok] + horizon - 1) % self.buffer_size] <= steps[ok]
            )
            env_parts.append(env_indices[ok])
            step_parts.append(steps[ok])
            found += int(ok.sum())
            if found >= batch_size:
                return np.concatenate(env_parts)[:batch_size], np.concatenate(step_parts)[:batch_size]
        env_indices, steps = self.sequence_starts(horizon)  # few valid windows: enumerate them all
        if len(steps) == 0:
            raise ValueError(f"no stored window of {horizon} steps lies inside one episode")
        picks = np.random.randint(0, len(steps), size=batch_size)
        return env_indices[picks], steps[picks]

    def sample_sequences(self, batch_size: int, horizon: int) -> SequenceSamples:
        """Sample windows of ``horizon`` consecutive steps that never cross an episode end.

        :raises ValueError: if no retained window of that length lies inside one episode
        """
        return self.get_sequences(*self.sample_sequence_indices(batch_size, horizon), horizon=horizon)

    def get_sequences(self, env_indices: np.ndarray, steps: np.ndarray, horizon: int) -> SequenceSamples:
        """The windows of ``horizon`` steps starting at absolute ``steps`` of ``env_indices``."""
        slots = (steps[:, None] + np.arange(horizon)) % self.buffer_size
        env_col = env_indices[:, None]
        terminated = self.terminated[env_col, slots]
        return SequenceSamples(
            observations=self._gather_obs(env_indices, self.obs_start[env_indices, slots[:, 0]], horizon + 1),
            actions=self._tensor(self.actions[env_col, slots]),
            rewards=self._tensor(self.rewards[env_col, slots]),
            terminated=self._tensor(terminated),
            truncated=self._tensor(self.ends[env_col, slots] & ~terminated),
        )

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        if self.device.type == "cuda" and not th.cuda.is_available():
            self.device = get_device("auto")  # saved on a GPU machine, loaded on one without
