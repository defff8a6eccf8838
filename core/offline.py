"""The offline learning loop shared by agents that learn from a fixed dataset (BRAC, BC, NAC, ...).

An :class:`OfflineAlgorithm` is an SB3 ``BaseAlgorithm`` whose steps are gradient steps:

    model.set_dataset(dataset)                    # checked against the env's spaces, kept on the device
    model.learn_offline(total_steps, callback)    # == model.learn(total_steps, callback)

``num_timesteps`` counts gradient steps, so SB3 callbacks (evaluation and checkpoints every N steps,
progress bars, a callback returning False to stop) work unchanged. The training env is never stepped:
``_setup_learn`` resets it once (SB3's bookkeeping); evaluation callbacks use their own env.

A subclass implements ``_setup_model`` and the hook :meth:`OfflineAlgorithm.train_step`, which makes one
gradient step on one batch and returns detached scalar statistics; the loop averages them over
``log_interval`` steps and records them as ``train/<name>`` (one host sync per interval, none per step).
"""

from __future__ import annotations

import time
from typing import Any, ClassVar, NamedTuple, TypeVar

import numpy as np
import torch as th
from gymnasium import spaces
from stable_baselines3.common.base_class import BaseAlgorithm
from stable_baselines3.common.type_aliases import MaybeCallback

from core.datasets import TransitionDataset
from core.errors import UsageError

SelfOfflineAlgorithm = TypeVar("SelfOfflineAlgorithm", bound="OfflineAlgorithm")

ACTION_BOUND_TOLERANCE = 1e-4  # relative to max(1, |bound|): float32 round-off of stored actions


class OfflineBatch(NamedTuple):
    """A batch of ``B`` transitions sampled uniformly from the dataset (float32, on the device).

    :param observations: ``[B, *obs_shape]``
    :param actions: ``[B, *action_shape]``
    :param rewards: ``[B]``
    :param next_observations: ``[B, *obs_shape]``
    :param discounts: ``[B]``: ``1 - terminated`` (time-limit truncations bootstrap)
    :param next_actions: ``[B, *action_shape]``: the dataset's action at ``s'`` (the next transition of
        the same episode); where there is none (episode end), the transition's own action
    """

    observations: th.Tensor
    actions: th.Tensor
    rewards: th.Tensor
    next_observations: th.Tensor
    discounts: th.Tensor
    next_actions: th.Tensor


class OfflineAlgorithm(BaseAlgorithm):
    """Base class of offline agents: dataset storage, batch sampling and the gradient-step loop.

    Subclasses call ``super().__init__`` with SB3's ``BaseAlgorithm`` arguments plus ``batch_size``, and
    implement ``_setup_model`` and :meth:`train_step`. The action spaces they accept are
    ``supported_offline_action_spaces``.

    :param batch_size: transitions per gradient step
    """

    supported_offline_action_spaces: ClassVar[tuple[type[spaces.Space], ...]] = (spaces.Box,)

    def __init__(self, *args: Any, batch_size: int = 256, **kwargs: Any) -> None:
        super().__init__(*args, **{**kwargs, "support_multi_env": True})
        supported = self.supported_offline_action_spaces
        if not isinstance(self.action_space, supported):
            names = " or ".join(space.__name__ for space in supported)
            raise UsageError(
                f"{type(self).__name__} needs a {names} action space, got {type(self.action_space).__name__}"
            )
        if batch_size < 1:
            raise UsageError(f"batch_size must be >= 1, got {batch_size}")
        self.batch_size = batch_size
        self.dataset_buffer: OfflineBatch | None = None
        self._n_updates = 0
        self._pending_stats: list[dict[str, th.Tensor]] = []

    # ----------------------------------------------------------------------------------------------
    # Dataset

    def set_dataset(self, dataset: TransitionDataset) -> None:
        """Check ``dataset`` against the model's spaces and keep it on ``self.device`` as float32 tensors.

        :raises UsageError: one line naming the first problem (empty, NaN, shapes, dtypes, bounds)
        """
        dataset.validate()
        self._check_observations(dataset.observations)
        self._check_actions(dataset.actions)
        ends = dataset.terminated.astype(bool) | dataset.truncated.astype(bool)
        # The next transition continues the episode when this one did not end and s' is its s.
        continues = ~ends[:-1] & (dataset.next_observations[:-1] == dataset.observations[1:]).reshape(
            len(dataset) - 1, -1
        ).all(axis=1)
        next_actions = dataset.actions.copy()
        next_actions[:-1][continues] = dataset.actions[1:][continues]

        def tensor(array: np.ndarray) -> th.Tensor:
            return th.as_tensor(np.asarray(array, dtype=np.float32)).to(self.device)

        self.dataset_buffer = OfflineBatch(
            observations=tensor(dataset.observations),
            actions=tensor(dataset.actions),
            rewards=tensor(dataset.rewards.reshape(-1)),
            next_observations=tensor(dataset.next_observations),
            discounts=tensor(1.0 - dataset.terminated.astype(np.float32)),
            next_actions=tensor(next_actions),
        )

    def _env_name(self) -> str:
        try:
            spec = self.env.get_attr("spec", [0])[0] if self.env is not None else None
        except (AttributeError, IndexError):
            spec = None
        return spec.id if spec is not None else "the env"

    def _check_observations(self, observations: np.ndarray) -> None:
        space = self.observation_space
        if not isinstance(space, spaces.Box):
            raise UsageError(
                f"dataset: {type(self).__name__} needs Box observations, got {type(space).__name__}"
            )
        if observations.shape[1:] != space.shape:
            raise UsageError(
                f"dataset: observations have shape {observations.shape[1:]}, "
                f"{self._env_name()} expects {space.shape}"
            )
        same_kind = np.issubdtype(observations.dtype, np.number) and (
            np.issubdtype(observations.dtype, np.floating) or np.issubdtype(space.dtype, np.integer)
        )
        if not same_kind:
            raise UsageError(
                f"dataset: observations have dtype {observations.dtype}, "
                f"{self._env_name()} expects {space.dtype}"
            )

    def _check_actions(self, actions: np.ndarray) -> None:
        space = self.action_space
        name = self._env_name()
        if isinstance(space, spaces.Discrete):
            if actions.ndim != 1 or not np.issubdtype(actions.dtype, np.integer):
                raise UsageError(
                    f"dataset: actions have shape {actions.shape[1:]} and dtype {actions.dtype}, "
                    f"{name} expects integer actions of shape ()"
                )
            bad = np.flatnonzero((actions < 0) | (actions >= space.n))
            if bad.size:
                raise UsageError(
                    f"dataset: action {actions[bad[0]]} (transition {bad[0]}) is outside "
                    f"{name}'s 0..{space.n - 1}"
                )
            return
        assert isinstance(space, spaces.Box)
        if actions.shape[1:] != space.shape:
            raise UsageError(f"dataset: actions have shape {actions.shape[1:]}, {name} expects {space.shape}")
        if not np.issubdtype(actions.dtype, np.floating):
            raise UsageError(f"dataset: actions have dtype {actions.dtype}, {name} expects floats")
        low, high = space.low.astype(np.float64), space.high.astype(np.float64)
        tolerance = ACTION_BOUND_TOLERANCE * np.maximum(1.0, np.maximum(np.abs(low), np.abs(high)))
        outside = ((actions < low - tolerance) | (actions > high + tolerance)).reshape(len(actions), -1)
        if outside.any():
            row = int(np.flatnonzero(outside.any(axis=1))[0])
            column = int(np.flatnonzero(outside[row])[0])
            value = float(actions.reshape(len(actions), -1)[row, column])
            raise UsageError(
                f"dataset: action component {column} is {value:g} at transition {row}, outside {name}'s "
                f"bounds [{low.flat[column]:g}, {high.flat[column]:g}]"
            )

    def sample(self, batch_size: int) -> OfflineBatch:
        """``batch_size`` transitions drawn uniformly with replacement, indices drawn on the device by
        torch's default generator (seeded by ``set_random_seed``, saved with the RNG states)."""
        if self.dataset_buffer is None:
            raise UsageError(f"{type(self).__name__}: no dataset; call set_dataset(dataset) first")
        size = self.dataset_buffer.rewards.shape[0]
        indices = th.randint(size, (batch_size,), device=self.device)
        return OfflineBatch(*(array[indices] for array in self.dataset_buffer))

    # ----------------------------------------------------------------------------------------------
    # Learning

    def train_step(self, batch: OfflineBatch) -> dict[str, th.Tensor]:
        """One gradient step on ``batch``; returns detached scalar statistics (logged as ``train/*``).

        ``self._n_updates`` is the number of completed steps (the loop adds one after this returns).
        """
        raise NotImplementedError

    def learn_offline(
        self: SelfOfflineAlgorithm,
        total_steps: int,
        callback: MaybeCallback = None,
        log_interval: int = 1000,
        tb_log_name: str = "run",
        reset_num_timesteps: bool = True,
        progress_bar: bool = False,
    ) -> SelfOfflineAlgorithm:
        """Make ``total_steps`` gradient steps on the dataset (``num_timesteps`` +1 per step).

        :param total_steps: gradient steps (added to ``num_timesteps`` unless ``reset_num_timesteps``)
        :param callback: SB3 callback(s); ``on_step`` runs after every gradient step, False stops
        :param log_interval: gradient steps between two dumps of the logger (0: only at the end)
        :param tb_log_name: TensorBoard run name
        :param reset_num_timesteps: start counting steps from 0
        :param progress_bar: SB3's tqdm/rich progress bar
        """
        if self.dataset_buffer is None:
            raise UsageError(f"{type(self).__name__}: no dataset; call set_dataset(dataset) before learning")
        if self.env is None:
            raise UsageError(
                f"{type(self).__name__}: no env; pass one (it is only reset, for evaluation spaces)"
            )
        total_steps, callback = self._setup_learn(
            total_steps, callback, reset_num_timesteps, tb_log_name, progress_bar
        )
        callback.on_training_start(locals(), globals())
        self._pending_stats = []
        last_dump = (self.num_timesteps, time.perf_counter())
        while self.num_timesteps < total_steps:
            self._pending_stats.append(self.train_step(self.sample(self.batch_size)))
            self._n_updates += 1
            self.num_timesteps += 1
            self._update_current_progress_remaining(self.num_timesteps, total_steps)
            if not callback.on_step():
                break
            if log_interval > 0 and self.num_timesteps % log_interval == 0:
                last_dump = self._dump_offline_logs(last_dump)
        if self._pending_stats:
            self._dump_offline_logs(last_dump)
        callback.on_training_end()
        return self

    def learn(
        self: SelfOfflineAlgorithm,
        total_timesteps: int,
        callback: MaybeCallback = None,
        log_interval: int = 1000,
        tb_log_name: str = "run",
        reset_num_timesteps: bool = True,
        progress_bar: bool = False,
    ) -> SelfOfflineAlgorithm:
        """:meth:`learn_offline` under SB3's name; ``total_timesteps`` counts gradient steps."""
        return self.learn_offline(
            total_timesteps, callback, log_interval, tb_log_name, reset_num_timesteps, progress_bar
        )

    def _dump_offline_logs(self, last_dump: tuple[int, float]) -> tuple[int, float]:
        """Record the mean of the pending statistics and dump; returns the new ``(step, time)`` mark."""
        stats, self._pending_stats = self._pending_stats, []
        for key in dict.fromkeys(key for step_stats in stats for key in step_stats):
            values = th.stack([step_stats[key] for step_stats in stats if key in step_stats])
            self.logger.record(f"train/{key}", values.float().mean().item())
        step, now = self.num_timesteps, time.perf_counter()
        self.logger.record("train/n_updates", self._n_updates, exclude="tensorboard")
        if step > last_dump[0]:
            self.logger.record(
                "time/gradient_steps_per_s", (step - last_dump[0]) / max(now - last_dump[1], 1e-9)
            )
        self.logger.record("time/total_timesteps", step, exclude="tensorboard")
        self.logger.dump(step=step)
        return step, now

    def _excluded_save_params(self) -> list[str]:
        return [*super()._excluded_save_params(), "dataset_buffer", "_pending_stats"]
