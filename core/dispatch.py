"""The outbox dispatcher: each domain event becomes one delivery per channel of every matching alert.

Claiming, fan-out and marking the event processed happen in one transaction, so an event is fanned out once
(FOR UPDATE SKIP LOCKED keeps PostgreSQL replicas apart) and a crash simply leaves it for the next run.
"""

from __future__ import annotations

import logging
import re
import uuid
from datetime import UTC, datetime
from typing import Any

from tortoise.backends.base.client import BaseDBAsyncClient
from tortoise.expressions import F
from tortoise.transactions import in_transaction

from core import delivery, sync
from core.channel import Notification
from models import Alert, Application, Certificate, OutboxEvent

log = logging.getLogger("keyward.dispatch")

# Outbox event type -> the alert event type that subscribes to it.
ALERT_EVENT_TYPES = {
    "certificate.issued": "issuance",
    "certificate.renewed": "renewal",
    "certificate.revoked": "revocation",
    "certificate.renewal_failed": "renewal",
    "approval.requested": "approval",
}

# Payload keys that describe the certificate (already in `certificates`); the rest become `details`.
_CERTIFICATE_KEYS = {
    "certificate_id",
    "serial",
    "common_name",
    "sans",
    "not_after",
    "not_before",
    "profile_id",
    "enrollment_method",
}


def _camel(key: str) -> str:
    return re.sub(r"_([a-z0-9])", lambda m: m.group(1).upper(), key)


def _details(event: OutboxEvent) -> dict[str, Any]:
    payload = event.payload if isinstance(event.payload, dict) else {}
    return {_camel(k): v for k, v in payload.items() if k not in _CERTIFICATE_KEYS and v is not None}


async def _fan_out(event: OutboxEvent, conn: BaseDBAsyncClient, cache: dict[Any, Any]) -> int:
    """Deliveries for one event; returns how many were queued."""
    alert_type = ALERT_EVENT_TYPES.get(event.event_type)
    if alert_type is None or event.application_id is None:
        return 0
    key = ("alerts", event.application_id)
    if key not in cache:
        cache[key] = [
            a
            for a in await Alert.filter(application_id=event.application_id, is_active=True)
            .using_db(conn)
            .prefetch_related("channels")
        ]
    alerts = [a for a in cache[key] if alert_type in (a.event_types or [])]
    if not alerts:
        return 0
    if alert_type == "approval":
        return await _fan_out_approval(event, alerts, conn, cache)
    certificate = None
    if event.certificate_id is not None:
        certificate = await Certificate.filter(id=event.certificate_id).using_db(conn).first()
    if certificate is None:
        log.warning("outbox event %s names no certificate that exists; no alert can match it", event.id)
        return 0
    app_key = ("application", event.application_id)
    if app_key not in cache:
        cache[app_key] = await Application.filter(id=event.application_id).using_db(conn).get()
    names = await delivery.profile_names([certificate.profile_id], conn)
    entry = delivery.certificate_entry(certificate, names.get(certificate.profile_id))
    queued = 0
    for alert in alerts:
        if not delivery.alert_matches(alert, certificate):
            continue
        notification = Notification(
            event_id=event.id,
            event_type=event.event_type,
            occurred_at=event.created_at,
            organization_id=event.organization_id,
            application_id=event.application_id,
            application_name=cache[app_key].name,
            alert_name=alert.name,
            certificates=[entry],
            details=_details(event),
        )
        queued += await delivery.enqueue(
            alert=alert,
            channels=sorted(alert.channels, key=lambda c: c.position),
            notification=notification,
            conn=conn,
            ignore_existing=True,
        )
    return queued


async def _fan_out_approval(
    event: OutboxEvent, alerts: list[Any], conn: BaseDBAsyncClient, cache: dict[Any, Any]
) -> int:
    """An approval request has no certificate yet: alerts filter on its profile only."""
    payload = event.payload if isinstance(event.payload, dict) else {}
    assert event.application_id is not None
    app_key = ("application", event.application_id)
    if app_key not in cache:
        cache[app_key] = await Application.filter(id=event.application_id).using_db(conn).get()
    queued = 0
    for alert in alerts:
        if alert.profile_ids and str(payload.get("profile_id")) not in {str(p) for p in alert.profile_ids}:
            continue
        notification = Notification(
            event_id=event.id,
            event_type=event.event_type,
            occurred_at=event.created_at,
            organization_id=event.organization_id,
            application_id=event.application_id,
            application_name=cache[app_key].name,
            alert_name=alert.name,
            details={_camel(k): v for k, v in payload.items() if v is not None},
        )
        queued += await delivery.enqueue(
            alert=alert,
            channels=sorted(alert.channels, key=lambda c: c.position),
            notification=notification,
            conn=conn,
            ignore_existing=True,
        )
    return queued


async def dispatch_outbox(*, batch_size: int = 100) -> int:
    """Fan out every unprocessed outbox event, oldest first; returns how many events were processed."""
    processed = 0
    while True:
        async with in_transaction() as conn:
            events = await (
                OutboxEvent.select_for_update(skip_locked=True)
                .using_db(conn)
                .filter(processed_at__isnull=True)
                .order_by("created_at", "id")
                .limit(batch_size)
            )
            cache: dict[Any, Any] = {}
            for event in events:
                await _fan_out(event, conn, cache)
                await sync.on_outbox_event(event, conn, cache)  # syncs (core/sync.py)
            if events:
                now = datetime.now(UTC)
                ids: list[uuid.UUID] = [e.id for e in events]
                await (
                    OutboxEvent.filter(id__in=ids)
                    .using_db(conn)
                    .update(claimed_at=now, processed_at=now, attempts=F("attempts") + 1)
                )
        processed += len(events)
        if len(events) < batch_size:
            return processed
