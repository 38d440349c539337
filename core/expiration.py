"""The expiration scan: each active expiration alert fires once per (alert, certificate, threshold), or once
a day in daily mode, whatever the number of workers and restarts.

The ExpirationNotice unique key is the guarantee: notices and their deliveries are inserted in one
transaction, and a scanner that loses the race on a notice rolls back and leaves it to the winner.
"""

from __future__ import annotations

import logging
import uuid
from collections import defaultdict
from datetime import UTC, datetime, timedelta

from tortoise.exceptions import IntegrityError
from tortoise.transactions import in_transaction

from core import delivery
from core.channel import Notification
from models import Alert, AlertChannel, Application, Certificate, ExpirationNotice
from models.enums import CertificateStatus

log = logging.getLogger("keyward.expiration")

EVENT_TYPE = "certificate.expiring"
ONCE = "once"
# Certificates listed in one notification; more make several notifications.
GROUP_SIZE = 100
_QUERY_CHUNK = 500
_NAMESPACE = uuid.UUID("9d3c6f55-3f5a-4d49-8a53-6f1b8e0f2c11")


def notice_event_id(
    alert_id: uuid.UUID, threshold: int, key: str, certificate_ids: list[uuid.UUID]
) -> uuid.UUID:
    """Deterministic, so two scanners that build the same notification give it the same event id."""
    text = f"{alert_id}:{threshold}:{key}:" + ",".join(sorted(str(c) for c in certificate_ids))
    return uuid.uuid5(_NAMESPACE, text)


def _thresholds(alert: Alert) -> list[int]:
    values: set[int] = set()
    for raw in alert.thresholds_days or []:
        try:
            days = int(raw)
        except (TypeError, ValueError):
            continue
        if days > 0:
            values.add(days)
    return sorted(values)


async def _existing_notices(alert: Alert, certificate_ids: list[uuid.UUID], key: str) -> set[tuple[str, int]]:
    found: set[tuple[str, int]] = set()
    for start in range(0, len(certificate_ids), _QUERY_CHUNK):
        rows = await ExpirationNotice.filter(
            alert_id=alert.id,
            certificate_id__in=certificate_ids[start : start + _QUERY_CHUNK],
            notice_key=key,
        ).values_list("certificate_id", "threshold_days")
        found.update((str(cid), int(t)) for cid, t in rows)
    return found


async def _scan_alert(alert: Alert, now: datetime) -> int:
    thresholds = _thresholds(alert)
    if not thresholds:
        return 0
    daily = alert.daily_repeat
    key = now.date().isoformat() if daily else ONCE
    # Only the due certificates are read, through the (application_id, status, not_after) index.
    due = await Certificate.filter(
        application_id=alert.application_id,
        status=CertificateStatus.ACTIVE,
        not_after__gt=now,
        not_after__lte=now + timedelta(days=max(thresholds)),
    ).order_by("not_after", "id")
    due = [c for c in due if delivery.alert_matches(alert, c)]
    if not due:
        return 0
    existing = await _existing_notices(alert, [c.id for c in due], key)
    # threshold -> certificates it fires for; plus the larger thresholds already passed, recorded silently.
    firing: dict[int, list[Certificate]] = defaultdict(list)
    passed: dict[uuid.UUID, list[int]] = defaultdict(list)
    for certificate in due:
        crossed = [t for t in thresholds if certificate.not_after <= now + timedelta(days=t)]
        smallest = crossed[0]
        if (str(certificate.id), smallest) not in existing:
            firing[smallest].append(certificate)
        if not daily:
            passed[certificate.id] = [t for t in crossed[1:] if (str(certificate.id), t) not in existing]
    if not firing:
        return 0
    channels = sorted(await AlertChannel.filter(alert_id=alert.id), key=lambda c: c.position)
    application = await Application.get(id=alert.application_id)
    names = await delivery.profile_names({c.profile_id for c in due})
    fired = 0
    for threshold, certificates in sorted(firing.items()):
        for start in range(0, len(certificates), GROUP_SIZE):
            group = certificates[start : start + GROUP_SIZE]
            notices = [
                ExpirationNotice(
                    id=uuid.uuid4(), alert_id=alert.id, certificate_id=c.id, threshold_days=t, notice_key=key
                )
                for c in group
                for t in [threshold, *passed.get(c.id, [])]
            ]
            days_left = min((c.not_after - now) // timedelta(days=1) for c in group)
            notification = Notification(
                event_id=notice_event_id(alert.id, threshold, key, [c.id for c in group]),
                event_type=EVENT_TYPE,
                occurred_at=now,
                organization_id=application.organization_id,
                application_id=application.id,
                application_name=application.name,
                alert_name=alert.name,
                certificates=[delivery.certificate_entry(c, names.get(c.profile_id)) for c in group],
                details={"thresholdDays": threshold, "daysLeft": days_left},
            )
            try:
                async with in_transaction() as conn:
                    await ExpirationNotice.bulk_create(notices, using_db=conn)
                    await delivery.enqueue(
                        alert=alert, channels=channels, notification=notification, conn=conn
                    )
            except IntegrityError:
                # Another scanner recorded (some of) these notices first: theirs fire, ours would be twice.
                log.info(
                    "alert %s threshold %sd: notices already recorded by another scanner", alert.id, threshold
                )
                continue
            fired += len(group)
    return fired


async def scan_expiring(*, now: datetime | None = None) -> int:
    """Record and queue due expiration notices for every active alert; returns how many certificates fired."""
    now = (now or datetime.now(UTC)).astimezone(UTC)
    alerts = await Alert.filter(is_active=True).order_by("id")
    fired = 0
    for alert in alerts:
        if "expiration" in (alert.event_types or []):
            fired += await _scan_alert(alert, now)
    return fired
