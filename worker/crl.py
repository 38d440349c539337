"""Keep every CRL fresh: rebuilt well before its nextUpdate, so relying parties never see a stale one."""

from __future__ import annotations

from core import ca
from worker.jobs import Job


async def refresh() -> int:
    return await ca.refresh_due_crls()


REFRESH = Job(id="crl.refresh", run=refresh, every_seconds=300)
