"""SB3 logger set-up for run folders: progress.csv (appended on resume) and TensorBoard events."""

from __future__ import annotations

import csv
import os
from pathlib import Path

from stable_baselines3.common.logger import CSVOutputFormat, KVWriter, Logger, TensorBoardOutputFormat


class AppendingCSVOutputFormat(CSVOutputFormat):
    """SB3's CSV writer, but an existing file is continued instead of truncated.

    SB3 opens progress.csv with mode ``w+``, which would erase a run's history when it resumes.
    Here the existing header becomes the initial key list and writing continues at the end; SB3's
    own logic still rewrites the header when new keys appear.
    """

    def __init__(self, filename: str) -> None:
        path = Path(filename)
        if not path.exists() or path.stat().st_size == 0:
            super().__init__(filename)
            return
        self.file = open(path, "r+")  # noqa: SIM115 - closed by Logger.close()
        header = next(csv.reader([self.file.readline()]), [])
        self.keys = list(header)
        self.separator = ","
        self.quotechar = '"'
        self.file.seek(0, os.SEEK_END)


def configure_run_logger(run_dir: Path, *, tensorboard: bool = True) -> Logger:
    """A logger writing ``progress.csv`` and TensorBoard events into ``run_dir``."""
    run_dir.mkdir(parents=True, exist_ok=True)
    formats: list[KVWriter] = [AppendingCSVOutputFormat(str(run_dir / "progress.csv"))]
    if tensorboard:
        formats.append(TensorBoardOutputFormat(str(run_dir / "tb")))
    return Logger(folder=str(run_dir), output_formats=formats)


def read_progress(run_dir: Path) -> list[dict[str, str]]:
    """Rows of ``progress.csv`` (empty list when the run has logged nothing yet)."""
    path = run_dir / "progress.csv"
    if not path.exists():
        return []
    with open(path, newline="") as handle:
        return list(csv.DictReader(handle))
