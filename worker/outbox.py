"""Fan domain events out to the alerts that subscribe to them, soon after the change commits."""

from __future__ import annotations

from core import dispatch
from worker.jobs import Job


async def run_dispatch() -> int:
    return await dispatch.dispatch_outbox()


DISPATCH = Job(id="outbox.dispatch", run=run_dispatch, every_seconds=5)
