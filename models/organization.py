from __future__ import annotations

from tortoise import fields
from tortoise.models import Model


class Organization(Model):
    id = fields.UUIDField(primary_key=True)
    name = fields.CharField(max_length=128, unique=True)
    created_at = fields.DatetimeField(auto_now_add=True)

    class Meta:
        table = "organization"
