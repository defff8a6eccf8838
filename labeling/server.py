"""Serving the labeling app with uvicorn: in a background thread while training runs
(:class:`LabelServer`), or in the foreground for ``zoo label serve`` (:func:`serve_forever`).

Tokens are required unless the server is bound to a loopback address (``127.0.0.1``, ``::1``,
``localhost``). Uvicorn's access log is off (``?token=`` URLs would land in it) and uvicorn leaves
the process's logging configuration alone; this module logs to the ``labeling.server`` logger.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import socket
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from types import FrameType
from urllib.parse import quote

import uvicorn

from labeling.app import LOCAL_LABELER, create_app, is_loopback
from rewards.store import LabelStore

logger = logging.getLogger(__name__)

STARTUP_TIMEOUT_SECONDS = 30.0
SHUTDOWN_TIMEOUT_SECONDS = 10.0


def requires_token(host: str) -> bool:
    """Whether a server bound to ``host`` must require labeler tokens (anything but loopback).

    :param host: the address to bind.
    """
    return not is_loopback(host)


def page_url(host: str, port: int, token: str | None = None) -> str:
    """The labeling page's URL for a server bound to ``host:port``, with ``?token=`` if given.

    A wildcard address (``0.0.0.0``, ``::``) is shown as this machine's host name.

    :param host: the bound address or name.
    :param port: the port.
    :param token: a labeler token to put in the link (it becomes a cookie on the first visit).
    """
    shown = socket.gethostname() if host in ("", "0.0.0.0", "::") else host
    if ":" in shown:  # an IPv6 literal
        shown = f"[{shown.strip('[]')}]"
    return f"http://{shown}:{port}/" + ("" if token is None else f"?token={quote(token, safe='')}")


def _listening_socket(host: str, port: int) -> socket.socket:
    """A socket bound to ``host:port`` (port 0: any free one) and listening.

    :raises OSError: with a one-line message when the address cannot be bound (in use, unknown host).
    """
    try:
        family, kind, proto, _, address = socket.getaddrinfo(
            host.strip("[]"), port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
        )[0]
        sock = socket.socket(family, kind, proto)
    except OSError as error:
        raise OSError(error.errno, f"cannot listen on {host}:{port}: {error.strerror or error}") from None
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as uvicorn does (TIME_WAIT only)
        sock.bind(address)
        sock.listen(128)
    except OSError as error:
        sock.close()
        raise OSError(error.errno, f"cannot listen on {host}:{port}: {error.strerror or error}") from None
    sock.set_inheritable(False)
    return sock


class LabelServer:
    """The labeling app served by uvicorn in a daemon thread.

    :param run_dir: the run folder (its ``clips/`` are served).
    :param store: the label store (the caller closes it).
    :param host: the address to bind; anything but loopback requires labeler tokens.
    :param port: the port (0: any free one; :attr:`port` tells which once started).
    :param budget: the run's label budget, shown with the progress.
    :param instructions: the task instructions (markdown).
    :param lease_seconds: how long a query shown to one labeler is kept from the others.
    :param title: the page's heading (empty: a default question).
    """

    def __init__(
        self,
        run_dir: str | os.PathLike[str],
        store: LabelStore,
        *,
        host: str = "127.0.0.1",
        port: int = 8765,
        budget: int | None = None,
        instructions: str = "",
        lease_seconds: float = 600,
        title: str = "",
    ) -> None:
        self.host = host
        self.store = store
        self.require_token = requires_token(host)
        self.app = create_app(
            Path(run_dir),
            store,
            require_token=self.require_token,
            budget=budget,
            instructions=instructions,
            lease_seconds=lease_seconds,
            title=title,
        )
        self._port = port
        self._socket: socket.socket | None = None
        self._server: uvicorn.Server | None = None
        self._thread: threading.Thread | None = None

    @property
    def port(self) -> int:
        """The port the server listens on (the requested one until :meth:`start` binds it)."""
        return self._port

    def url(self, token: str | None = None) -> str:
        """The labeling page's URL, e.g. ``http://127.0.0.1:8765/?token=...``.

        :param token: a labeler token to put in the link (None: a plain link).
        """
        return page_url(self.host, self.port, token)

    def local_url(self) -> str:
        """The URL to print for the person who started the server: plain on loopback, else with a
        fresh token of the labeler ``local`` (its previous token stops working)."""
        token = self.store.add_labeler(LOCAL_LABELER, replace=True) if self.require_token else None
        return self.url(token)

    def start(self) -> None:
        """Bind, start serving in a background thread, and return once connections are accepted.

        :raises OSError: when the address cannot be bound (port in use, unknown host).
        :raises RuntimeError: when the server is already running or fails to start.
        """
        if self._thread is not None:
            raise RuntimeError("the label server is already running")
        self._socket = _listening_socket(self.host, self._port)
        self._port = int(self._socket.getsockname()[1])
        config = uvicorn.Config(
            self.app,
            log_config=None,
            log_level="warning",
            access_log=False,
            lifespan="off",
            server_header=False,
            timeout_graceful_shutdown=int(SHUTDOWN_TIMEOUT_SECONDS / 2),
        )
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(
            target=self._server.run, kwargs={"sockets": [self._socket]}, name="label-server", daemon=True
        )
        self._thread.start()
        self._wait_started()
        tokens = "required" if self.require_token else "optional"
        logger.info("labeling page at %s (labeler tokens %s)", self.url(), tokens)

    def _wait_started(self) -> None:
        assert self._server is not None and self._thread is not None
        deadline = time.monotonic() + STARTUP_TIMEOUT_SECONDS
        while not self._server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError("the label server did not start (see the log of labeling.server/uvicorn)")
            time.sleep(0.01)

    def wait(self) -> None:
        """Block until the server stops (Ctrl-C raises KeyboardInterrupt here)."""
        while self._thread is not None and self._thread.is_alive():
            self._thread.join(0.5)

    def stop(self) -> None:
        """Stop serving: finish the requests in flight, close the connections and the socket."""
        if self._server is not None:
            self._server.should_exit = True
        if self._thread is not None:
            self._thread.join(SHUTDOWN_TIMEOUT_SECONDS)
            if self._thread.is_alive():
                logger.warning("the label server did not stop within %.0f s", SHUTDOWN_TIMEOUT_SECONDS)
        if self._socket is not None:
            self._socket.close()
        self._socket, self._server, self._thread = None, None, None

    def __enter__(self) -> LabelServer:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


@contextlib.contextmanager
def _interrupt_on_stop_signals() -> Iterator[None]:
    """Turn SIGINT and SIGTERM into KeyboardInterrupt in the main thread while the block runs.

    Set explicitly rather than relying on Python's default: a process started in the background by a
    non-interactive shell inherits an *ignored* SIGINT (and Python then installs no handler), and
    ``kill``/``docker stop``/systemd send SIGTERM. ``zoo train`` stops cleanly on both as well.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def interrupt(signum: int, frame: FrameType | None) -> None:
        raise KeyboardInterrupt(signal.Signals(signum).name)

    previous = {sig: signal.signal(sig, interrupt) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def serve_forever(
    run_dir: str | os.PathLike[str],
    store: LabelStore,
    *,
    host: str = "127.0.0.1",
    port: int = 8765,
    budget: int | None = None,
    instructions: str = "",
    lease_seconds: float = 600,
    title: str = "",
    ready: Callable[[LabelServer], None] | None = None,
) -> None:
    """Serve the labeling app until Ctrl-C or SIGTERM (either returns normally, after a clean shutdown).

    The parameters up to ``title`` are :class:`LabelServer`'s.

    :param ready: called with the started server (e.g. to print its URL).
    :raises OSError: when the address cannot be bound.
    """
    server = LabelServer(
        run_dir,
        store,
        host=host,
        port=port,
        budget=budget,
        instructions=instructions,
        lease_seconds=lease_seconds,
        title=title,
    )
    with _interrupt_on_stop_signals():
        server.start()
        try:
            if ready is not None:
                ready(server)
            server.wait()
        except KeyboardInterrupt:
            logger.info("interrupted: stopping the label server")
        finally:
            server.stop()
