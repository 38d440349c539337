"""`keyward serve --workers N`: N API processes on one port (uvicorn's process manager), one per core.

Each process is a full API (GraphQL, ACME, EST, SCEP, CRL, OCSP) with its own connection pool; whatever must
be shared lives in the database: ACME nonces, accounts, orders and challenge state (a challenge is
validated by the process that received its response, and the worker's `acme.validate` job finishes what a
process left behind). With `--with-worker`, one
`keyward worker` process runs the scheduled jobs next to them, never one per API process.

On SQLite the processes share the database file: SQLite lets one of them write at a time, and each waits its
turn off its event loop (core.sqlite_inline: transactions begin IMMEDIATE, a locked statement is retried in
a thread). PostgreSQL lets them write side by side, and several machines share it.
"""

from __future__ import annotations

import contextlib
import logging
import signal
import socket
import subprocess
import sys
from collections.abc import Iterator
from typing import Any

import uvicorn
from starlette.applications import Starlette
from uvicorn.config import STARTUP_FAILURE
from uvicorn.supervisors import Multiprocess

from core import runtime
from core.config import load_settings
from core.errors import ConfigurationError


def check_workers(workers: int, database_url: str) -> None:
    if workers < 1:
        raise ConfigurationError("--workers must be at least 1")
    if workers > 1 and database_url.startswith("sqlite://:memory:"):
        raise ConfigurationError("--workers above 1 needs a database file: each process would have its own")


def create_worker_app() -> Starlette:
    """The app factory of each API process (spawned afresh by uvicorn: settings from the environment)."""
    from api.app import create_app
    from core.logs import configure_logging

    runtime.configure(load_settings())
    settings = runtime.settings()
    configure_logging(level=settings.log_level, log_format=settings.log_format)
    return create_app()


@contextlib.contextmanager
def _scheduler_process(enabled: bool) -> Iterator[None]:
    """`keyward worker` beside the API processes (its jobs run once, whatever the number of processes)."""
    if not enabled:
        yield
        return
    process = subprocess.Popen([sys.executable, "-m", "api.cli", "worker"])
    try:
        yield
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


def _own_socket(host: str, port: int) -> socket.socket:
    """A listening socket for one API process, in the port's SO_REUSEPORT group: the kernel spreads new
    connections over the group's sockets. (One socket shared by every process, uvicorn's way, lets whichever
    process wakes first accept a whole burst of connections; kept alive, as ACME clients keep theirs, they
    leave the other processes idle.)"""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    sock.bind((host, port))
    sock.set_inheritable(True)
    return sock


def _port_taken(host: str, port: int) -> OSError | None:
    """Whether something already listens there: a socket without SO_REUSEPORT cannot bind beside it (the
    processes' own sockets would join another server's group without a word)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, port))
        except OSError as error:
            return error
    return None


class _SocketPerProcess(Multiprocess):
    """uvicorn's process manager (health checks, restarts, signals), each process started, or restarted,
    with a socket of its own (_own_socket) instead of the one uvicorn shares among them all."""

    def __init__(self, config: uvicorn.Config) -> None:
        self._handed_out: list[socket.socket] = []
        super().__init__(config, sockets=[])

    @property  # type: ignore[override]
    def sockets(self) -> list[socket.socket]:
        """Read by uvicorn once for each process it starts."""
        sock = _own_socket(self.config.host, self.config.port)
        self._handed_out.append(sock)
        return [sock]

    @sockets.setter
    def sockets(self, shared: list[socket.socket]) -> None:
        """Nothing is shared."""

    def _close_handed_out(self) -> None:
        """Each started process has its socket (inherited when it was spawned); kept open here, a dead
        process's socket would go on taking its share of connections until it was replaced."""
        while self._handed_out:
            self._handed_out.pop().close()

    def init_processes(self) -> None:
        super().init_processes()
        self._close_handed_out()

    def restart_all(self) -> None:
        super().restart_all()
        self._close_handed_out()

    def keep_subprocess_alive(self) -> None:
        super().keep_subprocess_alive()
        self._close_handed_out()


def serve_processes(
    *, host: str, port: int, workers: int, with_worker: bool, options: dict[str, Any]
) -> None:
    settings = runtime.settings()
    check_workers(workers, settings.database_url)
    config = uvicorn.Config(
        "api.serve_multi:create_worker_app",
        factory=True,
        workers=workers,
        host=host,
        port=port,
        log_level=settings.log_level,
        log_config=None,
        access_log=False,
        **options,
    )
    if not hasattr(socket, "SO_REUSEPORT"):  # Windows has none: uvicorn's one shared socket
        with _scheduler_process(with_worker):
            Multiprocess(config, sockets=[config.bind_socket()]).run()
        return
    taken = _port_taken(host, port)
    if taken is not None:
        logging.getLogger(__name__).error("cannot listen on %s:%d: %s", host, port, taken)
        sys.exit(STARTUP_FAILURE)
    with _scheduler_process(with_worker):
        _SocketPerProcess(config).run()
