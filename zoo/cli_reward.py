"""``zoo reward fit|export|import``: learned rewards and their labels outside training.

``--labels`` takes a preference run's folder (its label store, ``labels.sqlite`` or the URL its config
names, and its clips) or a label store itself (a SQLite path or a SQLAlchemy URL), which then needs
``--run RUN`` for the clips and the spaces. Errors follow the main CLI's rules (bad input: one line,
exit 2, nothing written).
"""

from __future__ import annotations

import math
import statistics
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.console import Console

from core.errors import UsageError

if TYPE_CHECKING:
    from rewards.store import LabelStore
    from zoo.config import RunConfig

LABELS_HELP = "A preference run's folder, or a label store (SQLite path or SQLAlchemy URL; then pass --run)."


def _is_run(path: str) -> bool:
    return "://" not in path and (Path(path) / "config.yaml").is_file()


def open_labels(labels: str, run: Path | None) -> tuple[LabelStore, Path | None, RunConfig | None]:
    """The label store ``labels`` names, the run folder of its clips and the run's config (if any)."""
    from rewards.session import open_store
    from rewards.store import LabelStore
    from zoo import runs

    run_dir = Path(labels) if _is_run(labels) else run
    config = runs.open_run(run_dir) if run_dir is not None else None
    if _is_run(labels):
        if config is None or config.preference is None:
            raise UsageError(f"--labels {labels}: not a preference run (made by `zoo train pref`)")
        if not (config.preference.store or (Path(labels) / "labels.sqlite").exists()):
            raise UsageError(f"--labels {labels}: the run has no label store yet (labels.sqlite)")
        return open_store(config.preference, labels), run_dir, config
    if "://" not in labels and not Path(labels).is_file():
        raise UsageError(f"--labels {labels}: neither a run folder nor a label store file")
    return LabelStore(labels), run_dir, config


def register_reward_commands(app: typer.Typer, console: Console) -> None:
    """Add the ``reward`` group to ``app``; output goes to ``console``."""
    reward_app = typer.Typer(help="Learned rewards: refit from stored labels, export and import labels.")
    app.add_typer(reward_app, name="reward")

    @reward_app.command("fit")
    def fit_command(
        labels: Annotated[str, typer.Option("--labels", help=LABELS_HELP)],
        run: Annotated[
            Path | None, typer.Option("--run", help="The run whose clips and spaces the store refers to.")
        ] = None,
        out: Annotated[
            Path | None, typer.Option("--out", help="Model file (default RUN/reward-model-refit.pt).")
        ] = None,
        epochs: Annotated[int, typer.Option(min=1, help="Passes over the comparisons per member.")] = 50,
        members: Annotated[
            int | None, typer.Option(min=1, help="Ensemble size (default: the run's).")
        ] = None,
        seed: Annotated[int, typer.Option(help="Seed of initialization, splits and batches.")] = 0,
    ) -> None:
        """Fit a fresh reward ensemble on every stored answer; reports validation accuracy and the
        correlation of predicted and true clip returns (when the clips know their true rewards)."""
        from rewards.clipfiles import ClipFolder
        from rewards.refit import (
            clip_return_correlation,
            refit_ensemble,
            save_reward_model,
            stored_comparisons,
        )
        from zoo.runner import make_env, prepare

        store, run_dir, config = open_labels(labels, run)
        try:
            if run_dir is None or config is None:
                raise UsageError(f"--labels {labels}: a label store needs --run RUN (the run of its clips)")
            settings = config.preference
            if settings is None:
                raise UsageError(f"--run {run_dir}: not a preference run (made by `zoo train pref`)")
            if members is not None:
                settings = settings.model_copy(update={"members": members})
            target = out if out is not None else run_dir / "reward-model-refit.pt"
            for existing in (target, target.with_suffix(target.suffix + ".json")):
                if existing.exists():
                    raise UsageError(f"{existing}: already exists; pass another --out (nothing was written)")
            stored = stored_comparisons(store, ClipFolder(run_dir))
        finally:
            store.close()
        setup = prepare(config)
        env = make_env(setup, config, n_envs=1, seed=config.seed, training=False)
        spaces = env.observation_space, env.action_space
        env.close()
        with console.status(f"fitting {settings.members} members on {stored.comparisons.size} comparisons"):
            ensemble, report = refit_ensemble(stored, *spaces, settings, epochs=epochs, seed=seed)
        correlation = clip_return_correlation(ensemble, stored.clips)
        summary = {
            "labels": labels,
            "run": str(run_dir),
            "comparisons": stored.comparisons.size,
            "answers": stored.answers,
            "cant_tell_dropped": stored.dropped,
            "members": settings.members,
            "epochs": epochs,
            "seed": seed,
            "validation_accuracy": list(report.validation_accuracy),
            "validation_loss": list(report.validation_loss),
            "train_loss": list(report.train_loss),
            "weight_decay": list(report.weight_decay),
            "clip_return_correlation": None if math.isnan(correlation) else correlation,
        }
        save_reward_model(target, ensemble, settings, summary)
        accuracy = [a for a in report.validation_accuracy if not math.isnan(a)]
        shown = f"{statistics.fmean(accuracy):.3f}" if accuracy else "n/a (too few comparisons)"
        console.print(
            f"fit {settings.members} members on {stored.comparisons.size} comparisons "
            f"({stored.dropped} can't-tell dropped): validation accuracy {shown}, "
            f"clip return correlation {'n/a' if math.isnan(correlation) else f'{correlation:.3f}'}"
        )
        console.print(f"wrote {target}")

    @reward_app.command("export")
    def export_command(
        labels: Annotated[str, typer.Option("--labels", help=LABELS_HELP)],
        output: Annotated[Path, typer.Argument(help="JSONL file to write (must not exist).")],
    ) -> None:
        """Write every query with its answers (undone ones too) as JSON lines."""
        if output.exists():
            raise UsageError(f"{output}: already exists; choose another file (nothing was written)")
        store, _, _ = open_labels(labels, None)
        partial = output.with_name(output.name + ".partial")
        try:
            count = store.export_jsonl(partial)
        finally:
            store.close()
        partial.replace(output)
        console.print(f"exported {count} queries to {output}")

    @reward_app.command("import")
    def import_command(
        labels: Annotated[str, typer.Option("--labels", help=LABELS_HELP)],
        source: Annotated[Path, typer.Argument(help="JSONL file written by `zoo reward export`.")],
    ) -> None:
        """Merge queries and answers from JSONL (all or nothing; importing twice adds nothing)."""
        from rewards.store import LabelStoreError

        if not source.is_file():
            raise UsageError(f"{source}: no such file")
        store, _, _ = open_labels(labels, None)
        try:
            result = store.import_jsonl(source)
        except LabelStoreError as error:
            raise UsageError(f"{error} (nothing was imported)") from None
        finally:
            store.close()
        console.print(
            f"imported {result.queries} queries and {result.answers} answers from {source}"
            + (f"; skipped {result.skipped} answers to queries already answered" if result.skipped else "")
        )
