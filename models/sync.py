"""Certificate syncs of an application (SPEC §10): destinations, and a status per (sync, certificate)."""

from __future__ import annotations

import uuid
from enum import Enum
from typing import TYPE_CHECKING, Any

from tortoise import fields
from tortoise.models import Model

if TYPE_CHECKING:
    from models.application import Application
    from models.certificate import Certificate


class SyncDestination(str, Enum):
    LOCAL = "local"
    SFTP = "sftp"
    HTTP = "http"
    AWS_ACM = "aws_acm"
    AWS_SECRETS = "aws_secrets"


class SyncFormat(str, Enum):
    PEM = "pem"
    PKCS12 = "pkcs12"
    JKS = "jks"


class SyncTargetStatus(str, Enum):
    PENDING = "pending"  # waiting for the worker
    RUNNING = "running"  # a worker holds it (until leased_until)
    SUCCEEDED = "succeeded"
    FAILED = "failed"  # retried at next_attempt_at, or given up when that is null
    REMOVED = "removed"  # taken off the destination (revoked, expired, replaced or by hand)


class SyncAction(str, Enum):
    PUSH = "push"
    REMOVE = "remove"


class Sync(Model):
    """A destination certificates of an application are pushed to, with its filters and options."""

    id = fields.UUIDField(primary_key=True)
    application: fields.ForeignKeyRelation[Application] = fields.ForeignKeyField(
        "models.Application", related_name="syncs"
    )
    application_id: uuid.UUID
    name = fields.CharField(max_length=100)
    destination = fields.CharEnumField(SyncDestination, max_length=16)
    # Non-secret connection settings shown to every reader (directory, host, url, region ...).
    connection: fields.JSONField[Any] = fields.JSONField(default=dict)
    # Write-only credentials (JSON object) sealed under the KEK with associated data b"sync:<id>".
    encrypted_credentials = fields.BinaryField(null=True)
    # Filters, each empty meaning any: attached profile ids, certificate ids, metadata key/values.
    profile_ids: fields.JSONField[Any] = fields.JSONField(default=list)
    certificate_ids: fields.JSONField[Any] = fields.JSONField(default=list)
    metadata_filter: fields.JSONField[Any] = fields.JSONField(default=dict)
    auto_sync = fields.BooleanField(default=True)
    remove_on_revoke = fields.BooleanField(default=True)
    remove_on_expiry = fields.BooleanField(default=False)
    include_root = fields.BooleanField(default=False)
    include_private_key = fields.BooleanField(default=True)
    name_template = fields.CharField(max_length=255, default="{{certificateId}}")
    format = fields.CharEnumField(SyncFormat, max_length=8, default=SyncFormat.PEM)
    # Pushes to this destination in flight at once (null means KEYWARD_SYNC_MAX_CONCURRENCY).
    max_concurrency = fields.IntField(null=True)
    created_at = fields.DatetimeField(auto_now_add=True)
    updated_at = fields.DatetimeField(auto_now=True)

    class Meta:
        table = "sync"
        unique_together = (("application_id", "name"),)
        indexes = (("application_id", "auto_sync"),)


class SyncTarget(Model):
    """The state of one certificate at one sync destination, retried with backoff until it succeeds."""

    id = fields.UUIDField(primary_key=True)
    sync: fields.ForeignKeyRelation[Sync] = fields.ForeignKeyField("models.Sync", related_name="targets")
    sync_id: uuid.UUID
    certificate: fields.ForeignKeyRelation[Certificate] = fields.ForeignKeyField(
        "models.Certificate", related_name="sync_targets"
    )
    certificate_id: uuid.UUID
    action = fields.CharEnumField(SyncAction, max_length=8, default=SyncAction.PUSH)
    status = fields.CharEnumField(SyncTargetStatus, max_length=16, default=SyncTargetStatus.PENDING)
    message = fields.TextField(null=True)
    attempts = fields.IntField(default=0)
    next_attempt_at = fields.DatetimeField(null=True)
    leased_until = fields.DatetimeField(null=True)
    last_started_at = fields.DatetimeField(null=True)
    last_finished_at = fields.DatetimeField(null=True)
    last_succeeded_at = fields.DatetimeField(null=True)
    # Where the certificate lives at the destination: a path, a URL, an ARN or a secret name.
    remote_reference = fields.TextField(null=True)
    # The predecessor's target this push replaces (renewal): removed at the destination once this succeeds.
    replaces_target_id = fields.UUIDField(null=True)
    created_at = fields.DatetimeField(auto_now_add=True)
    updated_at = fields.DatetimeField(auto_now=True)

    class Meta:
        table = "sync_target"
        unique_together = (("sync_id", "certificate_id"),)
        indexes = (("status", "next_attempt_at"), ("sync_id", "status"), ("certificate_id",))
