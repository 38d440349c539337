"""SCEP (RFC 8894) enrollment settings of attached profiles, and dynamic one-time challenges."""

from __future__ import annotations

import uuid
from datetime import datetime
from enum import Enum
from typing import Any

import strawberry
from strawberry.types import Info

from api.graphql.application import AttachedProfile
from api.graphql.ids import parse_id
from api.graphql.permission import guard_type, guarded_field, guarded_mutation
from core import scep as service
from core.authz import Permission, Scope
from models import ApplicationProfile as ApplicationProfileModel


@strawberry.enum(name="ScepChallengeMode", description="STATIC: one password; DYNAMIC: one-time challenges")
class ScepChallengeModeEnum(Enum):
    STATIC = "static"
    DYNAMIC = "dynamic"


@guard_type(Permission.APPLICATION_READ)
@strawberry.type(description="SCEP (RFC 8894) enrollment for one (application, profile) pair.")
class ScepEnrollment:
    _model: strawberry.Private[ApplicationProfileModel]
    _organization_id: strawberry.Private[uuid.UUID]
    enabled: bool
    url: str = strawberry.field(description="The pkiclient.exe URL to give SCEP clients.")
    challenge_mode: ScepChallengeModeEnum
    challenge_set: bool = strawberry.field(
        description="Whether a static challenge is set; the challenge itself is never shown."
    )
    challenge_ttl_seconds: int = strawberry.field(description="Lifetime of a dynamic challenge.")
    max_pending_challenges: int = strawberry.field(
        description="Unused, unexpired dynamic challenges allowed."
    )
    include_ca: bool = strawberry.field(description="CertRep carries the CA chain after the certificate.")
    allow_renewal: bool = strawberry.field(description="RenewalReq signed by a current certificate accepted.")
    ra_certificate_pem: str | None = strawberry.field(
        description="The pair's RA certificate (signs CertRep, receives requests); null until enabled."
    )

    def authz_scope(self) -> Scope:
        return Scope(self._organization_id, self._model.application_id)

    @guarded_field(
        Permission.APPLICATION_READ,
        description="SHA-256 of the RA certificate (hex): scepclient's -ca-fingerprint for non-RSA CAs.",
    )
    def ra_certificate_sha256(self) -> str | None:
        return service.ra_fingerprint(self._model)

    @guarded_field(Permission.APPLICATION_READ, description="Dynamic challenges neither used nor expired.")
    async def pending_challenges(self) -> int:
        return await service.pending_challenge_count(self._model)

    @classmethod
    def from_model(cls, model: ApplicationProfileModel, organization_id: uuid.UUID) -> ScepEnrollment:
        return cls(
            _model=model,
            _organization_id=organization_id,
            enabled=model.scep_enabled,
            url=service.scep_url(model),
            challenge_mode=ScepChallengeModeEnum(model.scep_challenge_mode),
            challenge_set=model.scep_static_challenge_hash is not None,
            challenge_ttl_seconds=model.scep_challenge_ttl_seconds,
            max_pending_challenges=model.scep_max_pending_challenges,
            include_ca=model.scep_include_ca,
            allow_renewal=model.scep_allow_renewal,
            ra_certificate_pem=model.scep_ra_certificate_pem,
        )


@guard_type(Permission.SCEP_CHALLENGE_CREATE)
@strawberry.type(description="A dynamic SCEP challenge: shown this once, stored only as a hash.")
class ScepChallenge:
    _organization_id: strawberry.Private[uuid.UUID]
    _application_id: strawberry.Private[uuid.UUID]
    id: strawberry.ID
    challenge: str = strawberry.field(description="The one-time challenge password for the SCEP client.")
    expires_at: datetime
    _profile_id: strawberry.Private[uuid.UUID | None] = None

    def authz_scope(self) -> Scope:
        return Scope(self._organization_id, self._application_id, profile_id=self._profile_id)


@strawberry.input(description="SCEP settings; omitted ones keep their defaults or current values.")
class EnableScepInput:
    application_id: strawberry.ID
    profile_id: strawberry.ID
    challenge_mode: ScepChallengeModeEnum = ScepChallengeModeEnum.STATIC
    static_challenge: str | None = strawberry.field(
        default=None, description="Write-only; required for STATIC unless already set. At least 8 characters."
    )
    challenge_ttl_seconds: int | None = None
    max_pending_challenges: int | None = None
    include_ca: bool | None = None
    allow_renewal: bool | None = None


@strawberry.input(description="Omitted fields stay as they are.")
class UpdateScepInput:
    application_id: strawberry.ID
    profile_id: strawberry.ID
    challenge_mode: ScepChallengeModeEnum | None = None
    static_challenge: str | None = strawberry.field(default=None, description="Write-only: replaces it.")
    challenge_ttl_seconds: int | None = None
    max_pending_challenges: int | None = None
    include_ca: bool | None = None
    allow_renewal: bool | None = None


def _changes(given: UpdateScepInput) -> dict[str, Any]:
    changes: dict[str, Any] = {}
    if given.challenge_mode is not None:
        changes["challenge_mode"] = given.challenge_mode.value
    for name in ("challenge_ttl_seconds", "max_pending_challenges", "include_ca", "allow_renewal"):
        value = getattr(given, name)
        if value is not None:
            changes[name] = value
    return changes


def _attached(model: ApplicationProfileModel, info: Info) -> AttachedProfile:
    organization_id = info.context.actor.organization_id
    assert organization_id is not None
    return AttachedProfile.from_model(model, organization_id)


@strawberry.type
class Mutation:
    @guarded_mutation(
        Permission.ENROLLMENT_MANAGE,
        description="Enable SCEP on an attached profile; the first enable issues its RA certificate.",
    )
    async def enable_scep(self, info: Info, input: EnableScepInput) -> AttachedProfile:
        model = await service.enable_scep(
            actor=info.context.actor,
            application_id=parse_id(input.application_id, "application"),
            profile_id=parse_id(input.profile_id, "profile"),
            challenge_mode=input.challenge_mode.value,
            static_challenge=input.static_challenge,
            challenge_ttl_seconds=input.challenge_ttl_seconds,
            max_pending_challenges=input.max_pending_challenges,
            include_ca=input.include_ca,
            allow_renewal=input.allow_renewal,
        )
        return _attached(model, info)

    @guarded_mutation(
        Permission.ENROLLMENT_MANAGE, description="Change SCEP settings of an attached profile."
    )
    async def update_scep(self, info: Info, input: UpdateScepInput) -> AttachedProfile:
        model = await service.update_scep(
            actor=info.context.actor,
            application_id=parse_id(input.application_id, "application"),
            profile_id=parse_id(input.profile_id, "profile"),
            changes=_changes(input),
            static_challenge=input.static_challenge,
        )
        return _attached(model, info)

    @guarded_mutation(
        Permission.ENROLLMENT_MANAGE, description="Disable SCEP on an attached profile (settings are kept)."
    )
    async def disable_scep(
        self, info: Info, application_id: strawberry.ID, profile_id: strawberry.ID
    ) -> AttachedProfile:
        model = await service.disable_scep(
            actor=info.context.actor,
            application_id=parse_id(application_id, "application"),
            profile_id=parse_id(profile_id, "profile"),
        )
        return _attached(model, info)

    @guarded_mutation(
        Permission.SCEP_CHALLENGE_CREATE,
        description="Create a one-time SCEP challenge (DYNAMIC mode; Operators and Admins); shown once.",
    )
    async def generate_scep_challenge(
        self, info: Info, application_id: strawberry.ID, profile_id: strawberry.ID
    ) -> ScepChallenge:
        actor = info.context.actor
        app_id, parsed_profile = parse_id(application_id, "application"), parse_id(profile_id, "profile")
        generated = await service.generate_scep_challenge(
            actor=actor, application_id=app_id, profile_id=parsed_profile
        )
        assert actor.organization_id is not None
        return ScepChallenge(
            _organization_id=actor.organization_id,
            _application_id=app_id,
            _profile_id=parsed_profile,
            id=strawberry.ID(str(generated.id)),
            challenge=generated.challenge,
            expires_at=generated.expires_at,
        )
