"""``zoo label serve|add-labeler``: the labeling page of a preference run, and its labelers' tokens.

The run's ``config.yaml`` is read with ``yaml.safe_load`` only (no agent or env is built): its
``preference:`` block gives the instructions (markdown), the label budget (``labels``) and the label
store (``store``: a SQLAlchemy URL, or null for ``RUN/labels.sqlite``; ``--db`` overrides it). Errors
follow the main CLI's rules (bad input: one line, exit 2).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
import yaml
from rich.console import Console

from core.errors import UsageError

if TYPE_CHECKING:
    from rewards.store import LabelStore

label_app = typer.Typer(
    help="The labeling page: people answer a preference run's queries in the browser.", no_args_is_help=True
)
console = Console()

RUN_HELP = "A preference run's folder (made by `zoo train pref`)."
DB_HELP = "The label store's SQLAlchemy URL or SQLite path (default: the run's, RUN/labels.sqlite)."


def _say(text: str) -> None:
    """Print ``text`` as it is (no markup, highlighting or wrapping: tokens and URLs stay whole)."""
    console.print(text, markup=False, highlight=False, soft_wrap=True)


def read_preference_block(run_dir: Path) -> dict[str, Any]:
    """The ``preference:`` block of ``run_dir/config.yaml``.

    :param run_dir: the run folder.
    :raises UsageError: if it is not a folder, has no readable config.yaml or no preference block.
    """
    if not run_dir.is_dir():
        raise UsageError(f"{run_dir}: no such run folder")
    config_file = run_dir / "config.yaml"
    if not config_file.is_file():
        raise UsageError(f"{run_dir}: not a run folder (no config.yaml); run folders are made by `zoo train`")
    try:
        config = yaml.safe_load(config_file.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as error:
        reason = str(error).splitlines()[0] if str(error) else type(error).__name__
        raise UsageError(f"{config_file}: cannot read it ({reason})") from None
    block = config.get("preference") if isinstance(config, dict) else None
    if not isinstance(block, dict):
        raise UsageError(f"{run_dir}: not a preference run (its config.yaml has no preference: block)")
    return {**block, "env": config.get("env")}


def _instructions(block: dict[str, Any]) -> str:
    value = block.get("instructions")
    if value is not None and not isinstance(value, str):
        raise UsageError(f"preference.instructions must be markdown text, got {type(value).__name__}")
    return value or ""


def _budget(block: dict[str, Any]) -> int | None:
    value = block.get("labels")
    if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value <= 0):
        raise UsageError(f"preference.labels must be a positive integer, got {value!r}")
    return value


def _configured_address(block: dict[str, Any]) -> tuple[str, int]:
    """The address the run's own labeling page binds (``preference.host``/``port``), else the default."""
    host, port = block.get("host"), block.get("port")
    return (
        host if isinstance(host, str) and host else "127.0.0.1",
        port if isinstance(port, int) and not isinstance(port, bool) and port > 0 else 8765,
    )


def open_label_store(run_dir: Path, block: dict[str, Any], db: str | None) -> LabelStore:
    """The label store ``--db`` names, else the one the run's config names, else ``RUN/labels.sqlite``.

    :param run_dir: the run folder.
    :param block: the run's ``preference:`` block.
    :param db: the ``--db`` option.
    :raises UsageError: if the store cannot be opened (one line, password masked).
    """
    from rewards.store import LabelStore

    url = db if db is not None else block.get("store")
    if url is not None and not (isinstance(url, str) and url):
        raise UsageError(f"preference.store must be a URL or null, got {url!r}")
    return LabelStore(url) if url else LabelStore.for_run(run_dir)


@label_app.command("serve")
def serve_command(
    run_dir: Annotated[Path, typer.Argument(help=RUN_HELP)],
    host: Annotated[
        str, typer.Option(help="Address to bind; anything but loopback requires labeler tokens.")
    ] = "127.0.0.1",
    port: Annotated[int, typer.Option(min=0, max=65535, help="Port (0: any free one).")] = 8765,
    db: Annotated[str | None, typer.Option("--db", help=DB_HELP)] = None,
    lease_seconds: Annotated[
        float, typer.Option(min=1.0, help="How long a query shown to one labeler is kept from the others.")
    ] = 600.0,
) -> None:
    """Serve RUN's labeling page until Ctrl-C (or SIGTERM); prints the URL to open."""
    from labeling.server import LabelServer, serve_forever

    block = read_preference_block(run_dir)
    instructions, budget = _instructions(block), _budget(block)
    store = open_label_store(run_dir, block, db)
    env = block.get("env")
    title = f"Which clip is better? · {env}" if isinstance(env, str) else ""

    def announce(server: LabelServer) -> None:
        _say(f"labeling page: {server.local_url()}")
        if server.require_token:
            _say(f"labeler tokens required; more labelers: zoo label add-labeler {run_dir} NAME")
        _say("press Ctrl-C to stop")

    try:
        serve_forever(
            run_dir,
            store,
            host=host,
            port=port,
            budget=budget,
            instructions=instructions,
            lease_seconds=lease_seconds,
            title=title,
            ready=announce,
        )
    except OSError as error:
        raise UsageError(f"--host {host} --port {port}: {error.strerror or error}") from None
    finally:
        store.close()
    _say("stopped")


@label_app.command("add-labeler")
def add_labeler_command(
    run_dir: Annotated[Path, typer.Argument(help=RUN_HELP)],
    name: Annotated[str, typer.Argument(help="The labeler's unique name.")],
    db: Annotated[str | None, typer.Option("--db", help=DB_HELP)] = None,
    replace: Annotated[
        bool, typer.Option("--replace", help="Issue a new token for an existing labeler (the old one stops).")
    ] = False,
) -> None:
    """Register a labeler and print their token (shown once: only its hash is stored) and link."""
    from labeling.server import page_url
    from rewards.store import LabelerExistsError, LabelStoreError

    block = read_preference_block(run_dir)
    store = open_label_store(run_dir, block, db)
    try:
        token = store.add_labeler(name, replace=replace)
    except LabelStoreError as error:
        hint = "; pass --replace to issue a new token" if isinstance(error, LabelerExistsError) else ""
        raise UsageError(f"{error}{hint}") from None
    finally:
        store.close()
    host, port = _configured_address(block)
    _say(f"token for {name} (shown once): {token}")
    serve = f"zoo label serve {run_dir} --host {host} --port {port}"
    _say(f"open: {page_url(host, port, token)}  (served by `{serve}`)")
