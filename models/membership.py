from __future__ import annotations

import uuid
from typing import TYPE_CHECKING

from tortoise import fields
from tortoise.models import Model

from models.enums import ApplicationRole, ProductRole

if TYPE_CHECKING:
    from models.application import Application
    from models.organization import Organization
    from models.principal import Principal


class ProductMembership(Model):
    id = fields.UUIDField(primary_key=True)
    organization: fields.ForeignKeyRelation[Organization] = fields.ForeignKeyField(
        "models.Organization", related_name="product_memberships"
    )
    organization_id: uuid.UUID
    principal: fields.OneToOneRelation[Principal] = fields.OneToOneField(
        "models.Principal", related_name="product_membership"
    )
    principal_id: uuid.UUID
    role = fields.CharEnumField(ProductRole, max_length=16)
    created_at = fields.DatetimeField(auto_now_add=True)

    class Meta:
        table = "product_membership"


class ApplicationMembership(Model):
    id = fields.UUIDField(primary_key=True)
    application: fields.ForeignKeyRelation[Application] = fields.ForeignKeyField(
        "models.Application", related_name="memberships"
    )
    application_id: uuid.UUID
    principal: fields.ForeignKeyRelation[Principal] = fields.ForeignKeyField(
        "models.Principal", related_name="application_memberships"
    )
    principal_id: uuid.UUID
    role = fields.CharEnumField(ApplicationRole, max_length=16)
    created_at = fields.DatetimeField(auto_now_add=True)

    class Meta:
        table = "application_membership"
        unique_together = (("application_id", "principal_id"),)
        indexes = (("principal_id",),)
