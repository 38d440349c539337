"""Send due alert deliveries, first attempts and retries alike, under a lease that outlives a crash."""

from __future__ import annotations

from datetime import timedelta

from core import delivery, runtime
from worker.jobs import Job


async def retry() -> int:
    return await delivery.deliver_due(lease=timedelta(seconds=runtime.settings().delivery_lease_seconds))


RETRY = Job(id="deliveries.retry", run=retry, every_seconds=5)
