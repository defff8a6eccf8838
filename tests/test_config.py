"""zoo.yaml layering and validation: every bad key or value is one UsageError naming where it is."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from core.errors import UsageError
from zoo import config as cfg


def overlay(tmp_path: Path, data: dict) -> cfg.ConfigFile:
    path = tmp_path / "overlay.yaml"
    path.write_text(yaml.safe_dump(data))
    return cfg.ConfigFile.load(path)


def test_project_zoo_yaml_is_valid() -> None:
    cfg.ConfigFile.load(cfg.DEFAULT_CONFIG).validate()


def test_unknown_key_names_path_and_suggests(tmp_path: Path) -> None:
    bad = overlay(tmp_path, {"agents": {"scdqn": {"atari": {"bta": 2}}}})
    with pytest.raises(UsageError, match=r"agents\.scdqn\.atari\.bta: unknown key \(did you mean beta\?\)"):
        bad.validate()
    assert str(tmp_path / "overlay.yaml") in _message(bad.validate)


def test_wrong_type_names_key(tmp_path: Path) -> None:
    with pytest.raises(UsageError, match=r"agents\.scdqn\.default\.beta: .*number"):
        overlay(tmp_path, {"agents": {"scdqn": {"default": {"beta": "three"}}}}).validate()


@pytest.mark.parametrize(
    ("data", "pattern"),
    [
        ({"agents": {"scdqm": {}}}, r"agents\.scdqm: unknown agent \(did you mean scdqn\?\)"),
        (
            {"agents": {"scdqn": {"CartPol-v1": {}}}},
            r"unknown env id or family \(did you mean CartPole-v1\?\)",
        ),
        ({"runs": {}}, r"runs: unknown key \(did you mean run\?\)"),
        ({"run": {"steps": -5}}, r"run\.steps: Input should be greater than 0"),
        ({"envs": {"atari": {"sticky": 0.1}}}, r"envs\.atari\.sticky: unknown env option"),
        ({"envs": {"atrai": {}}}, r"envs\.atrai: unknown env family \(did you mean atari\?\)"),
        ({"agents": {"scdqn": {"default": {"env": {"x": 1}}}}}, r"env options belong in a family"),
    ],
)
def test_invalid_files(tmp_path: Path, data: dict, pattern: str) -> None:
    with pytest.raises(UsageError, match=pattern):
        overlay(tmp_path, data).validate()


def test_malformed_yaml_reports_line(tmp_path: Path) -> None:
    path = tmp_path / "broken.yaml"
    path.write_text("agents:\n  scdqn: [1, 2\n")
    with pytest.raises(UsageError, match=r"broken\.yaml: malformed YAML at line \d+"):
        cfg.ConfigFile.load(path)


def test_layers_and_overrides(tmp_path: Path) -> None:
    base = cfg.resolve("scdqn", "CartPole-v1")
    assert base.hyperparameters["beta"] == 3.0
    assert base.hyperparameters["train_freq"] == 256  # classic family block
    user = overlay(tmp_path, {"agents": {"scdqn": {"CartPole-v1": {"beta": 1.0, "steps": 123}}}})
    layered = cfg.resolve("scdqn", "CartPole-v1", config_files=[user], overrides=["batch_size=16"])
    assert (layered.hyperparameters["beta"], layered.steps, layered.hyperparameters["batch_size"]) == (
        1.0,
        123,
        16,
    )
    final = cfg.resolve("scdqn", "CartPole-v1", config_files=[user], overrides=["beta=2"], steps=7)
    assert (final.hyperparameters["beta"], final.steps) == (2, 7)


def test_set_errors_are_typed() -> None:
    with pytest.raises(UsageError, match=r"--set bta: unknown key \(did you mean beta\?\)"):
        cfg.resolve("scdqn", "CartPole-v1", overrides=["bta=1"])
    with pytest.raises(UsageError, match=r"beta"):
        cfg.resolve("scdqn", "CartPole-v1", overrides=["beta=[1, 2]"])
    with pytest.raises(UsageError, match=r"expected key=value"):
        cfg.resolve("scdqn", "CartPole-v1", overrides=["beta"])


def test_env_options_from_family_and_set() -> None:
    resolved = cfg.resolve("scdqn", "ALE/Pong-v5", overrides=["env.noop_max=10"])
    assert resolved.env_options["repeat_action_probability"] == 0.0  # scdqn.atari block wins over envs.atari
    assert resolved.env_options["noop_max"] == 10
    with pytest.raises(UsageError, match=r"unknown env option"):
        cfg.resolve("scdqn", "ALE/Pong-v5", overrides=["env.nop_max=10"])


def test_structured_schedule_becomes_callable() -> None:
    resolved = cfg.resolve(
        "scdqn", "CartPole-v1", overrides=["learning_rate={kind: linear, start: 1.0, end: 0.0}"]
    )
    values = cfg.materialize_hyperparameters(resolved.hyperparameters, "x")
    schedule = values["learning_rate"]
    assert schedule(1.0) == pytest.approx(1.0) and schedule(0.0) == pytest.approx(0.0)
    assert schedule(0.5) == pytest.approx(0.5)
    with pytest.raises(UsageError, match=r"learning_rate\.kind: expected linear or constant"):
        cfg.materialize_hyperparameters({"learning_rate": {"kind": "cosine"}}, "x")


def test_optimizer_class_by_name_only() -> None:
    import torch

    values = cfg.materialize_hyperparameters({"policy_kwargs": {"optimizer_class": "RMSprop"}}, "x")
    assert values["policy_kwargs"]["optimizer_class"] is torch.optim.RMSprop
    with pytest.raises(UsageError, match=r"unknown Optimizer 'os.system'"):
        cfg.materialize_hyperparameters({"policy_kwargs": {"optimizer_class": "os.system"}}, "x")


def test_run_config_round_trip(tmp_path: Path) -> None:
    resolved = cfg.resolve("scdqn", "CartPole-v1", seed=3, overrides=["beta=1.5"])
    path = tmp_path / "config.yaml"
    path.write_text(cfg.dump_config(resolved))
    assert cfg.load_run_config(path) == resolved


def _message(function) -> str:  # type: ignore[no-untyped-def]
    try:
        function()
    except UsageError as error:
        return str(error)
    raise AssertionError("expected a UsageError")
