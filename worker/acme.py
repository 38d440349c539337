"""Finish ACME challenge validations that a restarted server or another replica left processing."""

from __future__ import annotations

from core import acme_validation
from worker.jobs import Job


async def validate() -> int:
    return await acme_validation.validate_due()


VALIDATE = Job(id="acme.validate", run=validate, every_seconds=5)
