"""Settings of a preference run (``zoo train pref``): the ``preference:`` blocks of zoo.yaml, checked.

A run that learns from preferences stores these under ``preference:`` in its ``config.yaml``; the
agent itself is an ordinary registered agent (``--policy``, PPO by default) that never sees the env's
reward. See :mod:`rewards.loop` for the schedule and :mod:`rewards.session` for how a run uses them.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

# The names of rewards.clips.STRATEGIES and rewards.labelers.PRESETS (a test keeps them equal), spelled
# out so that reading a config does not import torch.
TEACHERS = ("oracle", "stoc", "mistake", "skip", "equal", "myopic")
LABELERS = ("synthetic", "human", *(f"teacher:{name}" for name in TEACHERS))


class PreferenceSettings(BaseModel):
    """How labels are asked for, answered and learned from.

    :param labeler: ``synthetic`` (the oracle on the true reward), ``teacher:NAME`` (a simulated
        imperfect teacher: oracle, stoc, mistake, skip, equal, myopic) or ``human`` (queries go to the
        label store; people answer on the labeling page)
    :param labels: total label budget
    :param clip_length: steps per clip
    :param initial_share: share of the budget asked before RL starts learning from the reward
    :param horizon: the label rate decays as ``horizon / (t + horizon)`` (paper: 2e6 MuJoCo, 5e6 Atari)
    :param query_every: env steps between query rounds (rounds run at rollout ends)
    :param strategy: query selection: ``variance`` (ensemble disagreement), ``random`` or ``mixed``
    :param oversampling: candidate pairs drawn per query
    :param members: reward ensemble size
    :param hidden: hidden sizes of the reward MLP (vector observations)
    :param use_actions: the reward sees the action too, ``r(o, a)`` (None: yes for vector observations,
        no for Atari frames)
    :param dropout: dropout of the reward nets (None: 0.5 for the Atari CNN, 0 for the MLP)
    :param learning_rate: Adam learning rate of the reward nets
    :param initial_epochs: fitting epochs after the first round
    :param epochs: fitting epochs after each later round
    :param batch_size: comparisons per reward-model gradient step
    :param background_fit: fit the reward model in a worker thread while the agent trains, applied at
        the next rollout end (uses a spare core; the agent learns from each fit one rollout later)
    :param agent_reward: what the agent learns from: ``learned`` (the reward model's prediction) or
        ``env`` (a control run: the env's own reward, while the whole loop still runs - queries,
        labels, fits, per-step predictions; the agent then behaves exactly as a plain run of the same
        seed, so the run's extra wall time is the machinery's cost alone, and the logged validation
        accuracy and return correlation show how well the reward model learns a true-reward
        learner's behavior)
    :param random_answer_rate: the preference model's chance of a uniformly random answer (paper: 0.1)
    :param recent_steps: steps per env kept to cut clips from (None: enough for two rounds)
    :param run_ahead: human labeler: training waits while more than this many asked labels are
        unanswered (None: never waits)
    :param poll_seconds: human labeler: how often a waiting run checks the label store
    :param relabel_replay: off-policy agents: after each fit, the replay's stored rewards are replaced
        by the new model's (the paper's agents are on-policy; stale rewards would otherwise linger)
    :param absorbing_ends: clips may run past an episode's termination into the absorbing state (the
        terminal observation, reward 0), and the learned reward is shifted to be 0 there; so episodes
        shorter than a clip still give clips, and ending early compares as what it is
    :param store: SQLAlchemy URL of the label store (None: ``RUN/labels.sqlite``)
    :param instructions: markdown shown to human labelers on the labeling page
    :param videos: draw each query's clips to ``clips/<hex>.mp4`` before asking it (None: with the
        human labeler only); MuJoCo and classic-control runs then record render states
    :param video_width: width of the videos in pixels (MuJoCo renders at width x 3/4 width)
    :param video_fps: frames per second of the videos (None: the env's real time, at most 60;
        Atari 15)
    :param serve: human labeler: ``zoo train pref`` serves the labeling page while it trains
    :param host: address the labeling page binds (anything but loopback requires labeler tokens)
    :param port: port of the labeling page (0: any free one)
    :param lease_seconds: how long a query shown to one labeler is kept from the others
    :param repeat_share: share of each round's queries that repeat an answered one with the clips
        mirrored (measures consistency; the stats page shows the agreement)
    :param gold_share: share of each round's queries whose answer is known from the true reward (the
        pair of candidates whose true returns differ most; measures accuracy)
    """

    model_config = ConfigDict(extra="forbid")

    labeler: str = "synthetic"
    labels: int = Field(700, gt=0)
    clip_length: int = Field(25, gt=0)
    initial_share: float = Field(0.25, ge=0.0, le=1.0)
    horizon: float = Field(2e6, gt=0)
    query_every: int = Field(2048, gt=0)
    strategy: Literal["variance", "random", "mixed"] = "variance"
    oversampling: int = Field(10, gt=0)
    members: int = Field(3, gt=0)
    hidden: tuple[int, ...] = (64, 64)
    use_actions: bool | None = None
    dropout: float | None = Field(None, ge=0.0, lt=1.0)
    learning_rate: float = Field(3e-4, gt=0)
    initial_epochs: int = Field(50, gt=0)
    epochs: int = Field(5, gt=0)
    batch_size: int = Field(64, gt=0)
    background_fit: bool = False
    agent_reward: Literal["learned", "env"] = "learned"
    random_answer_rate: float = Field(0.1, ge=0.0, lt=1.0)
    recent_steps: int | None = Field(None, gt=0)
    run_ahead: int | None = Field(None, ge=0)
    poll_seconds: float = Field(2.0, gt=0)
    relabel_replay: bool = True
    absorbing_ends: bool = True
    store: str | None = None
    instructions: str = (
        "Watch both clips. Choose the one in which the agent does better at the task; "
        "choose equal if they are about as good, and can't tell if you cannot judge."
    )
    videos: bool | None = None
    video_width: int = Field(320, ge=16, le=1920)
    video_fps: float | None = Field(None, gt=0, le=240)
    serve: bool = True
    host: str = "127.0.0.1"
    port: int = Field(8765, ge=0, le=65535)
    lease_seconds: float = Field(600.0, gt=0)
    repeat_share: float = Field(0.0, ge=0.0, le=0.5)
    gold_share: float = Field(0.0, ge=0.0, le=0.5)

    @property
    def draws_videos(self) -> bool:
        """Whether the run renders its queries' clips (``videos``, defaulting to the human labeler)."""
        return self.labeler == "human" if self.videos is None else self.videos

    @field_validator("labeler")
    @classmethod
    def _known_labeler(cls, value: str) -> str:
        if value not in LABELERS:
            raise ValueError(f"expected one of {', '.join(LABELERS)}; got {value!r}")
        return value

    @field_validator("hidden")
    @classmethod
    def _positive_sizes(cls, value: tuple[int, ...]) -> tuple[int, ...]:
        if not value or any(size < 1 for size in value):
            raise ValueError(f"hidden sizes must be positive integers; got {list(value)}")
        return value
