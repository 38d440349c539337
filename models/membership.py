from __future__ import annotations

from tortoise import fields
from tortoise.models import Model

from models.enums import ApplicationRole, ProductRole


class ProductMembership(Model):
    id = fields.UUIDField(primary_key=True)
    organization = fields.ForeignKeyField("models.Organization", related_name="product_memberships")
    principal = fields.OneToOneField("models.Principal", related_name="product_membership")
    role = fields.CharEnumField(ProductRole, max_length=16)
    created_at = fields.DatetimeField(auto_now_add=True)

    class Meta:
        table = "product_membership"


class ApplicationMembership(Model):
    id = fields.UUIDField(primary_key=True)
    application = fields.ForeignKeyField("models.Application", related_name="memberships")
    principal = fields.ForeignKeyField("models.Principal", related_name="application_memberships")
    role = fields.CharEnumField(ApplicationRole, max_length=16)
    created_at = fields.DatetimeField(auto_now_add=True)

    class Meta:
        table = "application_membership"
        unique_together = (("application_id", "principal_id"),)
        indexes = (("principal_id",),)
