"""`keyward serve --workers N`: N API processes on one port (uvicorn's process manager), for PostgreSQL.

Each process is a full API (GraphQL, ACME, EST, SCEP, CRL, OCSP) with its own connection pool; whatever must
be shared lives in the database: ACME nonces, accounts, orders and challenge state (a challenge is
validated by the process that received its response, and the worker's `acme.validate` job finishes what a
process left behind). With `--with-worker`, one
`keyward worker` process runs the scheduled jobs next to them, never one per API process.

SQLite allows one writing process at a time, so several API processes need PostgreSQL.
"""

from __future__ import annotations

import contextlib
import signal
import subprocess
import sys
from collections.abc import Iterator
from typing import Any

from starlette.applications import Starlette

from core import runtime
from core.config import load_settings
from core.errors import ConfigurationError


def check_workers(workers: int, database_url: str) -> None:
    if workers < 1:
        raise ConfigurationError("--workers must be at least 1")
    if workers > 1 and database_url.startswith("sqlite"):
        raise ConfigurationError(
            "--workers above 1 needs PostgreSQL (KEYWARD_DATABASE_URL=postgres://...): SQLite allows one "
            "writing process at a time"
        )


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


def serve_processes(
    *, host: str, port: int, workers: int, with_worker: bool, options: dict[str, Any]
) -> None:
    import uvicorn

    settings = runtime.settings()
    check_workers(workers, settings.database_url)
    with _scheduler_process(with_worker):
        uvicorn.run(
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
