"""Offline datasets: `zoo collect` -> Minari on disk -> `load_dataset` round trips, Minari's own reader
and writer, bad data (one line, exit 2), the mixture grammar, and the CLI with a tiny trained run.
All datasets go to tmp_path roots, never to ~/.minari."""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import gymnasium as gym
import h5py
import numpy as np
import pytest

from core.collect import Noise, collect, parse_mixture, parse_noise, sample_counts
from core.envs import EnvOptions, family_for
from core.errors import UsageError
from core.minari_io import Episode, list_datasets, load_dataset, summarize, write_dataset
from zoo.cli import main


def run_cli(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    code = main(list(args))
    out, err = capsys.readouterr()
    return code, out, err


def snapshot(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def collect_cli(capsys: pytest.CaptureFixture[str], root: Path, *args: str) -> tuple[int, str, str]:
    return run_cli(capsys, "collect", *args, "--root", str(root), "--quiet")


def replay(env_id: str, seed: int, dataset: object) -> None:
    """Step a fresh env with the dataset's actions and check every stored transition against it."""
    env = gym.make(env_id)
    observation, _ = env.reset(seed=seed)
    n = len(dataset)  # type: ignore[arg-type]
    d = dataset
    for i in range(n):
        np.testing.assert_array_equal(d.observations[i], observation)  # type: ignore[attr-defined]
        action = d.actions[i]  # type: ignore[attr-defined]
        observation, reward, terminated, truncated, _ = env.step(
            int(action) if np.ndim(action) == 0 else action
        )
        np.testing.assert_array_equal(d.next_observations[i], observation)  # type: ignore[attr-defined]
        assert d.rewards[i] == np.float32(reward)  # type: ignore[attr-defined]
        assert bool(d.terminated[i]) == terminated  # type: ignore[attr-defined]
        last = i == n - 1
        assert bool(d.truncated[i]) == (truncated or (last and not terminated))  # type: ignore[attr-defined]
        if terminated or truncated:
            observation, _ = env.reset()
    env.close()


@pytest.mark.parametrize(("env_id", "steps"), [("Pendulum-v1", 450), ("CartPole-v1", 300)])
def test_collect_load_round_trip_is_what_the_env_gave(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, env_id: str, steps: int
) -> None:
    code, _, err = collect_cli(
        capsys, tmp_path, "--env", env_id, "--steps", str(steps), "--seed", "5", "--name", "test/rt-v0"
    )
    assert code == 0, err
    dataset = load_dataset("test/rt-v0", tmp_path)
    assert len(dataset) == steps
    assert dataset.metadata["env_id"] == env_id
    assert dataset.metadata["card"]["seed"] == 5 and dataset.metadata["card"]["mixture"] == {"random": 1.0}
    replay(env_id, 5, dataset)
    # Loading by path gives the same transitions.
    again = load_dataset(tmp_path / "test" / "rt-v0")
    for field in ("observations", "actions", "rewards", "next_observations", "terminated", "truncated"):
        np.testing.assert_array_equal(getattr(again, field), getattr(dataset, field))


def test_terminated_and_truncated_stay_apart(tmp_path: Path) -> None:
    family = family_for("CartPole-v1")
    env = family.make_vec_env(
        "CartPole-v1",
        options=EnvOptions(env_kwargs={"max_episode_steps": 12}),
        n_envs=1,
        seed=1,
        training=True,
    )
    collection = collect(env, steps=600, weights={"random": 1.0}, seed=1)
    env.close()
    write_dataset(
        "test/limits-v0",
        collection.episodes,
        observation_space=env.observation_space,
        action_space=env.action_space,
        env_spec=None,
        card={"env_id": "CartPole-v1"},
        root=tmp_path,
    )
    dataset = load_dataset("test/limits-v0", tmp_path)
    assert not (dataset.terminated & dataset.truncated).any()
    starts = np.asarray(dataset.metadata["episode_starts"])
    lengths = np.diff(np.r_[starts, len(dataset)])
    ends = starts + lengths - 1
    complete = lengths[:-1]  # the last episode may be cut by the step budget
    truncated_ends = dataset.truncated[ends[:-1]]
    assert (
        truncated_ends.sum() > 0 and (complete[truncated_ends] == 12).all()
    )  # only the time limit truncates
    assert (~truncated_ends).sum() > 0 and dataset.terminated[ends[:-1]][complete < 12].all()  # the pole fell
    assert not dataset.terminated[~np.isin(np.arange(len(dataset)), ends)].any()
    assert dataset.terminated.sum() + dataset.truncated.sum() == len(starts)


def test_minari_reads_what_we_write(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import minari

    code, _, err = collect_cli(
        capsys, tmp_path, "--env", "Pendulum-v1", "--steps", "500", "--name", "test/pend-v0"
    )
    assert code == 0, err
    ours = load_dataset("test/pend-v0", tmp_path)
    monkeypatch.setenv("MINARI_DATASETS_PATH", str(tmp_path))
    assert "test/pend-v0" in minari.list_local_datasets()
    theirs = minari.load_dataset("test/pend-v0")
    assert theirs.total_steps == 500 and theirs.total_episodes == 3
    episodes = list(theirs.iterate_episodes())
    np.testing.assert_array_equal(np.concatenate([e.observations[:-1] for e in episodes]), ours.observations)
    np.testing.assert_array_equal(np.concatenate([e.actions for e in episodes]), ours.actions)
    np.testing.assert_array_equal(np.concatenate([e.truncations for e in episodes]), ours.truncated)
    assert theirs.recover_environment().spec.id == "Pendulum-v1"
    assert json.loads(theirs.storage.metadata["zoo_card"])["steps"] == 500


@pytest.mark.parametrize("env_id", ["CartPole-v1", "Pendulum-v1"])
def test_dataset_from_minaris_data_collector_loads(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch, env_id: str
) -> None:
    pytest.importorskip("jax")  # DataCollector needs minari[create] (a dev dependency)
    import minari

    monkeypatch.setenv("MINARI_DATASETS_PATH", str(tmp_path))
    env = minari.DataCollector(gym.make(env_id, max_episode_steps=40))
    env.action_space.seed(0)
    rows: list[tuple[np.ndarray, object, float]] = []
    observation, _ = env.reset(seed=0)
    for _ in range(150):
        action = env.action_space.sample()
        next_observation, reward, terminated, truncated, _ = env.step(action)
        rows.append((observation, action, float(reward)))
        observation = next_observation
        if terminated or truncated:
            observation, _ = env.reset()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        env.create_dataset("others/collector-v0", algorithm_name="random")
    dataset = load_dataset("others/collector-v0", tmp_path)
    assert len(dataset) == 150
    assert dataset.metadata["env_id"] == env_id and dataset.metadata["card"] == {}
    np.testing.assert_array_equal(dataset.observations, np.stack([r[0] for r in rows]))
    np.testing.assert_array_equal(
        dataset.actions.reshape(150, -1), np.stack([r[1] for r in rows]).reshape(150, -1)
    )
    np.testing.assert_allclose(dataset.rewards, [r[2] for r in rows])
    assert dataset.truncated[-1]  # DataCollector marks the unfinished last episode truncated
    code, out, err = run_cli(capsys, "dataset", "show", "others/collector-v0", "--root", str(tmp_path))
    assert code == 0, err
    assert "no zoo card" in out and "150" in out


def _write_episodes(root: Path, name: str, episodes: list[Episode]) -> Path:
    space = gym.spaces.Box(-np.inf, np.inf, (3,), np.float64)
    return write_dataset(
        name,
        episodes,
        observation_space=space,
        action_space=gym.spaces.Box(-1, 1, (1,), np.float32),
        env_spec=None,
        card={},
        root=root,
    )


def _episode(steps: int = 4, reward: float = 1.0) -> Episode:
    return Episode(
        observations=np.arange((steps + 1) * 3, dtype=np.float64).reshape(steps + 1, 3),
        actions=np.zeros((steps, 1), np.float32),
        rewards=np.full(steps, reward),
        terminations=np.r_[np.zeros(steps - 1, bool), True],
        truncations=np.zeros(steps, bool),
        metadata={},
    )


def _corrupt_missing_rewards(path: Path) -> None:
    with h5py.File(path / "data" / "main_data.hdf5", "a") as file:
        del file["episode_1"]["rewards"]


def _corrupt_nan(path: Path) -> None:
    with h5py.File(path / "data" / "main_data.hdf5", "a") as file:
        file["episode_0"]["observations"][2, 1] = np.nan


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda root: _write_episodes(root, "bad/empty-v0", []), "the dataset is empty"),
        (
            lambda root: _write_episodes(root, "bad/nan-v0", [_episode(), _episode(reward=np.inf)]),
            "rewards has a NaN",
        ),
        (
            lambda root: _corrupt_nan(_write_episodes(root, "bad/nanobs-v0", [_episode()])),
            "observations has a NaN or inf value (first at transition 2)",
        ),
        (
            lambda root: _corrupt_missing_rewards(
                _write_episodes(root, "bad/missing-v0", [_episode(), _episode()])
            ),
            "episode 1 has no rewards",
        ),
    ],
)
def test_bad_data_is_one_line_exit_2(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, make: object, message: str
) -> None:
    make(tmp_path)  # type: ignore[operator]
    (name,) = list_datasets(tmp_path)
    with pytest.raises(UsageError, match=None) as error:
        load_dataset(name, tmp_path)
    assert message in str(error.value) and "\n" not in str(error.value)
    code, _, err = run_cli(capsys, "dataset", "show", name, "--root", str(tmp_path))
    assert code == 2 and message in err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err


def test_not_a_dataset(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    code, _, err = run_cli(capsys, "dataset", "show", str(tmp_path), "--root", str(tmp_path))
    assert code == 2 and "not a Minari dataset" in err
    code, _, err = run_cli(capsys, "dataset", "show", "zoo/nothing-v0", "--root", str(tmp_path))
    assert code == 2 and "no dataset 'zoo/nothing-v0'" in err


def test_mixture_and_noise_grammar() -> None:
    assert parse_mixture("random:0.2,policy:0.4,noisy:0.4") == {"random": 0.2, "policy": 0.4, "noisy": 0.4}
    assert parse_noise("eps:0.1") == Noise("eps", 0.1) and parse_noise("gaussian:0.3") == Noise(
        "gaussian", 0.3
    )
    assert sample_counts(1001, {"random": 0.2, "policy": 0.4, "noisy": 0.4}) == [
        ("random", 200),
        ("policy", 400),
        ("noisy", 401),
    ]
    for bad in ("eps:2", "gaussian:0", "uniform:0.1", "eps"):
        with pytest.raises(UsageError):
            parse_noise(bad)


@pytest.mark.parametrize(
    ("mix", "message"),
    [
        ("random:0.2,polcy:0.8", "unknown source 'polcy'"),
        ("random:-0.2,policy:1.2", "weight -0.2 of random must be a number >= 0"),
        ("random:0.5,policy:0.6", "weights sum to 1.1"),
        ("random:0.5,policy", "'policy' is not SOURCE:WEIGHT"),
        ("random:x", "weight 'x' of random is not a number"),
        ("policy:1", "pass --run RUN_DIR"),
    ],
)
def test_bad_mix_exits_2_and_writes_nothing(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, mix: str, message: str
) -> None:
    root = tmp_path / "datasets"
    code, _, err = collect_cli(capsys, root, "--env", "CartPole-v1", "--steps", "50", "--mix", mix)
    assert code == 2 and message in err, err
    assert len(err.strip().splitlines()) == 1
    assert not root.exists() or not any(root.rglob("*.hdf5"))


def test_existing_dataset_is_never_overwritten(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    code, _, err = collect_cli(
        capsys, tmp_path, "--env", "CartPole-v1", "--steps", "60", "--name", "test/keep-v0"
    )
    assert code == 0, err
    before = snapshot(tmp_path)
    code, _, err = collect_cli(
        capsys, tmp_path, "--env", "CartPole-v1", "--steps", "80", "--seed", "1", "--name", "test/keep-v0"
    )
    assert code == 2 and "already exists" in err
    assert snapshot(tmp_path) == before
    code, _, err = collect_cli(
        capsys, tmp_path, "--env", "CartPole-v1", "--steps", "80", "--name", "no-namespace-v0"
    )
    assert code == 2 and "needs a namespace" in err
    assert snapshot(tmp_path) == before


def test_collect_from_a_trained_run_then_show(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    run = tmp_path / "run"
    code, _, err = run_cli(
        capsys, "train", "ppo", "--env", "CartPole-v1", "--steps", "512", "--run-dir", str(run),
        "--eval-every", "0", "--quiet",
    )  # fmt: skip
    assert code == 0, err
    root = tmp_path / "datasets"
    mix = ["--mix", "policy:0.7,random:0.3"]
    code, out, err = collect_cli(
        capsys, root, "--run", str(run), "--steps", "400", *mix, "--name", "nac/demos-v0"
    )
    assert code == 0, err
    assert "source policy eval return" in out
    card = load_dataset("nac/demos-v0", root).metadata["card"]
    final_eval = json.loads((run / "evaluations.jsonl").read_text().splitlines()[-1])
    assert card["source_run"] == str(run.resolve()) and card["source_agent"] == "ppo"
    assert card["source_eval_return"]["mean"] == pytest.approx(final_eval["mean_return"])
    assert card["source_eval_return"]["from"] == "evaluations.jsonl"
    assert card["mixture"] == {"policy": 0.7, "random": 0.3} and card["steps"] == 400
    assert card["data_mean_return"] is not None and set(card["data_return_by_source"]) == {"policy", "random"}
    assert {"python", "torch", "stable-baselines3", "gymnasium", "minari", "git_commit"} <= set(
        card["versions"]
    )

    # The paper's recipe with eps noise; the same seed gives the same dataset, policy sampling included.
    recipe = ["--mix", "random:0.2,policy:0.4,noisy:0.4", "--noise", "eps:0.3", "--seed", "7"]
    for name in ("test/recipe-a-v0", "test/recipe-b-v0"):
        code, _, err = collect_cli(capsys, root, "--run", str(run), "--steps", "300", *recipe, "--name", name)
        assert code == 0, err
    a, b = load_dataset("test/recipe-a-v0", root), load_dataset("test/recipe-b-v0", root)
    for field in ("observations", "actions", "rewards", "terminated", "truncated"):
        np.testing.assert_array_equal(getattr(a, field), getattr(b, field))
    sources = [m["source"] for m in a.metadata["episode_metadata"]]
    assert sources[0] == "random" and sources[-1] == "noisy" and "policy" in sources
    summary = summarize("test/recipe-a-v0", root)
    assert summary.steps == 300 and summary.card["noise"] == "eps:0.3"

    code, out, err = run_cli(capsys, "dataset", "show", "test/recipe-a-v0", "--root", str(root))
    assert code == 0, err
    for text in (
        "random:0.2,policy:0.4,noisy:0.4",
        "eps:0.3",
        "ppo",
        str(summary.episodes),
        "300",
        "returns by source",
    ):
        assert text in out, text
    assert f"{summary.return_stats()['mean']:.2f}" in out
    code, out, _ = run_cli(capsys, "dataset", "list", "--root", str(root))
    assert code == 0 and "nac/demos-v0" in out and "test/recipe-b-v0" in out

    # Gaussian noise needs Box actions: one line, exit 2, nothing written.
    before = snapshot(root)
    code, _, err = collect_cli(
        capsys,
        root,
        "--run",
        str(run),
        "--steps",
        "50",
        "--mix",
        "policy:0.5,noisy:0.5",
        "--noise",
        "gaussian:0.1",
    )
    assert code == 2 and "gaussian noise needs a Box action space" in err
    assert snapshot(root) == before
