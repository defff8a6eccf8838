"""Clip videos: MP4 writing (H.264, decodable, exact frame counts), render states recorded per step and
restored exactly, clips drawn from states (MuJoCo off-screen, classic control) and from Atari frames,
and the publisher that adds a query only once both its videos exist."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import gymnasium as gym
import numpy as np
import pytest
from stable_baselines3 import PPO
from stable_baselines3.common.vec_env import DummyVecEnv, VecMonitor

from core.envs import RenderStateInfo, render_state, restore_render_state
from core.errors import UsageError
from rewards.clipfiles import ClipFolder
from rewards.clips import Clip
from rewards.loop import PreferenceCallback, ensemble_reward_function
from rewards.models import build_reward_ensemble
from rewards.rendering import ClipRenderer, QueryPublisher, newest_frames
from rewards.store import LabelStore, NewQuery
from rewards.video import count_frames, write_mp4
from rewards.wrapper import LearnedRewardVecEnv
from zoo.cli import main


def decoded(path: Path) -> list[np.ndarray]:
    import imageio_ffmpeg

    reader = imageio_ffmpeg.read_frames(str(path))
    meta = next(reader)
    width, height = meta["size"]
    return [np.frombuffer(frame, np.uint8).reshape(height, width, 3) for frame in reader]


def test_mp4_decodes_to_the_frames_written(tmp_path: Path) -> None:
    frames = [np.full((31, 45, 3), 8 * i, np.uint8) for i in range(24)]  # odd sizes are trimmed to even
    path = tmp_path / "clip.mp4"
    assert write_mp4(frames, path, fps=12) == 24
    assert count_frames(path) == 24
    back = decoded(path)
    assert back[0].shape == (30, 44, 3)
    brightness = [float(frame.mean()) for frame in back]
    assert brightness == sorted(brightness) and abs(brightness[-1] - 8 * 23) < 4
    assert list(tmp_path.iterdir()) == [path]  # no temporary file left


def test_mp4_bad_frames_are_refused_and_leave_nothing(tmp_path: Path) -> None:
    path = tmp_path / "clip.mp4"
    with pytest.raises(UsageError, match="no frames"):
        write_mp4([], path)
    with pytest.raises(UsageError, match="the first was 16x16"):
        write_mp4([np.zeros((16, 16, 3), np.uint8), np.zeros((8, 8, 3), np.uint8)], path)
    with pytest.raises(UsageError, match="fps"):
        write_mp4([np.zeros((16, 16, 3), np.uint8)], path, fps=0)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("env_id", ["CartPole-v1", "InvertedPendulum-v5"])
def test_render_states_restore_the_step_they_were_recorded_at(env_id: str) -> None:
    env = RenderStateInfo(gym.make(env_id))
    env.reset(seed=0)
    env.action_space.seed(0)
    recorded = []
    for _ in range(5):
        *_, info = env.step(env.action_space.sample())
        recorded.append((info["render_state"], render_state(env)))
    for from_info, now in recorded:
        np.testing.assert_array_equal(from_info, now)
    restore_render_state(env, recorded[1][0])
    np.testing.assert_array_equal(render_state(env), recorded[1][0])


def test_a_clip_is_drawn_from_its_states_as_the_env_drew_them(tmp_path: Path) -> None:
    """CartPole (pygame, no GL): each frame drawn from a recorded state equals the env's own frame."""
    env = RenderStateInfo(gym.make("CartPole-v1", render_mode="rgb_array"))
    env.reset(seed=0)
    states, frames = [], []
    for action in [0, 1, 1, 0, 1, 1]:
        *_, info = env.step(action)
        states.append(info["render_state"])
        frames.append(env.render())
    clip = Clip(np.zeros((6, 4), np.float32), np.zeros(6), None, 0, 0, 0, np.stack(states))
    renderer = ClipRenderer("CartPole-v1", width=128)
    drawn = renderer.frames(clip)
    assert len(drawn) == 6
    for ours, theirs in zip(drawn, frames, strict=True):
        np.testing.assert_array_equal(ours, theirs)
    assert renderer.fps(clip) == 50  # CartPole's real time
    path = tmp_path / "cartpole.mp4"
    assert renderer.write(clip, path) == 50 and count_frames(path) == 6
    renderer.close()


def test_mujoco_clips_render_off_screen(tmp_path: Path) -> None:
    env = RenderStateInfo(gym.make("Hopper-v5"))
    env.reset(seed=0)
    states = [env.step(env.action_space.sample())[-1]["render_state"] for _ in range(8)]
    clip = Clip(np.zeros((8, 11), np.float32), np.zeros((8, 3)), None, 0, 0, 0, np.stack(states))
    renderer = ClipRenderer("Hopper-v5", width=96)
    drawn = renderer.frames(clip)
    assert drawn[0].shape == (72, 96, 3) and all(frame.std() > 1 for frame in drawn)  # not blank
    assert renderer.fps(clip) == 60  # Hopper's real time is 125 steps/s: capped
    renderer.write(clip, tmp_path / "hopper.mp4")
    assert count_frames(tmp_path / "hopper.mp4") == 8
    renderer.close()


def test_atari_clips_are_drawn_from_their_newest_frames(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    stacks = rng.integers(0, 255, size=(5, 4, 84, 84), dtype=np.uint8)  # channel-first, as SB3 gives
    gray = newest_frames(stacks)
    np.testing.assert_array_equal(gray, stacks[:, -1])
    np.testing.assert_array_equal(newest_frames(np.moveaxis(stacks, 1, -1)), stacks[:, -1])
    clip = Clip(stacks, np.zeros(5, np.int64), None, 0, 0)
    renderer = ClipRenderer("ALE/Pong-v5", width=320)
    drawn = renderer.frames(clip)
    assert drawn[0].shape == (336, 336)  # scaled 4x to at least the width
    np.testing.assert_array_equal(drawn[2][::4, ::4], stacks[2, -1])
    assert renderer.write(clip, tmp_path / "pong.mp4") == 15
    assert count_frames(tmp_path / "pong.mp4") == 5
    with pytest.raises(UsageError, match="no render states"):
        newest_frames(np.zeros((5, 3), np.float32))


def test_padded_rows_hold_the_last_state(tmp_path: Path) -> None:
    from rewards.clips import Trajectory, cut_clips

    states = np.arange(12, dtype=np.float64).reshape(6, 2)
    trajectory = Trajectory(
        np.zeros((6, 3), np.float32), np.zeros((6, 1)), np.ones(6), 0, 0, np.ones(3, np.float32), states
    )
    (clip,) = cut_clips([trajectory], 4, 1, rng=np.random.default_rng(5), pad_terminal=True)
    assert clip.render_states is not None and len(clip.render_states) == 4
    kept = 4 - clip.padded
    np.testing.assert_array_equal(clip.render_states[:kept], states[clip.start : clip.start + kept])
    assert (clip.render_states[kept:] == clip.render_states[kept - 1]).all()
    folder = ClipFolder(tmp_path)
    np.testing.assert_array_equal(folder.load(folder.save(clip)).render_states, clip.render_states)


class SlowRenderer(ClipRenderer):
    """Draws a gray clip, slowly, to show that queries wait for their videos."""

    def __init__(self) -> None:
        super().__init__("unused", fps=10)

    def frames(self, clip: Clip) -> list[np.ndarray]:
        time.sleep(0.05)
        return [np.full((16, 16, 3), 100, np.uint8)] * clip.length


def test_the_publisher_adds_a_query_only_once_its_videos_exist(tmp_path: Path) -> None:
    store, folder = LabelStore.for_run(tmp_path), ClipFolder(tmp_path)
    clip = Clip(np.zeros((3, 2), np.float32), np.zeros((3, 1)), None, 0, 0)
    items = []
    for _ in range(6):
        left, right = folder.save(clip), folder.save(clip)
        items.append((NewQuery(left, right, "random", metadata={"clip_length": 3}), clip, clip))
    publisher = QueryPublisher(SlowRenderer(), store, folder, notify=lambda _: None)
    seen_without_video = threading.Event()
    done = threading.Event()

    def watch() -> None:
        while not done.is_set():
            for query_id in range(1, store.progress().total + 1):
                query = store.get_query(query_id)
                for reference in (query.left_clip, query.right_clip):
                    if not folder.video_path(reference).exists():
                        seen_without_video.set()

    watcher = threading.Thread(target=watch)
    watcher.start()
    assert publisher.publish(items) == []  # in the background: no ids yet
    assert publisher.queued() > 0
    publisher.close(timeout=30)
    done.set()
    watcher.join()
    assert not seen_without_video.is_set()
    assert publisher.queued() == 0 and store.progress().total == 6
    query = store.get_query(1)
    assert query.metadata == {"clip_length": 3, "fps": 10, "video": "mp4"}
    assert count_frames(folder.video_path(query.left_clip)) == 3
    store.close()


def test_a_failing_renderer_stops_the_run_with_one_line(tmp_path: Path) -> None:
    class Broken(ClipRenderer):
        def frames(self, clip: Clip) -> list[np.ndarray]:
            raise RuntimeError("no GL")

    store, folder = LabelStore.for_run(tmp_path), ClipFolder(tmp_path)
    clip = Clip(np.zeros((3, 2), np.float32), np.zeros((3, 1)), None, 0, 0)
    publisher = QueryPublisher(Broken("unused", fps=10), store, folder, notify=lambda _: None)
    publisher.publish([(NewQuery(folder.save(clip), folder.save(clip), "random"), clip, clip)])
    publisher.close(timeout=10)
    with pytest.raises(UsageError, match="cannot render clip videos: RuntimeError: no GL"):
        publisher.check()
    assert store.progress().total == 0  # the query without videos was never asked
    store.close()


def test_a_pref_run_with_videos_gives_every_query_two_playable_clips(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    run = tmp_path / "run"
    args = ["train", "pref", "--env", "CartPole-v1", "--steps", "512", "--labels", "4", "--run-dir", str(run)]
    args += ["--set", "preference.videos=true", "--set", "preference.query_every=256"]
    args += ["--set", "preference.clip_length=10", "--set", "preference.video_width=64", "--quiet"]
    assert main(args) == 0, capsys.readouterr().err
    folder = ClipFolder(run)
    with LabelStore.for_run(run) as store:
        assert store.progress() == (4, 0, 0, 4)
        for query_id in range(1, 5):
            query = store.get_query(query_id)
            assert query.metadata is not None and query.metadata["fps"] == 50
            for reference in (query.left_clip, query.right_clip):
                assert count_frames(folder.video_path(reference)) == 10


def test_human_queries_wait_for_their_videos_while_training_runs(tmp_path: Path) -> None:
    """The human path: the loop hands queries to a background publisher; the store gets them with
    their videos; a checkpoint taken meanwhile does not count the queries still being drawn."""
    base = VecMonitor(DummyVecEnv([lambda: RenderStateInfo(gym.make("CartPole-v1"))]))
    base.seed(0)
    ensemble = build_reward_ensemble(base.observation_space, base.action_space, members=2)
    env = LearnedRewardVecEnv(base, ensemble_reward_function(ensemble), recent_steps=512)
    store, folder = LabelStore.for_run(tmp_path), ClipFolder(tmp_path)
    publisher = QueryPublisher(SlowRenderer(), store, folder, notify=lambda _: None)
    loop = PreferenceCallback(
        env, ensemble, None, store=store, clips=folder, labeler_name="human", budget=8, total_steps=512,
        clip_length=10, query_every=256, publisher=publisher, notify=lambda _: None,
    )  # fmt: skip
    agent = PPO("MlpPolicy", env, n_steps=256, batch_size=64, n_epochs=1, seed=0, device="cpu")
    agent.learn(256, callback=loop)
    assert loop.asked >= 2
    before = publisher.queued()
    saved = loop.state_dict()["counters"]["asked"]
    after = publisher.queued()
    assert loop.asked - before <= saved <= loop.asked - after
    publisher.close(timeout=30)
    assert store.progress().total == loop.asked
    assert env.recent is not None and env.recent.render_states is not None
    store.close()


def test_runs_that_draw_videos_record_render_states_on_vector_envs() -> None:
    from zoo.config import resolve

    human = resolve("ppo", "Hopper-v5", preference={"labeler": "human"})
    assert human.env_options["record_render_state"] is True
    assert human.preference is not None and human.preference.draws_videos
    synthetic = resolve("ppo", "Hopper-v5", preference={"labeler": "synthetic"})
    assert synthetic.env_options["record_render_state"] is False
    assert synthetic.preference is not None and not synthetic.preference.draws_videos
    atari = resolve("ppo", "ALE/Pong-v5", preference={"labeler": "human"})
    assert atari.env_options["record_render_state"] is True  # the emulator's state: colour screens


def test_atari_clips_are_drawn_in_colour_from_the_emulator_state(tmp_path: Path) -> None:
    """A recorded ALE state restores the game: the drawn frame is the screen the game showed."""
    from envs.atari import FAMILY, AtariOptions, resolve_backend

    options = AtariOptions(record_render_state=True)
    assert resolve_backend(options, 8) == "wrappers"
    with pytest.raises(UsageError, match="cannot record render states"):
        resolve_backend(AtariOptions(record_render_state=True, backend="native"), 1)
    env = FAMILY.make_vec_env("ALE/Pong-v5", options=options, n_envs=1, seed=0, training=False)
    env.reset()
    states, screens = [], []
    ale = env.venv.envs[0].unwrapped.ale  # type: ignore[attr-defined]
    for _ in range(12):
        *_, infos = env.step(np.array([env.action_space.sample()]))
        states.append(infos[0]["render_state"])
        ale_copy = ale.cloneState()
        ale.act(0)  # the screen one frame on, as a restored emulator draws it
        screens.append(ale.getScreenRGB().copy())
        ale.restoreState(ale_copy)
    env.close()
    clip = Clip(np.zeros((12, 4, 84, 84), np.uint8), np.zeros(12, np.int64), None, 0, 0, 0, np.stack(states))
    renderer = ClipRenderer("ALE/Pong-v5", width=320)
    drawn = renderer.frames(clip)
    assert drawn[0].shape == (420, 320, 3)  # 210x160 scaled 2x
    for ours, screen in zip(drawn, screens, strict=True):
        np.testing.assert_array_equal(ours[::2, ::2], screen)
    assert renderer.write(clip, tmp_path / "pong.mp4") == 15
    assert count_frames(tmp_path / "pong.mp4") == 12
    renderer.close()
