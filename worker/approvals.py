"""Expire approval requests still pending past their policy's maxRequestTtl, and issue approved requests
whose issuance did not happen (SPEC §11)."""

from __future__ import annotations

from core import approval
from worker.jobs import Job


async def expire() -> int:
    return await approval.expire_due()


async def retry_approved() -> int:
    return await approval.retry_approved()


EXPIRE = Job(id="approvals.expire", run=expire, every_seconds=60)
RETRY_APPROVED = Job(id="approvals.retry_approved", run=retry_approved, every_seconds=60)
