"""The ``zoo`` command line: list, train, eval, config show/validate.

Exit codes: 0 success; 2 usage or config error (one line naming the bad key or value); 1 runtime
failure (one readable line; the traceback only with ``--debug``).
"""

from __future__ import annotations

import shlex
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from core.errors import UsageError, ZooError
from zoo.cli_analysis import register_analysis_commands
from zoo.cli_bench import register_bench_commands
from zoo.cli_data import register_data_commands
from zoo.cli_label import label_app
from zoo.cli_reward import register_reward_commands

if TYPE_CHECKING:
    from core.agents import AgentSpec
    from core.datasets import TransitionDataset
    from zoo.config import RunConfig

app = typer.Typer(
    name="zoo",
    help="Train, evaluate and compare RL agents (SC-DQN, BRAC, NAC, VPN, EPG, preference rewards).",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
config_app = typer.Typer(help="Show or validate configurations.", no_args_is_help=True)
app.add_typer(config_app, name="config")

console = Console(stderr=False)
err_console = Console(stderr=True)
_state = {"debug": False}
register_data_commands(app, console)
register_reward_commands(app, console)
register_analysis_commands(app, console)
register_bench_commands(app, console)
app.add_typer(label_app, name="label")


@app.callback()
def _main(debug: Annotated[bool, typer.Option("--debug", help="Show tracebacks on errors.")] = False) -> None:
    _state["debug"] = debug


@app.command("list")
def list_command() -> None:
    """List agents, env families and the env ids they expose."""
    from core.agents import AGENTS
    from core.envs import ENV_FAMILIES

    agents = Table(title="agents", show_edge=False)
    agents.add_column("name", style="bold")
    agents.add_column("actions")
    agents.add_column("summary")
    for name, spec in AGENTS.items():
        agents.add_row(name, ", ".join(s.__name__ for s in spec.action_spaces), spec.summary)
    console.print(agents)
    families = Table(title="env families", show_edge=False)
    families.add_column("family", style="bold")
    families.add_column("observations")
    families.add_column("env ids")
    for name, family in ENV_FAMILIES.items():
        ids = family.env_ids()
        shown = ", ".join(ids if len(ids) <= 12 else [*ids[:12], f"... ({len(ids)} in all)"])
        families.add_row(name, family.observation_kind, shown)
    console.print(families)
    console.print(
        "Any online agent also learns from preferences: zoo train pref --env ID --policy AGENT "
        "--labeler synthetic|teacher:NAME|human --labels N"
    )


def _user_configs(config: Path | None) -> tuple[list, dict | None]:
    """A ``--config`` file is either zoo.yaml-shaped (an overlay) or a run's resolved config.yaml."""
    from zoo.config import ConfigFile, is_run_config, load_yaml

    if config is None:
        return [], None
    data = load_yaml(config)
    if is_run_config(data):
        return [], data
    return [ConfigFile(data, str(config))], None


@app.command()
def train(
    agent: Annotated[str | None, typer.Argument(help="Agent name (see `zoo list`).")] = None,
    env: Annotated[str | None, typer.Option("--env", help="Env id, e.g. CartPole-v1 or ALE/Pong-v5.")] = None,
    steps: Annotated[int | None, typer.Option(help="Total env steps (overrides the config).")] = None,
    seed: Annotated[int | None, typer.Option(help="Random seed.")] = None,
    seeds: Annotated[
        str | None,
        typer.Option(
            help="Several seeds, e.g. 0,1,2: one run per seed, one after the other, in one group folder "
            "(--run-dir, default runs/<agent>/<env>/<time>-seeds-0-1-2/) holding s0/, s1/, ..."
        ),
    ] = None,
    device: Annotated[str | None, typer.Option(help="auto (GPU when present), cpu or cuda.")] = None,
    config: Annotated[
        Path | None,
        typer.Option("--config", help="zoo.yaml-shaped overlay, or RUN/config.yaml to reproduce a run."),
    ] = None,
    set_: Annotated[
        list[str] | None,
        typer.Option("--set", help="Override a key: --set beta=2 --set env.repeat_action_probability=0."),
    ] = None,
    run_dir: Annotated[
        Path | None,
        typer.Option(
            "--run-dir", help="Exact folder of the new run (default runs/<agent>/<env>/<time>-s<seed>)."
        ),
    ] = None,
    resume: Annotated[
        Path | None, typer.Option("--resume", help="Continue RUN from its newest complete checkpoint.")
    ] = None,
    eval_every: Annotated[
        int | None, typer.Option(help="Env steps between evaluations (0: only at the end).")
    ] = None,
    checkpoint_every: Annotated[
        int | None, typer.Option(help="Env steps between checkpoints (0: only at the end).")
    ] = None,
    stop_at_return: Annotated[
        float | None,
        typer.Option(help="Stop at the first evaluation whose mean greedy return reaches this value."),
    ] = None,
    dataset: Annotated[
        str | None,
        typer.Option(
            "--dataset",
            "--demos",
            help="Offline agents: the Minari dataset (name or folder) to learn from; agents that learn "
            "from demonstrations (nac, dqfd, soft_q, nac_continuous): the demonstrations. --env defaults "
            "to the dataset's env.",
        ),
    ] = None,
    pretrain_steps: Annotated[
        int | None,
        typer.Option(
            "--pretrain-steps",
            help="Agents that learn from demonstrations: stage-1 gradient steps on them "
            "(--set pretrain_steps=N).",
        ),
    ] = None,
    policy: Annotated[
        str | None,
        typer.Option(help="`zoo train pref`: the agent that learns from the learned reward (default ppo)."),
    ] = None,
    labeler: Annotated[
        str | None,
        typer.Option(
            help="`zoo train pref`: synthetic (oracle on the true reward), teacher:NAME (oracle, stoc, "
            "mistake, skip, equal, myopic) or human (answers through the label store)."
        ),
    ] = None,
    labels: Annotated[int | None, typer.Option(help="`zoo train pref`: total label budget.")] = None,
    quiet: Annotated[bool, typer.Option("--quiet", help="No progress bar.")] = False,
) -> None:
    """Train AGENT on --env into a new run folder (or --resume one).

    `zoo train pref --env ID` trains --policy (PPO by default) on a reward learned from preferences
    between clips of its own behavior (Christiano et al. 2017), asked of --labeler; evaluations
    report the env's true return.

    Offline agents (brac, bc, offline_sac) learn from --dataset instead; their --steps are gradient
    steps and the env is only used for evaluation. Agents that learn from demonstrations (nac, dqfd,
    soft_q, nac_continuous) take --demos: --steps counts --pretrain-steps gradient steps on them, then
    env steps.
    """
    from zoo import config as cfg
    from zoo import runner, runs

    if seeds is not None:
        if seed is not None or resume is not None:
            raise UsageError("--seeds starts one new run per seed; it takes neither --seed nor --resume")
        arguments = dict(locals())
        for name in ("seeds", "seed", "cfg", "runner", "runs"):
            del arguments[name]
        _train_seeds(_parse_seeds(seeds), arguments)
        return
    if device is not None and device not in ("auto", "cpu", "cuda"):
        raise UsageError(f"--device {device!r}: expected auto, cpu or cuda")
    overrides = list(set_ or [])
    if eval_every is not None:
        overrides.append(f"eval_every={eval_every}")
    if checkpoint_every is not None:
        overrides.append(f"checkpoint_every={checkpoint_every}")
    if stop_at_return is not None:
        overrides.append(f"stop_at_return={stop_at_return}")
    if pretrain_steps is not None:
        overrides.append(f"pretrain_steps={pretrain_steps}")
    if steps is not None and steps <= 0:
        raise UsageError(f"--steps {steps}: must be a positive number of env steps")
    preference = None
    if agent == "pref":
        agent = _preference_policy(policy or "ppo")
        preference = {k: v for k, v in {"labeler": labeler, "labels": labels}.items() if v is not None}
    elif policy is not None or labeler is not None or labels is not None:
        raise UsageError("--policy, --labeler and --labels belong to `zoo train pref`")

    offline_data = None
    created: Path | None = None  # the outermost folder this command made for a new run
    if resume is not None:
        if agent or env or config or overrides or run_dir or dataset or seed is not None or preference:
            raise UsageError(
                "--resume takes the run's own config; only --steps, --device and --quiet may be added"
            )
        run_config = runs.open_run(resume)
        updates: dict = {}
        if steps is not None:
            updates["steps"] = steps
        if device is not None:
            updates["device"] = device
        if updates:
            run_config = run_config.model_copy(update=updates)
            (resume / "config.yaml").write_text(cfg.dump_config(run_config))
        target = resume
    else:
        overlays, reproduced = _user_configs(config)
        if reproduced is not None:
            if agent or env:
                raise UsageError("--config RUN/config.yaml fixes the agent and env; do not pass them again")
            run_config = cfg.load_run_config(config)  # type: ignore[arg-type]
            updates = {
                k: v for k, v in {"steps": steps, "seed": seed, "device": device}.items() if v is not None
            }
            if overrides:
                raise UsageError(
                    "--set cannot be combined with a run's config.yaml; edit a copy of it instead"
                )
            if dataset is not None:
                updates["dataset"] = dataset
            run_config = run_config.model_copy(update=updates)
            offline_data, run_config = _offline_dataset(run_config)
        else:
            loaded = None
            if agent is not None and env is None and dataset is not None and _uses_dataset(agent, dataset):
                from core.minari_io import load_dataset

                loaded = load_dataset(dataset)  # --env defaults to the dataset's env
                env = loaded.metadata.get("env_id")
                if not env:
                    raise UsageError(f"--dataset {dataset}: the dataset names no env id; pass --env ENV_ID")
            if agent is None or env is None:
                raise UsageError(
                    "zoo train needs an AGENT and --env ENV_ID (or --config RUN/config.yaml, or --resume RUN)"
                )
            run_config = cfg.resolve(
                agent,
                env,
                seed=seed or 0,
                device=device or "auto",
                config_files=overlays,
                overrides=overrides,
                steps=steps,
                preference=preference,
            ).model_copy(update={"dataset": dataset})
            offline_data, run_config = _offline_dataset(run_config, loaded)
        runner.resolve_device(run_config.device)
        target = run_dir if run_dir is not None else runs.new_run_dir(run_config)
        created = runs.first_missing_folder(target.absolute())
        runs.create_run_dir(target, run_config, "zoo " + shlex.join(sys.argv[1:]))

    runner.resolve_device(run_config.device)
    unit = "gradient steps" if _spec(run_config.agent).offline else "steps"
    if not quiet:
        source = "" if run_config.dataset is None else f" from {run_config.dataset}"
        if run_config.preference is not None:
            settings = run_config.preference
            source = f" on a reward learned from {settings.labels} {settings.labeler} labels"
            if settings.labeler == "human":
                source += f" (label store: {settings.store or target / 'labels.sqlite'})"
        console.print(
            f"[bold]{run_config.agent}[/] on [bold]{run_config.env}[/]{source}, seed {run_config.seed}, "
            f"{run_config.steps} {unit} -> {target}"
        )
    try:
        outcome = runner.train(
            run_config, target, console=console, quiet=quiet, resume=resume is not None, dataset=offline_data
        )
    except UsageError:
        if resume is None:  # refused before it began (e.g. by the agent's constructor): leave nothing
            runs.discard_unstarted_run(target, created=created)
        raise
    if outcome.status == "interrupted":
        console.print(
            f"interrupted at step {outcome.steps}; checkpoint saved. Resume with:\n"
            f"  zoo train --resume {target}"
        )
        return
    if outcome.stopped_at_return:
        console.print(
            f"stopped at step {outcome.steps}: greedy return {outcome.final_eval:.2f} reached "
            f"--stop-at-return {run_config.stop_at_return:g}; its checkpoint is kept"
        )
    elif outcome.final_eval is not None:
        console.print(
            f"finished {outcome.steps} {unit}; greedy return {outcome.final_eval:.2f} "
            f"over {run_config.eval_episodes} episodes"
        )
    console.print(f"run folder: {target}\nevaluate with: zoo eval {target}")


def _parse_seeds(text: str) -> list[int]:
    """``"0,1,2"`` -> ``[0, 1, 2]``: distinct non-negative integers."""
    try:
        values = [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise UsageError(f"--seeds {text!r}: expected comma-separated integers, e.g. 0,1,2") from None
    if not values or any(value < 0 for value in values) or len(set(values)) != len(values):
        raise UsageError(f"--seeds {text!r}: expected distinct non-negative integers, e.g. 0,1,2")
    return values


def _train_seeds(seeds: list[int], arguments: dict[str, Any]) -> None:
    """``zoo train --seeds``: the same command once per seed, into ``GROUP/s<seed>/``."""
    import datetime as dt
    import json
    import shutil

    from zoo import config as cfg
    from zoo import runs

    group = arguments.pop("run_dir")
    if group is None:
        agent, env = arguments["agent"], arguments["env"]
        if (agent is None or env is None) and arguments["config"] is not None:
            data = cfg.load_yaml(arguments["config"])
            if cfg.is_run_config(data):
                reproduced = cfg.load_run_config(arguments["config"])
                agent = agent or reproduced.agent
                env = env or reproduced.env
        if agent is None or env is None:
            raise UsageError("zoo train --seeds needs an AGENT and --env ENV_ID (or --run-dir GROUP_FOLDER)")
        stamp = dt.datetime.now().strftime("%Y%m%d-%H%M%S")
        name = "pref-" + (arguments["policy"] or "ppo") if agent == "pref" else agent
        group = runs.RUNS_ROOT / name / runs.env_slug(env) / f"{stamp}-seeds-{'-'.join(map(str, seeds))}"
    if group.exists() and (not group.is_dir() or any(group.iterdir())):
        raise UsageError(f"{group}: already exists and is not empty; a seed group needs a new folder")
    created = runs.first_missing_folder(group.absolute())
    group.mkdir(parents=True, exist_ok=True)
    members = [group / f"s{seed}" for seed in seeds]
    record = {"seeds": seeds, "runs": [m.name for m in members], "command": "zoo " + shlex.join(sys.argv[1:])}
    (group / "group.json").write_text(json.dumps(record, indent=2) + "\n")
    for index, (seed, member) in enumerate(zip(seeds, members, strict=True)):
        if not arguments["quiet"]:
            console.rule(f"seed {seed} ({index + 1}/{len(seeds)})")
        try:
            train(**arguments, seed=seed, run_dir=member)
        except UsageError:
            if index == 0:  # refused before anything ran (bad input): leave no empty group behind
                (group / "group.json").unlink(missing_ok=True)
                if created is not None and not any(group.iterdir()):
                    shutil.rmtree(created, ignore_errors=True)
            raise
        if runs.read_status(member).get("status") == "interrupted":
            rest = ",".join(map(str, seeds[index + 1 :]))
            console.print(
                f"stopped at seed {seed}; resume it with `zoo train --resume {member}`"
                + (f", then the other seeds with --seeds {rest} --run-dir NEW_FOLDER" if rest else "")
            )
            return
    console.print(f"seed group: {group} ({len(seeds)} runs); compare or plot with: zoo plot {group}")


def _preference_policy(name: str) -> str:
    """The agent of a preference run: any registered agent that learns online."""
    from core.agents import AGENTS

    spec = AGENTS.get(name)
    if spec.offline or spec.demonstrations:
        online = ", ".join(n for n, s in AGENTS.items() if not (s.offline or s.demonstrations))
        raise UsageError(f"--policy {name}: a preference run needs an agent that learns online: {online}")
    return name


def _offline_dataset(
    run_config: RunConfig, loaded: TransitionDataset | None = None
) -> tuple[TransitionDataset | None, RunConfig]:
    """Check an offline run's dataset (or a run's demonstrations) before its folder exists (bad data
    writes nothing); the config then records the dataset's absolute path. Online agents refuse
    ``--dataset``."""
    from zoo import runner

    if not _uses_dataset(run_config.agent, run_config.dataset):
        return None, run_config
    if loaded is None:
        data = runner.open_offline_dataset(run_config)
    else:
        data = loaded
        runner.check_offline_dataset(run_config, data)
    path = data.metadata.get("path")
    if path is not None:
        run_config = run_config.model_copy(update={"dataset": str(Path(path).resolve())})
    return data, run_config


def _spec(agent: str) -> AgentSpec:
    from core.agents import AGENTS

    return AGENTS.get(agent)


def _uses_dataset(agent: str, dataset: str | None) -> bool:
    """Whether ``agent`` learns from a dataset (offline, or demonstrations); ``--dataset``/``--demos``
    given to an agent that learns online only is an error."""
    from core.agents import AGENTS

    spec = AGENTS.get(agent)
    if spec.offline or spec.demonstrations:
        return True
    if dataset is not None:
        offline = ", ".join(name for name, s in AGENTS.items() if s.offline) or "none installed"
        demos = ", ".join(name for name, s in AGENTS.items() if s.demonstrations) or "none installed"
        raise UsageError(
            f"--dataset/--demos: {agent} learns online; agents that learn from a dataset: {offline}; "
            f"from demonstrations: {demos}"
        )
    return False


@app.command("eval")
def eval_command(
    target: Annotated[
        Path,
        typer.Argument(
            help="A run folder made by `zoo train`, a checkpoint inside one (checkpoints/step-N, best/), "
            "or a folder of runs (`zoo train --seeds`: each is evaluated).",
            show_default=False,
        ),
    ],
    episodes: Annotated[int, typer.Option(min=1, help="Evaluation episodes (one per evaluation seed).")] = 10,
    deterministic: Annotated[
        bool, typer.Option("--deterministic/--stochastic", help="Greedy or sampled actions.")
    ] = True,
    checkpoint: Annotated[
        str, typer.Option(help="Which checkpoint: last, best (best periodic evaluation) or a step.")
    ] = "last",
    video: Annotated[
        int, typer.Option("--video", min=0, help="Write MP4s of the first N episodes to RUN/videos/.")
    ] = 0,
    seed: Annotated[
        int | None,
        typer.Option(help="Evaluate on seeds S, S+1, ... instead of the run's stored evaluation seeds."),
    ] = None,
    gap_episodes: Annotated[
        int, typer.Option(min=0, help="Episodes for the Q overestimation gap (value-based agents).")
    ] = 10,
    test_policy: Annotated[
        str | None,
        typer.Option(
            help="Offline actor-critics (brac, offline_sac, bc): deterministic (tanh of the mean) or "
            "max_q (the best of sampled actions under Q) instead of the run's own choice."
        ),
    ] = None,
    quiet: Annotated[bool, typer.Option("--quiet")] = False,
) -> None:
    """Evaluate a run's checkpoint on the run's evaluation seeds; writes RUN/eval.json (summary) and
    RUN/eval-episodes.jsonl (one line per episode) and prints mean ± std."""
    from zoo import evaluate

    for run in _eval_targets(target):
        run_dir, report = evaluate.evaluate_run(
            run,
            episodes=episodes,
            deterministic=deterministic,
            checkpoint=checkpoint,
            seed=seed,
            videos=video,
            gap_episodes=min(gap_episodes, episodes),
            test_policy=test_policy,
            console=None if quiet else console,
        )
        mode = "greedy" if deterministic else "stochastic"
        rule = f", {report['test_policy']} test policy" if deterministic and "test_policy" in report else ""
        reward = "return" if report["reward"] == "true" else "true return (learned from preferences)"
        console.print(
            f"{report['agent']} on {report['env']} at step {report['step']} "
            f"({report['checkpoint']} checkpoint): {reward} "
            f"{report['mean_return']:.2f} ± {report['std_return']:.2f} "
            f"({episodes} {mode} episodes{rule})",
            soft_wrap=True,
        )
        gap = report.get("overestimation")
        if gap and gap["states"]:
            console.print(
                f"overestimation gap: {gap['mean_gap']:+.3f} (mean Q {gap['mean_predicted_q']:.3f} vs "
                f"discounted return {gap['mean_discounted_return']:.3f}, {gap['states']} states)"
            )
        for video_file in report["videos"]:
            console.print(f"wrote {run_dir / video_file}")
        console.print(f"wrote {run_dir / 'eval.json'} and {run_dir / 'eval-episodes.jsonl'}", soft_wrap=True)


def _eval_targets(target: Path) -> list[Path]:
    """``target`` itself, or the run folders directly inside it when it is a folder of runs."""
    if target.is_dir() and not (target / "config.yaml").exists():
        runs = sorted(child for child in target.iterdir() if (child / "config.yaml").is_file())
        inside_run = any((parent / "config.yaml").is_file() for parent in target.absolute().parents)
        if runs and not inside_run:
            return runs
    return [target]


@config_app.command("show")
def config_show(
    agent: Annotated[str, typer.Argument(help="Agent name.")],
    env: Annotated[str, typer.Option("--env", help="Env id.")],
    config: Annotated[Path | None, typer.Option("--config", help="zoo.yaml-shaped overlay.")] = None,
    set_: Annotated[list[str] | None, typer.Option("--set")] = None,
    seed: Annotated[int, typer.Option()] = 0,
    policy: Annotated[
        str | None, typer.Option(help="AGENT pref: the agent that learns (default ppo).")
    ] = None,
) -> None:
    """Print the fully resolved config of AGENT on --env (AGENT pref: a preference run)."""
    from zoo import config as cfg

    preference: dict[str, Any] | None = None
    if agent == "pref":
        agent, preference = _preference_policy(policy or "ppo"), {}
    elif policy is not None:
        raise UsageError("--policy belongs to `zoo config show pref`")

    overlays, reproduced = _user_configs(config)
    if reproduced is not None:
        raise UsageError(
            "config show takes a zoo.yaml-shaped overlay; a run's config.yaml is already resolved"
        )
    resolved = cfg.resolve(
        agent, env, seed=seed, config_files=overlays, overrides=list(set_ or []), preference=preference
    )
    typer.echo(cfg.dump_config(resolved), nl=False)


@config_app.command("validate")
def config_validate(
    file: Annotated[Path, typer.Argument(help="A zoo.yaml-shaped file or a run's config.yaml.")],
) -> None:
    """Check every key and value of FILE; exit 2 with the first problem."""
    from zoo import config as cfg

    data = cfg.load_yaml(file)
    if cfg.is_run_config(data):
        cfg.load_run_config(file)
    else:
        cfg.ConfigFile(data, str(file)).validate()
    console.print(f"{file}: ok")


def _command_line_error_types() -> tuple[tuple[type[BaseException], ...], tuple[type[BaseException], ...]]:
    """The exception classes of bad command lines (usage errors) and of an aborted prompt.

    Typer up to 0.28 raises click's classes; from 0.29 it vendors click (``typer._click``)
    and its errors derive from ``typer.TyperException``. Click may still be installed
    for another package (uvicorn), so both are checked when present.
    """
    usage: list[type[BaseException]] = []
    aborts: list[type[BaseException]] = [typer.Abort]
    typer_exception = getattr(typer, "TyperException", None)
    if isinstance(typer_exception, type):
        usage.append(typer_exception)
    try:
        import click
    except ImportError:
        pass
    else:
        usage.append(click.exceptions.ClickException)
        aborts.append(click.exceptions.Abort)
    return tuple(usage), tuple(aborts)


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``zoo`` console script; returns the exit code."""
    try:
        app(args=argv, standalone_mode=False)
    except ZooError as error:
        if _state["debug"]:
            raise
        err_console.print(f"[red]error:[/] {error}", highlight=False, soft_wrap=True)
        return error.exit_code
    except KeyboardInterrupt:
        err_console.print("interrupted")
        return 130
    except Exception as error:
        usage_errors, aborts = _command_line_error_types()
        if isinstance(error, usage_errors):
            show = getattr(error, "show", None)
            if callable(show):
                show()
            else:
                err_console.print(f"error: {error}", highlight=False, soft_wrap=True)
            return int(getattr(error, "exit_code", 2))
        if isinstance(error, aborts):
            return 1
        if _state["debug"]:
            raise
        err_console.print(
            f"[red]error:[/] {type(error).__name__}: {error} (run with --debug for the traceback)",
            highlight=False,
            soft_wrap=True,
        )
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
