"""The shared PKI: certificate authorities, policies and profiles (Product Admins manage, members read)."""

from __future__ import annotations

from datetime import datetime
from enum import Enum
from typing import Any

import strawberry
from strawberry.scalars import JSON
from strawberry.types import Info

from api.graphql.ids import parse_id
from api.graphql.permission import guard_type, guarded_field, guarded_mutation
from core import ca as ca_service
from core import policy as policy_service
from core import profile as profile_service
from core.authz import Permission, Scope
from models import CertificateAuthority as CertificateAuthorityModel
from models import CertificatePolicy as CertificatePolicyModel
from models import CertificateProfile as CertificateProfileModel
from models import enums
from pki.key import KeyAlgorithm as PkiKeyAlgorithm


@strawberry.enum(name="KeyAlgorithm", description="Key types Keyward generates and accepts.")
class KeyAlgorithmEnum(Enum):
    RSA_2048 = "RSA_2048"
    RSA_3072 = "RSA_3072"
    RSA_4096 = "RSA_4096"
    EC_P256 = "EC_P256"
    EC_P384 = "EC_P384"
    ED25519 = "ED25519"

    def to_pki(self) -> PkiKeyAlgorithm:
        return PkiKeyAlgorithm(self.value)


@strawberry.enum(
    name="CaStatus", description="PENDING_CERTIFICATE waits for the certificate its external parent signs."
)
class CaStatusEnum(Enum):
    PENDING_CERTIFICATE = "pending_certificate"
    ACTIVE = "active"
    DISABLED = "disabled"


@strawberry.enum(name="CaKind")
class CaKindEnum(Enum):
    ROOT = "root"
    INTERMEDIATE = "intermediate"


def _key_algorithm(value: str) -> KeyAlgorithmEnum:
    return KeyAlgorithmEnum(PkiKeyAlgorithm(value).value)


@guard_type(Permission.PKI_READ)
@strawberry.type(description="One attribute of a subject distinguished name, e.g. O=Acme.")
class SubjectAttribute:
    _scope: strawberry.Private[Scope]
    type: str
    value: str

    def authz_scope(self) -> Scope:
        return self._scope


@guard_type(Permission.PKI_READ)
@strawberry.type(description="A certificate authority of the shared PKI; its private key is never exposed.")
class CertificateAuthority:
    _model: strawberry.Private[CertificateAuthorityModel]
    id: strawberry.ID
    name: str
    kind: CaKindEnum
    status: CaStatusEnum
    key_algorithm: KeyAlgorithmEnum
    subject_dn: str
    path_length: int | None = strawberry.field(description="Null means no limit.")
    external_parent: bool
    certificate_pem: str | None = strawberry.field(
        description="Null until an external parent's cert is imported."
    )
    chain_pem: str | None = strawberry.field(
        description="The external parent's chain as imported, parent first."
    )
    csr_pem: str | None = strawberry.field(description="For an external parent: the CSR to have it sign.")
    serial_number: str | None = strawberry.field(description="Uppercase hex.")
    not_before: datetime | None
    not_after: datetime | None
    ca_certificate_url: str
    crl_url: str
    ocsp_url: str
    created_at: datetime
    updated_at: datetime

    def authz_scope(self) -> Scope:
        return Scope(self._model.organization_id)

    @guarded_field(
        Permission.PKI_READ, description="The internal parent CA; null for roots and external parents."
    )
    async def parent(self) -> CertificateAuthority | None:
        if self._model.parent_id is None:
            return None
        parent = await CertificateAuthorityModel.get_or_none(id=self._model.parent_id)
        return CertificateAuthority.from_model(parent) if parent is not None else None

    @classmethod
    def from_model(cls, model: CertificateAuthorityModel) -> CertificateAuthority:
        urls = ca_service.issuer_urls(model.id)
        return cls(
            _model=model,
            id=strawberry.ID(str(model.id)),
            name=model.name,
            kind=CaKindEnum(enums.CaKind(model.kind).value),
            status=CaStatusEnum(enums.CaStatus(model.status).value),
            key_algorithm=_key_algorithm(model.key_algorithm),
            subject_dn=model.subject_dn,
            path_length=model.path_length,
            external_parent=model.external_parent,
            certificate_pem=model.certificate_pem,
            chain_pem=model.chain_pem,
            csr_pem=model.csr_pem,
            serial_number=model.serial_hex,
            not_before=model.not_before,
            not_after=model.not_after,
            ca_certificate_url=urls.ca_issuers,
            crl_url=urls.crl,
            ocsp_url=urls.ocsp,
            created_at=model.created_at,
            updated_at=model.updated_at,
        )


@guard_type(Permission.PKI_READ)
@strawberry.type(description="What a certificate may look like (SPEC §4).")
class CertificatePolicy:
    _model: strawberry.Private[CertificatePolicyModel]
    id: strawberry.ID
    name: str
    description: str
    rules: JSON = strawberry.field(description="Normalized rules: unset allows anything, empty forbids.")
    created_at: datetime
    updated_at: datetime

    def authz_scope(self) -> Scope:
        return Scope(self._model.organization_id)

    @classmethod
    def from_model(cls, model: CertificatePolicyModel) -> CertificatePolicy:
        return cls(
            _model=model,
            id=strawberry.ID(str(model.id)),
            name=model.name,
            description=model.description,
            rules=model.rules,
            created_at=model.created_at,
            updated_at=model.updated_at,
        )


@guard_type(Permission.PKI_READ)
@strawberry.type(description="One CA + one policy + issuance defaults; serves many applications.")
class CertificateProfile:
    _model: strawberry.Private[CertificateProfileModel]
    id: strawberry.ID
    name: str
    description: str
    default_validity: str
    default_key_algorithm: KeyAlgorithmEnum
    default_key_usages: list[str]
    default_extended_key_usages: list[str]
    default_subject: list[SubjectAttribute]
    renew_before_days: int
    deleted_at: datetime | None = strawberry.field(description="Set once deleted: no new issuance.")
    created_at: datetime
    updated_at: datetime

    def authz_scope(self) -> Scope:
        return Scope(self._model.organization_id)

    @guarded_field(Permission.PKI_READ)
    async def ca(self) -> CertificateAuthority:
        return CertificateAuthority.from_model(await CertificateAuthorityModel.get(id=self._model.ca_id))

    @guarded_field(Permission.PKI_READ)
    async def policy(self) -> CertificatePolicy:
        return CertificatePolicy.from_model(await CertificatePolicyModel.get(id=self._model.policy_id))

    @classmethod
    def from_model(cls, model: CertificateProfileModel) -> CertificateProfile:
        scope = Scope(model.organization_id)
        return cls(
            _model=model,
            id=strawberry.ID(str(model.id)),
            name=model.name,
            description=model.description,
            default_validity=model.default_validity,
            default_key_algorithm=_key_algorithm(model.default_key_algorithm),
            default_key_usages=list(model.default_key_usages),
            default_extended_key_usages=list(model.default_extended_key_usages),
            default_subject=[
                SubjectAttribute(_scope=scope, type=t, value=v) for t, v in model.default_subject
            ],
            renew_before_days=model.renew_before_days,
            deleted_at=model.deleted_at,
            created_at=model.created_at,
            updated_at=model.updated_at,
        )


# ---------------------------------------------------------------- inputs


@strawberry.input
class CreateRootCaInput:
    name: str
    subject: str = strawberry.field(description="RFC 4514 DN, e.g. 'CN=Acme Root CA,O=Acme,C=US'.")
    key_algorithm: KeyAlgorithmEnum = KeyAlgorithmEnum.EC_P256
    validity: str = strawberry.field(default="10y", description="Duration: 10y, 5y, 365d, 12m, 24h.")
    path_length: int | None = strawberry.field(default=None, description="Null means no limit.")


@strawberry.input
class CreateIntermediateCaInput:
    name: str
    parent_ca_id: strawberry.ID
    subject: str = strawberry.field(description="RFC 4514 DN, e.g. 'CN=Acme Issuing CA 1,O=Acme'.")
    key_algorithm: KeyAlgorithmEnum = KeyAlgorithmEnum.EC_P256
    validity: str = strawberry.field(default="5y", description="Capped at the parent's notAfter.")
    path_length: int | None = strawberry.field(default=0, description="Null inherits parent − 1.")


@strawberry.input
class CreateExternalIntermediateCaInput:
    name: str
    subject: str = strawberry.field(description="RFC 4514 DN put in the CSR.")
    key_algorithm: KeyAlgorithmEnum = KeyAlgorithmEnum.EC_P256
    path_length: int | None = strawberry.field(default=0, description="Requested in the CSR.")


@strawberry.input
class ImportCaCertificateInput:
    ca_id: strawberry.ID
    certificate_pem: str = strawberry.field(description="The certificate the external parent signed (PEM).")
    chain_pem: str = strawberry.field(
        description="The external parent's certificate, then its issuers (PEM), up to the root if known."
    )


@strawberry.input
class CreatePolicyInput:
    name: str
    description: str = ""
    rules: JSON | None = strawberry.field(
        default=None, description="Policy rules (SPEC §4); null or {} allows anything (no CA certificates)."
    )


@strawberry.input
class UpdatePolicyInput:
    name: str | None = None
    description: str | None = None
    rules: JSON | None = strawberry.field(
        default=strawberry.UNSET, description="Replaces every rule; omit to keep the current rules."
    )


@strawberry.input(description='One default subject attribute, e.g. {type: "O", value: "Acme"}.')
class SubjectAttributeDefaultInput:
    type: str
    value: str


@strawberry.input
class CreateProfileInput:
    name: str
    ca_id: strawberry.ID
    policy_id: strawberry.ID
    description: str = ""
    default_validity: str = "90d"
    default_key_algorithm: KeyAlgorithmEnum = KeyAlgorithmEnum.EC_P256
    default_key_usages: list[str] = strawberry.field(
        default_factory=list,
        description="Empty: the key type's default (digitalSignature, + keyEncipherment for RSA).",
    )
    default_extended_key_usages: list[str] = strawberry.field(default_factory=list)
    default_subject: list[SubjectAttributeDefaultInput] = strawberry.field(default_factory=list)
    renew_before_days: int = 30


@strawberry.input(description="Fields left null keep their value.")
class UpdateProfileInput:
    name: str | None = None
    description: str | None = None
    ca_id: strawberry.ID | None = None
    policy_id: strawberry.ID | None = None
    default_validity: str | None = None
    default_key_algorithm: KeyAlgorithmEnum | None = None
    default_key_usages: list[str] | None = None
    default_extended_key_usages: list[str] | None = None
    default_subject: list[SubjectAttributeDefaultInput] | None = None
    renew_before_days: int | None = None


def _subject_pairs(items: list[SubjectAttributeDefaultInput]) -> tuple[tuple[str, str], ...]:
    return tuple((item.type, item.value) for item in items)


# ---------------------------------------------------------------- root fields


@strawberry.type
class Query:
    @guarded_field(Permission.PKI_READ, description="Every certificate authority of the organization.")
    async def certificate_authorities(self, info: Info) -> list[CertificateAuthority]:
        rows = await ca_service.list_cas(actor=info.context.actor)
        return [CertificateAuthority.from_model(row) for row in rows]

    @guarded_field(Permission.PKI_READ)
    async def certificate_authority(self, info: Info, id: strawberry.ID) -> CertificateAuthority:
        model = await ca_service.get_ca(actor=info.context.actor, ca_id=parse_id(id, "certificate authority"))
        return CertificateAuthority.from_model(model)

    @guarded_field(Permission.PKI_READ, description="Every certificate policy of the organization.")
    async def certificate_policies(self, info: Info) -> list[CertificatePolicy]:
        rows = await policy_service.list_policies(actor=info.context.actor)
        return [CertificatePolicy.from_model(row) for row in rows]

    @guarded_field(Permission.PKI_READ)
    async def certificate_policy(self, info: Info, id: strawberry.ID) -> CertificatePolicy:
        model = await policy_service.get_policy(
            actor=info.context.actor, policy_id=parse_id(id, "certificate policy")
        )
        return CertificatePolicy.from_model(model)

    @guarded_field(Permission.PKI_READ, description="Profiles of the organization; deleted ones on request.")
    async def certificate_profiles(
        self, info: Info, include_deleted: bool = False
    ) -> list[CertificateProfile]:
        rows = await profile_service.list_profiles(actor=info.context.actor, include_deleted=include_deleted)
        return [CertificateProfile.from_model(row) for row in rows]

    @guarded_field(Permission.PKI_READ, description="A profile, deleted or not.")
    async def certificate_profile(self, info: Info, id: strawberry.ID) -> CertificateProfile:
        model = await profile_service.get_profile(
            actor=info.context.actor, profile_id=parse_id(id, "certificate profile")
        )
        return CertificateProfile.from_model(model)


@strawberry.type
class Mutation:
    @guarded_mutation(Permission.PKI_MANAGE, description="Create a self-signed root CA.")
    async def create_root_ca(self, info: Info, input: CreateRootCaInput) -> CertificateAuthority:
        model = await ca_service.create_root_ca(
            actor=info.context.actor,
            name=input.name,
            subject=input.subject,
            key_algorithm=input.key_algorithm.to_pki(),
            validity=input.validity,
            path_length=input.path_length,
        )
        return CertificateAuthority.from_model(model)

    @guarded_mutation(
        Permission.PKI_MANAGE, description="Create an intermediate CA signed by an internal CA."
    )
    async def create_intermediate_ca(
        self, info: Info, input: CreateIntermediateCaInput
    ) -> CertificateAuthority:
        model = await ca_service.create_intermediate_ca(
            actor=info.context.actor,
            name=input.name,
            parent_ca_id=parse_id(input.parent_ca_id, "parent certificate authority"),
            subject=input.subject,
            key_algorithm=input.key_algorithm.to_pki(),
            validity=input.validity,
            path_length=input.path_length,
        )
        return CertificateAuthority.from_model(model)

    @guarded_mutation(
        Permission.PKI_MANAGE,
        description="Intermediate CA with a parent outside Keyward: pending, with csrPem to have signed.",
    )
    async def create_external_intermediate_ca(
        self, info: Info, input: CreateExternalIntermediateCaInput
    ) -> CertificateAuthority:
        model = await ca_service.create_external_intermediate_ca(
            actor=info.context.actor,
            name=input.name,
            subject=input.subject,
            key_algorithm=input.key_algorithm.to_pki(),
            path_length=input.path_length,
        )
        return CertificateAuthority.from_model(model)

    @guarded_mutation(
        Permission.PKI_MANAGE,
        description="Import the certificate an external parent signed; the CA becomes active.",
    )
    async def import_ca_certificate(
        self, info: Info, input: ImportCaCertificateInput
    ) -> CertificateAuthority:
        model = await ca_service.import_ca_certificate(
            actor=info.context.actor,
            ca_id=parse_id(input.ca_id, "certificate authority"),
            certificate_pem=input.certificate_pem,
            chain_pem=input.chain_pem,
        )
        return CertificateAuthority.from_model(model)

    @guarded_mutation(
        Permission.PKI_MANAGE, description="Stop a CA from issuing; CRL and OCSP keep answering."
    )
    async def disable_ca(self, info: Info, id: strawberry.ID) -> CertificateAuthority:
        model = await ca_service.set_ca_enabled(
            actor=info.context.actor, ca_id=parse_id(id, "certificate authority"), enabled=False
        )
        return CertificateAuthority.from_model(model)

    @guarded_mutation(Permission.PKI_MANAGE, description="Let a disabled CA issue again.")
    async def enable_ca(self, info: Info, id: strawberry.ID) -> CertificateAuthority:
        model = await ca_service.set_ca_enabled(
            actor=info.context.actor, ca_id=parse_id(id, "certificate authority"), enabled=True
        )
        return CertificateAuthority.from_model(model)

    @guarded_mutation(Permission.PKI_MANAGE, description="Create a certificate policy.")
    async def create_policy(self, info: Info, input: CreatePolicyInput) -> CertificatePolicy:
        model = await policy_service.create_policy(
            actor=info.context.actor, name=input.name, description=input.description, rules=input.rules
        )
        return CertificatePolicy.from_model(model)

    @guarded_mutation(Permission.PKI_MANAGE, description="Rename, describe or replace the rules of a policy.")
    async def update_policy(
        self, info: Info, id: strawberry.ID, input: UpdatePolicyInput
    ) -> CertificatePolicy:
        replace = input.rules is not strawberry.UNSET
        model = await policy_service.update_policy(
            actor=info.context.actor,
            policy_id=parse_id(id, "certificate policy"),
            name=input.name,
            description=input.description,
            rules=input.rules if replace else None,
            replace_rules=replace,
        )
        return CertificatePolicy.from_model(model)

    @guarded_mutation(Permission.PKI_MANAGE, description="Delete a policy no profile uses; returns its id.")
    async def delete_policy(self, info: Info, id: strawberry.ID) -> strawberry.ID:
        await policy_service.delete_policy(
            actor=info.context.actor, policy_id=parse_id(id, "certificate policy")
        )
        return id

    @guarded_mutation(Permission.PKI_MANAGE, description="Create a profile: a CA, a policy and defaults.")
    async def create_profile(self, info: Info, input: CreateProfileInput) -> CertificateProfile:
        model = await profile_service.create_profile(
            actor=info.context.actor,
            name=input.name,
            description=input.description,
            ca_id=parse_id(input.ca_id, "certificate authority"),
            policy_id=parse_id(input.policy_id, "certificate policy"),
            defaults=profile_service.ProfileDefaults(
                validity=input.default_validity,
                key_algorithm=input.default_key_algorithm.value,
                key_usages=tuple(input.default_key_usages),
                extended_key_usages=tuple(input.default_extended_key_usages),
                subject=_subject_pairs(input.default_subject),
                renew_before_days=input.renew_before_days,
            ),
        )
        return CertificateProfile.from_model(model)

    @guarded_mutation(Permission.PKI_MANAGE, description="Change a profile; the defaults are checked again.")
    async def update_profile(
        self, info: Info, id: strawberry.ID, input: UpdateProfileInput
    ) -> CertificateProfile:
        changes: dict[str, Any] = {}
        if input.default_validity is not None:
            changes["validity"] = input.default_validity
        if input.default_key_algorithm is not None:
            changes["key_algorithm"] = input.default_key_algorithm.value
        if input.default_key_usages is not None:
            changes["key_usages"] = tuple(input.default_key_usages)
        if input.default_extended_key_usages is not None:
            changes["extended_key_usages"] = tuple(input.default_extended_key_usages)
        if input.default_subject is not None:
            changes["subject"] = _subject_pairs(input.default_subject)
        if input.renew_before_days is not None:
            changes["renew_before_days"] = input.renew_before_days
        model = await profile_service.update_profile(
            actor=info.context.actor,
            profile_id=parse_id(id, "certificate profile"),
            name=input.name,
            description=input.description,
            ca_id=parse_id(input.ca_id, "certificate authority") if input.ca_id is not None else None,
            policy_id=parse_id(input.policy_id, "certificate policy")
            if input.policy_id is not None
            else None,
            changes=changes,
        )
        return CertificateProfile.from_model(model)

    @guarded_mutation(
        Permission.PKI_MANAGE,
        description="Soft-delete a profile: no new issuance from it; its certificates stay valid.",
    )
    async def delete_profile(self, info: Info, id: strawberry.ID) -> CertificateProfile:
        model = await profile_service.delete_profile(
            actor=info.context.actor, profile_id=parse_id(id, "certificate profile")
        )
        return CertificateProfile.from_model(model)
