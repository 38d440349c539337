"""Auto-renew certificates inside their renew-before window, through the same path as renewCertificate."""

from __future__ import annotations

from core import renewal
from worker.jobs import Job


async def renew_due() -> renewal.RenewalReport:
    return await renewal.renew_due()


RENEW_DUE = Job(id="renewals.renew_due", run=renew_due, every_seconds=300)
