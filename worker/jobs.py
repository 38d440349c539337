"""The registry of scheduled jobs: each a thin, named wrapper around one core service."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass


@dataclass(frozen=True)
class Job:
    id: str  # domain.verb
    run: Callable[[], Awaitable[object]]
    every_seconds: int


def all_jobs() -> list[Job]:
    from worker import acme, alerts, approvals, crl, deliveries, outbox, renewals, syncs

    return [
        crl.REFRESH,
        renewals.RENEW_DUE,
        outbox.DISPATCH,
        deliveries.RETRY,
        alerts.SCAN_EXPIRING,
        acme.VALIDATE,
        approvals.EXPIRE,
        approvals.RETRY_APPROVED,
        syncs.PUSH,
    ]
