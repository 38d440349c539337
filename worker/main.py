"""`keyward worker`: the APScheduler process over the shared models. Never imports the API."""

from __future__ import annotations

import asyncio
import logging
import signal

from apscheduler.schedulers.asyncio import AsyncIOScheduler

from core import runtime
from core.db import close_db, init_db
from worker.jobs import all_jobs

log = logging.getLogger("keyward.worker")


def build_scheduler() -> AsyncIOScheduler:
    scheduler = AsyncIOScheduler(timezone="UTC")
    for job in all_jobs():
        # One run at a time per job, and a missed run is merged into the next instead of piling up.
        scheduler.add_job(
            job.run, "interval", seconds=job.every_seconds, id=job.id, max_instances=1, coalesce=True
        )
    return scheduler


async def run_worker() -> None:
    await init_db(runtime.settings().database_url)
    scheduler = build_scheduler()
    scheduler.start()
    log.info("worker started with jobs: %s", ", ".join(job.id for job in all_jobs()))
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    try:
        await stop.wait()
    finally:
        scheduler.shutdown(wait=False)
        await close_db()
