"""Alerts of an application (SPEC §9), their channels, and the delivery log."""

from __future__ import annotations

import uuid
from typing import TYPE_CHECKING, Any

from tortoise import fields
from tortoise.models import Model

from models.enums import ChannelType, DeliveryStatus

if TYPE_CHECKING:
    from models.application import Application
    from models.certificate import Certificate


class Alert(Model):
    id = fields.UUIDField(primary_key=True)
    application: fields.ForeignKeyRelation[Application] = fields.ForeignKeyField(
        "models.Application", related_name="alerts"
    )
    application_id: uuid.UUID
    name = fields.CharField(max_length=100)
    # Any of: expiration, issuance, renewal, revocation.
    event_types: fields.JSONField[Any] = fields.JSONField(default=list)
    # Expiration thresholds in whole days, largest first, e.g. [30, 7, 1].
    thresholds_days: fields.JSONField[Any] = fields.JSONField(default=list)
    daily_repeat = fields.BooleanField(default=False)
    # Filters: profile ids (empty = every profile) and a name pattern over CN and SANs (null = any).
    profile_ids: fields.JSONField[Any] = fields.JSONField(default=list)
    name_pattern = fields.CharField(max_length=255, null=True)
    is_active = fields.BooleanField(default=True)
    created_at = fields.DatetimeField(auto_now_add=True)
    updated_at = fields.DatetimeField(auto_now=True)

    class Meta:
        table = "alert"
        unique_together = (("application_id", "name"),)
        indexes = (("is_active", "application_id"),)


class AlertChannel(Model):
    id = fields.UUIDField(primary_key=True)
    alert: fields.ForeignKeyRelation[Alert] = fields.ForeignKeyField("models.Alert", related_name="channels")
    alert_id: uuid.UUID
    type = fields.CharEnumField(ChannelType, max_length=16)
    position = fields.IntField(default=0)
    # What may be shown to every reader: recipients, the webhook URL, the Slack channel label.
    config: fields.JSONField[Any] = fields.JSONField(default=dict)
    # Write-only secret sealed under the KEK (context b"channel:<id>"): webhook signing secret,
    # Slack incoming-webhook URL, PagerDuty routing key.
    encrypted_secret = fields.BinaryField(null=True)
    created_at = fields.DatetimeField(auto_now_add=True)

    class Meta:
        table = "alert_channel"


class Delivery(Model):
    """One notification to one channel, retried with backoff until it succeeds or is dead."""

    id = fields.UUIDField(primary_key=True)
    alert: fields.ForeignKeyRelation[Alert] = fields.ForeignKeyField(
        "models.Alert", related_name="deliveries"
    )
    alert_id: uuid.UUID
    channel: fields.ForeignKeyRelation[AlertChannel] = fields.ForeignKeyField(
        "models.AlertChannel", related_name="deliveries"
    )
    channel_id: uuid.UUID
    # Stable across retries and workers: receivers de-duplicate on it.
    event_id = fields.UUIDField()
    event_type = fields.CharField(max_length=64)
    payload: fields.JSONField[Any] = fields.JSONField(default=dict)
    status = fields.CharEnumField(DeliveryStatus, max_length=16, default=DeliveryStatus.PENDING)
    attempts = fields.IntField(default=0)
    next_attempt_at = fields.DatetimeField()
    # A worker that claims a delivery leases it until then; a crashed worker's lease simply runs out.
    leased_until = fields.DatetimeField(null=True)
    last_error = fields.TextField(null=True)
    created_at = fields.DatetimeField(auto_now_add=True)
    updated_at = fields.DatetimeField(auto_now=True)

    class Meta:
        table = "delivery"
        unique_together = (("channel_id", "event_id"),)
        indexes = (("status", "next_attempt_at"), ("alert_id", "created_at"))


class DeliveryAttempt(Model):
    id = fields.UUIDField(primary_key=True)
    delivery: fields.ForeignKeyRelation[Delivery] = fields.ForeignKeyField(
        "models.Delivery", related_name="attempt_log"
    )
    delivery_id: uuid.UUID
    attempted_at = fields.DatetimeField()
    succeeded = fields.BooleanField()
    http_status = fields.IntField(null=True)
    smtp_reply = fields.TextField(null=True)
    error = fields.TextField(null=True)
    duration_ms = fields.IntField(default=0)

    class Meta:
        table = "delivery_attempt"
        indexes = (("delivery_id", "attempted_at"),)


class ExpirationNotice(Model):
    """Proof that an expiration alert fired for (alert, certificate, threshold[, day]): the unique key is
    what makes it fire once whatever the number of workers and restarts."""

    id = fields.UUIDField(primary_key=True)
    alert: fields.ForeignKeyRelation[Alert] = fields.ForeignKeyField("models.Alert", related_name="notices")
    alert_id: uuid.UUID
    certificate: fields.ForeignKeyRelation[Certificate] = fields.ForeignKeyField(
        "models.Certificate", related_name="expiration_notices"
    )
    certificate_id: uuid.UUID
    threshold_days = fields.IntField()
    # "once" for a once-per-threshold alert; the ISO day for daily repeats. Never NULL: SQL unique keys
    # treat NULLs as distinct, which would let duplicates through.
    notice_key = fields.CharField(max_length=10, default="once")
    created_at = fields.DatetimeField(auto_now_add=True)

    class Meta:
        table = "expiration_notice"
        unique_together = (("alert_id", "certificate_id", "threshold_days", "notice_key"),)
