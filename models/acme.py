"""ACME (RFC 8555) state per application-profile attachment: accounts, orders, authorizations, challenges,
and nonces (in the database, so any API replica can check a nonce another one issued)."""

from __future__ import annotations

import uuid
from typing import TYPE_CHECKING, Any

from tortoise import fields
from tortoise.models import Model

if TYPE_CHECKING:
    from models.application import ApplicationProfile
    from models.certificate import Certificate


class AcmeAccount(Model):
    id = fields.UUIDField(primary_key=True)
    attachment: fields.ForeignKeyRelation[ApplicationProfile] = fields.ForeignKeyField(
        "models.ApplicationProfile", related_name="acme_accounts"
    )
    attachment_id: uuid.UUID
    # RFC 7638 thumbprint (base64url SHA-256) of the account key: one account per key per directory.
    key_thumbprint = fields.CharField(max_length=64)
    jwk: fields.JSONField[Any] = fields.JSONField()
    status = fields.CharField(max_length=16, default="valid")  # valid | deactivated | revoked
    contact: fields.JSONField[Any] = fields.JSONField(default=list)
    eab_kid = fields.CharField(max_length=128, null=True)
    created_at = fields.DatetimeField(auto_now_add=True)
    updated_at = fields.DatetimeField(auto_now=True)

    class Meta:
        table = "acme_account"
        unique_together = (("attachment_id", "key_thumbprint"),)


class AcmeOrder(Model):
    id = fields.UUIDField(primary_key=True)
    account: fields.ForeignKeyRelation[AcmeAccount] = fields.ForeignKeyField(
        "models.AcmeAccount", related_name="orders"
    )
    account_id: uuid.UUID
    status = fields.CharField(
        max_length=16, default="pending"
    )  # pending | ready | processing | valid | invalid
    identifiers: fields.JSONField[Any] = fields.JSONField()  # [{"type": "dns"|"ip", "value": ...}]
    authorization_ids: fields.JSONField[Any] = fields.JSONField(default=list)
    not_before = fields.DatetimeField(null=True)
    not_after = fields.DatetimeField(null=True)
    expires_at = fields.DatetimeField()
    error: fields.JSONField[Any] = fields.JSONField(null=True)
    certificate: fields.ForeignKeyNullableRelation[Certificate] = fields.ForeignKeyField(
        "models.Certificate", related_name="acme_orders", null=True
    )
    certificate_id: uuid.UUID | None
    # RFC 9773 §5: the certificate this order replaces, as the client named it and as it was found.
    replaces = fields.CharField(max_length=512, null=True)
    replaces_certificate: fields.ForeignKeyNullableRelation[Certificate] = fields.ForeignKeyField(
        "models.Certificate", related_name="replacing_orders", null=True, on_delete=fields.SET_NULL
    )
    replaces_certificate_id: uuid.UUID | None
    created_at = fields.DatetimeField(auto_now_add=True)
    updated_at = fields.DatetimeField(auto_now=True)

    class Meta:
        table = "acme_order"
        # certificate_id: a certificate download finds the order that issued it; replaces_certificate_id: a
        # new order finds another one replacing the same certificate.
        indexes = (("account_id", "created_at"), ("certificate_id",), ("replaces_certificate_id",))


class AcmeAuthorization(Model):
    id = fields.UUIDField(primary_key=True)
    account: fields.ForeignKeyRelation[AcmeAccount] = fields.ForeignKeyField(
        "models.AcmeAccount", related_name="authorizations"
    )
    account_id: uuid.UUID
    identifier_type = fields.CharField(max_length=8)  # dns | ip
    identifier_value = fields.CharField(max_length=255)  # without the "*." of a wildcard
    wildcard = fields.BooleanField(default=False)
    status = fields.CharField(
        max_length=16, default="pending"
    )  # pending | valid | invalid | deactivated | expired | revoked
    expires_at = fields.DatetimeField()
    created_at = fields.DatetimeField(auto_now_add=True)
    updated_at = fields.DatetimeField(auto_now=True)

    class Meta:
        table = "acme_authorization"
        # Reuse lookup: a valid, unexpired authorization of this account for this identifier.
        indexes = (("account_id", "identifier_type", "identifier_value", "status"),)


class AcmeChallenge(Model):
    id = fields.UUIDField(primary_key=True)
    authorization: fields.ForeignKeyRelation[AcmeAuthorization] = fields.ForeignKeyField(
        "models.AcmeAuthorization", related_name="challenges"
    )
    authorization_id: uuid.UUID
    type = fields.CharField(max_length=16)  # http-01 | dns-01 | tls-alpn-01
    token = fields.CharField(max_length=64)
    status = fields.CharField(max_length=16, default="pending")  # pending | processing | valid | invalid
    attempts = fields.IntField(default=0)
    next_attempt_at = fields.DatetimeField(null=True)
    validated_at = fields.DatetimeField(null=True)
    error: fields.JSONField[Any] = fields.JSONField(null=True)
    created_at = fields.DatetimeField(auto_now_add=True)
    updated_at = fields.DatetimeField(auto_now=True)

    class Meta:
        table = "acme_challenge"
        # authorization_id: every authorization is read with its challenges.
        indexes = (("status", "next_attempt_at"), ("authorization_id",))


class AcmeNonce(Model):
    """A replay nonce, deleted when used: a second use finds nothing and gets badNonce."""

    value = fields.CharField(max_length=64, primary_key=True)
    expires_at = fields.DatetimeField()

    class Meta:
        table = "acme_nonce"
        indexes = (("expires_at",),)
