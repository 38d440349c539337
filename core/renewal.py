"""Auto-renewal (SPEC §8, §14): the worker renews due certificates through the one renewal path.

A certificate is due when `renewal_due_at` (notAfter minus renew-before days, set only for auto-renewed,
server-held keys; cleared on renewal, revocation or auto-renew off) has passed. The sweep reads only those
rows through the `renewal_due_at` index, so it costs what is due, not what is stored.

Workers claim rows with FOR UPDATE SKIP LOCKED and lease them by moving `next_renewal_attempt_at` forward,
so replicas on PostgreSQL never take the same certificate; the renewal's conditional `active -> renewed`
update is the second lock, so even an expired lease cannot renew a certificate twice. A failed renewal
is recorded on the certificate, audited, announced as `certificate.renewal_failed`, and retried with
exponential backoff and jitter — never in a tight loop.
"""

from __future__ import annotations

import logging
import random
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from tortoise.expressions import F, Q, Subquery
from tortoise.queryset import QuerySet
from tortoise.transactions import in_transaction

from core import audit, outbox
from core.approval import APPROVED, PENDING, ApprovalPending
from core.authz import Actor
from core.certificate import RenewalMode, renew_certificate
from core.errors import KeywardError
from models import ApprovalRequest, Certificate
from models.enums import AuditOutcome, CertificateStatus

log = logging.getLogger("keyward.renewal")

WORKER_NAME = "keyward worker"
# How long a claim keeps other workers off a certificate; a crashed worker's claim simply runs out.
CLAIM_LEASE = timedelta(minutes=10)
BACKOFF_BASE = timedelta(minutes=5)
BACKOFF_MAX = timedelta(hours=24)
MAX_ERROR_LENGTH = 2000


@dataclass
class RenewalReport:
    """What one sweep did: old certificate ids renewed (with their successors), failed, skipped."""

    renewed: dict[uuid.UUID, uuid.UUID] = field(default_factory=dict)  # old id -> successor id
    failed: dict[uuid.UUID, str] = field(default_factory=dict)  # old id -> error
    skipped: int = 0  # claimed but no longer due (renewed, revoked or turned off meanwhile)
    held: dict[uuid.UUID, uuid.UUID] = field(default_factory=dict)  # old id -> approval request id

    def __str__(self) -> str:
        return (
            f"renewed {len(self.renewed)}, held for approval {len(self.held)}, "
            f"failed {len(self.failed)}, skipped {self.skipped}"
        )


def backoff(attempts: int, *, rng: random.Random | None = None) -> timedelta:
    """5 min × 2^(attempts-1), at most 24 h, less up to a quarter of jitter so failures do not align."""
    exponent = min(max(attempts, 1) - 1, 20)
    delay = min(BACKOFF_BASE * (2**exponent), BACKOFF_MAX)
    return delay * (rng or random).uniform(0.75, 1.0)


def open_renewal_requests() -> QuerySet[ApprovalRequest]:
    return ApprovalRequest.filter(renewal_of_id__isnull=False, status__in=[PENDING, APPROVED])


def due_query(now: datetime) -> QuerySet[Certificate]:
    """Due, claimable certificates, in due order: a range of the `renewal_due_at` index."""
    return (
        Certificate.filter(renewal_due_at__lte=now, status=CertificateStatus.ACTIVE, auto_renew=True)
        .filter(Q(next_renewal_attempt_at__isnull=True) | Q(next_renewal_attempt_at__lte=now))
        # One open approval request per certificate: while it waits, the sweep leaves the certificate alone.
        .exclude(id__in=Subquery(open_renewal_requests().values("renewal_of_id")))
        .order_by("renewal_due_at")
    )


async def claim_due(*, now: datetime, batch_size: int) -> list[uuid.UUID]:
    """Lease up to `batch_size` due certificates to this worker; rows locked by another are skipped."""
    async with in_transaction() as conn:
        # `.only("id")`, not `.values_list()`: Tortoise drops FOR UPDATE from values queries.
        rows = await (
            due_query(now).select_for_update(skip_locked=True).using_db(conn).limit(batch_size).only("id")
        )
        ids = [row.id for row in rows]
        if ids:
            await (
                Certificate.filter(id__in=ids)
                .using_db(conn)
                .update(next_renewal_attempt_at=now + CLAIM_LEASE)
            )
    return list(ids)


async def renew_due(*, now: datetime | None = None, batch_size: int = 50) -> RenewalReport:
    """Renew every certificate due at `now` (default: the current time), batch by batch."""
    now = now or datetime.now(UTC)
    report = RenewalReport()
    seen: set[uuid.UUID] = set()
    while True:
        ids = await claim_due(now=now, batch_size=batch_size)
        fresh = [certificate_id for certificate_id in ids if certificate_id not in seen]
        seen.update(ids)
        for certificate_id in fresh:
            await _renew_one(certificate_id, now, report)
        if len(ids) < batch_size or not fresh:
            break
    if report.renewed or report.failed or report.held:
        log.info("renewal sweep: %s", report)
    return report


async def _renew_one(certificate_id: uuid.UUID, now: datetime, report: RenewalReport) -> None:
    certificate = await Certificate.get_or_none(id=certificate_id)
    if (
        certificate is None
        or CertificateStatus(certificate.status) != CertificateStatus.ACTIVE
        or certificate.renewal_due_at is None
    ):
        report.skipped += 1
        return
    actor = Actor.system(certificate.organization_id, WORKER_NAME)
    try:
        successor = await renew_certificate(
            actor=actor,
            certificate_id=certificate.id,
            mode=RenewalMode.NEW_KEY,
            enrollment_method=certificate.enrollment_method,
        )
    except ApprovalPending as pending:
        await _hold(certificate, pending.request)
        report.held[certificate.id] = pending.request.id
        return
    except KeywardError as exc:
        error = exc.message
    except Exception as exc:  # a bug or an outage must not stop the sweep; the log has the traceback
        log.exception("auto-renewal of certificate %s failed unexpectedly", certificate.id)
        error = f"unexpected error ({type(exc).__name__}); see the worker log"
    else:
        report.renewed[certificate.id] = successor.id
        return
    if await _record_failure(certificate, actor, error[:MAX_ERROR_LENGTH], now):
        report.failed[certificate.id] = error
    else:
        report.skipped += 1


async def _hold(certificate: Certificate, request: ApprovalRequest) -> None:
    """An approval policy holds the renewal: the sweep leaves the certificate alone while its one request
    is open (until it expires); approving it renews the certificate, which stops it being due."""
    await (
        Certificate.filter(id=certificate.id, status=CertificateStatus.ACTIVE)
        .filter(Q(next_renewal_attempt_at__isnull=True) | Q(next_renewal_attempt_at__lt=request.expires_at))
        .update(next_renewal_attempt_at=request.expires_at, updated_at=datetime.now(UTC))
    )


async def _record_failure(certificate: Certificate, actor: Actor, error: str, now: datetime) -> bool:
    """Error, attempt count and next attempt on the row, a failed audit entry and an outbox event.

    Returns False when the certificate stopped being due meanwhile (renewed elsewhere, revoked, turned off).
    """
    attempts = certificate.renewal_attempts + 1
    next_attempt = now + backoff(attempts)
    async with in_transaction() as conn:
        updated = (
            await Certificate.filter(
                id=certificate.id, status=CertificateStatus.ACTIVE, renewal_due_at__isnull=False
            )
            .using_db(conn)
            .update(
                renewal_error=error,
                renewal_attempts=F("renewal_attempts") + 1,
                next_renewal_attempt_at=next_attempt,
                updated_at=datetime.now(UTC),
            )
        )
        if updated == 0:
            return False
        await audit.record(
            actor=actor,
            action="certificate.renew",
            resource_type="certificate",
            resource_id=certificate.id,
            application_id=certificate.application_id,
            outcome=AuditOutcome.FAILURE,
            details={
                "serial": certificate.serial_hex,
                "automatic": True,
                "error": error,
                "attempt": attempts,
                "next_attempt_at": next_attempt.isoformat(),
            },
            connection=conn,
        )
        await outbox.emit(
            event_type=outbox.CERTIFICATE_RENEWAL_FAILED,
            organization_id=certificate.organization_id,
            application_id=certificate.application_id,
            certificate_id=certificate.id,
            payload={
                "certificate_id": str(certificate.id),
                "serial": certificate.serial_hex,
                "common_name": certificate.common_name,
                "sans": certificate.sans,
                "not_after": certificate.not_after.isoformat(),
                "profile_id": str(certificate.profile_id) if certificate.profile_id else None,
                "error": error,
                "attempts": attempts,
                "next_attempt_at": next_attempt.isoformat(),
            },
            connection=conn,
        )
    log.warning(
        "auto-renewal of certificate %s failed (attempt %d, next at %s): %s",
        certificate.id,
        attempts,
        next_attempt.isoformat(),
        error,
    )
    return True
