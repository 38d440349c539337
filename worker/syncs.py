"""Push certificates to sync destinations (and remove them), retrying failures with backoff."""

from __future__ import annotations

from core import sync_runner
from worker.jobs import Job


async def push_due() -> sync_runner.SyncReport:
    return await sync_runner.push_due()


PUSH = Job(id="syncs.push", run=push_due, every_seconds=10)
