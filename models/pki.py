"""Shared PKI managed by Product Admins: authorities, policies, profiles."""

from __future__ import annotations

import uuid
from typing import TYPE_CHECKING, Any

from tortoise import fields
from tortoise.models import Model

from models.enums import CaKind, CaStatus

if TYPE_CHECKING:
    from models.organization import Organization


class CertificateAuthority(Model):
    id = fields.UUIDField(primary_key=True)
    organization: fields.ForeignKeyRelation[Organization] = fields.ForeignKeyField(
        "models.Organization", related_name="cas"
    )
    organization_id: uuid.UUID
    name = fields.CharField(max_length=100)
    kind = fields.CharEnumField(CaKind, max_length=16)
    parent: fields.ForeignKeyNullableRelation[CertificateAuthority] = fields.ForeignKeyField(
        "models.CertificateAuthority", related_name="children", null=True
    )
    parent_id: uuid.UUID | None
    external_parent = fields.BooleanField(default=False)
    status = fields.CharEnumField(CaStatus, max_length=24)
    key_algorithm = fields.CharField(max_length=16)
    subject_dn = fields.TextField()
    path_length = fields.IntField(null=True)
    certificate_pem = fields.TextField(null=True)
    csr_pem = fields.TextField(null=True)
    # An external parent's certificate and its issuers (PEM, parent first), as imported with the certificate.
    chain_pem = fields.TextField(null=True)
    # AES-256-GCM under the KEK, associated data b"ca:<id>".
    encrypted_private_key = fields.BinaryField()
    serial_hex = fields.CharField(max_length=64, null=True)
    not_before = fields.DatetimeField(null=True)
    not_after = fields.DatetimeField(null=True)
    crl_number = fields.BigIntField(default=0)
    crl_der = fields.BinaryField(null=True)
    crl_next_update = fields.DatetimeField(null=True)
    created_at = fields.DatetimeField(auto_now_add=True)
    updated_at = fields.DatetimeField(auto_now=True)

    class Meta:
        table = "certificate_authority"
        unique_together = (("organization_id", "name"),)
        indexes = (("status", "crl_next_update"),)


class CertificatePolicy(Model):
    id = fields.UUIDField(primary_key=True)
    organization: fields.ForeignKeyRelation[Organization] = fields.ForeignKeyField(
        "models.Organization", related_name="policies"
    )
    organization_id: uuid.UUID
    name = fields.CharField(max_length=100)
    description = fields.TextField(default="")
    rules: fields.JSONField[Any] = fields.JSONField(default=dict)  # pki.policy.PolicyRules.to_dict()
    created_at = fields.DatetimeField(auto_now_add=True)
    updated_at = fields.DatetimeField(auto_now=True)

    class Meta:
        table = "certificate_policy"
        unique_together = (("organization_id", "name"),)


class CertificateProfile(Model):
    id = fields.UUIDField(primary_key=True)
    organization: fields.ForeignKeyRelation[Organization] = fields.ForeignKeyField(
        "models.Organization", related_name="profiles"
    )
    organization_id: uuid.UUID
    name = fields.CharField(max_length=100)
    description = fields.TextField(default="")
    ca: fields.ForeignKeyRelation[CertificateAuthority] = fields.ForeignKeyField(
        "models.CertificateAuthority", related_name="profiles"
    )
    ca_id: uuid.UUID
    policy: fields.ForeignKeyRelation[CertificatePolicy] = fields.ForeignKeyField(
        "models.CertificatePolicy", related_name="profiles"
    )
    policy_id: uuid.UUID
    default_validity = fields.CharField(max_length=16, default="90d")
    default_key_algorithm = fields.CharField(max_length=16, default="EC_P256")
    default_key_usages: fields.JSONField[Any] = fields.JSONField(default=list)
    default_extended_key_usages: fields.JSONField[Any] = fields.JSONField(default=list)
    default_subject: fields.JSONField[Any] = fields.JSONField(default=list)  # [[type, value], ...]
    renew_before_days = fields.IntField(default=30)
    # The legacy project whose export created this profile (its enrollment is baked in, read-only).
    legacy_project_id = fields.UUIDField(null=True)
    # Deleting a profile stops new issuance; its certificates keep pointing at it.
    deleted_at = fields.DatetimeField(null=True)
    created_at = fields.DatetimeField(auto_now_add=True)
    updated_at = fields.DatetimeField(auto_now=True)

    class Meta:
        table = "certificate_profile"
        unique_together = (("organization_id", "name"),)
