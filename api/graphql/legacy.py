"""Legacy projects in the hierarchy (SPEC §12): `certificateManager.legacyProjects` and `legacyProject(id)`.

A legacy project's alerts, syncs, approval policies and inventory are its container application's, so
they are served by the same types and resolvers as an Application's; the container itself is never an
`Application` (core.application hides it).
"""

from __future__ import annotations

import uuid
from datetime import datetime
from enum import Enum
from typing import TYPE_CHECKING, Annotated, Any

import strawberry
from strawberry.types import Info

from api.graphql.application import AttachedProfile
from api.graphql.context import actor_organization
from api.graphql.identity import Principal
from api.graphql.ids import parse_id
from api.graphql.pagination import Connection
from api.graphql.permission import guard_type, guarded_field
from core import alert as alert_service
from core import approval as approval_service
from core import sync as sync_service
from core.acme_account import acme_url
from core.authz import Permission, Scope
from core.est import est_url
from core.legacy import projects as service
from core.legacy import roles as legacy_roles
from core.scep import scep_url
from models import LegacyMembership as LegacyMembershipModel
from models import LegacyProject as LegacyProjectModel
from models import Principal as PrincipalModel

if TYPE_CHECKING:
    from api.graphql.alert import Alert
    from api.graphql.approval import ApprovalPolicy
    from api.graphql.certificate import Certificate, CertificateFilter
    from api.graphql.pki import CertificateProfile
    from api.graphql.sync import Sync


@strawberry.enum(name="LegacyEnrollmentMethod", description="The one enrollment method of a legacy profile.")
class LegacyEnrollmentMethodEnum(Enum):
    API = "api"
    ACME = "acme"
    EST = "est"
    SCEP = "scep"


@strawberry.enum(
    name="LegacyRoleKind", description="ADMIN, MEMBER and VIEWER are built in; CUSTOM names a custom role."
)
class LegacyRoleKindEnum(Enum):
    ADMIN = "admin"
    MEMBER = "member"
    VIEWER = "viewer"
    CUSTOM = "custom"


@guard_type(Permission.APPLICATION_READ)
@strawberry.type(description="How many of each a legacy project holds.")
class LegacyProjectCounts:
    _scope: strawberry.Private[Scope]
    profiles: int
    certificates: int
    alerts: int
    syncs: int
    approval_policies: int
    members: int

    def authz_scope(self) -> Scope:
        return self._scope


@guard_type(Permission.APPLICATION_READ)
@strawberry.type(description="A legacy profile: its enrollment method is baked in and cannot be changed.")
class LegacyProfile:
    _attachment: strawberry.Private[Any]
    _scope: strawberry.Private[Scope]
    id: strawberry.ID = strawberry.field(description="The profile id (the one in its legacy URL).")
    slug: str | None = strawberry.field(description="Its slug in the imported export.")
    name: str
    enrollment_method: LegacyEnrollmentMethodEnum | None
    legacy_url: str | None = strawberry.field(
        description="ACME directory, EST base or SCEP pkiclient.exe URL on the legacy form; null for API."
    )

    def authz_scope(self) -> Scope:
        return self._scope

    @guarded_field(Permission.APPLICATION_READ)
    def profile(self) -> Annotated[CertificateProfile, strawberry.lazy("api.graphql.pki")]:
        from api.graphql.pki import CertificateProfile

        return CertificateProfile.from_model(self._attachment.profile)

    @guarded_field(
        Permission.APPLICATION_READ,
        description="The imported enrollment settings, read-only (secrets for those who may read them).",
    )
    def enrollment(self) -> AttachedProfile:
        return AttachedProfile.from_model(self._attachment, self._scope.organization_id)

    @classmethod
    def from_service(cls, item: service.LegacyProfile, scope: Scope) -> LegacyProfile:
        attachment = item.attachment
        method = service.enrollment_method(attachment)
        url = None
        if method == "acme":
            url = acme_url(attachment, "directory")
        elif method == "est":
            url = est_url(attachment)
        elif method == "scep":
            url = scep_url(attachment)
        return cls(
            _attachment=attachment,
            _scope=scope,
            id=strawberry.ID(str(attachment.profile_id)),
            slug=item.slug,
            name=attachment.profile.name,
            enrollment_method=LegacyEnrollmentMethodEnum(method) if method else None,
            legacy_url=url,
        )


@guard_type(Permission.APPLICATION_READ)
@strawberry.type(description="What limits a custom legacy role; null: not limited that way.")
class LegacyRoleConditions:
    _scope: strawberry.Private[Scope]
    profile_slugs: list[str] | None = strawberry.field(
        description="Certificate permissions and SCEP challenges for these profiles only."
    )
    sync_names: list[str] | None = strawberry.field(description="Sync permissions for these syncs only.")
    other: list[str] = strawberry.field(
        description="Condition keys this server cannot evaluate: the role grants nothing while they remain."
    )

    def authz_scope(self) -> Scope:
        return self._scope


@guard_type(Permission.APPLICATION_READ)
@strawberry.type(description="A custom legacy role: permissions from the legacy vocabulary, maybe limited.")
class LegacyCustomRole:
    _scope: strawberry.Private[Scope]
    id: strawberry.ID
    slug: str
    name: str
    permissions: list[str]
    conditions: LegacyRoleConditions

    def authz_scope(self) -> Scope:
        return self._scope


def _strings(value: Any) -> list[str] | None:
    if value is None:
        return None
    return [str(item) for item in value] if isinstance(value, list) else []


@guard_type(Permission.APPLICATION_READ)
@strawberry.type(description="A principal's legacy role in a legacy project.")
class LegacyMember:
    _model: strawberry.Private[LegacyMembershipModel]
    _scope: strawberry.Private[Scope]
    id: strawberry.ID
    role: LegacyRoleKindEnum
    custom_role: LegacyCustomRole | None
    permissions: list[str] = strawberry.field(description="The legacy permissions the role holds.")
    created_at: datetime

    def authz_scope(self) -> Scope:
        return self._scope

    @guarded_field(Permission.APPLICATION_READ)
    async def principal(self) -> Principal:
        if not isinstance(self._model.principal, PrincipalModel):
            await self._model.fetch_related("principal")
        return Principal.from_model(self._model.principal)

    @classmethod
    def from_model(cls, model: LegacyMembershipModel, scope: Scope) -> LegacyMember:
        role = model.custom_role if model.role == "custom" else None
        custom = None
        permissions: list[str] = sorted(legacy_roles.BUILTIN_ROLES.get(model.role, frozenset()))
        if role is not None:
            conditions = role.conditions if isinstance(role.conditions, dict) else {}
            permissions = sorted(_strings(role.permissions) or [])
            custom = LegacyCustomRole(
                _scope=scope,
                id=strawberry.ID(str(role.id)),
                slug=role.slug,
                name=role.name,
                permissions=permissions,
                conditions=LegacyRoleConditions(
                    _scope=scope,
                    profile_slugs=_strings(conditions.get("profileSlugs")),
                    sync_names=_strings(conditions.get("syncNames")),
                    other=sorted(str(key) for key in set(conditions) - set(legacy_roles.CONDITION_KEYS)),
                ),
            )
        kind = model.role if model.role in {e.value for e in LegacyRoleKindEnum} else "custom"
        return cls(
            _model=model,
            _scope=scope,
            id=strawberry.ID(str(model.id)),
            role=LegacyRoleKindEnum(kind),
            custom_role=custom,
            permissions=permissions,
            created_at=model.created_at,
        )


@guard_type(Permission.APPLICATION_READ)
@strawberry.type(description="An imported legacy project: it keeps working until migrated to Applications.")
class LegacyProject:
    _model: strawberry.Private[LegacyProjectModel]
    _counts: strawberry.Private[service.LegacyProjectCounts | None]
    id: strawberry.ID
    slug: str
    name: str
    description: str
    format_version: str
    imported_at: datetime

    def authz_scope(self) -> Scope:
        return service.project_scope(self._model)

    @guarded_field(Permission.APPLICATION_READ, description="Counted, not listed.")
    async def counts(self) -> LegacyProjectCounts:
        counts = self._counts
        if counts is None:
            counts = (await service.count([self._model])).get(self._model.id, service.LegacyProjectCounts())
        return LegacyProjectCounts(
            _scope=self.authz_scope(),
            profiles=counts.profiles,
            certificates=counts.certificates,
            alerts=counts.alerts,
            syncs=counts.syncs,
            approval_policies=counts.approval_policies,
            members=counts.members,
        )

    @guarded_field(Permission.APPLICATION_READ, description="Its profiles, each with its enrollment method.")
    async def profiles(self, info: Info) -> list[LegacyProfile]:
        rows = await service.list_profiles(actor=info.context.actor, project=self._model)
        return [LegacyProfile.from_service(row, self.authz_scope()) for row in rows]

    @guarded_field(Permission.APPLICATION_READ, description="Members with their legacy roles.")
    async def members(self, info: Info) -> list[LegacyMember]:
        rows = await service.list_members(actor=info.context.actor, project=self._model)
        return [LegacyMember.from_model(row, self.authz_scope()) for row in rows]

    @guarded_field(Permission.APPLICATION_READ, description="Legacy alerts: they can be changed and deleted.")
    async def alerts(self, info: Info) -> list[Annotated[Alert, strawberry.lazy("api.graphql.alert")]]:
        from api.graphql.alert import Alert

        rows = await alert_service.list_alerts(
            actor=info.context.actor, application_id=self._model.application_id
        )
        return [Alert.from_model(row, self._model.organization_id) for row in rows]

    @guarded_field(Permission.APPLICATION_READ, description="Legacy syncs: they can be changed and deleted.")
    async def syncs(self, info: Info) -> list[Annotated[Sync, strawberry.lazy("api.graphql.sync")]]:
        from api.graphql.sync import Sync

        rows = await sync_service.list_syncs(
            actor=info.context.actor, application_id=self._model.application_id
        )
        return [Sync.from_model(row, self._model.organization_id) for row in rows]

    @guarded_field(
        Permission.APPLICATION_READ, description="Legacy approval policies: they can be changed and deleted."
    )
    async def approval_policies(
        self, info: Info
    ) -> list[Annotated[ApprovalPolicy, strawberry.lazy("api.graphql.approval")]]:
        from api.graphql.approval import ApprovalPolicy

        rows = await approval_service.list_policies(
            actor=info.context.actor, application_id=self._model.application_id
        )
        return [ApprovalPolicy.from_model(row, self._model.organization_id) for row in rows]

    @guarded_field(
        Permission.APPLICATION_READ,
        description="The certificate inventory, newest first, filtered; needs certificates:read (a role "
        "limited to some profiles sees theirs only).",
    )
    async def certificates(
        self,
        info: Info,
        first: int = 50,
        after: str | None = None,
        filter: Annotated[CertificateFilter, strawberry.lazy("api.graphql.certificate")] | None = None,
    ) -> Connection[Annotated[Certificate, strawberry.lazy("api.graphql.certificate")]]:
        from api.graphql.certificate import application_certificates

        application = await service.container(self._model)
        return await application_certificates(application, info, first=first, after=after, filter=filter)

    @classmethod
    def from_model(
        cls, model: LegacyProjectModel, counts: service.LegacyProjectCounts | None = None
    ) -> LegacyProject:
        return cls(
            _model=model,
            _counts=counts,
            id=strawberry.ID(str(model.id)),
            slug=model.slug,
            name=model.name,
            description=model.description,
            format_version=model.format_version,
            imported_at=model.imported_at,
        )


async def legacy_project_of(info: Info, application_id: uuid.UUID | None) -> LegacyProject | None:
    """The legacy project whose container `application_id` is (None for an Application), once per request."""
    if application_id is None:
        return None
    cache: dict[uuid.UUID, LegacyProjectModel | None] = info.context.loaders.setdefault("legacy_project", {})
    if application_id not in cache:
        cache[application_id] = await service.project_of_application(application_id)
    model = cache[application_id]
    if model is None or model.organization_id != actor_organization(info.context):
        return None
    return LegacyProject.from_model(model)


@strawberry.type(description="The certificate manager of the caller's organization.")
class CertificateManager:
    @guarded_field(
        Permission.SELF,
        description="Legacy projects the caller may see (Product Admins: all; others: theirs), by slug.",
    )
    async def legacy_projects(self, info: Info) -> list[LegacyProject]:
        rows = await service.list_projects(actor=info.context.actor)
        counts = await service.count(rows)
        return [LegacyProject.from_model(row, counts.get(row.id)) for row in rows]

    @guarded_field(
        Permission.APPLICATION_READ, description="One legacy project; NOT_FOUND if you may not see it."
    )
    async def legacy_project(self, info: Info, id: strawberry.ID) -> LegacyProject:
        model = await service.get_project(actor=info.context.actor, project_id=parse_id(id, "legacy project"))
        return LegacyProject.from_model(model)


@strawberry.type
class Query:
    @guarded_field(
        Permission.SELF, description="Certificate Manager: shared PKI, Applications and legacy projects."
    )
    def certificate_manager(self) -> CertificateManager:
        return CertificateManager()
