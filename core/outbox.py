"""Domain events written in the same transaction as the change; the worker delivers them later."""

from __future__ import annotations

import uuid
from typing import Any

from tortoise.backends.base.client import BaseDBAsyncClient

from models import OutboxEvent

CERTIFICATE_ISSUED = "certificate.issued"
CERTIFICATE_RENEWED = "certificate.renewed"
CERTIFICATE_REVOKED = "certificate.revoked"
# Auto-renewal failed (policy changed, CA disabled, profile gone); it is retried later with backoff.
CERTIFICATE_RENEWAL_FAILED = "certificate.renewal_failed"
# A request waits for the approvers of its current step (core/approval.py); no certificate exists yet.
APPROVAL_REQUESTED = "approval.requested"

EVENT_TYPES = frozenset(
    {
        CERTIFICATE_ISSUED,
        CERTIFICATE_RENEWED,
        CERTIFICATE_REVOKED,
        CERTIFICATE_RENEWAL_FAILED,
        APPROVAL_REQUESTED,
    }
)


async def emit(
    *,
    event_type: str,
    organization_id: uuid.UUID,
    application_id: uuid.UUID | None,
    certificate_id: uuid.UUID | None,
    payload: dict[str, Any],
    connection: BaseDBAsyncClient,
) -> OutboxEvent:
    """Queue one event inside the caller's transaction (required: an event must commit with its change).

    The payload is delivered to webhooks and alert channels: never put a secret in it.
    """
    if event_type not in EVENT_TYPES:
        raise ValueError(f"unknown outbox event type {event_type!r}")
    event = OutboxEvent(
        id=uuid.uuid4(),
        organization_id=organization_id,
        event_type=event_type,
        application_id=application_id,
        certificate_id=certificate_id,
        payload=payload,
    )
    await event.save(using_db=connection, force_create=True)
    return event
