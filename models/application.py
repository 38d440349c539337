from __future__ import annotations

import uuid
from typing import TYPE_CHECKING

from tortoise import fields
from tortoise.models import Model

if TYPE_CHECKING:
    from models.organization import Organization
    from models.pki import CertificateProfile


class Application(Model):
    id = fields.UUIDField(primary_key=True)
    organization: fields.ForeignKeyRelation[Organization] = fields.ForeignKeyField(
        "models.Organization", related_name="applications"
    )
    organization_id: uuid.UUID
    name = fields.CharField(max_length=100)
    description = fields.TextField(default="")
    # The hidden container of a legacy project (models/legacy.py); never listed as an application.
    legacy = fields.BooleanField(default=False)
    created_at = fields.DatetimeField(auto_now_add=True)
    updated_at = fields.DatetimeField(auto_now=True)

    class Meta:
        table = "application"
        unique_together = (("organization_id", "name"),)


class ApplicationProfile(Model):
    """A profile attached to an application, with the enrollment methods enabled for that pair."""

    id = fields.UUIDField(primary_key=True)
    application: fields.ForeignKeyRelation[Application] = fields.ForeignKeyField(
        "models.Application", related_name="attachments"
    )
    application_id: uuid.UUID
    profile: fields.ForeignKeyRelation[CertificateProfile] = fields.ForeignKeyField(
        "models.CertificateProfile", related_name="attachments"
    )
    profile_id: uuid.UUID
    api_enabled = fields.BooleanField(default=True)
    # Auto-renewal of server-generated keys; renew_before_days None means the profile's value.
    api_auto_renew = fields.BooleanField(default=False)
    api_renew_before_days = fields.IntField(null=True)
    # ACME (RFC 8555): the directory of this pair; external account binding required by default.
    acme_enabled = fields.BooleanField(default=False)
    acme_eab_required = fields.BooleanField(default=True)
    # Not unique: a migrated attachment keeps its legacy profile's key id, so clients change only the URL.
    acme_eab_kid = fields.CharField(max_length=64, null=True, db_index=True)
    # The EAB HMAC key sealed under the KEK (context b"eab:<attachment id>"); revealed to app Admins only.
    acme_eab_hmac_encrypted = fields.BinaryField(null=True)
    # EST (RFC 7030): HTTP Basic (username and an argon2 hash of the passphrase, write-only) and/or TLS
    # client certificates issued by the uploaded bootstrap CA chain (PEM).
    est_enabled = fields.BooleanField(default=False)
    est_username = fields.CharField(max_length=64, null=True)
    est_passphrase_hash = fields.CharField(max_length=255, null=True)
    est_client_ca_pem = fields.TextField(null=True)
    # SCEP (RFC 8894): a static challenge (argon2 hash, write-only) or dynamic one-time challenges
    # (models/scep.py), and the pair's RA certificate with its RSA key sealed under the KEK
    # (context b"scep-ra:<attachment id>").
    scep_enabled = fields.BooleanField(default=False)
    scep_challenge_mode = fields.CharField(max_length=16, default="static")  # static | dynamic
    scep_static_challenge_hash = fields.CharField(max_length=255, null=True)
    scep_challenge_ttl_seconds = fields.IntField(default=3600)
    scep_max_pending_challenges = fields.IntField(default=100)
    scep_include_ca = fields.BooleanField(default=True)
    scep_allow_renewal = fields.BooleanField(default=True)
    scep_ra_certificate_pem = fields.TextField(null=True)
    scep_ra_key_encrypted = fields.BinaryField(null=True)
    created_at = fields.DatetimeField(auto_now_add=True)
    updated_at = fields.DatetimeField(auto_now=True)

    class Meta:
        table = "application_profile"
        unique_together = (("application_id", "profile_id"),)
