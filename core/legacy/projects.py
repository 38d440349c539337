"""Legacy projects as a caller sees them (SPEC §12): which ones, with counts, and their profiles and members.

A legacy project's alerts, syncs, approval policies and certificate inventory live in its container
application, so they are read through the same services as an Application's (core.alert, core.sync,
core.approval, core.certificate); this module adds what only a legacy project has.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from tortoise.functions import Count
from tortoise.models import Model

from core import authn, authz
from core.access import organization_scope
from core.authz import Actor, Permission, Scope
from core.errors import NotFound
from models import (
    Alert,
    Application,
    ApplicationProfile,
    ApprovalPolicy,
    Certificate,
    LegacyMembership,
    LegacyProject,
    LegacyResource,
    Sync,
)


@dataclass(frozen=True)
class LegacyProjectCounts:
    profiles: int = 0
    certificates: int = 0
    alerts: int = 0
    syncs: int = 0
    approval_policies: int = 0
    members: int = 0


def project_scope(project: LegacyProject) -> Scope:
    return Scope(organization_id=project.organization_id, application_id=project.application_id)


async def list_projects(*, actor: Actor) -> list[LegacyProject]:
    """The legacy projects the actor may see, by slug: Product Admins all, others those they belong to."""
    scope = organization_scope(actor)
    query = LegacyProject.filter(organization_id=scope.organization_id)
    visible = authz.legacy_project_ids_visible_to(actor)
    if visible is not None:
        if not visible:
            return []
        query = query.filter(application_id__in=list(visible))
    return await query.order_by("slug", "id")


async def get_project(*, actor: Actor, project_id: uuid.UUID) -> LegacyProject:
    """One legacy project; NOT_FOUND when it does not exist or the actor may not see it."""
    scope = organization_scope(actor)
    project = await LegacyProject.get_or_none(id=project_id, organization_id=scope.organization_id)
    if project is None or not authz.can_see_application(actor, project_scope(project)):
        raise NotFound(f"legacy project {project_id} not found")
    return project


async def project_of_application(application_id: uuid.UUID) -> LegacyProject | None:
    """The legacy project whose container this application is; None for an Application."""
    return await LegacyProject.get_or_none(application_id=application_id)


async def container(project: LegacyProject) -> Application:
    return await Application.get(id=project.application_id)


async def _grouped(model: type[Model], column: str, ids: Sequence[uuid.UUID]) -> dict[uuid.UUID, int]:
    """One aggregate query: rows of `model` per value of `column` among `ids`."""
    rows = (
        await model.filter(**{f"{column}__in": list(ids)})
        .annotate(count=Count("id"))
        .group_by(column)
        .values_list(column, "count")
    )
    return {uuid.UUID(str(key)): int(count) for key, count in rows}


async def count(projects: Iterable[LegacyProject]) -> dict[uuid.UUID, LegacyProjectCounts]:
    """Counts per project id, six aggregate queries whatever the number of projects (no row is loaded)."""
    by_container = {project.application_id: project.id for project in projects}
    if not by_container:
        return {}
    containers = list(by_container)
    in_container: dict[str, dict[uuid.UUID, int]] = {}
    for name, model in (
        ("profiles", ApplicationProfile),
        ("certificates", Certificate),
        ("alerts", Alert),
        ("syncs", Sync),
        ("approval_policies", ApprovalPolicy),
    ):
        in_container[name] = _remap(await _grouped(model, "application_id", containers), by_container)
    members = await _grouped(LegacyMembership, "project_id", list(by_container.values()))
    return {
        project_id: LegacyProjectCounts(
            **{name: counts.get(project_id, 0) for name, counts in in_container.items()},
            members=members.get(project_id, 0),
        )
        for project_id in by_container.values()
    }


def _remap(counts: dict[uuid.UUID, int], by_container: dict[uuid.UUID, uuid.UUID]) -> dict[uuid.UUID, int]:
    return {by_container[container_id]: n for container_id, n in counts.items()}


@dataclass(frozen=True)
class LegacyProfile:
    """A legacy profile: its attachment on the container (profile loaded) and its slug in the export."""

    attachment: ApplicationProfile
    slug: str | None


ENROLLMENT_METHODS = ("api", "acme", "est", "scep")


def enrollment_method(attachment: ApplicationProfile) -> str | None:
    """The one enrollment method baked into a legacy profile (None if the import enabled none)."""
    for method in ("acme", "est", "scep", "api"):
        if getattr(attachment, f"{method}_enabled"):
            return method
    return None


async def list_profiles(*, actor: Actor, project: LegacyProject) -> list[LegacyProfile]:
    authz.require(actor, Permission.APPLICATION_READ, project_scope(project))
    application = await container(project)
    attachments = (
        await ApplicationProfile.filter(application_id=project.application_id)
        .order_by("created_at", "id")
        .prefetch_related("profile")
    )
    slugs = await _slugs(project, "profile")
    profiles = []
    for attachment in attachments:
        attachment.application = application
        slug = slugs.get(attachment.profile_id) or slugs.get(attachment.id)
        profiles.append(LegacyProfile(attachment, slug))
    return profiles


async def _slugs(project: LegacyProject, kind: str) -> dict[uuid.UUID, str]:
    rows = await LegacyResource.filter(project_id=project.id, kind=kind).values_list("target_id", "slug")
    return {uuid.UUID(str(target)): str(slug) for target, slug in rows}


async def list_members(*, actor: Actor, project: LegacyProject) -> list[LegacyMembership]:
    """Members with their legacy roles (custom role loaded), oldest first."""
    authz.require(actor, Permission.APPLICATION_READ, project_scope(project))
    return (
        await LegacyMembership.filter(project_id=project.id)
        .order_by("created_at", "id")
        .select_related("principal", "custom_role")
    )


async def approvers(application_id: uuid.UUID, principal_ids: Iterable[uuid.UUID]) -> set[uuid.UUID]:
    """Which of the principals are active members of the legacy project with this container whose legacy
    role decides approvals (approvals:decide); empty for an Application."""
    wanted = list(principal_ids)
    if not wanted:
        return set()
    rows = await LegacyMembership.filter(
        project__application_id=application_id, principal_id__in=wanted, principal__is_active=True
    ).select_related("custom_role")
    return {
        row.principal_id
        for row in rows
        if Permission.APPROVAL_DECIDE in authn.legacy_grant(row, {}).permissions
    }


def conditions_of(membership: LegacyMembership) -> dict[str, Any]:
    role = membership.custom_role
    if membership.role != "custom" or role is None or not isinstance(role.conditions, dict):
        return {}
    return dict(role.conditions)
