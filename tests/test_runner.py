"""The runner's wiring: off-policy agents get the frame-deduplicating replay buffer."""

from __future__ import annotations

import pytest

from core.replay import EpisodicReplayBuffer
from zoo.config import resolve
from zoo.runner import build_model, make_env, prepare


@pytest.mark.parametrize(
    ("env_id", "overrides", "frame_stack", "n_steps"),
    [
        ("CartPole-v1", [], 1, 1),
        ("CartPole-v1", ["n_steps=3"], 1, 3),
        ("ALE/Pong-v5", ["buffer_size=1000"], 4, 1),
        ("ALE/Pong-v5", ["buffer_size=1000", "env.frame_stack=2"], 2, 1),
    ],
)
def test_off_policy_agents_get_the_episodic_buffer(
    env_id: str, overrides: list[str], frame_stack: int, n_steps: int
) -> None:
    config = resolve("scdqn", env_id, device="cpu", overrides=overrides)
    setup = prepare(config)
    env = make_env(setup, config, n_envs=1, seed=0, training=True)
    try:
        model = build_model(setup, config, env)
        buffer = model.replay_buffer
        assert isinstance(buffer, EpisodicReplayBuffer)
        assert (buffer.frame_stack, buffer.n_steps, buffer.gamma) == (
            frame_stack,
            n_steps,
            config.hyperparameters.get("gamma", 0.99),
        )
        assert model.n_steps == 1  # the buffer, not SB3's NStepReplayBuffer, computes n-step returns
    finally:
        env.close()


def test_memory_optimized_sb3_buffer_is_left_alone() -> None:
    config = resolve(
        "scdqn",
        "CartPole-v1",
        device="cpu",
        overrides=["optimize_memory_usage=true", "replay_buffer_kwargs.handle_timeout_termination=false"],
    )
    setup = prepare(config)
    env = make_env(setup, config, n_envs=1, seed=0, training=True)
    try:
        model = build_model(setup, config, env)
        assert type(model.replay_buffer).__name__ == "ReplayBuffer"
    finally:
        env.close()
