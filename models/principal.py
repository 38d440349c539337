"""Users and machine identities share one table: both hold roles the same way (SPEC §2)."""

from __future__ import annotations

import uuid
from typing import TYPE_CHECKING

from tortoise import fields
from tortoise.models import Model

from models.enums import PrincipalKind, TokenKind

if TYPE_CHECKING:
    from models.organization import Organization


class Principal(Model):
    id = fields.UUIDField(primary_key=True)
    organization: fields.ForeignKeyRelation[Organization] = fields.ForeignKeyField(
        "models.Organization", related_name="principals"
    )
    organization_id: uuid.UUID
    kind = fields.CharEnumField(PrincipalKind, max_length=16)
    name = fields.CharField(max_length=200)
    # Users log in by email; machine identities have none.
    email = fields.CharField(max_length=320, null=True, unique=True)
    password_hash = fields.CharField(max_length=255, null=True)
    is_active = fields.BooleanField(default=True)
    created_at = fields.DatetimeField(auto_now_add=True)

    class Meta:
        table = "principal"
        indexes = (("organization_id", "kind"),)


class ApiToken(Model):
    """A bearer token: only its SHA-256 is stored, the plaintext is shown once."""

    id = fields.UUIDField(primary_key=True)
    principal: fields.ForeignKeyRelation[Principal] = fields.ForeignKeyField(
        "models.Principal", related_name="tokens"
    )
    principal_id: uuid.UUID
    kind = fields.CharEnumField(TokenKind, max_length=16)
    name = fields.CharField(max_length=200, default="")
    token_hash = fields.CharField(max_length=64, unique=True)
    prefix = fields.CharField(max_length=16)
    expires_at = fields.DatetimeField(null=True)
    revoked_at = fields.DatetimeField(null=True)
    last_used_at = fields.DatetimeField(null=True)
    created_at = fields.DatetimeField(auto_now_add=True)

    class Meta:
        table = "api_token"
