"""zoo.yaml loading, layering and validation.

A run's configuration is resolved from layers, later ones winning:

0. the agent's own ``AgentSpec.hyperparameters`` (what its name stands for, e.g. ``dqfd``: ``loss=dqfd``)
1. ``run:`` in zoo.yaml (run-level defaults: steps, n_envs, evaluation and checkpoint cadence)
2. ``envs.<family>:`` (env options of the family, e.g. Atari sticky actions)
3. ``agents.<agent>.default``, then ``agents.<agent>.<family>``, then ``agents.<agent>.<env id>``
4. a user file given with ``--config`` (zoo.yaml-shaped overlay, or a run's resolved config.yaml)
5. ``--set key=value`` on the command line

A run that learns from preferences (``zoo train pref``) also takes ``preference.default``, then
``preference.<family>``, then ``preference.<env id>`` after the agent's blocks: their keys are the
:class:`rewards.settings.PreferenceSettings` fields and ``env`` (the env options the paper changes,
e.g. no termination on Hopper); ``--set preference.labels=1000`` overrides one.

Inside an agent block a key is a run key (``steps``, ``n_envs``, ...), ``env`` (a mapping of env
options, validated by the family's pydantic model), or a hyperparameter of the agent's constructor
(validated against its signature and type hints). Unknown keys are errors that name the file, the
path and the closest valid key. Values are plain YAML: no eval(), no string DSLs; a schedule is a
mapping ``{kind: linear, start: 1e-3, end: 1e-5}``.
"""

from __future__ import annotations

import inspect
import typing
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, create_model, model_validator

from core.agents import AgentSpec
from core.envs import EnvFamily
from core.errors import UsageError, did_you_mean
from rewards.settings import PreferenceSettings

DEFAULT_CONFIG = Path(__file__).resolve().parents[1] / "zoo.yaml"

# Constructor parameters the application sets itself; they are not configurable hyperparameters.
RESERVED_PARAMETERS = frozenset(
    {"self", "policy", "env", "seed", "device", "verbose", "tensorboard_log", "_init_setup_model"}
)


class RunSettings(BaseModel):
    """Run-level settings (``run:`` in zoo.yaml, or in any agent block).

    :param steps: total environment steps of training
    :param n_envs: parallel training environments
    :param eval_every: env steps between evaluations during training (0 = only at the end)
    :param eval_episodes: greedy episodes per evaluation during training
    :param checkpoint_every: env steps between checkpoints (0 = only at the end and on interrupt)
    :param keep_checkpoints: how many complete checkpoints to keep
    :param save_replay: include the replay buffer in checkpoints (exact resume, large files)
    :param stop_at_return: stop at the first evaluation whose mean greedy return reaches this value
        (its checkpoint is kept); ``None`` trains for ``steps``
    """

    model_config = ConfigDict(extra="forbid")

    steps: int = Field(100_000, gt=0)
    n_envs: int = Field(1, gt=0)
    eval_every: int = Field(10_000, ge=0)
    eval_episodes: int = Field(10, gt=0)
    checkpoint_every: int = Field(50_000, ge=0)
    keep_checkpoints: int = Field(3, gt=0)
    save_replay: bool = False
    stop_at_return: float | None = None

    @model_validator(mode="after")
    def _stopping_needs_evaluations(self) -> RunSettings:
        if self.stop_at_return is not None and self.eval_every == 0:
            raise ValueError("stop_at_return needs periodic evaluations: set eval_every to a positive number")
        return self


RUN_KEYS = tuple(RunSettings.model_fields)


class RunConfig(RunSettings):
    """The fully resolved configuration of one run, as stored in ``RUN/config.yaml``.

    :param agent: registered agent name
    :param env: env id
    :param seed: random seed of the run
    :param device: ``auto`` (CUDA when present), ``cpu`` or ``cuda``
    :param env_options: options of the env family (validated by the family's model)
    :param hyperparameters: keyword arguments of the agent's constructor
    :param dataset: for offline agents, the dataset learned from (an absolute folder path, so the run
        reproduces and resumes from anywhere); ``steps`` then counts gradient steps. For agents that
        learn from demonstrations (``--demos``), the demonstrations
    :param preference: set for a run that learns from preferences (``zoo train pref``): the agent
        trains on the learned reward, evaluations report the true return
    """

    agent: str
    env: str
    seed: int = 0
    device: Literal["auto", "cpu", "cuda"] = "auto"
    env_options: dict[str, Any] = {}
    hyperparameters: dict[str, Any] = {}
    dataset: str | None = None
    preference: PreferenceSettings | None = None


def load_yaml(path: Path) -> dict[str, Any]:
    """Read a YAML mapping; a missing file or malformed YAML is a one-line :class:`UsageError`."""
    try:
        text = path.read_text()
    except FileNotFoundError:
        raise UsageError(f"{path}: no such file") from None
    except OSError as error:
        raise UsageError(f"{path}: cannot read ({error.strerror})") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(error, "problem", None) or "malformed YAML"
        raise UsageError(f"{path}: malformed YAML{where}: {problem}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise UsageError(f"{path}: expected a mapping at the top level, got {type(data).__name__}")
    return data


def parse_set(assignment: str) -> tuple[list[str], Any]:
    """``"a.b=1"`` -> ``(["a", "b"], 1)``; the value is parsed as YAML (typed later by the schema)."""
    key, sep, raw = assignment.partition("=")
    if not sep or not key.strip():
        raise UsageError(f"--set {assignment!r}: expected key=value")
    try:
        value = yaml.safe_load(raw) if raw.strip() else ""
    except yaml.YAMLError:
        raise UsageError(f"--set {assignment!r}: value is not valid YAML") from None
    return key.strip().split("."), value


def set_path(target: dict[str, Any], path: list[str], value: Any) -> None:
    for part in path[:-1]:
        child = target.get(part)
        if not isinstance(child, dict):
            child = target[part] = {}
        target = child
    target[path[-1]] = value


def deep_merge(base: Mapping[str, Any], overlay: Mapping[str, Any]) -> dict[str, Any]:
    """Recursive merge of mappings; ``overlay`` wins, nested mappings merge key by key."""
    merged = dict(base)
    for key, value in overlay.items():
        if isinstance(value, Mapping) and isinstance(merged.get(key), Mapping):
            merged[key] = deep_merge(merged[key], value)
        else:
            merged[key] = value
    return merged


# --------------------------------------------------------------------------------------------------
# Agent hyperparameters: schema from the constructor signature


def agent_parameters(spec: AgentSpec) -> dict[str, inspect.Parameter]:
    """Configurable constructor parameters of the agent's algorithm class."""
    signature = inspect.signature(spec.algorithm.__init__)
    return {
        name: parameter
        for name, parameter in signature.parameters.items()
        if name not in RESERVED_PARAMETERS
        and parameter.kind not in (inspect.Parameter.VAR_POSITIONAL, inspect.Parameter.VAR_KEYWORD)
    }


def _type_hints(spec: AgentSpec) -> dict[str, Any]:
    hints: dict[str, Any] = {}
    for klass in reversed(spec.algorithm.__mro__):
        init = klass.__dict__.get("__init__")
        if init is None:
            continue
        try:
            hints.update(typing.get_type_hints(init))
        except Exception:  # unresolvable forward reference in a third-party class: leave untyped
            continue
    return hints


def hyperparameter_model(spec: AgentSpec) -> type[BaseModel]:
    """A pydantic model whose fields are the agent's constructor parameters and type hints."""
    hints = _type_hints(spec)
    fields: dict[str, Any] = {}
    for name, parameter in agent_parameters(spec).items():
        annotation = hints.get(name, Any)
        default = ... if parameter.default is inspect.Parameter.empty else parameter.default
        fields[name] = (annotation, default)
    return create_model(
        f"{spec.algorithm.__name__}Hyperparameters",
        __config__=ConfigDict(extra="forbid", arbitrary_types_allowed=True, strict=False),
        **fields,
    )


class LinearScheduleConfig(BaseModel):
    """``{kind: linear, start, end}``: linear in training progress, from start to end."""

    model_config = ConfigDict(extra="forbid")

    kind: Literal["linear"]
    start: float
    end: float
    fraction: float = Field(1.0, gt=0, le=1)


class ConstantScheduleConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    kind: Literal["constant"]
    value: float


def build_schedule(raw: Mapping[str, Any], where: str) -> Callable[[float], float]:
    """Turn a structured schedule mapping into SB3's progress-remaining callable."""
    from stable_baselines3.common.utils import ConstantSchedule, LinearSchedule

    kind = raw.get("kind")
    try:
        if kind == "linear":
            linear = LinearScheduleConfig.model_validate(raw)
            return LinearSchedule(linear.start, linear.end, linear.fraction)
        if kind == "constant":
            return ConstantSchedule(ConstantScheduleConfig.model_validate(raw).value)
    except ValidationError as error:
        raise UsageError(f"{where}: {_first_error(error)}") from None
    raise UsageError(f"{where}.kind: expected linear or constant, got {kind!r}")


class ActionNoiseConfig(BaseModel):
    """``action_noise: {kind: normal | ornstein_uhlenbeck, sigma: 0.1}``: exploration noise for
    off-policy continuous-control agents (TD3, SAC), sized to the env's action space by the runner."""

    model_config = ConfigDict(extra="forbid")

    kind: Literal["normal", "ornstein_uhlenbeck"]
    sigma: float = Field(gt=0)
    theta: float = Field(0.15, gt=0)


def build_action_noise(raw: Mapping[str, Any], where: str) -> Any:
    from core.noise import SizedActionNoise

    try:
        noise = ActionNoiseConfig.model_validate(raw)
    except ValidationError as error:
        raise UsageError(_error_at(where, error)) from None
    return SizedActionNoise(noise.kind, noise.sigma, theta=noise.theta)


def _named_class(name: Any, module: Any, base: type, where: str) -> type:
    """Resolve a class by its plain name inside ``module`` (no eval, no dotted import paths)."""
    if isinstance(name, type) and issubclass(name, base):
        return name
    candidates = [
        n
        for n in dir(module)
        if isinstance(getattr(module, n), type) and issubclass(getattr(module, n), base)
    ]
    if not isinstance(name, str) or name not in candidates:
        raise UsageError(f"{where}: unknown {base.__name__} {name!r}{did_you_mean(str(name), candidates)}")
    cls: type = getattr(module, name)
    return cls


def materialize_hyperparameters(values: Mapping[str, Any], where: str) -> dict[str, Any]:
    """Turn structured YAML values into the Python objects the constructor takes: schedules into
    callables, ``action_noise`` into an SB3 action noise, ``policy_kwargs.optimizer_class`` /
    ``activation_fn`` names into torch classes."""
    import torch

    result = dict(values)
    for key, value in values.items():
        if key == "action_noise" and isinstance(value, Mapping):
            result[key] = build_action_noise(value, f"{where}.{key}")
        elif isinstance(value, Mapping) and "kind" in value:
            result[key] = build_schedule(value, f"{where}.{key}")
    policy_kwargs = values.get("policy_kwargs")
    if isinstance(policy_kwargs, Mapping):
        policy_kwargs = dict(policy_kwargs)
        if "optimizer_class" in policy_kwargs:
            policy_kwargs["optimizer_class"] = _named_class(
                policy_kwargs["optimizer_class"],
                torch.optim,
                torch.optim.Optimizer,
                f"{where}.policy_kwargs.optimizer_class",
            )
        if "activation_fn" in policy_kwargs:
            policy_kwargs["activation_fn"] = _named_class(
                policy_kwargs["activation_fn"],
                torch.nn,
                torch.nn.Module,
                f"{where}.policy_kwargs.activation_fn",
            )
        result["policy_kwargs"] = policy_kwargs
    return result


def _first_error(error: ValidationError) -> str:
    detail = error.errors()[0]
    location = ".".join(str(part) for part in detail["loc"])
    message = detail["msg"].removeprefix("Value error, ")
    if detail["type"] == "extra_forbidden":
        message = "unknown key"
    return f"{location}: {message}" if location else message


def _error_at(where: str, error: ValidationError) -> str:
    """``where.key: message``, or ``where: message`` for an error of the whole block."""
    first = _first_error(error)
    return f"{where}.{first}" if error.errors()[0]["loc"] else f"{where}: {first}"


def validate_hyperparameters(spec: AgentSpec, values: Mapping[str, Any], where: str) -> None:
    """Check names and types against the constructor; raise one :class:`UsageError` line."""
    known = agent_parameters(spec)
    for key in values:
        if key not in known:
            valid = [*known, *RUN_KEYS, "env"]
            raise UsageError(f"{where}.{key}: unknown key{did_you_mean(key, valid)}")
    model = hyperparameter_model(spec)
    try:
        model.model_validate(materialize_hyperparameters(values, where))
    except ValidationError as error:
        raise UsageError(_error_at(where, error)) from None


def validate_env_options(family: EnvFamily, values: Mapping[str, Any], where: str) -> dict[str, Any]:
    """Validate env options with the family's model; returns them with defaults filled in."""
    for key in values:
        if key not in family.Options.model_fields:
            raise UsageError(
                f"{where}.{key}: unknown env option{did_you_mean(key, list(family.Options.model_fields))}"
            )
    try:
        return family.Options.model_validate(dict(values)).model_dump()
    except ValidationError as error:
        raise UsageError(_error_at(where, error)) from None


def validate_preference_settings(values: Mapping[str, Any], where: str) -> None:
    """Check a (partial) ``preference`` block's keys and values; one :class:`UsageError` line."""
    for key in values:
        if key not in PreferenceSettings.model_fields:
            valid = [*PreferenceSettings.model_fields, "env"]
            raise UsageError(f"{where}.{key}: unknown key{did_you_mean(key, valid)}")
    try:
        PreferenceSettings.model_validate(dict(values))
    except ValidationError as error:
        raise UsageError(_error_at(where, error)) from None


def validate_run_settings(values: Mapping[str, Any], where: str) -> None:
    try:
        RunSettings.model_validate(dict(values))
    except ValidationError as error:
        raise UsageError(_error_at(where, error)) from None


# --------------------------------------------------------------------------------------------------
# Resolution


def split_block(block: Mapping[str, Any]) -> tuple[dict[str, Any], dict[str, Any], dict[str, Any]]:
    """Split an agent block into (run settings, env options, hyperparameters)."""
    run = {k: v for k, v in block.items() if k in RUN_KEYS}
    env = dict(block.get("env") or {})
    hyper = {k: v for k, v in block.items() if k not in RUN_KEYS and k != "env"}
    return run, env, hyper


class ConfigFile:
    """A zoo.yaml-shaped mapping with the file it came from (for error messages)."""

    TOP_KEYS = ("run", "envs", "agents", "preference")

    def __init__(self, data: Mapping[str, Any], source: str) -> None:
        self.data = dict(data)
        self.source = source

    @classmethod
    def load(cls, path: Path) -> ConfigFile:
        return cls(load_yaml(path), str(path))

    def validate(self) -> None:
        """Check every key of the file against agents, env families and their schemas."""
        from core.agents import AGENTS
        from core.envs import ENV_FAMILIES

        for key in self.data:
            if key not in self.TOP_KEYS:
                raise UsageError(f"{self.source}: {key}: unknown key{did_you_mean(key, self.TOP_KEYS)}")
        run = self._mapping(self.data.get("run"), "run")
        validate_run_settings(run, f"{self.source}: run")
        envs = self._mapping(self.data.get("envs"), "envs")
        families = dict(ENV_FAMILIES.items())
        for family_name, options in envs.items():
            if family_name not in families:
                hint = did_you_mean(family_name, families)
                raise UsageError(f"{self.source}: envs.{family_name}: unknown env family{hint}")
            validate_env_options(
                families[family_name],
                self._mapping(options, f"envs.{family_name}"),
                f"{self.source}: envs.{family_name}",
            )
        preference = self._mapping(self.data.get("preference"), "preference")
        for scope, block in preference.items():
            where = f"{self.source}: preference.{scope}"
            family = self._scope_family(scope, families, where)
            block = self._mapping(block, f"preference.{scope}")
            settings = {k: v for k, v in block.items() if k != "env"}
            validate_preference_settings(settings, where)
            if "env" in block:
                if family is None:
                    raise UsageError(
                        f"{where}.env: env options belong in a family or env-id block, not in default"
                    )
                validate_env_options(
                    family, self._mapping(block["env"], f"preference.{scope}.env"), f"{where}.env"
                )
        agents = self._mapping(self.data.get("agents"), "agents")
        for agent_name, blocks in agents.items():
            if agent_name not in AGENTS.names():
                hint = did_you_mean(agent_name, AGENTS.names())
                raise UsageError(f"{self.source}: agents.{agent_name}: unknown agent{hint}")
            spec = AGENTS.get(agent_name)
            for scope, block in self._mapping(blocks, f"agents.{agent_name}").items():
                where = f"{self.source}: agents.{agent_name}.{scope}"
                family = self._scope_family(scope, families, where)
                self._validate_block(
                    spec, family, self._mapping(block, f"agents.{agent_name}.{scope}"), where
                )

    def _scope_family(self, scope: str, families: Mapping[str, EnvFamily], where: str) -> EnvFamily | None:
        if scope == "default":
            return None
        if scope in families:
            return families[scope]
        for family in families.values():
            if family.owns(scope):
                return family
        candidates = ["default", *families, *(i for f in families.values() for i in f.env_ids())]
        raise UsageError(f"{where}: unknown env id or family{did_you_mean(scope, candidates)}")

    @staticmethod
    def _validate_block(
        spec: AgentSpec, family: EnvFamily | None, block: Mapping[str, Any], where: str
    ) -> None:
        run, env, hyper = split_block(block)
        validate_run_settings(run, where)
        if env:
            if family is None:
                raise UsageError(
                    f"{where}.env: env options belong in a family or env-id block, not in default"
                )
            validate_env_options(family, env, f"{where}.env")
        validate_hyperparameters(spec, hyper, where)

    def _mapping(self, value: Any, where: str) -> dict[str, Any]:
        if value is None:
            return {}
        if not isinstance(value, Mapping):
            raise UsageError(f"{self.source}: {where}: expected a mapping, got {type(value).__name__}")
        return dict(value)

    def layers_for(self, agent: str, family: str, env_id: str) -> list[tuple[str, dict[str, Any]]]:
        """The blocks that apply to (agent, env), lowest precedence first, as flat block mappings."""
        layers: list[tuple[str, dict[str, Any]]] = []
        run = self._mapping(self.data.get("run"), "run")
        if run:
            layers.append((f"{self.source}: run", run))
        env_options = self._mapping(
            self._mapping(self.data.get("envs"), "envs").get(family), f"envs.{family}"
        )
        if env_options:
            layers.append((f"{self.source}: envs.{family}", {"env": env_options}))
        blocks = self._mapping(self._mapping(self.data.get("agents"), "agents").get(agent), f"agents.{agent}")
        for scope in ("default", family, env_id):
            block = self._mapping(blocks.get(scope), f"agents.{agent}.{scope}")
            if block:
                layers.append((f"{self.source}: agents.{agent}.{scope}", block))
        return layers

    def preference_layers_for(self, family: str, env_id: str) -> list[dict[str, Any]]:
        """The ``preference`` blocks that apply to (family, env), lowest precedence first."""
        blocks = self._mapping(self.data.get("preference"), "preference")
        return [
            dict(self._mapping(blocks.get(scope), f"preference.{scope}"))
            for scope in ("default", family, env_id)
        ]


def resolve(
    agent: str,
    env_id: str,
    *,
    seed: int = 0,
    device: str = "auto",
    config_files: list[ConfigFile] | None = None,
    overrides: list[str] | None = None,
    steps: int | None = None,
    preference: Mapping[str, Any] | None = None,
    defaults_path: Path = DEFAULT_CONFIG,
) -> RunConfig:
    """Resolve and validate the configuration of one run (see the module docstring for layers).

    :param preference: ``None`` for an ordinary run; for a run that learns from preferences, the
        settings given on the command line (``--labeler``, ``--labels``), which win over every layer
    """
    from core.agents import AGENTS
    from core.envs import family_for

    spec = AGENTS.get(agent)
    family = family_for(env_id)
    files = [ConfigFile.load(defaults_path), *(config_files or [])]
    for config_file in files:
        config_file.validate()

    run: dict[str, Any] = {}
    env_options: dict[str, Any] = {}
    hyper: dict[str, Any] = deep_merge({}, spec.hyperparameters)  # what the agent's name stands for
    for config_file in files:
        for _, block in config_file.layers_for(agent, family.name, env_id):
            block_run, block_env, block_hyper = split_block(block)
            run.update(block_run)
            env_options = deep_merge(env_options, block_env)
            hyper = deep_merge(hyper, block_hyper)
    settings: dict[str, Any] = {}
    if preference is not None:
        for config_file in files:
            for block in config_file.preference_layers_for(family.name, env_id):
                env_options = deep_merge(env_options, dict(block.get("env") or {}))
                settings.update({k: v for k, v in block.items() if k != "env"})

    for assignment in overrides or []:
        path, value = parse_set(assignment)
        where = f"--set {'.'.join(path)}"
        if path[0] == "preference":
            if preference is None:
                raise UsageError(f"{where}: preference settings belong to `zoo train pref` runs")
            if len(path) != 2:
                raise UsageError(f"{where}: name one preference setting, e.g. preference.labels=1000")
            settings[path[1]] = value
            validate_preference_settings(settings, "--set preference")
        elif path[0] in RUN_KEYS and len(path) == 1:
            run[path[0]] = value
        elif path[0] == "env":
            if len(path) < 2:
                raise UsageError(f"{where}: name an env option, e.g. env.repeat_action_probability=0")
            set_path(env_options, path[1:], value)
            validate_env_options(family, env_options, "--set env")
        else:
            if path[0] not in agent_parameters(spec):
                valid = [*agent_parameters(spec), *RUN_KEYS, "env"]
                raise UsageError(f"{where}: unknown key{did_you_mean(path[0], valid)}")
            set_path(hyper, path, value)
    if steps is not None:
        run["steps"] = steps
    if preference is not None:
        settings.update(preference)
        validate_preference_settings(settings, "preference settings")

    validate_run_settings(run, "run settings")
    # The videos people label are drawn from each step's recorded state (rewards.rendering).
    records = "record_render_state" in family.Options.model_fields
    if preference is not None and records and PreferenceSettings.model_validate(settings).draws_videos:
        env_options = {**env_options, "record_render_state": True}
    resolved_env = validate_env_options(family, env_options, "env options")
    validate_hyperparameters(spec, hyper, f"agents.{agent}")
    try:
        return RunConfig(
            agent=agent,
            env=env_id,
            seed=seed,
            device=device,  # type: ignore[arg-type]  # a str; pydantic checks it against the Literal
            env_options=resolved_env,
            hyperparameters=hyper,
            preference=None if preference is None else PreferenceSettings.model_validate(settings),
            **run,
        )
    except ValidationError as error:
        raise UsageError(_first_error(error)) from None


def load_run_config(path: Path) -> RunConfig:
    """Read a resolved run config (``RUN/config.yaml``) and validate it fully."""
    data = load_yaml(path)
    try:
        config = RunConfig.model_validate(data)
    except ValidationError as error:
        raise UsageError(f"{path}: {_first_error(error)}") from None
    from core.agents import AGENTS
    from core.envs import family_for

    spec = AGENTS.get(config.agent)
    family = family_for(config.env)
    validate_env_options(family, config.env_options, f"{path}: env_options")
    validate_hyperparameters(spec, config.hyperparameters, f"{path}: hyperparameters")
    return config


def is_run_config(data: Mapping[str, Any]) -> bool:
    return "agent" in data and "env" in data


def dump_config(config: RunConfig) -> str:
    return yaml.safe_dump(config.model_dump(mode="json"), sort_keys=False)
