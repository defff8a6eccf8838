"""``zoo plot`` / ``zoo compare``: run discovery, curve aggregation, rliable statistics checked by hand,
figures that are not blank, and one-line usage errors. Fake run folders, no training."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import typer
from rich.console import Console
from scipy import stats
from typer.testing import CliRunner

from core.errors import UsageError
from zoo import analysis
from zoo.cli_analysis import register_analysis_commands
from zoo.config import RunConfig, dump_config, resolve

_CONFIGS: dict[tuple[str, str, bool], RunConfig] = {}


def _config(agent: str, env: str, seed: int, preference: bool = False) -> RunConfig:
    key = (agent, env, preference)
    if key not in _CONFIGS:
        _CONFIGS[key] = resolve(agent, env, preference={} if preference else None)
    return _CONFIGS[key].model_copy(update={"seed": seed})


def make_run(
    folder: Path,
    agent: str = "ppo",
    env: str = "CartPole-v1",
    seed: int = 0,
    *,
    curve: list[tuple[int, float]] | None = None,
    final: float | None = None,
    preference: bool = False,
) -> Path:
    """A run folder with config.yaml, and evaluations.jsonl (``curve``) / eval.json (``final``)."""
    folder.mkdir(parents=True)
    (folder / "config.yaml").write_text(dump_config(_config(agent, env, seed, preference)))
    if curve is not None:
        lines = [
            json.dumps({"step": s, "mean_return": r, "std_return": 1.0, "returns": [r], "extra": 1})
            for s, r in curve
        ]
        (folder / "evaluations.jsonl").write_text("\n".join(lines) + "\n")
    if final is not None:
        (folder / "eval.json").write_text(json.dumps({"mean_return": final, "std_return": 0.0}))
    return folder


def score_runs(root: Path, agent: str, values: list[float], env: str = "CartPole-v1") -> list[Path]:
    return [make_run(root / agent / f"s{i}", agent, env, i, final=v) for i, v in enumerate(values)]


def assert_not_blank(png: Path) -> None:
    from matplotlib import image

    assert png.is_file()
    assert float(np.var(image.imread(png))) > 1e-3


def hand_iqm(values: np.ndarray) -> float:
    """Mean of the middle 50%: drop the lowest and highest quarter (n divisible by 4)."""
    ordered = np.sort(values)
    quarter = len(values) // 4
    return float(ordered[quarter : len(values) - quarter].mean())


def hand_mann_whitney(x: list[float], y: list[float]) -> float:
    """P(X > Y) counting ties as 1/2."""
    wins = sum((a > b) + 0.5 * (a == b) for a in x for b in y)
    return wins / (len(x) * len(y))


# ---------------------------------------------------------------------------------- find_runs


def test_find_runs_expands_groups_and_globs_and_deduplicates(tmp_path: Path) -> None:
    group = [make_run(tmp_path / "runs" / "ppo" / f"s{i}", seed=i) for i in range(2)]
    other = make_run(tmp_path / "runs" / "dqn" / "deep" / "s0", "dqn")
    (group[0] / "nested").mkdir()  # a run folder is never searched for more runs
    make_run(group[0] / "nested" / "inner")
    (tmp_path / "runs" / "empty").mkdir()

    assert analysis.find_runs([str(tmp_path / "runs" / "ppo")]) == group
    assert analysis.find_runs([str(tmp_path / "runs")]) == sorted([*group, other], key=str)
    assert analysis.find_runs([str(tmp_path / "runs" / "*" / "s*")]) == group  # dqn's s0 is one deeper
    assert analysis.find_runs([str(group[1]), str(tmp_path / "runs" / "ppo"), str(group[0])]) == group


def test_find_runs_rejects_a_folder_without_runs(tmp_path: Path) -> None:
    (tmp_path / "notes").mkdir()
    with pytest.raises(UsageError, match="not a run folder and holds no run folders"):
        analysis.find_runs([str(tmp_path / "notes")])
    with pytest.raises(UsageError, match="no such file or folder"):
        analysis.find_runs([str(tmp_path / "missing")])
    with pytest.raises(UsageError, match="matches no run folder"):
        analysis.find_runs([str(tmp_path / "nothing-*")])


def test_labels_mark_preference_runs(tmp_path: Path) -> None:
    runs = analysis.load_runs([make_run(tmp_path / "a", seed=3), make_run(tmp_path / "b", preference=True)])
    assert [(r.label, r.env, r.seed) for r in runs] == [
        ("ppo", "CartPole-v1", 3),
        ("pref-ppo", "CartPole-v1", 0),
    ]


# ------------------------------------------------------------------------------ learning curves


def test_curves_interpolate_to_the_shortest_run_with_a_t_band() -> None:
    a = analysis.Curve(np.array([0.0, 10.0, 20.0]), np.array([0.0, 10.0, 20.0]))
    b = analysis.Curve(np.array([0.0, 5.0, 15.0]), np.array([2.0, 4.0, 6.0]))
    steps, mean, low, high = analysis.aggregate_curves([a, b])
    np.testing.assert_array_equal(steps, [0.0, 5.0, 10.0, 15.0])
    a_on_grid, b_on_grid = np.array([0.0, 5.0, 10.0, 15.0]), np.array([2.0, 4.0, 5.0, 6.0])
    np.testing.assert_allclose(mean, (a_on_grid + b_on_grid) / 2)
    half = stats.t.ppf(0.975, 1) * np.abs(a_on_grid - b_on_grid) / np.sqrt(2) / np.sqrt(2)
    assert low is not None and high is not None
    np.testing.assert_allclose(high - mean, half)
    np.testing.assert_allclose(mean - low, half)
    assert analysis.aggregate_curves([a])[2] is None


def test_truncated_last_line_is_tolerated(tmp_path: Path) -> None:
    run = make_run(tmp_path / "r", curve=[(100, 1.0), (200, 2.0)])
    with (run / "evaluations.jsonl").open("a") as stream:
        stream.write('{"step": 300, "mean_ret')
    curve = analysis.read_curve(run)
    assert curve is not None
    np.testing.assert_array_equal(curve.steps, [100, 200])


def test_plot_writes_a_png_and_skips_runs_without_evaluations(tmp_path: Path) -> None:
    runs = [
        make_run(tmp_path / "ppo" / f"s{i}", seed=i, curve=[(0, 10.0 * i), (1000, 50.0 + 20 * i)])
        for i in range(3)
    ]
    runs.append(make_run(tmp_path / "dqn" / "s0", "dqn", curve=[(0, 5.0), (500, 8.0), (1000, 90.0)]))
    runs.append(make_run(tmp_path / "pong" / "s0", "dqn", "ALE/Pong-v5", curve=[(0, -21.0), (10, -3.0)]))
    runs.append(make_run(tmp_path / "fresh" / "s0"))
    out = tmp_path / "figures" / "curves.png"

    curves = analysis.plot_curves(runs, out)

    assert_not_blank(out)
    assert [(g.label, g.env, len(g.runs)) for g in curves.groups] == [
        ("dqn", "ALE/Pong-v5", 1),
        ("dqn", "CartPole-v1", 1),
        ("ppo", "CartPole-v1", 3),
    ]
    assert len(curves.warnings) == 1 and "fresh" in curves.warnings[0]
    with pytest.raises(UsageError, match="has evaluations"):
        analysis.plot_curves([runs[-1]], tmp_path / "none.png")
    assert not (tmp_path / "none.png").exists()


# ----------------------------------------------------------------------------------- statistics


def test_iqm_and_its_ci_match_a_hand_computed_bootstrap(tmp_path: Path) -> None:
    values = np.array([3.0, 50.0, 7.0, 12.0, 1.0, 30.0, 9.0, 20.0])
    runs = score_runs(tmp_path, "ppo", list(values))

    result = analysis.compare(runs, None, reps=4000, seed=1).envs[0]

    iqm = result.iqm["ppo"]
    assert iqm == pytest.approx(hand_iqm(values), abs=1e-12)
    assert iqm == pytest.approx(stats.trim_mean(values, 0.25), abs=1e-12)
    rng = np.random.default_rng(0)
    samples = values[rng.integers(0, len(values), size=(20000, len(values)))]
    boot = np.array([hand_iqm(sample) for sample in samples])
    expected_low, expected_high = np.percentile(boot, [2.5, 97.5])
    low, high = result.iqm_ci["ppo"]
    assert low <= iqm <= high
    assert low == pytest.approx(expected_low, abs=1.5)
    assert high == pytest.approx(expected_high, abs=2.5)


def test_intervals_are_reproducible_for_a_seed(tmp_path: Path) -> None:
    runs = score_runs(tmp_path, "ppo", [1.0, 4.0, 2.0, 8.0]) + score_runs(tmp_path, "dqn", [3.0, 5.0, 0.0])
    first = analysis.compare(runs, None, reps=200, seed=7).envs[0]
    again = analysis.compare(runs, None, reps=200, seed=7).envs[0]
    assert first.iqm_ci == again.iqm_ci
    assert first.improvement_ci == again.improvement_ci
    np.testing.assert_array_equal(first.profile_cis["dqn"], again.profile_cis["dqn"])


@pytest.mark.parametrize(
    ("x", "y", "expected"),
    [
        ([5.0, 6.0, 7.0], [1.0, 2.0], 1.0),
        ([1.0, 2.0, 3.0], [1.0, 2.0, 3.0], 0.5),
        # 1 beats neither; 3 beats 2 and ties 3 (1/2); 5 beats both: 3.5 wins of 6 pairs
        ([1.0, 3.0, 5.0], [2.0, 3.0], 3.5 / 6),
    ],
)
def test_probability_of_improvement_on_hand_cases(
    tmp_path: Path, x: list[float], y: list[float], expected: float
) -> None:
    runs = score_runs(tmp_path, "ppo", x) + score_runs(tmp_path, "dqn", y)
    result = analysis.compare(runs, None, reps=100).envs[0]
    hand = hand_mann_whitney(x, y)
    assert hand == pytest.approx(expected)
    assert result.improvement[("ppo", "dqn")] == pytest.approx(hand)
    assert result.improvement[("dqn", "ppo")] == pytest.approx(1.0 - hand)
    low, high = result.improvement_ci[("ppo", "dqn")]
    assert 0.0 <= low <= high <= 1.0
    assert result.improvement_ci[("dqn", "ppo")] == pytest.approx((1.0 - high, 1.0 - low))


def test_performance_profile_is_the_share_of_runs_above_each_threshold(tmp_path: Path) -> None:
    runs = score_runs(tmp_path, "ppo", [1.0, 2.0, 3.0, 4.0])
    result = analysis.compare(runs, None, reps=50).envs[0]
    expected = [(np.array([1.0, 2.0, 3.0, 4.0]) > tau).mean() for tau in result.taus]
    np.testing.assert_allclose(result.profiles["ppo"], expected)
    assert result.taus[0] < 1.0 and result.taus[-1] == 4.0


def test_eval_json_wins_over_the_last_training_evaluation(tmp_path: Path) -> None:
    both = make_run(tmp_path / "a", seed=0, curve=[(10, 1.0), (20, 2.0)], final=9.0)
    curve_only = make_run(tmp_path / "b", seed=1, curve=[(10, 1.0), (20, 3.0)])
    neither = make_run(tmp_path / "c", seed=2)

    comparison = analysis.compare([both, curve_only, neither], None, reps=50)

    result = comparison.envs[0]
    assert sorted(result.scores["ppo"].ravel()) == [3.0, 9.0]
    assert sorted(result.sources["ppo"]) == ["eval.json", "evaluations.jsonl"]
    assert len(comparison.warnings) == 1 and str(neither) in comparison.warnings[0]


def test_runs_of_several_envs_need_group_by_env(tmp_path: Path) -> None:
    runs = score_runs(tmp_path / "a", "ppo", [1.0, 2.0]) + score_runs(
        tmp_path / "b", "dqn", [3.0], env="ALE/Pong-v5"
    )
    with pytest.raises(UsageError, match=r"runs of 2 envs \(ALE/Pong-v5, CartPole-v1\): pass --group-by env"):
        analysis.compare(runs, None, reps=10)
    with pytest.raises(UsageError, match="--group-by 'agent'"):
        analysis.compare(runs, "agent", reps=10)
    assert [r.env for r in analysis.compare(runs, "env", reps=10).envs] == ["ALE/Pong-v5", "CartPole-v1"]


# ------------------------------------------------------------------------------------ reporting


def test_markdown_lists_labels_iqm_and_improvement(tmp_path: Path) -> None:
    runs = score_runs(tmp_path, "ppo", [10.0, 20.0, 30.0, 40.0]) + score_runs(tmp_path, "dqn", [1.0, 2.0])
    runs.append(make_run(tmp_path / "pref" / "s0", preference=True, final=15.0))
    comparison = analysis.compare(runs, None, reps=100)

    text = analysis.markdown(comparison)

    result = comparison.envs[0]
    assert "## CartPole-v1" in text
    for label in ("ppo", "dqn", "pref-ppo"):
        low, high = result.iqm_ci[label]
        assert f"| {label} | " in text
        assert f"{result.iqm[label]:.2f} [{low:.2f}, {high:.2f}]" in text
    assert "| ppo | 4 | 25.00 [" in text
    assert "25.00 ± 11.18" in text  # population std of 10, 20, 30, 40
    assert "P(row > column)" in text
    assert f"| dqn | – | {result.improvement[('dqn', 'ppo')]:.2f} [" in text


def test_comparison_figures_are_written_and_not_blank(tmp_path: Path) -> None:
    runs = score_runs(tmp_path, "ppo", [10.0, 20.0, 35.0]) + score_runs(
        tmp_path, "dqn", [-21.0, -5.0], env="ALE/Pong-v5"
    )
    runs += score_runs(tmp_path / "more", "a2c", [-20.0, 0.0], env="ALE/Pong-v5")
    comparison = analysis.compare(runs, "env", reps=100)

    written = analysis.plot_comparison(comparison, tmp_path / "out")

    assert sorted(p.name for p in written) == [
        "ALE-Pong-v5-improvement.png",
        "ALE-Pong-v5-iqm.png",
        "ALE-Pong-v5-profile.png",
        "CartPole-v1-iqm.png",
        "CartPole-v1-profile.png",
    ]
    for png in written:
        assert_not_blank(png)


# ------------------------------------------------------------------------------------------ CLI


@pytest.fixture
def cli() -> typer.Typer:
    app = typer.Typer()
    register_analysis_commands(app, Console(width=200))
    return app


def test_cli_plot_and_compare_write_their_files(tmp_path: Path, cli: typer.Typer) -> None:
    for i in range(2):
        make_run(tmp_path / "runs" / f"s{i}", seed=i, curve=[(0, 1.0 + i), (100, 5.0 + i)])
    out = tmp_path / "compare"
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    runner = CliRunner()

    plotted = runner.invoke(cli, ["plot", str(tmp_path / "runs"), "--out", str(tmp_path / "c.png")])
    compared = runner.invoke(
        cli, ["compare", str(tmp_path / "runs" / "s*"), "--out", str(out), "--reps", "50"]
    )

    assert plotted.exit_code == 0, plotted.output
    assert "ppo on CartPole-v1: 2 seeds" in plotted.output and "wrote" in plotted.output
    assert_not_blank(tmp_path / "c.png")
    assert compared.exit_code == 0, compared.output
    assert "| ppo | 2 |" in compared.output
    assert (out / "compare.md").read_text().startswith("# Comparison")
    assert (out / "notes.txt").read_text() == "mine"
    assert_not_blank(out / "CartPole-v1-iqm.png")


def test_cli_compare_of_two_envs_is_a_usage_error(tmp_path: Path, cli: typer.Typer) -> None:
    make_run(tmp_path / "a", final=1.0)
    make_run(tmp_path / "b", "dqn", "ALE/Pong-v5", final=2.0)
    out = tmp_path / "out"

    result = CliRunner().invoke(cli, ["compare", str(tmp_path / "a"), str(tmp_path / "b"), "--out", str(out)])

    assert isinstance(result.exception, UsageError)
    assert result.exception.exit_code == 2
    assert "--group-by env" in str(result.exception) and "\n" not in str(result.exception)
    assert not out.exists()


def test_zoo_cli_plot_and_compare(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Through the real entry point: files written, and runs of two envs without --group-by env are
    one line and exit 2, with nothing written."""
    from zoo.cli import main

    for agent, values in (("ppo", [10.0, 20.0, 30.0]), ("dqn", [5.0, 15.0, 25.0])):
        for i, value in enumerate(values):
            curve = [(100, value / 2), (200, value)]
            make_run(tmp_path / "runs" / agent / f"s{i}", agent, seed=i, curve=curve, final=value)
    out = tmp_path / "curves.png"
    assert main(["plot", str(tmp_path / "runs"), "--out", str(out)]) == 0
    assert_not_blank(out)
    report = tmp_path / "cmp"
    assert main(["compare", str(tmp_path / "runs" / "*" / "s*"), "--out", str(report), "--reps", "200"]) == 0
    assert "| ppo | 3 |" in (report / "compare.md").read_text()
    score_runs(tmp_path / "other", "ppo", [1.0, 2.0], env="Acrobot-v1")
    capsys.readouterr()
    fresh = tmp_path / "cmp2"
    code = main(["compare", str(tmp_path / "runs"), str(tmp_path / "other"), "--out", str(fresh)])
    err = capsys.readouterr().err
    assert code == 2 and "--group-by env" in err and len(err.strip().splitlines()) == 1
    assert not fresh.exists()
    assert main(["compare", str(tmp_path / "runs"), str(tmp_path / "other"), "--group-by", "env",
                 "--out", str(fresh), "--reps", "200"]) == 0  # fmt: skip
    assert "## Acrobot-v1" in (fresh / "compare.md").read_text()
    code = main(["plot", str(tmp_path / "nothing-here")])
    assert code == 2
