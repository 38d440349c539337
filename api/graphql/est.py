"""EST (RFC 7030) settings of an attached profile: the `est` field of AttachedProfile and its mutations."""

from __future__ import annotations

import uuid
from typing import TYPE_CHECKING, Annotated

import strawberry
from strawberry.types import Info

from api.graphql.ids import parse_id
from api.graphql.permission import guard_type, guarded_field, guarded_mutation
from core import est as service
from core.authz import Permission, Scope
from models import Application as ApplicationModel
from models import ApplicationProfile as ApplicationProfileModel
from models import CertificateProfile as CertificateProfileModel

if TYPE_CHECKING:
    from api.graphql.application import AttachedProfile


@guard_type(Permission.APPLICATION_READ)
@strawberry.type(description="EST (RFC 7030) enrollment for one (application, profile) pair.")
class EstEnrollment:
    _model: strawberry.Private[ApplicationProfileModel]
    _organization_id: strawberry.Private[uuid.UUID]
    enabled: bool
    url: str = strawberry.field(
        description="Base URL for EST clients; they append /cacerts, /simpleenroll, /simplereenroll, "
        "/csrattrs, /serverkeygen."
    )
    username: str | None = strawberry.field(description="The HTTP Basic username; null: no passphrase set.")
    passphrase_set: bool = strawberry.field(
        description="Whether an HTTP Basic passphrase is set (the passphrase itself is never readable)."
    )
    client_ca_subjects: list[str] = strawberry.field(
        description="Subjects of the bootstrap CA chain whose certificates may enroll over TLS."
    )

    def authz_scope(self) -> Scope:
        return Scope(self._organization_id, self._model.application_id)

    @guarded_field(
        Permission.APPLICATION_READ,
        description="The single-label form `/.well-known/est/{application}.{profile}` (RFC 7030 §3.2.2); "
        "null when the profile's name cannot be one URL segment.",
    )
    async def alias_url(self) -> str | None:
        model = self._model
        application = getattr(model, "_application", None)
        if not isinstance(application, ApplicationModel):
            application = await ApplicationModel.get(id=model.application_id)
        profile = getattr(model, "_profile", None)
        if not isinstance(profile, CertificateProfileModel):
            profile = await CertificateProfileModel.get(id=model.profile_id)
        return service.est_alias_url(application.name, profile.name)

    @classmethod
    def from_model(cls, model: ApplicationProfileModel, organization_id: uuid.UUID) -> EstEnrollment:
        return cls(
            _model=model,
            _organization_id=organization_id,
            enabled=model.est_enabled,
            url=service.est_url(model),
            username=model.est_username,
            passphrase_set=model.est_passphrase_hash is not None,
            client_ca_subjects=service.client_ca_subjects(model),
        )


@strawberry.input(description="Enable EST; give a passphrase, a bootstrap CA chain, or both.")
class EnableEstInput:
    application_id: strawberry.ID
    profile_id: strawberry.ID
    username: str | None = strawberry.field(
        default=None, description="HTTP Basic username (default: the current one, else `est`)."
    )
    passphrase: str | None = strawberry.field(
        default=None, description="HTTP Basic passphrase, at least 8 characters; stored hashed, write-only."
    )
    client_ca_pem: str | None = strawberry.field(
        default=None,
        description="PEM bootstrap CA chain: clients with a TLS certificate it issued may enroll.",
    )


@strawberry.input(description="Change EST settings; omitted fields stay as they are.")
class UpdateEstInput:
    application_id: strawberry.ID
    profile_id: strawberry.ID
    username: str | None = None
    passphrase: str | None = strawberry.field(default=None, description="A new passphrase (8+ characters).")
    clear_passphrase: bool = strawberry.field(default=False, description="Remove the passphrase.")
    client_ca_pem: str | None = strawberry.field(default=None, description="A new bootstrap CA chain (PEM).")
    clear_client_ca: bool = strawberry.field(default=False, description="Remove the bootstrap CA chain.")


def _attached(attachment: ApplicationProfileModel, info: Info) -> AttachedProfile:
    from api.graphql.application import AttachedProfile

    organization_id = info.context.actor.organization_id
    assert organization_id is not None
    return AttachedProfile.from_model(attachment, organization_id)


@strawberry.type
class Mutation:
    @guarded_mutation(
        Permission.ENROLLMENT_MANAGE,
        description="Enable EST on an attached profile with HTTP Basic and/or TLS client-certificate auth.",
    )
    async def enable_est(
        self, info: Info, input: EnableEstInput
    ) -> Annotated[AttachedProfile, strawberry.lazy("api.graphql.application")]:
        attachment = await service.enable_est(
            actor=info.context.actor,
            application_id=parse_id(input.application_id, "application"),
            profile_id=parse_id(input.profile_id, "profile"),
            username=input.username,
            passphrase=input.passphrase,
            client_ca_pem=input.client_ca_pem,
        )
        return _attached(attachment, info)

    @guarded_mutation(
        Permission.ENROLLMENT_MANAGE, description="Change the EST settings of an attached profile."
    )
    async def update_est(
        self, info: Info, input: UpdateEstInput
    ) -> Annotated[AttachedProfile, strawberry.lazy("api.graphql.application")]:
        attachment = await service.update_est(
            actor=info.context.actor,
            application_id=parse_id(input.application_id, "application"),
            profile_id=parse_id(input.profile_id, "profile"),
            username=input.username,
            passphrase=input.passphrase,
            clear_passphrase=input.clear_passphrase,
            client_ca_pem=input.client_ca_pem,
            clear_client_ca=input.clear_client_ca,
        )
        return _attached(attachment, info)

    @guarded_mutation(
        Permission.ENROLLMENT_MANAGE, description="Disable EST on an attached profile (settings are kept)."
    )
    async def disable_est(
        self, info: Info, application_id: strawberry.ID, profile_id: strawberry.ID
    ) -> Annotated[AttachedProfile, strawberry.lazy("api.graphql.application")]:
        attachment = await service.disable_est(
            actor=info.context.actor,
            application_id=parse_id(application_id, "application"),
            profile_id=parse_id(profile_id, "profile"),
        )
        return _attached(attachment, info)
