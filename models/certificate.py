from __future__ import annotations

import uuid
from typing import TYPE_CHECKING, Any

from tortoise import fields
from tortoise.models import Model

from models.enums import CertificateSource, CertificateStatus, EnrollmentMethod

if TYPE_CHECKING:
    from models.application import Application
    from models.organization import Organization
    from models.pki import CertificateAuthority, CertificateProfile


class Certificate(Model):
    id = fields.UUIDField(primary_key=True)
    organization: fields.ForeignKeyRelation[Organization] = fields.ForeignKeyField(
        "models.Organization", related_name="certificates"
    )
    organization_id: uuid.UUID
    # An application inventory, legacy-project certificates (a later issue) have none.
    application: fields.ForeignKeyNullableRelation[Application] = fields.ForeignKeyField(
        "models.Application", related_name="certificates", null=True
    )
    application_id: uuid.UUID | None
    legacy_project_id = fields.UUIDField(null=True)
    profile: fields.ForeignKeyNullableRelation[CertificateProfile] = fields.ForeignKeyField(
        "models.CertificateProfile", related_name="certificates", null=True
    )
    profile_id: uuid.UUID | None
    ca: fields.ForeignKeyNullableRelation[CertificateAuthority] = fields.ForeignKeyField(
        "models.CertificateAuthority", related_name="certificates", null=True
    )
    ca_id: uuid.UUID | None
    serial_hex = fields.CharField(max_length=64)
    common_name = fields.CharField(max_length=255, null=True)
    subject_dn = fields.TextField()
    sans: fields.JSONField[Any] = fields.JSONField(
        default=list
    )  # [{"type": "DNS", "value": "a.example.com"}, ...]
    # Lower-cased CN and SAN values, so the name filter is one LIKE inside an application's rows.
    name_search = fields.TextField(default="")
    key_algorithm = fields.CharField(max_length=16)
    signature_algorithm = fields.CharField(max_length=32)
    key_usages: fields.JSONField[Any] = fields.JSONField(default=list)
    extended_key_usages: fields.JSONField[Any] = fields.JSONField(default=list)
    not_before = fields.DatetimeField()
    not_after = fields.DatetimeField()
    status = fields.CharEnumField(CertificateStatus, max_length=16, default=CertificateStatus.ACTIVE)
    source = fields.CharEnumField(CertificateSource, max_length=16)
    enrollment_method = fields.CharEnumField(EnrollmentMethod, max_length=16)
    auto_renew = fields.BooleanField(default=False)
    renew_before_days = fields.IntField(default=30)
    renewed_from: fields.ForeignKeyNullableRelation[Certificate] = fields.ForeignKeyField(
        "models.Certificate", related_name="renewals", null=True, on_delete=fields.SET_NULL
    )
    renewed_from_id: uuid.UUID | None
    revoked_at = fields.DatetimeField(null=True)
    revocation_reason = fields.CharField(max_length=32, null=True)
    certificate_pem = fields.TextField()
    chain_pem = fields.TextField(default="")  # issuing CA up to, not including, the root
    # Only for imported certificates whose issuer is not one of our CAs: the root that came with them.
    root_pem = fields.TextField(null=True)
    # PKCS#8 PEM sealed under the KEK with associated data b"cert:<id>"; only for server-generated keys.
    encrypted_private_key = fields.BinaryField(null=True)
    fingerprint_sha256 = fields.CharField(max_length=64)
    metadata: fields.JSONField[Any] = fields.JSONField(default=dict)
    # When the worker should renew it: notAfter minus renew-before days, set only while auto-renew applies
    # (active, server-held key), so the renewal sweep reads due rows through one index.
    renewal_due_at = fields.DatetimeField(null=True)
    renewal_error = fields.TextField(null=True)
    renewal_attempts = fields.IntField(default=0)
    next_renewal_attempt_at = fields.DatetimeField(null=True)
    created_by_id = fields.UUIDField(null=True)
    created_at = fields.DatetimeField(auto_now_add=True)
    updated_at = fields.DatetimeField(auto_now=True)

    class Meta:
        table = "certificate"
        # The second pair makes a duplicate import into the same application fail even under a race.
        unique_together = (("ca_id", "serial_hex"), ("application_id", "fingerprint_sha256"))
        indexes = (
            ("application_id", "created_at", "id"),  # inventory page order (keyset: created_at, id)
            ("application_id", "status", "not_after"),  # status / expiring-before filters
            ("application_id", "profile_id", "created_at", "id"),
            ("status", "not_after"),  # expiry sweeps
            ("renewal_due_at",),  # renewal sweep
            ("ca_id", "status"),  # CRL build
            ("organization_id", "created_at"),
        )
