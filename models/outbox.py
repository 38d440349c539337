from __future__ import annotations

from typing import Any

from tortoise import fields
from tortoise.models import Model


class OutboxEvent(Model):
    """A domain event written in the same transaction as the change, delivered by the worker."""

    id = fields.UUIDField(primary_key=True)
    organization_id = fields.UUIDField()
    event_type = fields.CharField(max_length=64)  # certificate.issued | certificate.renewed | ...
    application_id = fields.UUIDField(null=True)
    certificate_id = fields.UUIDField(null=True)
    payload: fields.JSONField[Any] = fields.JSONField(default=dict)
    created_at = fields.DatetimeField(auto_now_add=True)
    claimed_at = fields.DatetimeField(null=True)
    processed_at = fields.DatetimeField(null=True)
    attempts = fields.IntField(default=0)

    class Meta:
        table = "outbox_event"
        indexes = (("processed_at", "created_at"),)
