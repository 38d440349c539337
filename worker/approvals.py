"""Expire approval requests still pending past their policy's maxRequestTtl (SPEC §11)."""

from __future__ import annotations

from core import approval
from worker.jobs import Job


async def expire() -> int:
    return await approval.expire_due()


EXPIRE = Job(id="approvals.expire", run=expire, every_seconds=60)
