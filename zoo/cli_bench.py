"""``zoo bench``: run the benchmark scripts and regenerate BENCHMARKS.md's generated section.

Registered on the main app by :func:`register_bench_commands`; the runner and the file handling are in
:mod:`zoo.bench`. Errors follow the main CLI's rules (bad input: one line, exit 2, nothing run); a
benchmark that fails does not stop the others, and the command exits 1 at the end.
"""

from __future__ import annotations

import shlex
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from core.errors import ZooError


def _not_run_help() -> str:
    from zoo.bench import NOT_RUN

    return "; ".join(f"{name} ({reason})" for name, reason in NOT_RUN.items())


def register_bench_commands(app: typer.Typer, console: Console) -> None:
    """Add ``bench`` to ``app``; output goes to ``console``."""

    @app.command(
        "bench",
        help=(
            "Run the benchmark scripts under benchmarks/ (throughput against SB3, the small learning "
            "checks, offline and preference costs) and regenerate BENCHMARKS.md's generated section "
            "with the machine description and the date. The full run takes an hour or more; --quick "
            "runs smaller budgets in a few minutes and writes its JSON under benchmarks/out/quick/. "
            "nac_cartpole is full mode only. Not run: " + _not_run_help() + "."
        ),
    )
    def bench_command(
        quick: Annotated[
            bool, typer.Option("--quick", help="Smaller budgets (a few minutes); labelled as such.")
        ] = False,
        only: Annotated[
            str | None, typer.Option("--only", help="Comma-separated benchmark names (see --list).")
        ] = None,
        list_benchmarks: Annotated[
            bool, typer.Option("--list", help="Print the benchmarks, their arguments, and exit.")
        ] = False,
        output: Annotated[
            Path | None,
            typer.Option("--output", help="The file to regenerate (default: BENCHMARKS.md of the checkout)."),
        ] = None,
        no_write: Annotated[
            bool, typer.Option("--no-write", help="Print the generated section instead of writing it.")
        ] = False,
    ) -> None:
        from zoo import bench

        registry = bench.BENCHMARKS
        if list_benchmarks:
            table = Table("benchmark", "quick", "full", "description")
            for benchmark in registry:
                quick_args = (
                    "(full only)" if benchmark.quick_args is None else shlex.join(benchmark.quick_args)
                )
                table.add_row(
                    benchmark.name, quick_args, shlex.join(benchmark.full_args), benchmark.description
                )
            console.print(table)
            for name, reason in bench.NOT_RUN.items():
                console.print(f"not run: {name}: {reason}", highlight=False)
            return
        selected = bench.select(only, quick, registry)
        root = bench.repo_root()
        target = output if output is not None else root / "BENCHMARKS.md"
        if not no_write:
            bench.check_output(target)
        skipped = [b for b in registry if quick and only is None and b.quick_args is None]
        command_line = "zoo bench" + (" --quick" if quick else "") + (f" --only {only}" if only else "")
        date = bench.utc_now()
        machine = bench.machine_description()
        if quick:
            bench.clear_quick_outputs(root)  # quick runs start fresh: no figure is reused from an earlier one
        results = []
        for index, benchmark in enumerate(selected, start=1):
            label = f"bench {index}/{len(selected)} {benchmark.name}"
            console.print(
                f"[bold]{label}[/]: {escape(benchmark.shown_command(quick))}", highlight=False, soft_wrap=True
            )
            with console.status(label):
                result = bench.run_benchmark(
                    benchmark,
                    root,
                    quick,
                    lambda line: console.print(line, markup=False, highlight=False, soft_wrap=True),
                )
            results.append(result)
            console.print(f"{label}: {result.status} in {result.seconds:.1f} s", highlight=False)
            if not result.ok:
                console.print(result.stderr_tail.rstrip(), markup=False, highlight=False, soft_wrap=True)
        section = bench.render_section(
            results, machine, quick=quick, command_line=command_line, date=date, skipped=skipped
        )
        if no_write:
            console.print(section, markup=False, highlight=False, soft_wrap=True)
        else:
            bench.write_section(target, section)
            console.print(f"wrote the generated section of {target}", highlight=False)
        failed = [result.benchmark.name for result in results if not result.ok]
        if failed:
            raise ZooError(f"{len(failed)} of {len(results)} benchmark(s) failed: {', '.join(failed)}")
