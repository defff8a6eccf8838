"""``zoo collect``, ``zoo dataset list`` and ``zoo dataset show``: offline datasets in the Minari format.

Registered on the main app by :func:`register_data_commands`; errors follow the main CLI's rules
(bad input: one line, exit 2, nothing written).
"""

from __future__ import annotations

import contextlib
import math
import shlex
import sys
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
from rich.table import Table


def _fmt(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return "nan" if math.isnan(value) else f"{value:.2f}"
    return str(value)


def register_data_commands(app: typer.Typer, console: Console) -> None:
    """Add ``collect`` and the ``dataset`` group to ``app``; output goes to ``console``."""
    dataset_app = typer.Typer(help="List and inspect offline datasets (Minari format).", no_args_is_help=True)
    app.add_typer(dataset_app, name="dataset")

    @app.command("collect")
    def collect_command(
        steps: Annotated[int, typer.Option("--steps", help="Transitions to collect.")],
        run: Annotated[
            Path | None, typer.Option("--run", help="Run folder whose newest checkpoint is the policy.")
        ] = None,
        env: Annotated[
            str | None, typer.Option("--env", help="Env id (random actions only, without --run).")
        ] = None,
        mix: Annotated[
            str | None,
            typer.Option(
                "--mix",
                help="Mixture of sources random/policy/noisy by weight, e.g. random:0.2,policy:0.4,noisy:0.4 "
                "(default: random:1 without --run, policy:1 with it).",
            ),
        ] = None,
        noise: Annotated[
            str | None, typer.Option("--noise", help="Noise of the noisy source: eps:P or gaussian:S.")
        ] = None,
        seed: Annotated[
            int, typer.Option("--seed", help="Seed of the env, the random actions and the policy.")
        ] = 0,
        name: Annotated[
            str | None,
            typer.Option(
                "--name", help="Dataset id NAMESPACE/NAME-vN (default: zoo/<env>-<mix>-s<seed>-v0)."
            ),
        ] = None,
        root: Annotated[
            Path | None,
            typer.Option(
                "--root", help="Datasets folder (default: $MINARI_DATASETS_PATH or ~/.minari/datasets)."
            ),
        ] = None,
        quiet: Annotated[bool, typer.Option("--quiet", help="No progress bar.")] = False,
    ) -> None:
        """Collect an offline dataset (Minari format) from a run's policy, random actions or a mixture."""
        from core.collect import parse_mixture, parse_noise
        from core.errors import UsageError
        from zoo.datasets import CollectRequest, default_name, run_collect
        from zoo.runs import open_run

        if steps <= 0:
            raise UsageError(f"--steps {steps}: must be a positive number of transitions")
        weights = parse_mixture(mix) if mix is not None else ({"policy": 1.0} if run else {"random": 1.0})
        parsed_noise = parse_noise(noise) if noise is not None else None
        if parsed_noise is not None and weights.get("noisy", 0) == 0:
            raise UsageError(f"--noise {noise}: the mixture has no noisy source (add noisy:W to --mix)")
        if run is None and env is None:
            raise UsageError(
                "zoo collect needs --run RUN_DIR (a trained policy) or --env ENV_ID (random actions)"
            )
        env_id = open_run(run).env if run is not None else env
        assert env_id is not None
        dataset_name = name or default_name(env_id, weights, parsed_noise, seed)
        request = CollectRequest(
            steps=steps,
            weights=weights,
            noise=parsed_noise,
            seed=seed,
            name=dataset_name,
            root=root,
            run=run,
            env_id=env,
            command="zoo " + shlex.join(sys.argv[1:]),
        )
        progress_bar = (
            Progress(
                TextColumn("collecting"),
                BarColumn(),
                MofNCompleteColumn(),
                TimeRemainingColumn(),
                console=console,
                transient=True,
            )
            if not quiet
            else None
        )
        with progress_bar if progress_bar is not None else contextlib.nullcontext():
            task = progress_bar.add_task("collect", total=steps) if progress_bar is not None else None

            def advance(done: int) -> None:
                if progress_bar is not None and task is not None:
                    progress_bar.update(task, completed=done)

            outcome = run_collect(request, progress=advance)
        card = outcome.card
        console.print(
            f"wrote {card['steps']} transitions ({card['episodes']} episodes) of {card['env_id']} "
            f"to {outcome.path}"
        )
        line = f"data mean return {_fmt(card['data_mean_return'])} over {card['complete_episodes']} episodes"
        if card["source_eval_return"] is not None:
            line += f"; source policy eval return {_fmt(card['source_eval_return']['mean'])}"
        console.print(line)
        console.print(f"dataset: {dataset_name}  (zoo dataset show {dataset_name}" + _root_flag(root) + ")")

    @dataset_app.command("list")
    def list_command(
        root: Annotated[Path | None, typer.Option("--root", help="Datasets folder.")] = None,
    ) -> None:
        """List the Minari datasets in the datasets folder."""
        from core.minari_io import default_root, list_datasets, read_card, read_metadata, resolve

        folder = default_root() if root is None else root
        names = list_datasets(folder)
        if not names:
            console.print(f"no datasets in {folder}")
            return
        table = Table(title=f"datasets in {folder}", show_edge=False)
        for column in ("name", "env", "steps", "episodes", "mixture", "noise", "created"):
            table.add_column(column, style="bold" if column == "name" else None, no_wrap=column == "name")
        for dataset_name in names:
            metadata = read_metadata(resolve(dataset_name, folder)[1])
            card = read_card(metadata)
            mixture = card.get("mixture")
            table.add_row(
                dataset_name,
                _fmt(card.get("env_id") or _spec_id(metadata)),
                _fmt(metadata.get("total_steps")),
                _fmt(metadata.get("total_episodes")),
                ",".join(f"{s}:{w:g}" for s, w in mixture.items()) if isinstance(mixture, dict) else "-",
                _fmt(card.get("noise")),
                _fmt(card.get("created", "")[:10] or None),
            )
        console.print(table)

    @dataset_app.command("show")
    def show_command(
        name: Annotated[str, typer.Argument(help="Dataset id (in the datasets folder) or a dataset folder.")],
        root: Annotated[Path | None, typer.Option("--root", help="Datasets folder.")] = None,
    ) -> None:
        """Show a dataset's card, its size and the return statistics of its episodes."""
        from core.minari_io import summarize

        summary = summarize(name, root)
        console.print(f"[bold]{summary.name}[/]  {summary.path}")
        console.print(
            f"env {summary.env_id or '-'}; observations {summary.observation_shape}; "
            f"actions {summary.action_space}"
        )
        card = summary.card
        if card:
            source = card.get("source_run")
            evaluation = card.get("source_eval_return") or {}
            mixture = card.get("mixture") or {}
            console.print(
                "mixture "
                + ",".join(f"{s}:{w:g}" for s, w in mixture.items())
                + f"; noise {_fmt(card.get('noise'))}; seed {_fmt(card.get('seed'))}"
                + f"; created {_fmt(card.get('created'))}"
            )
            if source:
                console.print(
                    f"source {card.get('source_agent')} run {source} "
                    f"at step {card.get('source_checkpoint_step')}: "
                    f"eval return {_fmt(evaluation.get('mean'))} ({evaluation.get('from', '-')})"
                )
            versions = card.get("versions") or {}
            console.print(
                "versions "
                + ", ".join(
                    f"{k} {versions[k]}"
                    for k in ("python", "torch", "stable-baselines3", "gymnasium", "minari", "git_commit")
                    if versions.get(k)
                )
            )
        else:
            console.print("no zoo card (a dataset made elsewhere)")
        table = Table(show_edge=False)
        for column in ("episodes", "steps", "terminated", "truncated", "return mean", "std", "min", "max"):
            table.add_column(column, justify="right")
        stats = summary.return_stats()
        table.add_row(
            str(summary.episodes),
            str(summary.steps),
            str(summary.terminated),
            str(summary.truncated),
            *(_fmt(stats[k]) for k in ("mean", "std", "min", "max")),
        )
        console.print(table)
        if summary.returns_by_source:
            by_source = Table(title="returns by source (episodes the env ended)", show_edge=False)
            for column in ("source", "episodes", "mean", "std", "min", "max"):
                by_source.add_column(column, justify="right")
            for source_name, returns in summary.returns_by_source.items():
                stats = summary.return_stats(returns)
                by_source.add_row(
                    source_name, str(returns.size), *(_fmt(stats[k]) for k in ("mean", "std", "min", "max"))
                )
            console.print(by_source)
        cut = summary.episodes - summary.returns.size
        if cut:
            console.print(f"{cut} episode(s) cut by the collection's step budget are left out of the returns")


def _root_flag(root: Path | None) -> str:
    return f" --root {shlex.quote(str(root))}" if root is not None else ""


def _spec_id(metadata: dict[str, Any]) -> str | None:
    import json

    spec = metadata.get("env_spec")
    if not isinstance(spec, str):
        return None
    try:
        return json.loads(spec).get("id")
    except (json.JSONDecodeError, AttributeError):
        return None
