"""A preference run's reward machinery, assembled from its settings: what the runner attaches to an
agent so that it learns from preferences instead of the env's reward.

:class:`PreferenceSession` wraps the agent's training env in :class:`rewards.wrapper.LearnedRewardVecEnv`
(the evaluation env stays unwrapped, so evaluations report the TRUE return), builds the reward ensemble,
opens the label store (``RUN/labels.sqlite`` unless ``store`` names a URL) and the clip folder, and
makes the :class:`rewards.loop.PreferenceCallback`. Its state goes into every checkpoint as
``preference.pt`` (tensors only, loaded with ``weights_only``); the comparisons are rebuilt from the
store on resume.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch as th
from gymnasium import spaces
from stable_baselines3.common.vec_env import VecEnv

from core.errors import UsageError, ZooError
from rewards.clipfiles import ClipFolder
from rewards.labelers import labeler_from_setting
from rewards.loop import PreferenceCallback, ensemble_reward_function
from rewards.models import RewardEnsemble, build_reward_ensemble
from rewards.rendering import ClipRenderer, QueryPublisher
from rewards.settings import PreferenceSettings
from rewards.store import LabelStore
from rewards.wrapper import LearnedRewardVecEnv

STATE_FILE = "preference.pt"


def default_recent_steps(settings: PreferenceSettings, n_envs: int) -> int:
    """Steps kept per env: two rounds' worth, and at least four clips."""
    return max(2 * math.ceil(settings.query_every / n_envs), 4 * settings.clip_length)


def open_store(settings: PreferenceSettings, run_dir: str | os.PathLike[str]) -> LabelStore:
    """The run's label store: ``settings.store`` if it names one, else ``RUN/labels.sqlite``."""
    return LabelStore(settings.store) if settings.store else LabelStore.for_run(run_dir)


def ensemble_from_settings(
    settings: PreferenceSettings, observation_space: spaces.Space, action_space: spaces.Space
) -> RewardEnsemble:
    """A fresh (unfitted) reward ensemble of the architecture ``settings`` describe."""
    return build_reward_ensemble(
        observation_space,
        action_space,
        members=settings.members,
        hidden=settings.hidden,
        dropout=settings.dropout,
        use_actions=settings.use_actions,
        learning_rate=settings.learning_rate,
        random_answer_rate=settings.random_answer_rate,
    )


def check_clip_length(clip_length: int, env: VecEnv) -> None:
    """A :class:`UsageError` when clips cannot fit in an episode of ``env`` (its time limit)."""
    try:
        spec = env.get_attr("spec", indices=0)[0]
    except (AttributeError, IndexError):
        return
    limit = getattr(spec, "max_episode_steps", None)
    if limit is not None and clip_length > limit:
        raise UsageError(
            f"preference.clip_length {clip_length} is longer than {spec.id}'s episodes allow "
            f"({limit} steps at most)"
        )


class PreferenceSession:
    """The learned-reward env, the ensemble, the store and the loop callback of one run.

    :param settings: the run's ``preference:`` settings
    :param env: the agent's training env (wrapped here; use :attr:`env` for the agent)
    :param run_dir: the run folder (label store and clips)
    :param total_steps: env steps of the run (the label budget is spent by then)
    :param device: torch device of the reward ensemble
    :param seed: seed of the ensemble's initialization, clip selection and simulated teachers
    :param should_stop: ends a wait for human labels (e.g. on Ctrl-C)
    :param notify: shows a one-line message
    """

    def __init__(
        self,
        settings: PreferenceSettings,
        env: VecEnv,
        run_dir: str | os.PathLike[str],
        *,
        total_steps: int,
        device: str = "cpu",
        seed: int = 0,
        should_stop: Callable[[], bool] | None = None,
        notify: Callable[[str], None] = print,
        env_id: str | None = None,
        env_kwargs: dict[str, Any] | None = None,
    ) -> None:
        self.settings = settings
        check_clip_length(settings.clip_length, env)
        with th.random.fork_rng(devices=[]):  # the ensemble's initialization leaves the agent's RNG alone
            th.manual_seed(seed)
            self.ensemble = ensemble_from_settings(settings, env.observation_space, env.action_space).to(
                device
            )
        recent = settings.recent_steps or default_recent_steps(settings, env.num_envs)
        self.env = LearnedRewardVecEnv(
            env,
            ensemble_reward_function(self.ensemble),
            recent_steps=recent,
            agent_reward=settings.agent_reward,
        )
        self.store = open_store(settings, run_dir)
        self.publisher: QueryPublisher | None = None
        if settings.draws_videos:
            if env_id is None:
                raise UsageError("clip videos need the env id (to draw MuJoCo and classic-control clips)")
            renderer = ClipRenderer(
                env_id, env_kwargs=env_kwargs, width=settings.video_width, fps=settings.video_fps
            )
            # People answer while the rest is drawn; a simulated labeler answers at once.
            background = settings.labeler == "human"
            self.publisher = QueryPublisher(
                renderer, self.store, ClipFolder(run_dir), notify, background=background
            )
        self.callback = PreferenceCallback(
            self.env,
            self.ensemble,
            labeler_from_setting(settings.labeler, seed),
            store=self.store,
            clips=ClipFolder(run_dir),
            labeler_name=settings.labeler,
            budget=settings.labels,
            total_steps=total_steps,
            clip_length=settings.clip_length,
            initial_share=settings.initial_share,
            horizon=settings.horizon,
            query_every=settings.query_every,
            strategy=settings.strategy,
            oversampling=settings.oversampling,
            initial_epochs=settings.initial_epochs,
            epochs=settings.epochs,
            batch_size=settings.batch_size,
            run_ahead=settings.run_ahead,
            poll_seconds=settings.poll_seconds,
            should_stop=should_stop,
            notify=notify,
            relabel_replay=settings.relabel_replay,
            absorbing_ends=settings.absorbing_ends,
            publisher=self.publisher,
            repeat_share=settings.repeat_share,
            gold_share=settings.gold_share,
            background_fit=settings.background_fit,
            seed=seed,
        )

    def save(self, directory: str | os.PathLike[str]) -> None:
        """Write the loop's state into a checkpoint folder."""
        th.save(_to_tensors(self.callback.state_dict()), Path(directory) / STATE_FILE)

    def load(self, directory: str | os.PathLike[str]) -> None:
        """Restore the loop's state from a checkpoint folder written by :meth:`save`."""
        path = Path(directory) / STATE_FILE
        try:
            state = th.load(path, map_location="cpu", weights_only=True)
        except FileNotFoundError:
            raise ZooError(f"{path}: missing; this checkpoint has no preference state") from None
        except Exception as error:  # a truncated or foreign file
            raise ZooError(f"{path}: cannot read ({type(error).__name__}: {error})") from None
        self.callback.load_state_dict(state)

    def close(self) -> None:
        """Finish drawing the queued videos (their queries then reach the store), close the store."""
        if self.publisher is not None:
            self.publisher.close()
        self.store.close()


def _to_tensors(value: Any) -> Any:
    """NumPy arrays -> CPU tensors, recursively (``weights_only`` loading accepts tensors, not arrays)."""
    if isinstance(value, np.ndarray):
        return th.from_numpy(np.ascontiguousarray(value))
    if isinstance(value, dict):
        return {k: _to_tensors(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return type(value)(_to_tensors(v) for v in value)
    return value
