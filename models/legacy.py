"""Legacy projects (SPEC §12): the old project model, imported from a legacy export, kept working.

A legacy project owns a container Application with the same id and `legacy=True`. Its profiles are
attached to the container with their one enrollment method, and its certificates, alerts, syncs and
approval policies live in the container, so issuance, the protocols, the worker and the inventory
serve legacy resources through the same services as an Application's. Legacy members hold legacy
roles, not application roles.
"""

from __future__ import annotations

import uuid
from typing import TYPE_CHECKING, Any

from tortoise import fields
from tortoise.models import Model

if TYPE_CHECKING:
    from models.application import Application
    from models.organization import Organization
    from models.principal import Principal


class LegacyProject(Model):
    """One imported legacy project. `id` equals the id of its container application."""

    id = fields.UUIDField(primary_key=True)
    organization: fields.ForeignKeyRelation[Organization] = fields.ForeignKeyField(
        "models.Organization", related_name="legacy_projects"
    )
    organization_id: uuid.UUID
    application: fields.OneToOneRelation[Application] = fields.OneToOneField(
        "models.Application", related_name="legacy_project"
    )
    application_id: uuid.UUID
    slug = fields.CharField(max_length=100)
    name = fields.CharField(max_length=200)
    description = fields.TextField(default="")
    format_version = fields.CharField(max_length=16)
    # SHA-256 of the imported document in canonical JSON: a re-run of the same file changes nothing.
    source_sha256 = fields.CharField(max_length=64)
    imported_at = fields.DatetimeField(auto_now_add=True)
    updated_at = fields.DatetimeField(auto_now=True)

    class Meta:
        table = "legacy_project"
        unique_together = (("organization_id", "slug"),)


class LegacyRole(Model):
    """A custom legacy role: permissions from the fixed vocabulary of core.legacy_roles, optionally
    limited by conditions such as {"profileSlugs": [...], "syncNames": [...]}."""

    id = fields.UUIDField(primary_key=True)
    project: fields.ForeignKeyRelation[LegacyProject] = fields.ForeignKeyField(
        "models.LegacyProject", related_name="roles", on_delete=fields.CASCADE
    )
    project_id: uuid.UUID
    slug = fields.CharField(max_length=100)
    name = fields.CharField(max_length=200)
    permissions: fields.JSONField[Any] = fields.JSONField(default=list)
    conditions: fields.JSONField[Any] = fields.JSONField(default=dict)

    class Meta:
        table = "legacy_role"
        unique_together = (("project_id", "slug"),)


class LegacyMembership(Model):
    """A principal's legacy role in a project: admin, member, viewer, or custom (with `custom_role`)."""

    id = fields.UUIDField(primary_key=True)
    project: fields.ForeignKeyRelation[LegacyProject] = fields.ForeignKeyField(
        "models.LegacyProject", related_name="memberships", on_delete=fields.CASCADE
    )
    project_id: uuid.UUID
    principal: fields.ForeignKeyRelation[Principal] = fields.ForeignKeyField(
        "models.Principal", related_name="legacy_memberships"
    )
    principal_id: uuid.UUID
    role = fields.CharField(max_length=16)  # admin | member | viewer | custom
    custom_role: fields.ForeignKeyNullableRelation[LegacyRole] = fields.ForeignKeyField(
        "models.LegacyRole", related_name="memberships", null=True, on_delete=fields.CASCADE
    )
    custom_role_id: uuid.UUID | None
    created_at = fields.DatetimeField(auto_now_add=True)

    class Meta:
        table = "legacy_membership"
        unique_together = (("project_id", "principal_id"),)
        indexes = (("principal_id",),)


class LegacyResource(Model):
    """What each item of the export became: (kind, slug in the file) -> the row it created. Re-running an
    import finds its rows here, and the migration assistant maps legacy rows back to the file's names."""

    id = fields.UUIDField(primary_key=True)
    project: fields.ForeignKeyRelation[LegacyProject] = fields.ForeignKeyField(
        "models.LegacyProject", related_name="resources", on_delete=fields.CASCADE
    )
    project_id: uuid.UUID
    kind = fields.CharField(max_length=24)  # ca | policy | profile | certificate | alert | sync | ...
    slug = fields.CharField(max_length=200)
    target_id = fields.UUIDField()
    content_sha256 = fields.CharField(max_length=64)

    class Meta:
        table = "legacy_resource"
        unique_together = (("project_id", "kind", "slug"),)
        indexes = (("target_id",),)


class LegacyMigration(Model):
    """One row per legacy resource that `applyMigration` recreated inside an application, so a second
    run finds it and changes nothing."""

    id = fields.UUIDField(primary_key=True)
    project: fields.ForeignKeyRelation[LegacyProject] = fields.ForeignKeyField(
        "models.LegacyProject", related_name="migrations", on_delete=fields.CASCADE
    )
    project_id: uuid.UUID
    application: fields.ForeignKeyRelation[Application] = fields.ForeignKeyField(
        "models.Application", related_name="migrated_from"
    )
    application_id: uuid.UUID
    source_kind = fields.CharField(max_length=24)  # attachment | alert | sync | approval_policy | member
    source_id = fields.UUIDField()
    target_id = fields.UUIDField()
    created_at = fields.DatetimeField(auto_now_add=True)

    class Meta:
        table = "legacy_migration"
        unique_together = (("project_id", "application_id", "source_kind", "source_id"),)
