"""The learned reward as a VecEnv wrapper: any agent trains on ``r_hat(o, a)`` without knowing it.

:class:`LearnedRewardVecEnv` replaces the env's reward with the reward model's prediction for the
observation each action was taken in and that action (Christiano et al. 2017: the policy maximizes the
predicted reward). The true reward stays in ``info["true_reward"]`` for logging and synthetic labels,
and the wrapped env's monitor keeps reporting true episode returns in ``info["episode"]``. It also
records the most recent steps of every env (:class:`RecentSteps`), from which the preference loop cuts
clips to query.

Differences from the paper: none in the reward itself; the wrapper predicts one batch per vector step
(all envs at once), on the model's device.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import numpy as np
from stable_baselines3.common.vec_env import VecEnv, VecEnvWrapper
from stable_baselines3.common.vec_env.base_vec_env import VecEnvObs, VecEnvStepReturn

from core.errors import UsageError
from rewards.clips import Trajectory, split_episodes

AGENT_REWARDS = ("learned", "env")
RewardFunction = Callable[[np.ndarray, np.ndarray], np.ndarray]
"""``(observations [n, ...], actions [n, ...]) -> rewards [n]`` (float32)."""


class RecentSteps:
    """The last ``capacity`` steps of each of ``n_envs`` envs, as a ring per env.

    :param n_envs: number of envs
    :param capacity: steps kept per env (older steps are overwritten)
    :param observation_shape: shape of one observation
    :param action_shape: shape of one action (``()`` for Discrete)
    :param observation_dtype: dtype of the stored observations (uint8 frames stay uint8)
    :param action_dtype: dtype of the stored actions
    """

    def __init__(
        self,
        n_envs: int,
        capacity: int,
        observation_shape: tuple[int, ...],
        action_shape: tuple[int, ...],
        observation_dtype: np.dtype[Any] | type = np.float32,
        action_dtype: np.dtype[Any] | type = np.float32,
    ) -> None:
        if capacity < 1:
            raise UsageError(f"the recent-steps capacity must be >= 1 step per env, got {capacity}")
        self.capacity = capacity
        self.observations = np.zeros((n_envs, capacity, *observation_shape), dtype=observation_dtype)
        self.actions = np.zeros((n_envs, capacity, *action_shape), dtype=action_dtype)
        self.rewards = np.zeros((n_envs, capacity), dtype=np.float32)
        self.dones = np.zeros((n_envs, capacity), dtype=bool)
        self.episode_ids = np.zeros((n_envs, capacity), dtype=np.int64)
        self.episode_steps = np.zeros((n_envs, capacity), dtype=np.int64)
        self.added = 0  # vector steps added (each adds one step per env)
        self._episode = np.arange(n_envs, dtype=np.int64)  # globally unique episode ids: env + k * n_envs
        self._step_in_episode = np.zeros(n_envs, dtype=np.int64)
        self.terminal: dict[int, np.ndarray] = {}  # episode id -> observation after its termination
        self.render_states: np.ndarray | None = None  # [n_envs, capacity, D], from the first step given

    @property
    def n_envs(self) -> int:
        return int(self.observations.shape[0])

    def add(
        self,
        observations: np.ndarray,
        actions: np.ndarray,
        rewards: np.ndarray,
        dones: np.ndarray,
        terminal_observations: dict[int, np.ndarray] | None = None,
        render_states: np.ndarray | None = None,
    ) -> None:
        """One vector step: ``observations`` are those the ``actions`` were taken in; ``dones`` end an
        episode at this step; ``terminal_observations`` maps an env whose episode the env TERMINATED
        at this step to the observation after it; ``render_states`` ``[n_envs, D]`` draw the step
        (kept only when given from the first step on)."""
        if terminal_observations:
            for env, terminal in terminal_observations.items():
                self.terminal[int(self._episode[env])] = np.array(terminal)
            if len(self.terminal) > 4 * self.n_envs + self.capacity // 8:
                kept = set(np.unique(self.episode_ids).tolist()) | set(self._episode.tolist())
                self.terminal = {k: v for k, v in self.terminal.items() if k in kept}
        slot = self.added % self.capacity
        self.observations[:, slot] = observations
        self.actions[:, slot] = np.asarray(actions).reshape(self.actions.shape[:1] + self.actions.shape[2:])
        self.rewards[:, slot] = rewards
        self.dones[:, slot] = dones
        if render_states is not None and (self.render_states is not None or self.added == 0):
            states = np.asarray(render_states)
            if self.render_states is None:
                self.render_states = np.zeros((self.n_envs, self.capacity, *states.shape[1:]), states.dtype)
            self.render_states[:, slot] = states
        self.episode_ids[:, slot] = self._episode
        self.episode_steps[:, slot] = self._step_in_episode
        self.added += 1
        self._step_in_episode += 1
        ended = np.asarray(dones, dtype=bool)
        if ended.any():
            self._episode[ended] += self.n_envs
            self._step_in_episode[ended] = 0

    def end_episodes(self) -> None:
        """Close every env's episode at its newest stored step (the env was reset outside ``add``)."""
        if self.added == 0:
            return
        slot = (self.added - 1) % self.capacity
        self.dones[:, slot] = True
        open_envs = self._step_in_episode > 0
        self._episode[open_envs] += self.n_envs
        self._step_in_episode[:] = 0

    def state_dict(self) -> dict[str, Any]:
        """The stored steps and counters (for a checkpoint)."""
        arrays = ("observations", "actions", "rewards", "dones", "episode_ids", "episode_steps")
        state: dict[str, Any] = {name: getattr(self, name).copy() for name in arrays}
        state |= {"added": self.added, "episode": self._episode.copy(), "step": self._step_in_episode.copy()}
        ids = sorted(self.terminal)
        state["terminal_ids"] = np.array(ids, dtype=np.int64)
        if ids:
            state["terminal_observations"] = np.stack([self.terminal[i] for i in ids])
        if self.render_states is not None:
            state["render_states"] = self.render_states.copy()
        return state

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore :meth:`state_dict`; shapes must match (same envs, capacity and spaces)."""
        for name in ("observations", "actions", "rewards", "dones", "episode_ids", "episode_steps"):
            saved, current = np.asarray(state[name]), getattr(self, name)
            if saved.shape != current.shape:
                raise UsageError(f"recent steps: saved {name} {saved.shape}, expected {current.shape}")
            current[...] = saved
        self.added = int(state["added"])
        self._episode = np.asarray(state["episode"], dtype=np.int64).copy()
        self._step_in_episode = np.asarray(state["step"], dtype=np.int64).copy()
        ids = [int(i) for i in np.asarray(state.get("terminal_ids", []))]
        observations: Any = np.asarray(state["terminal_observations"]) if ids else []
        self.terminal = {i: np.array(o) for i, o in zip(ids, observations, strict=True)}
        saved_states = state.get("render_states")
        self.render_states = None if saved_states is None else np.array(saved_states)

    def trajectories(self) -> list[Trajectory]:
        """The stored steps of every env, split at episode ends, oldest first; a trajectory's ``start``
        is the episode step of its first row (an episode partly overwritten starts after 0)."""
        stored = min(self.added, self.capacity)
        order = (np.arange(stored) + (self.added - stored)) % self.capacity
        found: list[Trajectory] = []
        for env in range(self.n_envs):
            pieces = split_episodes(
                self.observations[env, order],
                self.actions[env, order],
                self.rewards[env, order],
                self.dones[env, order],
                render_states=None if self.render_states is None else self.render_states[env, order],
            )
            offset = 0
            for piece in pieces:
                row = order[offset]
                episode = int(self.episode_ids[env, row])
                last = order[offset + len(piece.observations) - 1]
                terminal = self.terminal.get(episode) if self.dones[env, last] else None
                found.append(
                    piece._replace(
                        episode_id=episode,
                        start=int(self.episode_steps[env, row]),
                        terminal_observation=terminal,
                    )
                )
                offset += len(piece.observations)
        return found


class LearnedRewardVecEnv(VecEnvWrapper):
    """Rewards from ``reward_fn(o_t, a_t)`` instead of the env's; ``info["true_reward"]`` keeps the env's.

    :param venv: the env (its monitor reports true episode returns)
    :param reward_fn: the learned reward, batched over envs (see :data:`RewardFunction`)
    :param recent_steps: steps per env kept for cutting clips (0: record nothing)
    :param agent_reward: ``learned`` returns the prediction; ``env`` returns the env's reward while
        still predicting (a control run: the machinery's cost with the agent's behavior unchanged)
    """

    def __init__(
        self, venv: VecEnv, reward_fn: RewardFunction, recent_steps: int = 0, agent_reward: str = "learned"
    ) -> None:
        super().__init__(venv)
        if agent_reward not in AGENT_REWARDS:
            raise UsageError(f"agent_reward must be one of {', '.join(AGENT_REWARDS)}; got {agent_reward!r}")
        self.reward_fn = reward_fn
        self.agent_reward = agent_reward
        self.reward_seconds = 0.0  # wall time spent predicting rewards
        self._last_obs: np.ndarray | None = None
        self._actions: np.ndarray | None = None
        self.recent: RecentSteps | None = None
        if recent_steps > 0:
            space = venv.observation_space
            action_space = venv.action_space
            if space.shape is None or action_space.shape is None:
                raise UsageError("the learned reward needs Box or Discrete observations and actions")
            self.recent = RecentSteps(
                venv.num_envs,
                recent_steps,
                tuple(space.shape),
                tuple(action_space.shape),
                observation_dtype=space.dtype if space.dtype is not None else np.float32,
                action_dtype=action_space.dtype if action_space.dtype is not None else np.float32,
            )

    def reset(self) -> VecEnvObs:
        obs = self.venv.reset()
        self._last_obs = np.asarray(obs)
        if self.recent is not None:
            self.recent.end_episodes()  # a reset ends the episodes in progress (e.g. on resume)
        return obs

    def step_async(self, actions: np.ndarray) -> None:
        self._actions = np.asarray(actions)
        self.venv.step_async(actions)

    def step_wait(self) -> VecEnvStepReturn:
        obs, true_rewards, dones, infos = self.venv.step_wait()
        if self._last_obs is None or self._actions is None:
            raise RuntimeError("LearnedRewardVecEnv.step_wait before reset() and step_async()")
        acted_in, actions = self._last_obs, self._actions
        # The policy maximizes the predicted reward of the observation each action was taken in.
        started = time.perf_counter()
        rewards = np.asarray(self.reward_fn(acted_in, actions), dtype=np.float32).reshape(self.num_envs)
        self.reward_seconds += time.perf_counter() - started
        true_rewards = np.asarray(true_rewards, dtype=np.float32)
        for info, true_reward in zip(infos, true_rewards, strict=True):
            info["true_reward"] = float(true_reward)
        if self.recent is not None:
            # (checked first: most steps end no episode and draw nothing, and this runs every step)
            terminal = None
            if dones.any():
                terminal = {
                    env: info["terminal_observation"]
                    for env, (done, info) in enumerate(zip(dones, infos, strict=True))
                    if done and "terminal_observation" in info and not info.get("TimeLimit.truncated", False)
                }
            render_states = None
            if infos and infos[0].get("render_state") is not None:
                states = [info["render_state"] for info in infos if info.get("render_state") is not None]
                render_states = np.stack(states) if len(states) == len(infos) else None
            self.recent.add(acted_in, actions, true_rewards, dones, terminal, render_states)
        # After an episode end the VecEnv has reset: ``obs`` is the next episode's first observation.
        self._last_obs = np.asarray(obs)
        return obs, true_rewards if self.agent_reward == "env" else rewards, dones, infos


def relabel_replay(model: Any, reward_fn: Callable[[Any, Any], Any], chunk_size: int = 1024) -> int:
    """Give every transition in an off-policy ``model``'s replay buffer the reward ``reward_fn`` now
    predicts (after a refit the stored rewards are stale); returns how many were relabeled, 0 for a
    model without a replay buffer (on-policy agents collect fresh rewards every rollout).

    Works with :class:`core.replay.EpisodicReplayBuffer` (its ``relabel_rewards``) and SB3's
    ``ReplayBuffer`` (``observations`` ``[size, n_envs, ...]``, ``actions``, ``rewards``).
    """
    buffer = getattr(model, "replay_buffer", None)
    if buffer is None:
        return 0
    if hasattr(buffer, "relabel_rewards"):
        return int(buffer.relabel_rewards(reward_fn, chunk_size))
    stored = buffer.buffer_size if buffer.full else buffer.pos
    n_envs = buffer.n_envs
    for start in range(0, stored, max(chunk_size // n_envs, 1)):
        stop = min(stored, start + max(chunk_size // n_envs, 1))
        obs = buffer.observations[start:stop].reshape(-1, *buffer.obs_shape)
        actions = buffer.actions[start:stop].reshape(-1, buffer.action_dim)
        rewards = np.asarray(reward_fn(obs, actions), dtype=np.float32)
        buffer.rewards[start:stop] = rewards.reshape(stop - start, n_envs)
    return stored * n_envs
