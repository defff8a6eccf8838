"""Atari 2600 games (ALE v5 ids) with the DQN preprocessing, on two interchangeable backends.

Training envs follow Mnih et al. (2015) as SB3's ``AtariWrapper`` implements it: a random number of
no-ops at reset, each action repeated ``frame_skip`` times with the max of the last two frames,
84x84 grayscale, a life loss ends the (training) episode without resetting the game, rewards
clipped to their sign, the last ``frame_stack`` frames stacked channel-first: ``uint8`` arrays of
shape ``(frame_stack, 84, 84)``. Evaluation envs (``training=False``) play full games and report
raw scores with the same frame preprocessing. Sticky actions (Machado et al. 2018) are on by default
as in ALE v5. Either way ``info["episode"]`` carries the raw whole-game score and length.

Backends of :meth:`AtariFamily.make_vec_env`:

- ``wrappers``: SB3's Atari wrappers in ``AtariWrapper``'s order over ``gymnasium.make(id,
  frameskip=1, ...)``, a ``DummyVecEnv``, ``VecFrameStack`` and ``VecTransposeImage``: the same
  observation and reward stream as SB3's ``make_atari_env`` + ``VecFrameStack`` +
  ``VecTransposeImage`` for one seed and action sequence (tests/test_envs.py checks it).
- ``native``: ale-py's C++ ``AtariVectorEnv`` (preprocessing and stacking in C++ threads) behind
  :class:`NativeAtariVecEnv`, an SB3 ``VecEnv``. Differences from ``wrappers``: grayscale is taken per
  frame by ALE before the max-pool (SB3 max-pools RGB, then converts), and after a life loss the
  game goes on from where it was (SB3 takes a no-op step and presses FIRE); the stack is zero-padded
  at every episode start, life-loss starts included, as ``VecFrameStack`` does.
- ``auto``: see :func:`resolve_backend`.
"""

from __future__ import annotations

import time
from functools import cache
from typing import TYPE_CHECKING, Annotated, Any, Literal, cast

import gymnasium as gym
import numpy as np
from pydantic import Field
from stable_baselines3.common.atari_wrappers import (
    ClipRewardEnv,
    EpisodicLifeEnv,
    FireResetEnv,
    MaxAndSkipEnv,
    NoopResetEnv,
    WarpFrame,
)
from stable_baselines3.common.monitor import Monitor
from stable_baselines3.common.type_aliases import AtariResetReturn, AtariStepReturn
from stable_baselines3.common.vec_env import DummyVecEnv, VecEnv, VecFrameStack, VecTransposeImage
from stable_baselines3.common.vec_env.base_vec_env import VecEnvIndices, VecEnvObs, VecEnvStepReturn

from core.envs import EnvFamily, EnvOptions, RenderStateInfo
from core.errors import UsageError
from envs import make_registered_env, seed_env

if TYPE_CHECKING:
    from ale_py.env import AtariEnv

Backend = Literal["native", "wrappers"]

DQN_2013_GAMES = ("Pong", "Breakout", "SpaceInvaders", "Seaquest", "BeamRider", "Qbert", "Enduro")


class AtariOptions(EnvOptions):
    """Options of the Atari family (defaults: ALE v5 with the DQN preprocessing).

    :param repeat_action_probability: sticky actions: probability that ALE repeats the previous
        action instead of the chosen one, per emulator frame (0.25 as in ALE v5; 0 = deterministic)
    :param noop_max: at reset, take a random number of no-op steps in ``[1, noop_max]`` (0: none)
    :param frame_skip: emulator frames per agent step; the observation is the max of the last two
    :param frame_stack: number of consecutive 84x84 frames stacked into one observation
    :param screen_size: side of the square grayscale frame
    :param terminal_on_life_loss: training only: a lost life ends the episode (the game goes on)
    :param clip_reward: training only: rewards are clipped to their sign, {-1, 0, +1}
    :param fire_reset: press FIRE at reset in games that need it to start
    :param full_action_space: use all 18 joystick actions instead of the game's minimal set
    :param max_episode_frames: truncate a game after this many emulator frames (108000 = 30 min)
    :param backend: ``native`` (ale-py's C++ vector env), ``wrappers`` (SB3's wrappers, the exact
        stream of SB3's Atari pipeline) or ``auto`` (the faster one on the measured machine)
    :param env_kwargs: extra keyword arguments for ``gymnasium.make`` (``wrappers`` backend only)
    :param record_render_state: every step's ``info["render_state"]`` holds the emulator's state (to
        draw the colour screen of clips later; :class:`core.envs.RenderStateInfo`); needs, and
        under ``auto`` picks, the ``wrappers`` backend. Preference runs with human labelers set it
    """

    repeat_action_probability: Annotated[float, Field(ge=0.0, le=1.0)] = 0.25
    noop_max: Annotated[int, Field(ge=0)] = 30
    frame_skip: Annotated[int, Field(ge=1)] = 4
    frame_stack: Annotated[int, Field(ge=1)] = 4
    screen_size: Annotated[int, Field(ge=1)] = 84
    terminal_on_life_loss: bool = True
    clip_reward: bool = True
    fire_reset: bool = True
    full_action_space: bool = False
    max_episode_frames: Annotated[int, Field(ge=1)] = 108_000
    backend: Literal["auto", "native", "wrappers"] = "auto"
    record_render_state: bool = False


@cache
def _game_ids() -> dict[str, str]:
    """``{"ALE/Pong-v5": "pong", ...}`` for every game ale-py registers."""
    import ale_py

    gym.register_envs(ale_py)
    return {
        env_id: spec.kwargs["game"]
        for env_id, spec in gym.registry.items()
        if env_id.startswith("ALE/") and env_id.endswith("-v5")
    }


def resolve_backend(options: AtariOptions, n_envs: int) -> Backend:
    """The backend ``options.backend`` names; ``auto`` is ``native`` unless ``env_kwargs`` are given.

    ``auto`` is ``native`` because it was the faster one at every ``n_envs`` measured, with
    ``benchmarks/env_backends.py`` (ALE/Pong-v5, training env with default options, random actions,
    env steps/s, median of 3 runs of 4000 steps; 2 shared CPU cores, no GPU; an earlier run on the
    same machine gave 1599/2439 and 1828/2888, the same order):

    ======  ========  ======  ==============
    n_envs  wrappers  native  native/wrappers
    ======  ========  ======  ==============
    1       1669      2121    1.27
    8       1827      4092    2.24
    ======  ========  ======  ==============

    With ``env_kwargs`` (which only ``gymnasium.make`` takes) ``auto`` is ``wrappers``. ``n_envs`` is
    part of the signature so that the choice can depend on it on other machines.
    """
    if options.backend == "native" and options.env_kwargs:
        raise UsageError("Atari backend 'native' takes no env_kwargs; use backend: wrappers")
    if options.backend == "native" and options.record_render_state:
        raise UsageError("Atari backend 'native' cannot record render states; use backend: wrappers")
    if options.backend != "auto":
        return options.backend
    return "wrappers" if options.env_kwargs or options.record_render_state else "native"


class StrictEpisodicLifeEnv(EpisodicLifeEnv):
    """SB3's ``EpisodicLifeEnv``, except that ``reset()`` continues the game only right after a
    life-loss episode end; otherwise it resets the game.

    SB3's version continues whenever the game is not over, so a ``reset(seed=...)`` in mid-game
    (gymnasium's env checker does that) would not reset. After an episode end both behave alike,
    which is the only time a VecEnv resets.
    """

    def __init__(self, env: gym.Env) -> None:
        super().__init__(env)
        self.life_lost = False

    def step(self, action: int) -> AtariStepReturn:
        obs, reward, terminated, truncated, info = super().step(action)
        self.life_lost = bool(terminated) and not self.was_real_done
        return obs, reward, terminated, truncated, info

    def reset(self, **kwargs: Any) -> AtariResetReturn:
        if not self.life_lost:
            self.was_real_done = True
        self.life_lost = False
        return super().reset(**kwargs)


def make_preprocessed_env(
    env_id: str, options: AtariOptions, *, training: bool, render_mode: str | None = None
) -> gym.Env:
    """One ALE env with SB3's Atari wrappers, observations ``(screen_size, screen_size, 1)``.

    The wrappers and their order are those of SB3's ``AtariWrapper`` (sticky actions are ALE's own,
    as in ``make_atari_env`` with ``repeat_action_probability``); composing them here lets
    ``fire_reset`` be switched off. A ``Monitor`` under the life-loss and clipping wrappers records
    the raw whole-game score in ``info["episode"]``; it sits above the frame skip so that the
    length counts agent steps, as the native backend does (plus the FIRE and no-op steps that the
    reset wrappers take; SB3's ``make_atari_env`` counts emulator frames).
    """
    import ale_py

    gym.register_envs(ale_py)
    env: gym.Env = make_registered_env(
        env_id,
        env_kwargs=options.env_kwargs,
        render_mode=render_mode,
        frameskip=1,
        repeat_action_probability=options.repeat_action_probability,
        full_action_space=options.full_action_space,
        max_num_frames_per_episode=options.max_episode_frames,
    )
    if options.noop_max > 0:
        env = NoopResetEnv(env, noop_max=options.noop_max)
    if options.frame_skip > 1:
        env = MaxAndSkipEnv(env, skip=options.frame_skip)
    env = Monitor(env)
    if training and options.terminal_on_life_loss:
        env = StrictEpisodicLifeEnv(env)
    if options.fire_reset and "FIRE" in cast("AtariEnv", env.unwrapped).get_action_meanings():
        env = FireResetEnv(env)
    env = WarpFrame(env, width=options.screen_size, height=options.screen_size)
    if training and options.clip_reward:
        env = ClipRewardEnv(env)
    if options.record_render_state:
        env = RenderStateInfo(env)  # outermost: the emulator's state after the whole agent step
    return env


class NativeAtariVecEnv(VecEnv):
    """ale-py's ``AtariVectorEnv`` as an SB3 ``VecEnv`` with SB3's auto-reset and episode semantics.

    The C++ env runs in ``SAME_STEP`` autoreset mode without its own life-loss or clipping logic:
    when a game ends the returned observation already starts the next game and the final one is in
    ``info["terminal_observation"]``, as in SB3's ``DummyVecEnv``. Life-loss episode ends (from
    the ``lives`` counter, as SB3's ``EpisodicLifeEnv`` does) and reward clipping are applied here,
    so ``info["episode"] = {"r", "l", "t"}`` can report the raw score of each whole game.
    ``seed(s)`` makes the next ``reset()`` seed env ``i`` with ``s + i``.

    :param game: ALE ROM name, e.g. ``"pong"``
    :param n_envs: number of games stepped together
    :param options: preprocessing options (``env_kwargs`` and ``backend`` are not used)
    :param training: apply life-loss episode ends and reward clipping (if enabled in ``options``)
    :param num_threads: C++ worker threads (0: ale-py's default)
    """

    def __init__(
        self, game: str, n_envs: int, options: AtariOptions, *, training: bool, num_threads: int = 0
    ) -> None:
        from ale_py.vector_env import AtariVectorEnv
        from gymnasium.vector import AutoresetMode

        self.ale_vector_env = AtariVectorEnv(
            game,
            n_envs,
            num_threads=num_threads,
            max_num_frames_per_episode=options.max_episode_frames,
            repeat_action_probability=options.repeat_action_probability,
            full_action_space=options.full_action_space,
            autoreset_mode=AutoresetMode.SAME_STEP,
            img_height=options.screen_size,
            img_width=options.screen_size,
            stack_num=options.frame_stack,
            frameskip=options.frame_skip,
            noop_max=options.noop_max,
            episodic_life=False,
            reward_clipping=False,
            use_fire_reset=options.fire_reset,
        )
        self.render_mode: str | None = None
        super().__init__(
            n_envs,
            self.ale_vector_env.single_observation_space,
            self.ale_vector_env.single_action_space,
        )
        self.life_loss_ends = training and options.terminal_on_life_loss
        self.clip_reward = training and options.clip_reward
        self.frame_stack = options.frame_stack
        self._lives = np.zeros(n_envs, dtype=np.int64)
        self._game_returns = np.zeros(n_envs, dtype=np.float64)
        self._game_lengths = np.zeros(n_envs, dtype=np.int64)
        # Steps since the last life-loss episode start (frame_stack or more: nothing to mask).
        self._steps_since_life_start = np.full(n_envs, self.frame_stack, dtype=np.int64)
        self._actions = np.zeros(n_envs, dtype=np.int64)
        self._t_start = time.time()

    def reset(self) -> VecEnvObs:
        """Reset every game, seeded with the seeds of the last :meth:`seed` call (if any)."""
        seeds = None
        if any(seed is not None for seed in self._seeds):
            seeds = np.array([-1 if seed is None else seed for seed in self._seeds], dtype=np.int64)
        obs, info = self.ale_vector_env.reset(seed=seeds)
        self._reset_seeds()
        self._reset_options()
        self._lives = np.asarray(info["lives"], dtype=np.int64).copy()
        self._game_returns[:] = 0.0
        self._game_lengths[:] = 0
        self._steps_since_life_start[:] = self.frame_stack
        return obs

    def step_async(self, actions: np.ndarray) -> None:
        self._actions = np.asarray(actions, dtype=np.int64).reshape(self.num_envs)

    def step_wait(self) -> VecEnvStepReturn:
        obs, raw_rewards, terminated, truncated, info = self.ale_vector_env.step(self._actions)
        raw_rewards = raw_rewards.astype(np.float64)
        game_over = terminated | truncated
        lives = np.asarray(info["lives"], dtype=np.int64)
        # As SB3's EpisodicLifeEnv: 0 < lives < previous lives (Qbert sits at 0 lives for a while).
        life_lost = (lives > 0) & (lives < self._lives) & ~game_over
        life_lost &= self.life_loss_ends
        self._lives = lives.copy()
        self._game_returns += raw_rewards
        self._game_lengths += 1
        dones = game_over | life_lost
        infos: list[dict[str, Any]] = [{} for _ in range(self.num_envs)]
        for i in np.flatnonzero(dones):
            if game_over[i]:
                infos[i]["terminal_observation"] = info["final_obs"][i].copy()
                infos[i]["TimeLimit.truncated"] = bool(truncated[i] and not terminated[i])
                infos[i]["episode"] = {
                    "r": float(self._game_returns[i]),
                    "l": int(self._game_lengths[i]),
                    "t": round(time.time() - self._t_start, 6),
                }
                self._game_returns[i] = 0.0
                self._game_lengths[i] = 0
            else:
                infos[i]["terminal_observation"] = obs[i].copy()
                infos[i]["TimeLimit.truncated"] = False
                self._steps_since_life_start[i] = 0
        # Zero the frames of the previous life, as VecFrameStack pads a new episode's stack.
        for i in np.flatnonzero(self._steps_since_life_start < self.frame_stack - 1):
            obs[i, : self.frame_stack - 1 - self._steps_since_life_start[i]] = 0
        self._steps_since_life_start += 1
        rewards = np.sign(raw_rewards) if self.clip_reward else raw_rewards
        return obs, rewards.astype(np.float32), dones, infos

    def close(self) -> None:
        self.ale_vector_env.close()

    def get_attr(self, attr_name: str, indices: VecEnvIndices = None) -> list[Any]:
        """Attributes of the C++ vector env, one copy per env (there are no per-env objects)."""
        return [getattr(self.ale_vector_env, attr_name) for _ in self._get_indices(indices)]

    def set_attr(self, attr_name: str, value: Any, indices: VecEnvIndices = None) -> None:
        raise NotImplementedError("the native Atari backend has no per-env objects; use backend: wrappers")

    def env_method(
        self, method_name: str, *method_args: Any, indices: VecEnvIndices = None, **method_kwargs: Any
    ) -> list[Any]:
        raise NotImplementedError("the native Atari backend has no per-env objects; use backend: wrappers")

    def env_is_wrapped(self, wrapper_class: type[gym.Wrapper], indices: VecEnvIndices = None) -> list[bool]:
        """True for ``Monitor`` (this adapter reports Monitor's ``info["episode"]``), else False."""
        return [issubclass(Monitor, wrapper_class) for _ in self._get_indices(indices)]


class AtariFamily(EnvFamily):
    """Atari 2600 games (``ALE/<Game>-v5``, every game ale-py ships) with the DQN preprocessing.

    Options: :class:`AtariOptions`. See the module docstring for the training and evaluation
    protocols and the two backends of :meth:`make_vec_env`.
    """

    name = "atari"
    observation_kind = "image"
    Options = AtariOptions
    summary = "Atari 2600 (ALE v5) with DQN preprocessing: 84x84 grayscale, frame skip 4, stack 4"

    def env_ids(self) -> list[str]:
        """``ALE/<Game>-v5`` for every game ale-py registers: the seven games of the first DQN paper
        (Mnih et al. 2013) first, so that listings start with familiar names, then the rest sorted."""
        ids = _game_ids()
        first = [f"ALE/{game}-v5" for game in DQN_2013_GAMES if f"ALE/{game}-v5" in ids]
        return first + sorted(set(ids) - set(first))

    def owns(self, env_id: str) -> bool:
        """Whether ``env_id`` is an ALE v5 id (ale_py is imported only for ``ALE/`` ids)."""
        return env_id.startswith("ALE/") and env_id in _game_ids()

    @staticmethod
    def atari_options(options: EnvOptions) -> AtariOptions:
        """``options`` as :class:`AtariOptions` (a plain ``EnvOptions`` gets the defaults)."""
        if isinstance(options, AtariOptions):
            return options
        return AtariOptions.model_validate(options.model_dump())

    def make_env(
        self,
        env_id: str,
        *,
        options: EnvOptions,
        training: bool,
        seed: int | None = None,
        render_mode: str | None = None,
    ) -> gym.Env:
        """One env on the ``wrappers`` pipeline with a zero-padded channel-first frame stack:
        observations ``Box(0, 255, (frame_stack, screen_size, screen_size), uint8)``."""
        atari = self.atari_options(options)
        env = make_preprocessed_env(env_id, atari, training=training, render_mode=render_mode)
        env = gym.wrappers.ReshapeObservation(env, (atari.screen_size, atari.screen_size))
        env = gym.wrappers.FrameStackObservation(env, atari.frame_stack, padding_type="zero")
        return seed_env(env, seed)

    def make_vec_env(
        self,
        env_id: str,
        *,
        options: EnvOptions,
        n_envs: int,
        seed: int,
        training: bool,
        render_mode: str | None = None,
    ) -> VecEnv:
        """``n_envs`` games seeded ``seed, seed+1, ...`` on the backend :func:`resolve_backend` picks;
        observations ``(n_envs, frame_stack, screen_size, screen_size)`` uint8. The ``wrappers``
        backend always renders RGB screens (``get_images()``); ``render_mode`` selects it."""
        atari = self.atari_options(options)
        if render_mode is None and resolve_backend(atari, n_envs) == "native":
            vec_env: VecEnv = NativeAtariVecEnv(_game_ids()[env_id], n_envs, atari, training=training)
            vec_env.seed(seed)
            return vec_env

        def factory(rank: int) -> Any:
            def make() -> gym.Env:
                env = make_preprocessed_env(env_id, atari, training=training, render_mode="rgb_array")
                env.action_space.seed(seed + rank)
                return env

            return make

        dummy = DummyVecEnv([factory(rank) for rank in range(n_envs)])
        dummy.seed(seed)
        return VecTransposeImage(VecFrameStack(dummy, atari.frame_stack, channels_order="last"))


FAMILY = AtariFamily()
