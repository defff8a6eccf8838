"""``zoo plot`` and ``zoo compare``: learning curves and rliable comparisons of runs.

Both take run folders, folders holding run folders (a seeds group, ``runs/``) or glob patterns.
Errors follow the main CLI's rules (bad input: one line, exit 2, nothing written).
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.markup import escape

from core.errors import UsageError

RUNS_HELP = "Run folders, folders holding run folders (e.g. a seeds group or runs/), or glob patterns."
COMPARE_FILE = "compare.md"


def register_analysis_commands(app: typer.Typer, console: Console) -> None:
    """Add ``plot`` and ``compare`` to ``app``; output goes to ``console``."""

    @app.command("plot")
    def plot_command(
        runs: Annotated[list[str], typer.Argument(metavar="RUN", help=RUNS_HELP, show_default=False)],
        out: Annotated[Path, typer.Option("--out", help="PNG file to write.")] = Path("curves.png"),
    ) -> None:
        """Learning curves: greedy evaluation return over env steps, mean and 95% band over seeds,
        one panel per env and one line per agent."""
        from zoo.analysis import find_runs, plot_curves

        if out.suffix.lower() != ".png":
            raise UsageError(f"--out {out}: expected a .png file")
        if out.is_dir():
            raise UsageError(f"--out {out}: is a folder; name a .png file")
        curves = plot_curves(find_runs(runs), out)
        _print_warnings(console, curves.warnings)
        for group in curves.groups:
            seeds = len(group.runs)
            console.print(
                f"{group.label} on {group.env}: {seeds} seed{'s' * (seeds > 1)}, "
                f"up to step {int(group.steps[-1])}",
                highlight=False,
            )
        console.print(f"wrote {out}")

    @app.command("compare")
    def compare_command(
        runs: Annotated[list[str], typer.Argument(metavar="RUN_GLOB", help=RUNS_HELP, show_default=False)],
        group_by: Annotated[
            str | None,
            typer.Option("--group-by", help="env: compare per env (needed when runs span several envs)."),
        ] = None,
        out: Annotated[
            Path, typer.Option("--out", help=f"Folder for {COMPARE_FILE} and the PNG figures.")
        ] = Path("compare"),
        reps: Annotated[int, typer.Option(min=1, help="Bootstrap replications per interval.")] = 2000,
        seed: Annotated[int, typer.Option(help="Seed of the bootstrap.")] = 0,
    ) -> None:
        """Compare final scores (eval.json, else the last training evaluation) with rliable: IQM with
        95% bootstrap CIs, probability of improvement and performance profiles, per env."""
        from zoo.analysis import compare, find_runs, markdown, plot_comparison

        if out.exists() and not out.is_dir():
            raise UsageError(f"--out {out}: is a file; name a folder")
        comparison = compare(find_runs(runs), group_by, reps=reps, seed=seed)
        text = markdown(comparison)
        figures = plot_comparison(comparison, out)
        report = out / COMPARE_FILE
        report.write_text(text)
        _print_warnings(console, comparison.warnings)
        console.print(text, markup=False, highlight=False, soft_wrap=True)
        for path in (report, *figures):
            console.print(f"wrote {path}")


def _print_warnings(console: Console, warnings: list[str]) -> None:
    for warning in warnings:
        console.print(f"[yellow]warning:[/] {escape(warning)}", highlight=False)
