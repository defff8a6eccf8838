"""``zoo bench``: the registry matches the scripts' options, the generated section replaces only itself,
fake benchmarks are run, captured and reported (a failing one gives exit 1)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest
import typer
from rich.console import Console
from typer.testing import CliRunner

from core.errors import UsageError, ZooError
from zoo import bench
from zoo.cli_bench import register_bench_commands

ROOT = Path(__file__).resolve().parents[1]
PROSE = "# Benchmarks\r\n\r\nHand-written, with CRLF and trailing spaces   \r\n"
TAIL = "\n## Later section\n\nkept *exactly*\n\n\n"


def script_options(script: Path) -> dict[str, tuple[str | None, object]]:
    """``--option -> (type name, nargs)`` of every ``add_argument`` call in a script, without running it."""
    options: dict[str, tuple[str | None, object]] = {}
    for node in ast.walk(ast.parse(script.read_text())):
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute):
            if node.func.attr != "add_argument":
                continue
            keywords = {keyword.arg: keyword.value for keyword in node.keywords}
            kind = keywords.get("type")
            nargs = keywords.get("nargs")
            for arg in node.args:
                if isinstance(arg, ast.Constant) and str(arg.value).startswith("--"):
                    options[str(arg.value)] = (
                        kind.id if isinstance(kind, ast.Name) else None,
                        nargs.value if isinstance(nargs, ast.Constant) else None,
                    )
    return options


def check_args(args: tuple[str, ...], options: dict[str, tuple[str | None, object]]) -> None:
    """Every option in ``args`` is one the script defines, with the number and type of values it takes."""
    assert args and args[0].startswith("--"), args
    i = 0
    while i < len(args):
        option = args[i]
        assert option in options, f"{option} is not an option of the script ({sorted(options)})"
        values = []
        i += 1
        while i < len(args) and not args[i].startswith("--"):
            values.append(args[i])
            i += 1
        kind, nargs = options[option]
        assert len(values) >= 1 if nargs == "+" else len(values) == 1, (option, values)
        for value in values:
            if kind in ("int", "float"):
                {"int": int, "float": float}[kind](value)


@pytest.mark.parametrize("benchmark", bench.BENCHMARKS, ids=lambda b: b.name)
def test_registered_args_are_the_scripts_options(benchmark: bench.Benchmark) -> None:
    script = ROOT / "benchmarks" / benchmark.script
    assert script.is_file()
    options = script_options(script)
    check_args(benchmark.full_args, options)
    if benchmark.quick_args is not None:
        check_args(benchmark.quick_args, options)
        # Quick runs keep their files apart from the full runs'.
        paths = [a for a in benchmark.quick_args if a.startswith("benchmarks/")]
        assert all(p.startswith(bench.QUICK_OUT) for p in paths), paths


def test_the_check_catches_a_wrong_option() -> None:
    options = script_options(ROOT / "benchmarks" / "throughput.py")
    with pytest.raises(AssertionError):
        check_args(("--pair", "3"), options)
    with pytest.raises(ValueError):
        check_args(("--pairs", "three"), options)


def test_every_script_is_registered_or_explained() -> None:
    scripts = {path.stem for path in (ROOT / "benchmarks").glob("*.py")}
    assert scripts == {b.name for b in bench.BENCHMARKS} | set(bench.NOT_RUN)


def test_section_replacement_keeps_everything_outside_the_markers() -> None:
    text = f"{PROSE}{bench.BEGIN}\r\nold generated\r\n{bench.END}\r\n{TAIL}"
    new = bench.replace_section(text, "new | table\n")
    begin = new.index(bench.BEGIN) + len(bench.BEGIN)
    end = new.index(bench.END)
    assert new[:begin] == text[: text.index(bench.BEGIN) + len(bench.BEGIN)]
    assert new[end:] == text[text.index(bench.END) :]
    assert new[begin:end] == "\r\nnew | table\r\n"
    assert bench.replace_section(new, "new | table\n") == new  # idempotent


def test_section_is_appended_without_markers() -> None:
    new = bench.replace_section(PROSE + TAIL, "generated\n")
    assert new.startswith(PROSE + TAIL)
    assert new[len(PROSE + TAIL) :] == f"{bench.HEADING}\n\n{bench.BEGIN}\ngenerated\n{bench.END}\n"
    again = bench.replace_section(new, "second\n")
    assert again == new.replace("generated\n", "second\n")
    assert bench.replace_section("no newline", "g\n").startswith("no newline\n\n" + bench.HEADING)


@pytest.mark.parametrize(
    "text",
    [
        f"{bench.BEGIN}\nonly a begin\n",
        f"{bench.END}\n{bench.BEGIN}\n",
        f"{bench.BEGIN}\n{bench.END}\n{bench.BEGIN}\n{bench.END}\n",
    ],
)
def test_broken_markers_are_a_usage_error(text: str) -> None:
    with pytest.raises(UsageError, match="marker"):
        bench.replace_section(text, "x\n")


def test_only_names_are_checked() -> None:
    assert [b.name for b in bench.select("dataset_io,throughput", True)] == ["throughput", "dataset_io"]
    with pytest.raises(UsageError, match=r"did you mean throughput\?.*known: throughput, "):
        bench.select("thruput", False)
    with pytest.raises(UsageError, match="needs --behavior"):
        bench.select("brac_hopper", False)
    with pytest.raises(UsageError, match="full mode only"):
        bench.select("nac_cartpole", True)
    assert "nac_cartpole" not in [b.name for b in bench.select(None, True)]
    assert "nac_cartpole" in [b.name for b in bench.select(None, False)]


def fake(tmp_path: Path, name: str, body: str) -> bench.Benchmark:
    script = tmp_path / f"{name}.py"
    script.write_text(body)
    return bench.Benchmark(name, str(script), f"fake {name}", ("--full",), ("--quick",))


TABLE = "| metric | value |\n|---|---|\n| speed | 42 |\n"
GOOD = f"import sys\nprint('mode', sys.argv[1])\nprint({TABLE!r}, end='')\nprint('done')\n"
BAD = "import sys\nprint('partial')\nprint('Traceback: boom', file=sys.stderr)\nsys.exit(3)\n"


def invoke(args: list[str]) -> tuple[int, str, BaseException | None]:
    app = typer.Typer()
    console = Console(width=200)
    register_bench_commands(app, console)

    @app.callback()
    def main() -> None:  # a group, as in the real CLI: `bench` is a subcommand
        pass

    result = CliRunner().invoke(app, ["bench", *args])
    return result.exit_code, result.output, result.exception


def test_bench_runs_captures_and_writes_the_section(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(bench, "BENCHMARKS", (fake(tmp_path, "good", GOOD),))
    output = tmp_path / "BENCHMARKS.md"
    output.write_bytes(f"{PROSE}{bench.BEGIN}\nstale\n{bench.END}\n{TAIL}".encode())
    code, printed, error = invoke(["--quick", "--output", str(output)])
    assert (code, error) == (0, None), printed
    assert "bench 1/1 good" in printed and "mode --quick" in printed  # streamed as it ran
    text = output.read_bytes().decode()
    assert text.startswith(PROSE + bench.BEGIN) and text.endswith(bench.END + "\n" + TAIL)
    assert "stale" not in text
    assert "`zoo bench --quick`" in text and bench.QUICK_LABEL in text
    assert "cores" in text and "gpu" in text and "python" in text and "torch" in text
    assert "| good | ok |" in text and "### good" in text
    assert TABLE in text  # the script's table as it printed it, renderable
    assert "```text\nmode --quick\n```" in text
    assert f"python {tmp_path / 'good.py'} --quick" in text


def test_a_failing_benchmark_is_reported_and_exits_1(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    registry = (fake(tmp_path, "bad", BAD), fake(tmp_path, "good", GOOD))
    monkeypatch.setattr(bench, "BENCHMARKS", registry)
    output = tmp_path / "BENCHMARKS.md"
    code, printed, error = invoke(["--output", str(output)])
    assert code == 1 and isinstance(error, ZooError) and not isinstance(error, UsageError)
    assert "1 of 2 benchmark(s) failed: bad" in str(error)
    assert "Traceback: boom" in printed
    text = output.read_text()
    assert text.startswith(bench.HEADING)  # a new file: the section under its heading
    assert "| bad | failed (exit 3) |" in text and "| good | ok |" in text  # the failure did not stop good
    assert "Traceback: boom" in text and "partial" in text
    assert "mode --full" in text and bench.FULL_LABEL in text


def test_no_write_prints_only(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(bench, "BENCHMARKS", (fake(tmp_path, "good", GOOD),))
    output = tmp_path / "BENCHMARKS.md"
    code, printed, _ = invoke(["--no-write", "--output", str(output)])
    assert code == 0 and not output.exists()
    assert "| good | ok |" in printed and "| speed | 42 |" in printed


def test_bad_input_runs_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    marker = tmp_path / "ran"
    body = f"open({str(marker)!r}, 'w').close()\n"
    monkeypatch.setattr(bench, "BENCHMARKS", (fake(tmp_path, "touch", body),))
    _, _, error = invoke(["--only", "tuoch"])
    assert isinstance(error, UsageError) and error.exit_code == 2 and "did you mean touch" in str(error)
    broken = tmp_path / "broken.md"
    broken.write_text(f"{bench.BEGIN}\n")
    _, _, error = invoke(["--output", str(broken)])
    assert isinstance(error, UsageError) and "marker" in str(error)
    assert not marker.exists()


def test_list_prints_the_registry() -> None:
    code, printed, _ = invoke(["--list"])
    assert code == 0
    for benchmark in bench.BENCHMARKS:
        assert benchmark.name in printed
    assert "brac_hopper" in printed and "--runs 1000" in printed


def test_bench_needs_a_source_checkout(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    installed = tmp_path / "site-packages" / "zoo" / "bench.py"
    monkeypatch.setattr(bench, "__file__", str(installed))
    with pytest.raises(UsageError, match="needs a source checkout"):
        bench.repo_root()
