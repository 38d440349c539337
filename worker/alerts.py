"""Expiration alerts: queue a notice when a certificate crosses one of its alert's thresholds."""

from __future__ import annotations

from core import expiration
from worker.jobs import Job


async def scan_expiring() -> int:
    return await expiration.scan_expiring()


SCAN_EXPIRING = Job(id="alerts.scan_expiring", run=scan_expiring, every_seconds=300)
