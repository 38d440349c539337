"""Alert deliveries: queued with their notification, sent outside any transaction, retried with backoff.

Delivery is at least once: a worker leases a delivery, sends it, then records the attempt. A worker that dies
between the send and the record leaves the lease to run out, and the next worker sends it again with the same
event id, on which receivers de-duplicate.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
import uuid
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from tortoise.backends.base.client import BaseDBAsyncClient
from tortoise.expressions import Q
from tortoise.transactions import in_transaction

from core import audit, channel, metrics
from core.access import load_application
from core.authz import Actor, Permission
from core.channel import AttemptResult, Notification
from core.errors import InvalidState, NotFound
from models import Alert, AlertChannel, Certificate, CertificateProfile, Delivery, DeliveryAttempt
from models.enums import DeliveryStatus
from pki.errors import PkiError
from pki.pattern import match_pattern

log = logging.getLogger("keyward.delivery")

MAX_ATTEMPTS = 8
BACKOFF_BASE = timedelta(seconds=30)
BACKOFF_CAP = timedelta(hours=1)
DEFAULT_LEASE = timedelta(minutes=2)
# Sends of one batch that may be in flight at once: a slow receiver does not hold up the others.
SEND_CONCURRENCY = 10


# ---------------------------------------------------------------- shared by dispatch and expiration


def certificate_entry(certificate: Certificate, profile_name: str | None) -> dict[str, Any]:
    """A certificate as a notification lists it (the Notification contract's keys)."""
    return {
        "id": str(certificate.id),
        "commonName": certificate.common_name,
        "sans": [f"{san.get('type')}:{san.get('value')}" for san in certificate.sans or []],
        "serialNumber": certificate.serial_hex,
        "notBefore": certificate.not_before.isoformat(),
        "notAfter": certificate.not_after.isoformat(),
        "status": certificate.status.value,
        "profileName": profile_name,
    }


async def profile_names(
    profile_ids: Iterable[uuid.UUID | None], conn: BaseDBAsyncClient | None = None
) -> dict[Any, str]:
    """Profile id -> name for the given ids, in one query."""
    ids = {pid for pid in profile_ids if pid is not None}
    if not ids:
        return {}
    rows = await CertificateProfile.filter(id__in=ids).using_db(conn).values_list("id", "name")
    return {pid: name for pid, name in rows}


def alert_matches(alert: Alert, certificate: Certificate) -> bool:
    """The alert's filters: profile (empty = every profile) and name pattern over the CN and SAN values."""
    if alert.profile_ids and str(certificate.profile_id) not in {str(p) for p in alert.profile_ids}:
        return False
    if not alert.name_pattern:
        return True
    names = [certificate.common_name or ""] + [str(san.get("value", "")) for san in certificate.sans or []]
    try:
        return any(name and match_pattern(alert.name_pattern, name) for name in names)
    except PkiError:
        log.warning(
            "alert %s has an unusable name pattern %r; it matches nothing", alert.id, alert.name_pattern
        )
        return False


async def enqueue(
    *,
    alert: Alert,
    channels: Iterable[AlertChannel],
    notification: Notification,
    conn: BaseDBAsyncClient,
    ignore_existing: bool = False,
) -> int:
    """One pending delivery per channel, inside the caller's transaction; due at once.

    `ignore_existing` skips a (channel, event) that already has one (unique key), so a re-dispatch adds none.
    """
    now = datetime.now(UTC)
    rows = [
        Delivery(
            id=uuid.uuid4(),
            alert_id=alert.id,
            channel_id=ch.id,
            event_id=notification.event_id,
            event_type=notification.event_type,
            payload=notification.to_payload(),
            status=DeliveryStatus.PENDING,
            attempts=0,
            next_attempt_at=now,
        )
        for ch in channels
    ]
    if rows:
        await Delivery.bulk_create(rows, ignore_conflicts=ignore_existing, using_db=conn)
    return len(rows)


# ---------------------------------------------------------------- backoff


def backoff_delay(attempts: int, *, rng: random.Random | None = None) -> timedelta:
    """Full jitter: uniform in [0, min(cap, base * 2^(attempts-1))], at least one second."""
    ceiling = min(BACKOFF_CAP.total_seconds(), BACKOFF_BASE.total_seconds() * 2 ** max(attempts - 1, 0))
    seconds = (rng or random).uniform(0, ceiling)
    return timedelta(seconds=max(seconds, 1.0))


# ---------------------------------------------------------------- the delivery sweep


@dataclass(frozen=True)
class _Claimed:
    delivery_id: uuid.UUID
    channel_id: uuid.UUID
    attempts: int
    payload: dict[str, Any]


async def _claim(*, batch_size: int, lease: timedelta) -> list[_Claimed]:
    """Lease up to batch_size due deliveries. SKIP LOCKED on PostgreSQL; the conditional update makes the
    lease atomic on any database, so two workers never hold the same delivery at once."""
    async with in_transaction() as conn:
        now = datetime.now(UTC)
        free = Q(leased_until__isnull=True) | Q(leased_until__lt=now)
        rows = await (
            Delivery.select_for_update(skip_locked=True)
            .using_db(conn)
            .filter(status=DeliveryStatus.PENDING, next_attempt_at__lte=now)
            .filter(free)
            .order_by("next_attempt_at")
            .limit(batch_size)
            .only("id", "channel_id", "attempts", "payload")  # not values_list: it would drop FOR UPDATE
        )
        claimed = []
        for row in rows:
            delivery_id, channel_id, attempts, payload = row.id, row.channel_id, row.attempts, row.payload
            taken = (
                await Delivery.filter(id=delivery_id, status=DeliveryStatus.PENDING)
                .filter(free)
                .using_db(conn)
                .update(leased_until=now + lease)
            )
            if taken:
                claimed.append(_Claimed(delivery_id, channel_id, attempts, payload))  # type: ignore[arg-type]
    return claimed


async def _send(claim: _Claimed) -> tuple[AttemptResult, int]:
    started = time.monotonic()
    channel_type = "unknown"
    try:
        ch = await AlertChannel.get_or_none(id=claim.channel_id)
        if ch is not None:
            channel_type = ch.type.value
        if ch is None:
            result = AttemptResult(ok=False, error="the channel no longer exists", retryable=False)
        else:
            result = await channel.send(ch, Notification.from_payload(claim.payload))
    except Exception as error:  # noqa: BLE001 - send never raises by contract; a bug must not stop the sweep
        log.exception("delivery %s: sending raised", claim.delivery_id)
        result = AttemptResult(ok=False, error=f"internal error: {type(error).__name__}", retryable=True)
    if not result.ok:
        metrics.record_delivery_failure(channel_type)
    return result, int((time.monotonic() - started) * 1000)


async def log_attempt(
    *,
    delivery_id: uuid.UUID,
    attempted_at: datetime,
    result: AttemptResult,
    duration_ms: int,
    connection: BaseDBAsyncClient,
) -> DeliveryAttempt:
    """One line of an alert's delivery log, written with the delivery's new state."""
    return await DeliveryAttempt.create(
        id=uuid.uuid4(),
        delivery_id=delivery_id,
        attempted_at=attempted_at,
        succeeded=result.ok,
        http_status=result.http_status,
        smtp_reply=result.smtp_reply,
        error=result.error,
        duration_ms=duration_ms,
        using_db=connection,
    )


async def _record(claim: _Claimed, result: AttemptResult, duration_ms: int, attempted_at: datetime) -> str:
    """The attempt in the log and the delivery's next state, in one transaction."""
    attempts = claim.attempts + 1
    now = datetime.now(UTC)
    if result.ok:
        changes: dict[str, Any] = {"status": DeliveryStatus.SUCCEEDED, "last_error": None}
    elif result.retryable and attempts < MAX_ATTEMPTS:
        changes = {"next_attempt_at": now + backoff_delay(attempts), "last_error": result.error}
    else:
        changes = {"status": DeliveryStatus.DEAD, "last_error": result.error}
    async with in_transaction() as conn:
        await log_attempt(
            delivery_id=claim.delivery_id,
            attempted_at=attempted_at,
            result=result,
            duration_ms=duration_ms,
            connection=conn,
        )
        # Only a still-pending delivery moves: one that another worker already finished stays as it is.
        await (
            Delivery.filter(id=claim.delivery_id, status=DeliveryStatus.PENDING)
            .using_db(conn)
            .update(attempts=attempts, leased_until=None, updated_at=now, **changes)
        )
    status = changes.get("status", DeliveryStatus.PENDING)
    if not result.ok:
        log.warning(
            "delivery %s attempt %d failed (%s): %s", claim.delivery_id, attempts, status.value, result.error
        )
    return str(status.value)


async def deliver_due(*, batch_size: int = 50, lease: timedelta = DEFAULT_LEASE) -> int:
    """Send every due delivery once; returns how many attempts were made.

    The lease must outlast one send (channel timeouts); a worker killed mid-send is replaced once it expires.
    """
    total = 0
    limit = asyncio.Semaphore(SEND_CONCURRENCY)

    async def attempt(claim: _Claimed) -> None:
        async with limit:
            attempted_at = datetime.now(UTC)
            result, duration_ms = await _send(claim)
            try:
                await _record(claim, result, duration_ms, attempted_at)
            except Exception:  # noqa: BLE001 - e.g. the alert was deleted meanwhile; the others go on
                log.exception("delivery %s: attempt not recorded; its lease will run out", claim.delivery_id)

    while True:
        claimed = await _claim(batch_size=batch_size, lease=lease)
        if claimed:
            await asyncio.gather(*(attempt(c) for c in claimed))
        total += len(claimed)
        if len(claimed) < batch_size:
            return total


# ---------------------------------------------------------------- the delivery log, by hand


async def _load_delivery(actor: Actor, delivery_id: uuid.UUID, permission: Permission) -> Delivery:
    delivery = await Delivery.get_or_none(id=delivery_id).prefetch_related("alert")
    if delivery is None:
        raise NotFound(f"delivery {delivery_id} not found")
    try:
        await load_application(actor, delivery.alert.application_id, permission)
    except NotFound:
        raise NotFound(f"delivery {delivery_id} not found") from None
    return delivery


async def retry_by_hand(*, actor: Actor, delivery_id: uuid.UUID) -> Delivery:
    """Put a dead delivery back to pending with a fresh series of attempts; its log is kept."""
    delivery = await _load_delivery(actor, delivery_id, Permission.ALERTS_MANAGE)
    async with in_transaction() as conn:
        now = datetime.now(UTC)
        moved = (
            await Delivery.filter(id=delivery.id, status=DeliveryStatus.DEAD)
            .using_db(conn)
            .update(
                status=DeliveryStatus.PENDING,
                attempts=0,
                next_attempt_at=now,
                leased_until=None,
                updated_at=now,
            )
        )
        if not moved:
            raise InvalidState(f"only a dead delivery can be retried; this one is {delivery.status.value}")
        await audit.record(
            actor=actor,
            action="delivery.retry",
            resource_type="delivery",
            resource_id=delivery.id,
            application_id=delivery.alert.application_id,
            details={
                "alert_id": str(delivery.alert_id),
                "channel_id": str(delivery.channel_id),
                "event_id": str(delivery.event_id),
                "previous_attempts": delivery.attempts,
            },
            connection=conn,
        )
    await delivery.refresh_from_db()
    return delivery


async def list_deliveries(
    *, actor: Actor, alert_id: uuid.UUID, status: DeliveryStatus | None = None, limit: int = 100
) -> list[Delivery]:
    """An alert's deliveries, newest first (application readers may see them; secrets are not in them)."""
    alert = await Alert.get_or_none(id=alert_id)
    if alert is None:
        raise NotFound(f"alert {alert_id} not found")
    try:
        await load_application(actor, alert.application_id, Permission.APPLICATION_READ)
    except NotFound:
        raise NotFound(f"alert {alert_id} not found") from None
    query = Delivery.filter(alert_id=alert.id)
    if status is not None:
        query = query.filter(status=status)
    return await query.order_by("-created_at", "-id").limit(max(1, min(limit, 500)))


async def list_attempts(*, actor: Actor, delivery_id: uuid.UUID) -> list[DeliveryAttempt]:
    """Every attempt of one delivery, oldest first: time, outcome, HTTP status or SMTP reply, error."""
    delivery = await _load_delivery(actor, delivery_id, Permission.APPLICATION_READ)
    return await DeliveryAttempt.filter(delivery_id=delivery.id).order_by("attempted_at", "id")
