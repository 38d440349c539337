"""Applications: their members, the profiles attached to them with enrollment settings, their inventory."""

from __future__ import annotations

import uuid
from datetime import datetime
from enum import Enum
from typing import TYPE_CHECKING, Annotated, Any

import strawberry
from strawberry.types import Info

from api.graphql.identity import Principal
from api.graphql.ids import parse_id
from api.graphql.pagination import (
    Connection,
    Edge,
    PageInfo,
    check_page_size,
    decode_cursor,
    encode_cursor,
)
from api.graphql.permission import guard_type, guarded_field, guarded_mutation
from core import application as service
from core.acme_account import acme_url
from core.authz import Permission, Scope
from core.errors import InvalidInput
from models import Application as ApplicationModel
from models import ApplicationMembership as ApplicationMembershipModel
from models import ApplicationProfile as ApplicationProfileModel
from models import CertificateProfile as CertificateProfileModel
from models import Principal as PrincipalModel
from models import enums

if TYPE_CHECKING:
    from api.graphql.certificate import Certificate, CertificateFilter
    from api.graphql.est import EstEnrollment
    from api.graphql.pki import CertificateProfile
    from api.graphql.scep import ScepEnrollment


@strawberry.enum(name="ApplicationRole", description="ADMIN configures and manages members; OPERATOR issues")
class ApplicationRoleEnum(Enum):
    ADMIN = "admin"
    OPERATOR = "operator"
    AUDITOR = "auditor"

    def to_model(self) -> enums.ApplicationRole:
        return enums.ApplicationRole(self.value)


@guard_type(Permission.APPLICATION_READ)
@strawberry.type(description="A principal's role in one application.")
class ApplicationMember:
    _model: strawberry.Private[ApplicationMembershipModel]
    _organization_id: strawberry.Private[uuid.UUID]
    id: strawberry.ID
    role: ApplicationRoleEnum
    created_at: datetime

    def authz_scope(self) -> Scope:
        return Scope(self._organization_id, self._model.application_id)

    @guarded_field(Permission.APPLICATION_READ)
    async def principal(self) -> Principal:
        if not isinstance(self._model.principal, PrincipalModel):
            await self._model.fetch_related("principal")
        return Principal.from_model(self._model.principal)

    @classmethod
    def from_model(cls, model: ApplicationMembershipModel, organization_id: uuid.UUID) -> ApplicationMember:
        return cls(
            _model=model,
            _organization_id=organization_id,
            id=strawberry.ID(str(model.id)),
            role=ApplicationRoleEnum(enums.ApplicationRole(model.role).value),
            created_at=model.created_at,
        )


@guard_type(Permission.APPLICATION_READ)
@strawberry.type(description="API enrollment for one (application, profile) pair.")
class ApiEnrollment:
    _organization_id: strawberry.Private[uuid.UUID]
    _application_id: strawberry.Private[uuid.UUID]
    enabled: bool
    auto_renew: bool = strawberry.field(description="Renew server-generated keys automatically.")
    renew_before_days: int | None = strawberry.field(description="Null: the profile's renew-before days.")

    def authz_scope(self) -> Scope:
        return Scope(self._organization_id, self._application_id)


@guard_type(Permission.APPLICATION_READ)
@strawberry.type(description="ACME (RFC 8555) enrollment for one (application, profile) pair.")
class AcmeEnrollment:
    _model: strawberry.Private[ApplicationProfileModel]
    _organization_id: strawberry.Private[uuid.UUID]
    enabled: bool
    eab_required: bool = strawberry.field(description="New accounts need external account binding.")
    directory_url: str = strawberry.field(description="The ACME directory URL to give clients.")

    def authz_scope(self) -> Scope:
        return Scope(self._organization_id, self._model.application_id)

    @guarded_field(
        Permission.CONFIG_SECRET_READ,
        description="External account binding key id (application Admins); null until ACME is enabled.",
    )
    def eab_kid(self, info: Info) -> str | None:
        return service.acme_eab_kid(
            actor=info.context.actor, attachment=self._model, organization_id=self._organization_id
        )

    @guarded_field(
        Permission.CONFIG_SECRET_READ,
        description="External account binding HMAC key, base64url (application Admins); rotate to replace.",
    )
    def eab_hmac_key(self, info: Info) -> str | None:
        return service.acme_eab_hmac_key(
            actor=info.context.actor, attachment=self._model, organization_id=self._organization_id
        )

    @classmethod
    def from_model(cls, model: ApplicationProfileModel, organization_id: uuid.UUID) -> AcmeEnrollment:
        return cls(
            _model=model,
            _organization_id=organization_id,
            enabled=model.acme_enabled,
            eab_required=model.acme_eab_required,
            directory_url=acme_url(model, "directory"),
        )


@guard_type(Permission.APPLICATION_READ)
@strawberry.type(description="A profile attached to an application, with its enrollment methods.")
class AttachedProfile:
    _model: strawberry.Private[ApplicationProfileModel]
    _organization_id: strawberry.Private[uuid.UUID]
    id: strawberry.ID
    api: ApiEnrollment
    acme: AcmeEnrollment
    created_at: datetime

    def authz_scope(self) -> Scope:
        return Scope(self._organization_id, self._model.application_id)

    @guarded_field(Permission.APPLICATION_READ)
    async def profile(self) -> Annotated[CertificateProfile, strawberry.lazy("api.graphql.pki")]:
        from api.graphql.pki import CertificateProfile

        if not isinstance(self._model.profile, CertificateProfileModel):
            await self._model.fetch_related("profile")
        return CertificateProfile.from_model(self._model.profile)

    @guarded_field(Permission.APPLICATION_READ, description="EST (RFC 7030) enrollment settings.")
    def est(self) -> Annotated[EstEnrollment, strawberry.lazy("api.graphql.est")]:
        from api.graphql.est import EstEnrollment

        return EstEnrollment.from_model(self._model, self._organization_id)

    @guarded_field(Permission.APPLICATION_READ, description="SCEP (RFC 8894) enrollment settings.")
    def scep(self) -> Annotated[ScepEnrollment, strawberry.lazy("api.graphql.scep")]:
        from api.graphql.scep import ScepEnrollment

        return ScepEnrollment.from_model(self._model, self._organization_id)

    @classmethod
    def from_model(cls, model: ApplicationProfileModel, organization_id: uuid.UUID) -> AttachedProfile:
        return cls(
            _model=model,
            _organization_id=organization_id,
            id=strawberry.ID(str(model.id)),
            api=ApiEnrollment(
                _organization_id=organization_id,
                _application_id=model.application_id,
                enabled=model.api_enabled,
                auto_renew=model.api_auto_renew,
                renew_before_days=model.api_renew_before_days,
            ),
            acme=AcmeEnrollment.from_model(model, organization_id),
            created_at=model.created_at,
        )


@guard_type(Permission.APPLICATION_READ)
@strawberry.type(description="One service or workload: its members, attached profiles and certificates.")
class Application:
    _model: strawberry.Private[ApplicationModel]
    id: strawberry.ID
    name: str
    description: str
    created_at: datetime
    updated_at: datetime

    def authz_scope(self) -> Scope:
        return Scope(self._model.organization_id, self._model.id)

    @guarded_field(Permission.APPLICATION_READ)
    async def members(self, info: Info) -> list[ApplicationMember]:
        rows = await service.list_members(actor=info.context.actor, application=self._model)
        return [ApplicationMember.from_model(row, self._model.organization_id) for row in rows]

    @guarded_field(Permission.APPLICATION_READ, description="Attached profiles and their enrollment methods.")
    async def profiles(self, info: Info) -> list[AttachedProfile]:
        rows = await service.list_attachments(actor=info.context.actor, application=self._model)
        return [AttachedProfile.from_model(row, self._model.organization_id) for row in rows]

    @guarded_field(
        Permission.CERTIFICATE_READ,
        description="The application's certificate inventory, newest first, filtered.",
    )
    async def certificates(
        self,
        info: Info,
        first: int = 50,
        after: str | None = None,
        filter: Annotated[CertificateFilter, strawberry.lazy("api.graphql.certificate")] | None = None,
    ) -> Connection[Annotated[Certificate, strawberry.lazy("api.graphql.certificate")]]:
        from api.graphql.certificate import application_certificates

        return await application_certificates(self._model, info, first=first, after=after, filter=filter)

    @classmethod
    def from_model(cls, model: ApplicationModel) -> Application:
        return cls(
            _model=model,
            id=strawberry.ID(str(model.id)),
            name=model.name,
            description=model.description,
            created_at=model.created_at,
            updated_at=model.updated_at,
        )


@strawberry.input
class CreateApplicationInput:
    name: str = strawberry.field(description="Slug: lowercase letters, digits, hyphens; 1-63 characters.")
    description: str = ""


@strawberry.input(description="Omitted fields stay as they are.")
class UpdateApplicationInput:
    name: str | None = None
    description: str | None = None


@strawberry.input
class AddApplicationMemberInput:
    application_id: strawberry.ID
    principal_id: strawberry.ID
    role: ApplicationRoleEnum


@strawberry.input
class ChangeApplicationMemberRoleInput:
    application_id: strawberry.ID
    principal_id: strawberry.ID
    role: ApplicationRoleEnum


@strawberry.input(description="Omitted fields: defaults when attaching, unchanged when updating.")
class ApiEnrollmentInput:
    enabled: bool | None = strawberry.UNSET
    auto_renew: bool | None = strawberry.UNSET
    renew_before_days: int | None = strawberry.field(
        default=strawberry.UNSET, description="Null: use the profile's renew-before days."
    )


@strawberry.input
class AttachProfileInput:
    application_id: strawberry.ID
    profile_id: strawberry.ID
    api: ApiEnrollmentInput | None = None


@strawberry.input
class UpdateAttachedProfileInput:
    application_id: strawberry.ID
    profile_id: strawberry.ID
    api: ApiEnrollmentInput | None = None


@strawberry.input
class EnableAcmeInput:
    application_id: strawberry.ID
    profile_id: strawberry.ID
    eab_required: bool = strawberry.field(
        default=True, description="Require external account binding for new accounts (recommended)."
    )


def _cursor_key(after: str | None) -> tuple[datetime, uuid.UUID] | None:
    if after is None:
        return None
    created_at, row_id = decode_cursor(after)
    try:
        return created_at, uuid.UUID(row_id)
    except ValueError:
        raise InvalidInput(f"cursor {after!r} is not one this server returned", field="after") from None


def _given(value: Any) -> bool:
    return value is not strawberry.UNSET and value is not None


def _changes(given: ApiEnrollmentInput | None) -> dict[str, Any]:
    """Only the fields the caller sent; a null renewBeforeDays is a value (the profile's), null flags not."""
    if given is None:
        return {}
    changes: dict[str, Any] = {}
    if _given(given.enabled):
        changes["enabled"] = given.enabled
    if _given(given.auto_renew):
        changes["auto_renew"] = given.auto_renew
    if given.renew_before_days is not strawberry.UNSET:
        changes["renew_before_days"] = given.renew_before_days
    return changes


@strawberry.type
class Query:
    @guarded_field(
        Permission.APPLICATION_READ,
        description="Applications the caller may see (Product Admin: all), oldest first.",
    )
    async def applications(
        self,
        info: Info,
        first: int = 50,
        after: str | None = None,
        name_contains: str | None = None,
    ) -> Connection[Application]:
        page = await service.list_applications(
            actor=info.context.actor,
            first=check_page_size(first),
            after=_cursor_key(after),
            name_contains=name_contains,
        )
        edges: list[Any] = [
            Edge(cursor=encode_cursor(row.created_at, row.id), node=Application.from_model(row))
            for row in page.rows
        ]
        return Connection(
            edges=edges,
            page_info=PageInfo(
                has_next_page=page.has_next_page, end_cursor=edges[-1].cursor if edges else None
            ),
        )

    @guarded_field(
        Permission.APPLICATION_READ, description="One application; NOT_FOUND if you may not see it."
    )
    async def application(self, info: Info, id: strawberry.ID) -> Application:
        model = await service.get_application(
            actor=info.context.actor, application_id=parse_id(id, "application")
        )
        return Application.from_model(model)


@strawberry.type
class Mutation:
    @guarded_mutation(Permission.APPLICATION_CREATE, description="Create an application (Product Admin).")
    async def create_application(self, info: Info, input: CreateApplicationInput) -> Application:
        model = await service.create_application(
            actor=info.context.actor, name=input.name, description=input.description
        )
        return Application.from_model(model)

    @guarded_mutation(Permission.APPLICATION_UPDATE, description="Rename or describe an application.")
    async def update_application(
        self, info: Info, id: strawberry.ID, input: UpdateApplicationInput
    ) -> Application:
        model = await service.update_application(
            actor=info.context.actor,
            application_id=parse_id(id, "application"),
            name=input.name,
            description=input.description,
        )
        return Application.from_model(model)

    @guarded_mutation(
        Permission.APPLICATION_DELETE,
        description="Delete an application with no valid certificates; returns its id.",
    )
    async def delete_application(self, info: Info, id: strawberry.ID) -> strawberry.ID:
        model = await service.delete_application(
            actor=info.context.actor, application_id=parse_id(id, "application")
        )
        return strawberry.ID(str(model.id))

    @guarded_mutation(Permission.MEMBERS_MANAGE, description="Give a principal a role in an application.")
    async def add_application_member(self, info: Info, input: AddApplicationMemberInput) -> ApplicationMember:
        actor = info.context.actor
        membership = await service.add_member(
            actor=actor,
            application_id=parse_id(input.application_id, "application"),
            principal_id=parse_id(input.principal_id, "principal"),
            role=input.role.to_model(),
        )
        assert actor.organization_id is not None
        return ApplicationMember.from_model(membership, actor.organization_id)

    @guarded_mutation(Permission.MEMBERS_MANAGE, description="Change a member's role in an application.")
    async def change_application_member_role(
        self, info: Info, input: ChangeApplicationMemberRoleInput
    ) -> ApplicationMember:
        actor = info.context.actor
        membership = await service.change_member_role(
            actor=actor,
            application_id=parse_id(input.application_id, "application"),
            principal_id=parse_id(input.principal_id, "principal"),
            role=input.role.to_model(),
        )
        assert actor.organization_id is not None
        return ApplicationMember.from_model(membership, actor.organization_id)

    @guarded_mutation(
        Permission.MEMBERS_MANAGE,
        description="Remove a member from an application; returns the membership id.",
    )
    async def remove_application_member(
        self, info: Info, application_id: strawberry.ID, principal_id: strawberry.ID
    ) -> strawberry.ID:
        membership = await service.remove_member(
            actor=info.context.actor,
            application_id=parse_id(application_id, "application"),
            principal_id=parse_id(principal_id, "principal"),
        )
        return strawberry.ID(str(membership.id))

    @guarded_mutation(
        Permission.ENROLLMENT_MANAGE, description="Attach a profile with its API enrollment settings."
    )
    async def attach_profile(self, info: Info, input: AttachProfileInput) -> AttachedProfile:
        actor = info.context.actor
        attachment = await service.attach_profile(
            actor=actor,
            application_id=parse_id(input.application_id, "application"),
            profile_id=parse_id(input.profile_id, "profile"),
            api=service.ApiEnrollmentSettings(**_changes(input.api)),
        )
        assert actor.organization_id is not None
        return AttachedProfile.from_model(attachment, actor.organization_id)

    @guarded_mutation(
        Permission.ENROLLMENT_MANAGE, description="Change an attached profile's enrollment settings."
    )
    async def update_attached_profile(self, info: Info, input: UpdateAttachedProfileInput) -> AttachedProfile:
        actor = info.context.actor
        attachment = await service.update_attachment(
            actor=actor,
            application_id=parse_id(input.application_id, "application"),
            profile_id=parse_id(input.profile_id, "profile"),
            changes=_changes(input.api),
        )
        assert actor.organization_id is not None
        return AttachedProfile.from_model(attachment, actor.organization_id)

    @guarded_mutation(
        Permission.ENROLLMENT_MANAGE,
        description="Detach a profile; certificates already issued stay. Returns the attachment id.",
    )
    async def detach_profile(
        self, info: Info, application_id: strawberry.ID, profile_id: strawberry.ID
    ) -> strawberry.ID:
        attachment = await service.detach_profile(
            actor=info.context.actor,
            application_id=parse_id(application_id, "application"),
            profile_id=parse_id(profile_id, "profile"),
        )
        return strawberry.ID(str(attachment.id))

    @guarded_mutation(
        Permission.ENROLLMENT_MANAGE,
        description="Enable ACME on an attached profile; the first enable creates the EAB key id and key.",
    )
    async def enable_acme(self, info: Info, input: EnableAcmeInput) -> AttachedProfile:
        actor = info.context.actor
        attachment = await service.enable_acme(
            actor=actor,
            application_id=parse_id(input.application_id, "application"),
            profile_id=parse_id(input.profile_id, "profile"),
            eab_required=input.eab_required,
        )
        assert actor.organization_id is not None
        return AttachedProfile.from_model(attachment, actor.organization_id)

    @guarded_mutation(
        Permission.ENROLLMENT_MANAGE, description="Disable ACME on an attached profile (accounts are kept)."
    )
    async def disable_acme(
        self, info: Info, application_id: strawberry.ID, profile_id: strawberry.ID
    ) -> AttachedProfile:
        actor = info.context.actor
        attachment = await service.disable_acme(
            actor=actor,
            application_id=parse_id(application_id, "application"),
            profile_id=parse_id(profile_id, "profile"),
        )
        assert actor.organization_id is not None
        return AttachedProfile.from_model(attachment, actor.organization_id)

    @guarded_mutation(
        Permission.ENROLLMENT_MANAGE,
        description="Replace the EAB key id and HMAC key of an attached profile; the old ones stop at once.",
    )
    async def rotate_acme_eab(
        self, info: Info, application_id: strawberry.ID, profile_id: strawberry.ID
    ) -> AttachedProfile:
        actor = info.context.actor
        attachment = await service.rotate_acme_eab(
            actor=actor,
            application_id=parse_id(application_id, "application"),
            profile_id=parse_id(profile_id, "profile"),
        )
        assert actor.organization_id is not None
        return AttachedProfile.from_model(attachment, actor.organization_id)
