"""``zoo bench``: run the scripts under ``benchmarks/`` and regenerate their section of BENCHMARKS.md.

The benchmarks are data (:data:`BENCHMARKS`): a script under ``benchmarks/``, the arguments of its full
run and of its quick run (``None``: full mode only). Each runs as ``python benchmarks/NAME.py ARGS``
from the repository root, in its own process; quick runs write their JSON under
``benchmarks/out/quick/`` so they never overwrite a full run's outputs.

The generated section sits between :data:`BEGIN` and :data:`END` (whole lines) in BENCHMARKS.md;
everything outside the two markers, hand-written analysis included, is kept byte for byte. Without
markers the section is appended at the end under :data:`HEADING`.
"""

from __future__ import annotations

import os
import platform
import re
import shlex
import subprocess
import sys
import tempfile
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path

from core.errors import UsageError, did_you_mean

BEGIN = "<!-- zoo bench: begin -->"
END = "<!-- zoo bench: end -->"
HEADING = "## `zoo bench` results (generated)"
QUICK_LABEL = "quick (smaller budgets; not the numbers the targets are judged on)"
FULL_LABEL = "full (the budgets BENCHMARKS.md's figures use)"
STDERR_TAIL_LINES = 20
QUICK_OUT = "benchmarks/out/quick"


@dataclass(frozen=True)
class Benchmark:
    """One script under ``benchmarks/`` and how ``zoo bench`` runs it.

    :param name: the name ``--only`` takes.
    :param script: file name under ``benchmarks/`` (an absolute path is used as is).
    :param description: one line for ``--list`` and the generated section.
    :param full_args: arguments of the full run (the budgets BENCHMARKS.md reports).
    :param quick_args: arguments of the quick run; ``None`` when the benchmark is full mode only.
    :param environment: extra environment variables of the script's process.
    """

    name: str
    script: str
    description: str
    full_args: tuple[str, ...]
    quick_args: tuple[str, ...] | None
    environment: Mapping[str, str] = field(default_factory=dict)

    def args(self, quick: bool) -> tuple[str, ...]:
        if not quick:
            return self.full_args
        if self.quick_args is None:
            raise UsageError(f"benchmark {self.name} has no quick variant (full mode only)")
        return self.quick_args

    def shown_command(self, quick: bool) -> str:
        """The command as a user would type it from the repository root."""
        script = self.script if Path(self.script).is_absolute() else f"benchmarks/{self.script}"
        prefix = "".join(f"{key}={shlex.quote(value)} " for key, value in self.environment.items())
        return prefix + shlex.join(["python", script, *self.args(quick)])


BENCHMARKS: tuple[Benchmark, ...] = (
    Benchmark(
        "throughput",
        "throughput.py",
        "Env steps/s of SC-DQN and our DQN against SB3's DQN on ALE/Pong-v5, same settings (CPU).",
        ("--pairs", "6", "--steps", "2000", "--out", "benchmarks/out/throughput.json"),
        ("--pairs", "3", "--steps", "500", "--warmup", "200", "--out", f"{QUICK_OUT}/throughput.json"),
    ),
    Benchmark(
        "cartpole_learning",
        "cartpole_learning.py",
        "CartPole-v1 learning check: SC-DQN (beta 3), our DQN (beta 0) and SB3's DQN, greedy returns.",
        ("--seeds", "0", "1", "2", "--steps", "100000", "--out", "benchmarks/out/cartpole.json"),
        (
            *("--seeds", "0", "--steps", "10000", "--eval-every", "5000", "--eval-episodes", "5"),
            *("--out", f"{QUICK_OUT}/cartpole.json"),
        ),
    ),
    Benchmark(
        "maximization_bias",
        "maximization_bias.py",
        "Sutton & Barto's Example 6.7: share of left actions of Q-learning, Double and SC-Q (tabular).",
        ("--runs", "10000", "--out", "benchmarks/out"),
        ("--runs", "1000", "--out", QUICK_OUT),
    ),
    Benchmark(
        "replay_memory",
        "replay_memory.py",
        "Memory and sampling time of EpisodicReplayBuffer holding Atari transitions, against SB3's.",
        ("--size", "1000000"),
        ("--size", "50000"),
    ),
    Benchmark(
        "brac_speed",
        "brac_speed.py",
        "Gradient steps/s of BRAC-v against SB3 SAC's train() on Hopper shapes; set_dataset time.",
        ("--repeats", "5", "--threads", "1", "--out", "benchmarks/out/brac_speed.json"),
        (
            *("--steps", "50", "--repeats", "3", "--threads", "1", "--dataset-size", "100000"),
            *("--out", f"{QUICK_OUT}/brac_speed.json"),
        ),
    ),
    Benchmark(
        "env_backends",
        "env_backends.py",
        "Env steps/s of the Atari family's wrappers and native vector-env backends, random actions.",
        (
            *("--game", "ALE/Pong-v5", "--n-envs", "1", "8", "--steps", "4000", "--repeats", "3"),
            *("--out", "benchmarks/out/env_backends.json"),
        ),
        ("--steps", "1000", "--repeats", "3", "--n-envs", "1", "--out", f"{QUICK_OUT}/env_backends.json"),
    ),
    Benchmark(
        "dataset_io",
        "dataset_io.py",
        "Write and load a Hopper-shaped Minari dataset (core.minari_io) for three episode layouts.",
        ("--repeats", "3", "--out", "benchmarks/out/dataset_io.json"),
        ("--steps", "100000", "--repeats", "3", "--out", f"{QUICK_OUT}/dataset_io.json"),
    ),
    Benchmark(
        "pref_overhead",
        "pref_overhead.py",
        "Wall time of `zoo train pref` over `zoo train ppo` on Hopper-v5 (the reward machinery's cost).",
        ("--steps", "50000", "--repeats", "3", "--work", "benchmarks/out/pref_overhead"),
        ("--steps", "5000", "--repeats", "1", "--work", f"{QUICK_OUT}/pref_overhead"),
    ),
    Benchmark(
        "nac_cartpole",
        "nac_cartpole.py",
        "NAC from imperfect demonstrations on CartPole-v1 against its ablations (15-25 min; full only).",
        ("--work", "benchmarks/out/nac_cartpole"),
        None,
        {"OMP_NUM_THREADS": "1"},
    ),
)

# Scripts under benchmarks/ that `zoo bench` does not run, and why (shown by --list and --help).
NOT_RUN: Mapping[str, str] = {
    "brac_hopper": "needs --behavior, a partially trained SAC run to collect the dataset with",
    "pref_diagnose": "needs --reward-run, a finished preference run whose learned reward scores --policies",
    "pref_mujoco": "hours on 2 CPU cores: PPO and preference runs on InvertedPendulum and Hopper, 3 seeds",
}


@dataclass(frozen=True)
class BenchResult:
    """What one benchmark's run left: its command, wall time, exit status and output."""

    benchmark: Benchmark
    command: str
    seconds: float
    returncode: int
    stdout: str
    stderr_tail: str

    @property
    def ok(self) -> bool:
        return self.returncode == 0

    @property
    def status(self) -> str:
        if self.returncode < 0:
            return f"failed (killed by signal {-self.returncode})"
        return "ok" if self.ok else f"failed (exit {self.returncode})"


def repo_root() -> Path:
    """The source checkout this module belongs to; ``zoo bench`` needs its ``benchmarks/``."""
    root = Path(__file__).resolve().parents[1]
    if not (root / "benchmarks").is_dir():
        raise UsageError(
            f"`zoo bench` needs a source checkout (no benchmarks/ next to {root / 'zoo'}); "
            "install the zoo editable from a clone (pip install -e .)"
        )
    return root


def select(only: str | None, quick: bool, registry: Sequence[Benchmark] = BENCHMARKS) -> list[Benchmark]:
    """The benchmarks to run: ``only``'s comma-separated names, or all (in quick mode: all with a quick
    variant), in registry order."""
    known = [benchmark.name for benchmark in registry]
    if only is None:
        return [benchmark for benchmark in registry if not quick or benchmark.quick_args is not None]
    names = [name.strip() for name in only.split(",") if name.strip()]
    if not names:
        raise UsageError(f"--only {only!r}: name one or more of {', '.join(known)}")
    for name in names:
        if name not in known:
            hint = (
                f" (not run by `zoo bench`: {NOT_RUN[name]})"
                if name in NOT_RUN
                else did_you_mean(name, known)
            )
            raise UsageError(f"--only: unknown benchmark {name!r}{hint}; known: {', '.join(known)}")
    selected = [benchmark for benchmark in registry if benchmark.name in names]
    for benchmark in selected:
        benchmark.args(quick)  # a full-only benchmark asked for in quick mode: one line, exit 2
    return selected


def _first_line_value(path: str, key: str) -> str | None:
    try:
        with open(path, encoding="utf-8", errors="replace") as handle:
            for line in handle:
                name, _, value = line.partition(":")
                if name.strip() == key:
                    return value.strip()
    except OSError:
        return None
    return None


def _version(distribution: str) -> str | None:
    try:
        return metadata.version(distribution)
    except metadata.PackageNotFoundError:
        return None


def machine_description() -> dict[str, str]:
    """CPU, cores, memory, GPU, OS and library versions, and the load average, at the time of the call."""
    import torch

    memory = _first_line_value("/proc/meminfo", "MemTotal")  # "24000000 kB"
    if memory is not None and memory.endswith("kB"):
        memory = f"{int(memory.split()[0]) / 1024**2:.1f} GiB"
    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "none"
    versions = {
        name: version
        for name in ("stable-baselines3", "gymnasium", "ale-py", "mujoco", "minari")
        if (version := _version(name)) is not None
    }
    load = " ".join(f"{value:.2f}" for value in os.getloadavg()) if hasattr(os, "getloadavg") else "n/a"
    return {
        "cpu": _first_line_value("/proc/cpuinfo", "model name") or platform.processor() or "unknown",
        "cores": str(os.cpu_count()),
        "memory": memory or "unknown",
        "gpu": gpu,
        "os": platform.platform(),
        "python": platform.python_version(),
        "torch": f"{torch.__version__} ({torch.get_num_threads()} intra-op threads)",
        "libraries": ", ".join(f"{name} {version}" for name, version in versions.items()),
        "load average (1, 5, 15 min) at start": load,
    }


def clear_quick_outputs(root: Path) -> None:
    """Remove ``benchmarks/out/quick/`` (the quick runs' own scratch folder): scripts that resume from
    finished runs in their work folder (``cartpole_learning``) would otherwise report an earlier
    quick run's results under a new date. Full-mode outputs are never touched."""
    import shutil

    folder = root / QUICK_OUT
    if folder.is_dir() and not folder.is_symlink():
        shutil.rmtree(folder)


def run_benchmark(
    benchmark: Benchmark, root: Path, quick: bool, on_output: Callable[[str], None] = lambda line: None
) -> BenchResult:
    """Run one benchmark from ``root``; each stdout line goes to ``on_output`` as it comes."""
    script = Path(benchmark.script)
    script = script if script.is_absolute() else root / "benchmarks" / script
    command = [sys.executable, str(script), *benchmark.args(quick)]
    environment = {**os.environ, "PYTHONUNBUFFERED": "1", **benchmark.environment}
    stdout: list[str] = []
    stderr: deque[str] = deque(maxlen=STDERR_TAIL_LINES)
    started = time.perf_counter()
    with subprocess.Popen(
        command,
        cwd=root,
        env=environment,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        errors="replace",
        bufsize=1,
    ) as process:
        assert process.stdout is not None and process.stderr is not None
        reader = threading.Thread(target=stderr.extend, args=(process.stderr,), daemon=True)
        reader.start()
        try:
            for line in process.stdout:
                stdout.append(line)
                on_output(line.rstrip("\n"))
            returncode = process.wait()
        except BaseException:  # interrupted: do not leave the script running
            process.kill()
            raise
        reader.join()
    return BenchResult(
        benchmark=benchmark,
        command=benchmark.shown_command(quick),
        seconds=time.perf_counter() - started,
        returncode=returncode,
        stdout="".join(stdout),
        stderr_tail="".join(stderr),
    )


def _format_seconds(seconds: float) -> str:
    return f"{seconds:.1f} s" if seconds < 120 else f"{seconds / 60:.1f} min"


def _output_blocks(stdout: str) -> list[str]:
    """The script's output for markdown: its tables (runs of ``|`` lines) as they are, the rest fenced."""
    blocks: list[str] = []
    run: list[str] = []
    in_table = False
    for line in [*stdout.rstrip("\n").split("\n"), None]:
        is_table = line is not None and line.lstrip().startswith("|")
        if line is None or is_table != in_table:
            text = "\n".join(run).strip("\n")
            if text:
                blocks.append(text if in_table else f"```text\n{text}\n```")
            run, in_table = [], is_table
        if line is not None:
            run.append(line)
    return blocks


def render_section(
    results: Iterable[BenchResult],
    machine: Mapping[str, str],
    *,
    quick: bool,
    command_line: str,
    date: datetime,
    skipped: Iterable[Benchmark] = (),
) -> str:
    """The generated section's markdown (without the markers)."""
    results = list(results)
    lines = [
        f"Generated by `{command_line}` on {date.isoformat(timespec='seconds')} (UTC).",
        "",
        f"**Mode**: {QUICK_LABEL if quick else FULL_LABEL}.",
        "",
        "**Machine**: " + "; ".join(f"{key}: {value}" for key, value in machine.items() if value) + ".",
        "",
        "| benchmark | status | wall time |",
        "|---|---|---|",
    ]
    lines += [f"| {r.benchmark.name} | {r.status} | {_format_seconds(r.seconds)} |" for r in results]
    skipped = list(skipped)
    if skipped:
        names = ", ".join(benchmark.name for benchmark in skipped)
        lines += ["", f"Not run in quick mode (full mode only): {names}."]
    for result in results:
        lines += [
            "",
            f"### {result.benchmark.name}",
            "",
            result.benchmark.description,
            "",
            f"`{result.command}`: {result.status}, {_format_seconds(result.seconds)}.",
        ]
        for block in _output_blocks(result.stdout):
            lines += ["", block]
        if not result.ok and result.stderr_tail.strip():
            lines += ["", "Last lines of its stderr:", "", f"```text\n{result.stderr_tail.rstrip()}\n```"]
    return "\n".join(lines) + "\n"


_BEGIN_LINE = re.compile(rf"^{re.escape(BEGIN)}[ \t]*\r?$", re.MULTILINE)
_END_LINE = re.compile(rf"^{re.escape(END)}[ \t]*\r?$", re.MULTILINE)


def _marker_spans(text: str, where: str) -> tuple[re.Match[str], re.Match[str]] | None:
    """The begin and end marker lines of ``text``; ``None`` when it has neither."""
    begins, ends = list(_BEGIN_LINE.finditer(text)), list(_END_LINE.finditer(text))
    if not begins and not ends:
        return None
    if len(begins) != 1 or len(ends) != 1 or ends[0].start() < begins[0].end():
        raise UsageError(
            f"{where}: expected one {BEGIN!r} line followed by one {END!r} line; found "
            f"{len(begins)} begin and {len(ends)} end marker(s) (fix the file, or pass --output)"
        )
    return begins[0], ends[0]


def replace_section(text: str, section: str, where: str = "BENCHMARKS.md") -> str:
    """``text`` with the generated section between the markers replaced by ``section`` (or, without
    markers, appended at the end under :data:`HEADING`); everything else is kept byte for byte."""
    body = section.rstrip("\n") + "\n"
    spans = _marker_spans(text, where)
    if spans is None:
        separator = "\n\n"[len(text) - len(text.rstrip("\n")) :] if text.strip() else ""
        return f"{text}{separator}{HEADING}\n\n{BEGIN}\n{body}{END}\n"
    begin, end = spans
    crlf = begin.group().endswith("\r")  # the marker line's own "\r" belongs to the kept text
    body = body.replace("\n", "\r\n") if crlf else body
    return text[: begin.end()] + "\n" + body + text[end.start() :]


def check_output(path: Path) -> None:
    """Refuse, before anything runs, an output file whose markers are broken or that cannot be written."""
    if not path.parent.is_dir():
        raise UsageError(f"--output {path}: no such folder {path.parent}")
    if path.exists():
        _marker_spans(read_text(path), str(path))


def read_text(path: Path) -> str:
    """The file's text with its line endings as they are."""
    with open(path, encoding="utf-8", newline="") as handle:
        return handle.read()


def write_section(path: Path, section: str) -> None:
    """Put ``section`` into ``path`` (see :func:`replace_section`), atomically."""
    text = replace_section(read_text(path) if path.exists() else "", section, str(path))
    descriptor, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(descriptor, "w", encoding="utf-8", newline="") as handle:
            handle.write(text)
        if path.exists():
            os.chmod(temporary, path.stat().st_mode & 0o7777)
        else:
            os.chmod(temporary, 0o644)
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


def utc_now() -> datetime:
    return datetime.now(timezone.utc)
