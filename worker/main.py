"""`keyward worker`: the APScheduler process over the shared models. Never imports the API."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime

from apscheduler.schedulers.asyncio import AsyncIOScheduler

try:
    import fcntl
except ImportError:  # Windows: no flock, so no guard
    fcntl = None  # type: ignore[assignment]

from core import runtime
from core.db import close_db, init_db, sqlite_path
from core.errors import ConfigurationError
from worker.instrument import instrumented
from worker.jobs import Job, all_jobs
from worker.metrics_server import serving_metrics

log = logging.getLogger("keyward.worker")
# APScheduler announces every run at INFO (every few seconds); its warnings and errors still show.
logging.getLogger("apscheduler").setLevel(logging.WARNING)


def job_intervals(jobs: list[Job], overrides: dict[str, int]) -> dict[str, int]:
    """Each job's seconds between runs: its default unless KEYWARD_WORKER_SCHEDULES names it."""
    known = {job.id for job in jobs}
    unknown = sorted(set(overrides) - known)
    if unknown:
        raise ConfigurationError(
            f"KEYWARD_WORKER_SCHEDULES names unknown job(s) {', '.join(unknown)}; "
            f"the jobs are {', '.join(sorted(known))}"
        )
    return {job.id: overrides.get(job.id, job.every_seconds) for job in jobs}


def build_scheduler() -> AsyncIOScheduler:
    jobs = all_jobs()
    intervals = job_intervals(jobs, runtime.settings().worker_schedules)
    scheduler = AsyncIOScheduler(timezone="UTC")
    start = datetime.now(UTC)
    for job in jobs:
        # One run at a time per job, and a missed run is merged into the next instead of piling up. The first
        # run is at start, so a restarted worker picks up what its predecessor left at once.
        scheduler.add_job(
            instrumented(job),  # a log line and metrics per run
            "interval",
            seconds=intervals[job.id],
            id=job.id,
            name=job.id,
            max_instances=1,
            coalesce=True,
            next_run_time=start,
        )
    return scheduler


@contextlib.contextmanager
def the_only_scheduler_on(database_url: str) -> Iterator[None]:
    """On a SQLite file, one process runs the jobs: the claims that keep workers apart on PostgreSQL
    (SELECT ... FOR UPDATE SKIP LOCKED) lock nothing on SQLite, so a second worker would send the same
    alerts and deliveries again. An exclusive flock on `<file>-scheduler`, let go when the process ends."""
    path = sqlite_path(database_url)
    if path is None or path.startswith("file:") or fcntl is None:  # as WriterTurn: plain paths, with flock
        yield
        return
    fd = os.open(f"{path}-scheduler", os.O_RDWR | os.O_CREAT, 0o600)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise ConfigurationError(
                f"another worker already runs the jobs on {path}: on SQLite run one worker (`keyward worker`"
                " or `keyward serve --with-worker`); several need PostgreSQL"
            ) from None
        yield
    finally:
        os.close(fd)  # lets go of the lock


@contextlib.asynccontextmanager
async def running_scheduler() -> AsyncIterator[AsyncIOScheduler]:
    """The scheduler running on the current loop (the database must already be initialized); on a SQLite
    file, the only one (the_only_scheduler_on)."""
    with the_only_scheduler_on(runtime.settings().database_url):
        async with _started_scheduler() as scheduler:
            yield scheduler


@contextlib.asynccontextmanager
async def _started_scheduler() -> AsyncIterator[AsyncIOScheduler]:
    scheduler = build_scheduler()
    scheduler.start()
    log.info("worker started with jobs: %s", ", ".join(job.id for job in all_jobs()))
    try:
        yield scheduler
    finally:
        scheduler.shutdown(wait=False)


async def run_worker() -> None:
    await init_db(runtime.settings().database_url)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    settings = runtime.settings()
    metrics_server = serving_metrics(
        settings.worker_metrics_host, settings.worker_metrics_port, settings.metrics_token
    )
    try:
        async with metrics_server, running_scheduler():
            await stop.wait()
    finally:
        await close_db()
