"""Load objects for an actor: what the actor may not see raises NotFound, as if it did not exist."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from typing import Any, TypeVar

from tortoise.models import Model

from core import authz
from core.authz import Actor, Permission, Scope
from core.errors import InvalidInput, NotFound
from models import Application, ApplicationProfile


def application_scope(application: Application) -> Scope:
    return Scope(organization_id=application.organization_id, application_id=application.id)


async def load_application(
    actor: Actor, application_id: uuid.UUID, permission: Permission, *, profile_id: uuid.UUID | None = None
) -> Application:
    """The application, if the actor may see it; then `permission` is required on it (FORBIDDEN if not).

    `profile_id`: the one profile the action is about (legacy custom roles may be limited to some)."""
    application = await Application.get_or_none(id=application_id, organization_id=actor.organization_id)
    if application is None or not authz.can_see_application(actor, application_scope(application)):
        authz.require(actor, Permission.SELF)  # an anonymous caller learns UNAUTHENTICATED, not NOT_FOUND
        raise NotFound(f"application {application_id} not found")
    scope = application_scope(application)
    if profile_id is not None:
        scope = Scope(scope.organization_id, scope.application_id, profile_id=profile_id)
    authz.require(actor, permission, scope)
    return application


def organization_scope(actor: Actor) -> Scope:
    """The actor's organization; an anonymous caller is refused here (UNAUTHENTICATED)."""
    authz.require(actor, Permission.SELF)
    assert actor.organization_id is not None
    return Scope(organization_id=actor.organization_id)


RowT = TypeVar("RowT", bound=Model)


async def load_application_row(
    actor: Actor, model: type[RowT], row_id: uuid.UUID, permission: Permission, noun: str
) -> tuple[RowT, Application]:
    """A row that belongs to an application (it has `application_id`) and that application, if the actor may
    see it; a row of an application the actor may not see is not found, like one that does not exist."""
    row = await model.get_or_none(id=row_id)
    if row is None:
        organization_scope(actor)  # an anonymous caller learns UNAUTHENTICATED, not NOT_FOUND
        raise NotFound(f"{noun} {row_id} not found")
    owner: Any = row
    try:
        application = await load_application(actor, owner.application_id, permission)
    except NotFound:
        raise NotFound(f"{noun} {row_id} not found") from None
    return row, application


async def load_attachment(
    application: Application, profile_id: uuid.UUID, *related: str
) -> ApplicationProfile:
    """The pair of `application` and profile `profile_id`, `related` prefetched; NOT_FOUND if not attached."""
    query = ApplicationProfile.get_or_none(application_id=application.id, profile_id=profile_id)
    attachment = await (query.prefetch_related(*related) if related else query)
    if attachment is None:
        raise NotFound(
            f"profile {profile_id} is not attached to application {application.name!r}", field="profileId"
        )
    return attachment


async def attached_profiles(
    application: Application, profile_ids: Sequence[uuid.UUID]
) -> list[ApplicationProfile]:
    """The attachments of `profile_ids` in order, duplicates dropped; INVALID_INPUT names each one missing."""
    wanted = list(dict.fromkeys(profile_ids))
    if not wanted:
        return []
    rows = {
        a.profile_id: a
        for a in await ApplicationProfile.filter(application_id=application.id, profile_id__in=wanted)
    }
    missing = [str(p) for p in wanted if p not in rows]
    if missing:
        raise InvalidInput(
            f"profile(s) {', '.join(missing)} are not attached to application '{application.name}'; "
            "an application Admin attaches them first",
            field="profileIds",
        )
    return [rows[p] for p in wanted]
