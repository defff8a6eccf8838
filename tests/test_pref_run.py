"""`zoo train pref` as a user runs it: a synthetic run's folder, logs and label store; resume restores
the loop's state; a human labeler answering through the store while training waits; clip files; the
env options of the paper; bad input (exit 2, one line, nothing left behind)."""

from __future__ import annotations

import csv
import threading
import time
from pathlib import Path

import gymnasium as gym
import numpy as np
import pytest
import torch as th
from stable_baselines3 import PPO
from stable_baselines3.common.vec_env import DummyVecEnv, VecMonitor

from envs import GymOptions
from envs.classic import FAMILY as CLASSIC
from envs.mujoco import FAMILY as MUJOCO
from rewards import clips as clips_module
from rewards import labelers, settings
from rewards.clipfiles import ClipFileError, ClipFolder
from rewards.clips import Clip
from rewards.labelers import OracleLabeler, PresetTeacher, labeler_from_setting
from rewards.loop import PreferenceCallback, ensemble_reward_function
from rewards.models import build_reward_ensemble
from rewards.session import STATE_FILE, PreferenceSession
from rewards.settings import PreferenceSettings
from rewards.store import LabelStore
from rewards.wrapper import LearnedRewardVecEnv
from zoo.cli import main
from zoo.config import load_run_config

QUICK = ["--set", "preference.query_every=256", "--set", "preference.clip_length=20", "--quiet"]


def run_cli(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    code = main(list(args))
    out, err = capsys.readouterr()
    return code, out, err


def progress_rows(run: Path) -> list[dict[str, str]]:
    with open(run / "progress.csv", newline="") as handle:
        return list(csv.DictReader(handle))


def test_settings_spell_the_strategies_and_teachers_of_the_modules() -> None:
    assert settings.TEACHERS == labelers.PRESETS
    strategy_field = PreferenceSettings.model_fields["strategy"].annotation
    assert set(strategy_field.__args__) == set(clips_module.STRATEGIES)  # type: ignore[union-attr]


def test_clip_files_round_trip_and_refuse_paths_outside_the_clip_folder(tmp_path: Path) -> None:
    folder = ClipFolder(tmp_path)
    clip = Clip(np.arange(12, dtype=np.float32).reshape(4, 3), np.ones((4, 1)), np.arange(4.0), 7, 3)
    reference = folder.save(clip)
    assert reference.startswith("clips/") and (tmp_path / reference).is_file()
    loaded = folder.load(reference)
    np.testing.assert_array_equal(loaded.observations, clip.observations)
    np.testing.assert_array_equal(loaded.true_rewards, clip.true_rewards)
    assert (loaded.episode_id, loaded.start) == (7, 3)
    unknown_rewards = folder.load(folder.save(clip._replace(true_rewards=None)))
    assert unknown_rewards.true_rewards is None
    for bad in ("../labels.sqlite", "/etc/passwd", "clips/../../x.npz", "clips/abc.npz", "other/" + "0" * 32):
        with pytest.raises(ClipFileError, match="not a clip reference"):
            folder.load(bad)
    with pytest.raises(ClipFileError, match="missing"):
        folder.load("clips/" + "0" * 32 + ".npz")
    corrupt = "clips/" + "1" * 32 + ".npz"
    (tmp_path / corrupt).write_bytes(b"not a zip")
    with pytest.raises(ClipFileError, match="cannot read"):
        folder.load(corrupt)


def test_synthetic_pref_run_logs_labels_and_reports_the_true_return(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    args = ["train", "pref", "--env", "Pendulum-v1", "--steps", "1024", "--labels", "40", *QUICK]
    code, out, err = run_cli(capsys, *args)
    assert code == 0, err
    (run,) = (tmp_path / "runs" / "pref-ppo" / "Pendulum-v1").iterdir()
    config = load_run_config(run / "config.yaml")
    assert config.agent == "ppo" and config.preference is not None and config.preference.labels == 40
    with LabelStore.for_run(run) as store:
        assert store.progress() == (40, 0, 0, 40)  # every label asked by the end, each answered once
        assert set(store.stats().per_labeler) == {"synthetic"}
    rows = progress_rows(run)
    counts = [int(float(r["label/count"])) for r in rows if r.get("label/count")]
    assert counts[0] == 10 and counts[-1] == 40  # 25% first, the budget by the last rollout
    accuracy = [float(r["reward/validation_accuracy"]) for r in rows if r.get("reward/validation_accuracy")]
    assert accuracy and all(0.0 <= a <= 1.0 for a in accuracy)
    assert any(r.get("reward/true_return_correlation") for r in rows)
    assert any(r.get("eval/mean_return") for r in rows)  # evaluations on the true reward
    code, out, _ = run_cli(capsys, "eval", str(run), "--episodes", "2", "--quiet")
    assert code == 0 and "true return (learned from preferences)" in out


def test_a_control_pref_run_trains_exactly_as_plain_ppo_while_the_loop_runs(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    common = ["--env", "Pendulum-v1", "--steps", "1024", "--seed", "3", "--eval-every", "0", "--quiet"]
    assert run_cli(capsys, "train", "ppo", *common, "--run-dir", "plain")[0] == 0
    control = ["--labels", "40", "--set", "preference.agent_reward=env", *QUICK]
    code, _, err = run_cli(capsys, "train", "pref", *common, *control, "--run-dir", "control")
    assert code == 0, err
    with LabelStore.for_run(tmp_path / "control") as store:
        assert store.progress() == (40, 0, 0, 40)  # the whole loop ran: every label asked and answered
    assert any(r.get("reward/validation_accuracy") for r in progress_rows(tmp_path / "control"))
    # ... and the agent learned exactly what plain PPO learned on the same seed (its RNG untouched)
    plain, learned = (
        PPO.load(tmp_path / run / "checkpoints" / "step-000000001024" / "model.zip", device="cpu")
        for run in ("plain", "control")
    )
    for name, value in plain.policy.state_dict().items():
        assert th.equal(value, learned.policy.state_dict()[name]), name


def test_resume_restores_the_reward_model_and_asks_no_label_twice(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    run = tmp_path / "run"
    args = ["train", "pref", "--env", "Pendulum-v1", "--steps", "512", "--labels", "30"]
    args += ["--run-dir", str(run)]
    assert run_cli(capsys, *args, *QUICK)[0] == 0
    (checkpoint,) = (run / "checkpoints").iterdir()
    saved = th.load(checkpoint / STATE_FILE, weights_only=True)
    with LabelStore.for_run(run) as store:
        assert store.progress().total == 30

    # The session of a resumed run holds exactly the checkpoint's reward model and counters.
    config = load_run_config(run / "config.yaml")
    assert config.preference is not None
    env = CLASSIC.make_vec_env("Pendulum-v1", options=GymOptions(), n_envs=8, seed=0, training=True)
    session = PreferenceSession(config.preference, env, run, total_steps=1024, seed=0)
    session.load(checkpoint)
    for name, tensor in session.ensemble.state_dict().items():
        th.testing.assert_close(tensor, saved["ensemble"][name])
    loop = session.callback
    assert loop.asked == 30 and loop.answered == 30 and loop.comparisons is not None
    assert loop.comparisons.size == 30 and loop.last_answer_id == saved["counters"]["last_answer_id"]
    session.close()

    # Resumed with a larger step budget, the label budget is already spent: nothing is asked again.
    code, _, err = run_cli(capsys, "train", "--resume", str(run), "--steps", "1024", "--quiet")
    assert code == 0, err
    with LabelStore.for_run(run) as store:
        assert store.progress() == (30, 0, 0, 30)


def test_a_human_labeler_answers_through_the_store_while_training_waits(tmp_path: Path) -> None:
    """Training runs at most ``run_ahead`` labels ahead of the answers; a labeler in another thread
    leases queries, reads their clips from the clip folder and answers; every answer is learned from."""
    base = VecMonitor(DummyVecEnv([lambda: gym.make("Pendulum-v1")]))
    base.seed(0)
    ensemble = build_reward_ensemble(base.observation_space, base.action_space, members=2)
    env = LearnedRewardVecEnv(base, ensemble_reward_function(ensemble), recent_steps=512)
    store = LabelStore.for_run(tmp_path)
    clips = ClipFolder(tmp_path)
    loop = PreferenceCallback(
        env, ensemble, None, store=store, clips=clips, budget=24, total_steps=768, clip_length=20,
        query_every=256, initial_epochs=5, epochs=5, run_ahead=0, poll_seconds=0.05, notify=lambda _: None,
    )  # fmt: skip
    finished = threading.Event()

    def human() -> None:
        oracle = OracleLabeler()
        with LabelStore.for_run(tmp_path) as own:
            while not finished.is_set():
                query = own.lease_next("alice")
                if query is None:
                    finished.wait(0.02)
                    continue
                pair = (clips.load(query.left_clip), clips.load(query.right_clip))
                own.answer(query.id, "alice", oracle.label([pair])[0], seconds=0.1)

    labeler = threading.Thread(target=human, daemon=True)
    labeler.start()
    try:
        PPO("MlpPolicy", env, n_steps=256, batch_size=64, n_epochs=1, seed=0, device="cpu").learn(
            768, callback=loop
        )
    finally:
        finished.set()
        labeler.join(timeout=10)
    assert loop.asked == 24 and loop.answered == 24  # run_ahead=0: each round waited for its answers
    assert loop.comparisons is not None and loop.comparisons.size == 24 and loop.fits >= 3
    assert store.stats().per_labeler["alice"].answers == 24
    store.close()


def test_teachers_calibrate_on_their_first_batch_and_checkpoint_their_state() -> None:
    rng = np.random.default_rng(0)
    pairs = [
        tuple(Clip(np.zeros((5, 1)), np.zeros((5, 1)), rng.normal(size=5), i, 0) for _ in range(2))
        for i in range(20)
    ]
    teacher = labeler_from_setting("teacher:stoc", seed=3)
    assert isinstance(teacher, PresetTeacher)
    first = teacher.label(pairs)  # type: ignore[arg-type]
    state = teacher.state_dict()
    assert state["beta"] > 0
    again = teacher.label(pairs)  # type: ignore[arg-type]
    restored = PresetTeacher("stoc")
    restored.load_state_dict(state)
    assert restored.label(pairs) == again  # type: ignore[arg-type]
    assert len(first) == 20
    assert isinstance(labeler_from_setting("synthetic"), OracleLabeler)
    assert labeler_from_setting("human") is None


def test_a_teacher_waits_for_differing_returns_to_calibrate() -> None:
    """Pong's first clips all score 0: the teacher answers them "equal" and calibrates later."""
    ties = [
        tuple(Clip(np.zeros((5, 1)), np.zeros((5, 1)), np.zeros(5), i, 0) for _ in range(2)) for i in range(4)
    ]
    teacher = PresetTeacher("stoc", seed=0)
    assert teacher.label(ties) == ["equal"] * 4  # type: ignore[arg-type]
    assert teacher.state_dict() == {}
    rng = np.random.default_rng(1)
    varied = [
        tuple(Clip(np.zeros((5, 1)), np.zeros((5, 1)), rng.normal(size=5), i, 0) for _ in range(2))
        for i in range(4)
    ]
    assert len(teacher.label(varied)) == 4  # type: ignore[arg-type]
    assert teacher.state_dict()["beta"] > 0


def test_ignore_termination_lets_the_pendulum_fall_until_the_time_limit() -> None:
    env = MUJOCO.make_env(
        "InvertedPendulum-v5", options=GymOptions(ignore_termination=True), training=True, seed=0
    )
    env.reset(seed=0)
    rewards, fell = [], False
    for _ in range(1000):
        _, reward, terminated, truncated, info = env.step(np.array([3.0], dtype=np.float32))
        rewards.append(reward)
        fell |= info["env_terminated"]
        assert not terminated
        if truncated:
            break
    assert truncated and len(rewards) == 1000  # only the time limit ends the episode
    assert fell and rewards[-1] == 0.0  # fallen: the env's own reward says so


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--labeler", "oracle"], "preference settings.labeler: expected one of synthetic, human"),
        (["--labels", "0"], "preference settings.labels: Input should be greater than 0"),
        (["--policy", "brac"], "--policy brac: a preference run needs an agent that learns online"),
        (["--set", "preference.clip_length=500"], "clip_length 500 is longer than Pendulum-v1's episodes"),
        (["--set", "preference.lables=3"], "preference.lables: unknown key (did you mean labels?)"),
    ],
)
def test_bad_pref_input_is_one_line_and_leaves_no_run(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, args: list[str], message: str
) -> None:
    run = tmp_path / "runs" / "r"
    code, _, err = run_cli(
        capsys, "train", "pref", "--env", "Pendulum-v1", "--steps", "256", "--run-dir", str(run), *args
    )
    assert code == 2 and message in err and len(err.strip().splitlines()) == 1
    assert not run.exists()


def test_preference_flags_and_settings_belong_to_pref_runs(capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run_cli(capsys, "train", "ppo", "--env", "Pendulum-v1", "--labels", "10")
    assert code == 2 and "belong to `zoo train pref`" in err
    show = ["config", "show", "ppo", "--env", "Pendulum-v1"]
    code, _, err = run_cli(capsys, *show, "--set", "preference.labels=1")
    assert code == 2 and "preference settings belong to `zoo train pref` runs" in err
    code, out, _ = run_cli(capsys, "config", "show", "pref", "--env", "Hopper-v5")
    assert code == 0 and "terminate_when_unhealthy: false" in out and "labels: 700" in out


@pytest.fixture(scope="module")
def labeled_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A finished synthetic preference run with 60 answered comparisons."""
    run = tmp_path_factory.mktemp("pref") / "run"
    args = ["train", "pref", "--env", "Pendulum-v1", "--steps", "768", "--labels", "60"]
    assert main([*args, "--run-dir", str(run), *QUICK]) == 0
    return run


def test_reward_fit_retrains_from_stored_labels_without_overwriting(
    capsys: pytest.CaptureFixture[str], labeled_run: Path, tmp_path: Path
) -> None:
    out = tmp_path / "model.pt"
    code, stdout, err = run_cli(capsys, "reward", "fit", "--labels", str(labeled_run), "--out", str(out))
    assert code == 0, err
    assert "on 60 comparisons" in stdout
    saved = th.load(out, weights_only=True)
    assert saved["settings"]["members"] == 3 and saved["ensemble"]
    report = (out.parent / "model.pt.json").read_text()
    assert '"comparisons": 60' in report and '"clip_return_correlation"' in report
    before = out.read_bytes()
    code, _, err = run_cli(capsys, "reward", "fit", "--labels", str(labeled_run), "--out", str(out))
    assert code == 2 and "already exists" in err and out.read_bytes() == before
    # The store itself works too, with the run that holds its clips.
    store = str(labeled_run / "labels.sqlite")
    code, _, err = run_cli(capsys, "reward", "fit", "--labels", store)
    assert code == 2 and "needs --run RUN" in err
    other = tmp_path / "other.pt"
    args = ["reward", "fit", "--labels", store, "--run", str(labeled_run), "--out", str(other)]
    assert run_cli(capsys, *args, "--epochs", "2")[0] == 0 and other.is_file()


def test_labels_export_and_import_round_trip_once(
    capsys: pytest.CaptureFixture[str], labeled_run: Path, tmp_path: Path
) -> None:
    exported = tmp_path / "labels.jsonl"
    code, out, err = run_cli(capsys, "reward", "export", "--labels", str(labeled_run), str(exported))
    assert code == 0 and "exported 60 queries" in out, err
    code, _, err = run_cli(capsys, "reward", "export", "--labels", str(labeled_run), str(exported))
    assert code == 2 and "already exists" in err
    fresh = tmp_path / "fresh.sqlite"
    LabelStore(fresh).close()
    code, out, _ = run_cli(capsys, "reward", "import", "--labels", str(fresh), str(exported))
    assert code == 0 and "imported 60 queries and 60 answers" in out
    code, out, _ = run_cli(capsys, "reward", "import", "--labels", str(fresh), str(exported))
    assert code == 0 and "imported 0 queries and 0 answers" in out  # nothing stored twice
    broken = tmp_path / "broken.jsonl"
    broken.write_text(exported.read_text().splitlines()[0] + "\n{not json\n")
    code, _, err = run_cli(capsys, "reward", "import", "--labels", str(tmp_path / "b.sqlite"), str(broken))
    assert code == 2 and "neither a run folder nor a label store" in err
    other = tmp_path / "other.sqlite"
    LabelStore(other).close()
    code, _, err = run_cli(capsys, "reward", "import", "--labels", str(other), str(broken))
    assert code == 2 and "line 2" in err and "nothing was imported" in err
    with LabelStore(other) as store:
        assert store.progress().total == 0  # all or nothing


def test_an_unreachable_label_store_is_one_line(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    url = "postgresql+psycopg://zoo:secret@127.0.0.1:1/labels"
    code, _, err = run_cli(capsys, "reward", "export", "--labels", url, str(tmp_path / "x.jsonl"))
    assert code == 2 and len(err.strip().splitlines()) == 1 and "secret" not in err
    assert not (tmp_path / "x.jsonl").exists()


@pytest.mark.parametrize("episodic", [False, True])
def test_relabel_replay_gives_every_stored_transition_the_new_reward(episodic: bool) -> None:
    from stable_baselines3 import DQN

    from core.replay import EpisodicReplayBuffer
    from rewards.wrapper import relabel_replay

    env = DummyVecEnv([lambda: gym.make("CartPole-v1")] * 2)
    buffer_class = EpisodicReplayBuffer if episodic else None
    model = DQN(
        "MlpPolicy", env, buffer_size=300, learning_starts=10_000, replay_buffer_class=buffer_class, seed=0,
        device="cpu",
    )  # fmt: skip
    model.learn(400)  # fills and wraps the 150-steps-per-env ring
    buffer = model.replay_buffer
    assert buffer is not None

    def reward_fn(obs: object, actions: object) -> np.ndarray:
        return np.asarray(obs, dtype=np.float32).sum(axis=1) + 10.0 * np.asarray(actions).reshape(-1)

    retained = buffer.size() if episodic else 300  # SB3's size() counts per env
    assert relabel_replay(model, reward_fn, chunk_size=64) == retained
    samples = buffer.sample(256)
    expected = reward_fn(samples.observations.numpy(), samples.actions.numpy())
    np.testing.assert_allclose(samples.rewards.numpy().reshape(-1), expected, rtol=1e-5, atol=1e-5)
    assert relabel_replay(PPO("MlpPolicy", env, n_steps=8, batch_size=8, device="cpu"), reward_fn) == 0


def test_an_off_policy_agent_learns_from_preferences_with_a_relabeled_replay(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    run = tmp_path / "run"
    args = ["train", "pref", "--env", "CartPole-v1", "--policy", "scdqn", "--steps", "1500", "--labels", "20"]
    args += ["--run-dir", str(run), "--set", "learning_starts=200", "--set", "train_freq=100"]
    args += ["--set", "gradient_steps=10", "--set", "preference.query_every=500"]
    code, _, err = run_cli(capsys, *args, "--set", "preference.clip_length=10", "--quiet")
    assert code == 0, err
    relabeled = [float(r["reward/relabeled"]) for r in progress_rows(run) if r.get("reward/relabeled")]
    assert relabeled and relabeled[-1] > 1000  # the whole replay, after every fit


def test_repeat_and_gold_queries_measure_the_labeler(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    """The oracle answers a mirrored repeat as it answered the original, and every gold query right."""
    run = tmp_path / "run"
    args = [
        "train",
        "pref",
        "--env",
        "Pendulum-v1",
        "--steps",
        "1024",
        "--labels",
        "40",
        "--run-dir",
        str(run),
    ]
    args += ["--set", "preference.repeat_share=0.3", "--set", "preference.gold_share=0.3", *QUICK]
    code, _, err = run_cli(capsys, *args)
    assert code == 0, err
    with LabelStore.for_run(run) as store:
        stats = store.stats()
        assert store.progress() == (40, 0, 0, 40)
        kinds = [store.get_query(i).kind for i in range(1, 41)]
        for query_id, kind in enumerate(kinds, 1):
            query = store.get_query(query_id)
            if kind == "repeat":
                assert query.repeat_of is not None
                original = store.get_query(query.repeat_of)
                assert (query.left_clip, query.right_clip) == (original.right_clip, original.left_clip)
    assert kinds[0] == "normal" and kinds.count("repeat") >= 3 and kinds.count("gold") >= 3
    assert stats.repeat_pairs == kinds.count("repeat") and stats.repeat_agreement == 1.0
    assert stats.gold_answered == kinds.count("gold") and stats.gold_accuracy == 1.0


def test_a_human_pref_run_serves_its_labeling_page_and_learns_from_its_answers(tmp_path: Path) -> None:
    """`zoo train pref --labeler human` prints the page's URL; answers posted there (as the page does)
    reach training, which waits for each of them (run_ahead 0) and then finishes."""
    import re
    import subprocess
    import sys

    import httpx

    run = tmp_path / "run"
    command = [
        str(Path(sys.executable).with_name("zoo")), "train", "pref", "--env", "CartPole-v1",
        "--labeler", "human", "--labels", "4", "--steps", "512", "--run-dir", str(run), "--quiet",
        "--set", "preference.port=0", "--set", "preference.run_ahead=0",
        "--set", "preference.query_every=256", "--set", "preference.clip_length=10",
        "--set", "preference.video_width=64", "--set", "preference.poll_seconds=0.1",
    ]  # fmt: skip
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    assert process.stdout is not None
    url = None
    for line in process.stdout:
        if found := re.search(r"label clips at (http://127\.0\.0\.1:\d+/)", line):
            url = found.group(1)
            break
    assert url is not None, process.stdout.read()
    answered = []
    with httpx.Client(base_url=url, timeout=30) as client:
        deadline = time.monotonic() + 120
        while process.poll() is None and time.monotonic() < deadline:
            try:
                query = client.get("/api/next").json()["query"]
            except (httpx.ConnectError, httpx.ReadError, httpx.RemoteProtocolError):
                break  # training finished and stopped serving (mid-request: a reset); the process exits
            if query is None:
                time.sleep(0.1)
                continue
            assert client.get(query["left_video"]).headers["content-type"] == "video/mp4"
            response = client.post(
                "/api/answer", json={"query_id": query["id"], "choice": "left", "seconds": 1}
            )
            assert response.status_code == 200, response.text
            answered.append(query["id"])
    output = process.stdout.read()
    assert process.wait(timeout=60) == 0, output
    assert sorted(answered) == [1, 2, 3, 4]
    with LabelStore.for_run(run) as store:
        assert store.progress() == (4, 0, 0, 4)
        assert set(store.stats().per_labeler) == {"local"}
