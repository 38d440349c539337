"""SCEP (RFC 8894) state per application-profile attachment: dynamic one-time challenges, and transactions
(so GetCertInitial can answer a PENDING request once it is decided)."""

from __future__ import annotations

import uuid
from typing import TYPE_CHECKING

from tortoise import fields
from tortoise.models import Model

if TYPE_CHECKING:
    from models.application import ApplicationProfile
    from models.certificate import Certificate
    from models.principal import Principal


class ScepChallenge(Model):
    """A one-time challenge password, shown once to its creator and stored as a SHA-256 hash.

    It carries 256 random bits, so a fast hash is enough, and it is looked up by that hash.
    """

    id = fields.UUIDField(primary_key=True)
    attachment: fields.ForeignKeyRelation[ApplicationProfile] = fields.ForeignKeyField(
        "models.ApplicationProfile", related_name="scep_challenges"
    )
    attachment_id: uuid.UUID
    challenge_hash = fields.CharField(max_length=64, unique=True)
    expires_at = fields.DatetimeField()
    used_at = fields.DatetimeField(null=True)
    # The certificate whose issuance consumed it.
    certificate: fields.ForeignKeyNullableRelation[Certificate] = fields.ForeignKeyField(
        "models.Certificate", related_name="scep_challenges", null=True
    )
    certificate_id: uuid.UUID | None
    created_by: fields.ForeignKeyNullableRelation[Principal] = fields.ForeignKeyField(
        "models.Principal", related_name="scep_challenges", null=True, on_delete=fields.SET_NULL
    )
    created_by_id: uuid.UUID | None
    created_at = fields.DatetimeField(auto_now_add=True)

    class Meta:
        table = "scep_challenge"
        # The pending count (used_at null, expires_at ahead) per attachment.
        indexes = (("attachment_id", "used_at", "expires_at"),)


class ScepTransaction(Model):
    """One enrollment by transaction id: pending (awaiting approval), issued or failed."""

    id = fields.UUIDField(primary_key=True)
    attachment: fields.ForeignKeyRelation[ApplicationProfile] = fields.ForeignKeyField(
        "models.ApplicationProfile", related_name="scep_transactions"
    )
    attachment_id: uuid.UUID
    transaction_id = fields.CharField(max_length=128)
    message_type = fields.CharField(max_length=4)  # 19 PKCSReq | 17 RenewalReq
    status = fields.CharField(max_length=16)  # pending | issued | failed
    # The request, kept while pending so an approval can issue it.
    csr_der = fields.BinaryField(null=True)
    certificate: fields.ForeignKeyNullableRelation[Certificate] = fields.ForeignKeyField(
        "models.Certificate", related_name="scep_transactions", null=True
    )
    certificate_id: uuid.UUID | None
    created_at = fields.DatetimeField(auto_now_add=True)
    updated_at = fields.DatetimeField(auto_now=True)

    class Meta:
        table = "scep_transaction"
        indexes = (("attachment_id", "transaction_id", "created_at"),)
