from __future__ import annotations

from typing import Any

from tortoise import fields
from tortoise.models import Model

from models.enums import AuditOutcome


class AuditEvent(Model):
    """One audited action: entry_hash covers this row and the hash of the row before it."""

    id = fields.BigIntField(primary_key=True)
    organization_id = fields.UUIDField(null=True)
    occurred_at = fields.DatetimeField()
    actor_id = fields.UUIDField(null=True)
    actor_kind = fields.CharField(max_length=16)  # user | machine | system | anonymous
    actor_name = fields.CharField(max_length=320, default="")
    action = fields.CharField(max_length=64)
    resource_type = fields.CharField(max_length=64)
    resource_id = fields.CharField(max_length=64, null=True)
    application_id = fields.UUIDField(null=True)
    outcome = fields.CharEnumField(AuditOutcome, max_length=16)
    source_address = fields.CharField(max_length=64, null=True)
    details: fields.JSONField[Any] = fields.JSONField(default=dict)
    previous_hash = fields.CharField(max_length=64)
    entry_hash = fields.CharField(max_length=64)

    class Meta:
        table = "audit_event"
        indexes = (("organization_id", "id"), ("application_id", "id"))


class AuditChainHead(Model):
    """Single row locked while appending, so concurrent writers never fork the hash chain."""

    id = fields.IntField(primary_key=True)
    last_hash = fields.CharField(max_length=64)

    class Meta:
        table = "audit_chain_head"
