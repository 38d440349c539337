"""Certificates: the inventory of an application, issuance, renewal, revocation, export and import."""

from __future__ import annotations

import base64
import binascii
import uuid
from datetime import datetime
from enum import Enum
from typing import TYPE_CHECKING, Annotated, Any, cast

import strawberry
from strawberry.scalars import JSON
from strawberry.types import Info

from api.graphql.ids import parse_id
from api.graphql.pagination import Connection, Edge, PageInfo, check_page_size, decode_cursor, encode_cursor
from api.graphql.permission import guard_type, guarded_field, guarded_mutation
from core import certificate as service
from core import issuance
from core.approval import ApprovalPending
from core.authz import Permission, Scope
from core.errors import InvalidInput, NotFound
from models import Application as ApplicationModel
from models import Certificate as CertificateModel
from models import CertificateProfile as CertificateProfileModel
from models import enums

if TYPE_CHECKING:
    from api.graphql.application import Application
    from api.graphql.approval import ApprovalRequest
    from api.graphql.legacy import LegacyProject
    from api.graphql.pki import CertificateProfile


@strawberry.enum(
    name="CertificateStatus", description="EXPIRED also covers active certificates past notAfter."
)
class CertificateStatusEnum(Enum):
    ACTIVE = "active"
    RENEWED = "renewed"
    REVOKED = "revoked"
    EXPIRED = "expired"


@strawberry.enum(name="CertificateSource")
class CertificateSourceEnum(Enum):
    ISSUED = "issued"
    IMPORTED = "imported"


@strawberry.enum(name="CertificateEnrollmentMethod", description="How a certificate entered the inventory.")
class EnrollmentMethodEnum(Enum):
    API = "api"
    ACME = "acme"
    EST = "est"
    SCEP = "scep"
    IMPORT = "import"


@strawberry.enum(name="RevocationReason", description="RFC 5280 CRLReason codes (removeFromCRL excluded).")
class RevocationReasonEnum(Enum):
    UNSPECIFIED = "unspecified"
    KEY_COMPROMISE = "keyCompromise"
    CA_COMPROMISE = "cACompromise"
    AFFILIATION_CHANGED = "affiliationChanged"
    SUPERSEDED = "superseded"
    CESSATION_OF_OPERATION = "cessationOfOperation"
    CERTIFICATE_HOLD = "certificateHold"
    PRIVILEGE_WITHDRAWN = "privilegeWithdrawn"
    AA_COMPROMISE = "aACompromise"


@strawberry.enum(name="RenewalMode")
class RenewalModeEnum(Enum):
    NEW_KEY = "new_key"
    SAME_KEY = "same_key"
    CSR = "csr"


@strawberry.enum(name="CertificateExportFormat")
class ExportFormatEnum(Enum):
    PEM = "pem"
    PKCS12 = "pkcs12"


def _scope(model: CertificateModel) -> Scope:
    return service.certificate_scope(model)


@guard_type(Permission.CERTIFICATE_READ)
@strawberry.type(name="SubjectAltName", description="One subject alternative name: DNS, IP, EMAIL or URI.")
class SubjectAltNameEntry:
    _scope: strawberry.Private[Scope]
    type: str
    value: str

    def authz_scope(self) -> Scope:
        return self._scope


@guard_type(Permission.CERTIFICATE_READ)
@strawberry.type(description="A certificate of an application's inventory.")
class Certificate:
    _model: strawberry.Private[CertificateModel]
    id: strawberry.ID
    serial_number: str = strawberry.field(description="Uppercase hex, no colons.")
    common_name: str | None
    subject_dn: str
    sans: list[SubjectAltNameEntry]
    key_algorithm: str
    signature_algorithm: str
    not_before: datetime
    not_after: datetime
    source: CertificateSourceEnum
    enrollment_method: EnrollmentMethodEnum
    auto_renew: bool
    renew_before_days: int
    renewal_due_at: datetime | None = strawberry.field(
        description="When the worker renews it (auto-renew on, server-held key); null otherwise."
    )
    renewal_error: str | None = strawberry.field(description="Why the last automatic renewal failed.")
    renewal_attempts: int = strawberry.field(description="Failed automatic renewals so far.")
    next_renewal_attempt_at: datetime | None = strawberry.field(
        description="No automatic renewal is tried before then (backoff after a failure)."
    )
    revoked_at: datetime | None
    revocation_reason: RevocationReasonEnum | None
    certificate_pem: str
    chain_pem: str = strawberry.field(description="Issuing CA up to, not including, the root.")
    fingerprint_sha256: str
    key_usages: list[str]
    extended_key_usages: list[str]
    metadata: JSON
    has_private_key: bool = strawberry.field(description="The server generated and holds the private key.")
    created_at: datetime

    def authz_scope(self) -> Scope:
        return _scope(self._model)

    @strawberry.field(description="ACTIVE certificates past notAfter report EXPIRED.")
    def status(self) -> CertificateStatusEnum:
        return CertificateStatusEnum(service.effective_status(self._model).value)

    @strawberry.field(description="Null for a legacy project's certificate (see legacyProject).")
    async def application(self) -> Annotated[Application, strawberry.lazy("api.graphql.application")] | None:
        from api.graphql.application import Application

        if self._model.application_id is None:
            return None
        model = await ApplicationModel.get(id=self._model.application_id)
        return None if model.legacy else Application.from_model(model)

    @strawberry.field(description="The legacy project it belongs to; null in an Application.")
    async def legacy_project(
        self, info: Info
    ) -> Annotated[LegacyProject, strawberry.lazy("api.graphql.legacy")] | None:
        from api.graphql.legacy import legacy_project_of

        return await legacy_project_of(info, self._model.application_id)

    @strawberry.field(description="Null for an imported certificate given no profile.")
    async def profile(self) -> Annotated[CertificateProfile, strawberry.lazy("api.graphql.pki")] | None:
        from api.graphql.pki import CertificateProfile

        if self._model.profile_id is None:
            return None
        model = await CertificateProfileModel.get(id=self._model.profile_id)
        return CertificateProfile.from_model(model)

    @strawberry.field(description="The certificate this one renewed.")
    async def renewed_from(self) -> Certificate | None:
        if self._model.renewed_from_id is None:
            return None
        model = await CertificateModel.get_or_none(id=self._model.renewed_from_id)
        return Certificate.from_model(model) if model else None

    @strawberry.field(description="The certificate that renewed this one.")
    async def renewed_by(self) -> Certificate | None:
        model = await CertificateModel.filter(renewed_from_id=self._model.id).order_by("created_at").first()
        return Certificate.from_model(model) if model else None

    @guarded_field(
        Permission.PRIVATE_KEY_READ,
        description="PKCS#8 PEM of a server-generated key (null otherwise); every read is audited.",
    )
    async def private_key_pem(self, info: Info) -> str | None:
        if self._model.encrypted_private_key is None:
            return None
        return await service.read_private_key(
            actor=info.context.actor, certificate_id=self._model.id, certificate=self._model
        )

    @classmethod
    def from_model(cls, model: CertificateModel) -> Certificate:
        scope = _scope(model)
        return cls(
            _model=model,
            id=strawberry.ID(str(model.id)),
            serial_number=model.serial_hex,
            common_name=model.common_name,
            subject_dn=model.subject_dn,
            sans=[
                SubjectAltNameEntry(_scope=scope, type=s["type"], value=s["value"]) for s in model.sans or []
            ],
            key_algorithm=model.key_algorithm,
            signature_algorithm=model.signature_algorithm,
            not_before=model.not_before,
            not_after=model.not_after,
            source=CertificateSourceEnum(enums.CertificateSource(model.source).value),
            enrollment_method=EnrollmentMethodEnum(enums.EnrollmentMethod(model.enrollment_method).value),
            auto_renew=model.auto_renew,
            renew_before_days=model.renew_before_days,
            renewal_due_at=model.renewal_due_at,
            renewal_error=model.renewal_error,
            renewal_attempts=model.renewal_attempts,
            next_renewal_attempt_at=model.next_renewal_attempt_at,
            revoked_at=model.revoked_at,
            revocation_reason=RevocationReasonEnum(model.revocation_reason)
            if model.revocation_reason
            else None,
            certificate_pem=model.certificate_pem,
            chain_pem=model.chain_pem,
            fingerprint_sha256=model.fingerprint_sha256,
            key_usages=list(model.key_usages or []),
            extended_key_usages=list(model.extended_key_usages or []),
            metadata=cast(JSON, dict(model.metadata or {})),
            has_private_key=model.encrypted_private_key is not None,
            created_at=model.created_at,
        )


# ---------------------------------------------------------------- inventory


@strawberry.input(description="All given filters must hold.")
class CertificateFilter:
    status: CertificateStatusEnum | None = None
    profile_id: strawberry.ID | None = None
    name_contains: str | None = strawberry.field(default=None, description="In the common name or a SAN.")
    expires_before: datetime | None = None


def _cursor_key(after: str | None) -> tuple[datetime, uuid.UUID] | None:
    if after is None:
        return None
    created_at, row_id = decode_cursor(after)
    try:
        return created_at, uuid.UUID(row_id)
    except ValueError:
        raise InvalidInput(f"cursor {after!r} is not one this server returned", field="after") from None


async def application_certificates(
    application_model: ApplicationModel,
    info: Info,
    first: int = 50,
    after: str | None = None,
    filter: CertificateFilter | None = None,
) -> Connection[Certificate]:
    """The inventory of one application, newest first; wired as `Application.certificates`."""
    wanted = filter or CertificateFilter()
    profile_id = None
    if wanted.profile_id is not None:
        try:
            profile_id = uuid.UUID(str(wanted.profile_id))
        except ValueError:
            raise NotFound(f"profile {wanted.profile_id!r} not found", field="profileId") from None
    page = await service.list_certificates(
        actor=info.context.actor,
        application_id=application_model.id,
        application=application_model,
        status=enums.CertificateStatus(wanted.status.value) if wanted.status else None,
        profile_id=profile_id,
        name_contains=wanted.name_contains,
        expires_before=wanted.expires_before,
        first=check_page_size(first),
        after=_cursor_key(after),
    )
    edges: list[Any] = [
        Edge(cursor=encode_cursor(row.created_at, row.id), node=Certificate.from_model(row))
        for row in page.items
    ]
    return Connection(
        edges=edges,
        page_info=PageInfo(has_next_page=page.has_next_page, end_cursor=edges[-1].cursor if edges else None),
    )


# ---------------------------------------------------------------- inputs and payloads


@strawberry.input
class SubjectAttributeInput:
    type: str = strawberry.field(description="CN, O, OU, C, ST, L or SERIALNUMBER.")
    value: str


@strawberry.input(description="Give a csr, or a commonName/subject/sans for a key the server generates.")
class IssueCertificateInput:
    application_id: strawberry.ID
    profile_id: strawberry.ID
    csr: str | None = strawberry.field(default=None, description="PEM PKCS#10 request.")
    common_name: str | None = None
    subject: list[SubjectAttributeInput] | None = None
    sans: list[str] | None = strawberry.field(
        default=None, description='"DNS:a.example.com", "IP:10.0.0.1", or bare names and addresses.'
    )
    key_algorithm: str | None = strawberry.field(
        default=None,
        description="RSA_2048, RSA_3072, RSA_4096, EC_P256, EC_P384 or ED25519; default: profile's.",
    )
    key_usages: list[str] | None = None
    extended_key_usages: list[str] | None = None
    ttl: str | None = strawberry.field(
        default=None, description='Validity such as "30d"; default: profile\'s.'
    )
    metadata: JSON | None = None
    auto_renew: bool | None = strawberry.field(
        default=None, description="Server-generated keys only; default: the attachment's setting."
    )


@strawberry.input
class RenewCertificateInput:
    certificate_id: strawberry.ID
    mode: RenewalModeEnum
    csr: str | None = strawberry.field(default=None, description="With mode CSR: the new PEM request.")


@strawberry.input(description="Fields left null keep their value.")
class UpdateCertificateInput:
    certificate_id: strawberry.ID
    auto_renew: bool | None = strawberry.field(
        default=None, description="Server-generated keys only; turning it off stops automatic renewal."
    )
    metadata: JSON | None = strawberry.field(default=None, description="Replaces the whole map.")


@strawberry.input
class RevokeCertificateInput:
    certificate_id: strawberry.ID
    reason: RevocationReasonEnum = RevocationReasonEnum.UNSPECIFIED


@strawberry.input
class ExportCertificateInput:
    certificate_id: strawberry.ID
    format: ExportFormatEnum = ExportFormatEnum.PEM
    include_private_key: bool = False
    include_root: bool = False
    password: str | None = strawberry.field(default=None, description="Required for PKCS12.")


@strawberry.input(description="Give pem (certificate, chain, optional key) or pkcs12Base64.")
class ImportCertificateInput:
    application_id: strawberry.ID
    profile_id: strawberry.ID | None = None
    pem: str | None = None
    pkcs12_base64: str | None = None
    password: str | None = strawberry.field(default=None, description="Of the PKCS#12 file or encrypted key.")
    metadata: JSON | None = None


@strawberry.type
class ScopedPayload:
    """A mutation's result: its fields are checked against the scope of the certificate it is about."""

    _scope: strawberry.Private[Scope]

    def authz_scope(self) -> Scope:
        return self._scope


@guard_type(Permission.CERTIFICATE_READ)
@strawberry.type
class IssueCertificatePayload(ScopedPayload):
    certificate: Certificate | None = strawberry.field(
        description="Null while an approval policy holds the request (see approvalRequest)."
    )
    approval_request: Annotated[ApprovalRequest, strawberry.lazy("api.graphql.approval")] | None = (
        strawberry.field(default=None, description="The request waiting for approval, status PENDING.")
    )


@guard_type(Permission.CERTIFICATE_READ)
@strawberry.type
class RenewCertificatePayload(ScopedPayload):
    certificate: Certificate | None = strawberry.field(
        description="The new certificate; null while an approval policy holds it (see approvalRequest)."
    )
    previous: Certificate = strawberry.field(
        description="The renewed one, now RENEWED and still valid (still ACTIVE while the renewal waits)."
    )
    approval_request: Annotated[ApprovalRequest, strawberry.lazy("api.graphql.approval")] | None = (
        strawberry.field(default=None, description="The renewal waiting for approval, status PENDING.")
    )


@guard_type(Permission.CERTIFICATE_READ)
@strawberry.type
class UpdateCertificatePayload(ScopedPayload):
    certificate: Certificate


@guard_type(Permission.CERTIFICATE_READ)
@strawberry.type
class RevokeCertificatePayload(ScopedPayload):
    certificate: Certificate


@guard_type(Permission.CERTIFICATE_READ)
@strawberry.type
class ExportCertificatePayload(ScopedPayload):
    filename: str
    pem: str | None = strawberry.field(description="With format PEM: leaf, chain, optional root and key.")
    pkcs12_base64: str | None = strawberry.field(description="With format PKCS12: the file, base64.")


@guard_type(Permission.CERTIFICATE_READ)
@strawberry.type
class ImportCertificatePayload(ScopedPayload):
    certificate: Certificate


def _import_data(input: ImportCertificateInput) -> bytes:
    if bool(input.pem) == bool(input.pkcs12_base64):
        raise InvalidInput("give exactly one of pem and pkcs12Base64", field="pem")
    if input.pem:
        return input.pem.encode("utf-8")
    assert input.pkcs12_base64 is not None
    try:
        return base64.b64decode("".join(input.pkcs12_base64.split()), validate=True)
    except (binascii.Error, ValueError):
        raise InvalidInput("pkcs12Base64 is not valid base64", field="pkcs12Base64") from None


@strawberry.type
class Query:
    @guarded_field(
        Permission.CERTIFICATE_READ, description="One certificate; NOT_FOUND if you may not see it."
    )
    async def certificate(self, info: Info, id: strawberry.ID) -> Certificate:
        model = await service.get_certificate(
            actor=info.context.actor, certificate_id=parse_id(id, "certificate")
        )
        return Certificate.from_model(model)


@strawberry.type
class Mutation:
    @guarded_mutation(
        Permission.CERTIFICATE_ISSUE,
        description="Issue from a CSR or with a server-generated key; the profile's policy is enforced.",
    )
    async def issue_certificate(self, info: Info, input: IssueCertificateInput) -> IssueCertificatePayload:
        subject = [(item.type, item.value) for item in input.subject or []]
        if input.common_name is not None:
            subject.append(("CN", input.common_name))
        try:
            model = await issuance.issue_certificate(
                actor=info.context.actor,
                application_id=parse_id(input.application_id, "application"),
                profile_id=parse_id(input.profile_id, "profile"),
                csr=input.csr,
                subject=subject,
                sans=input.sans,
                key_algorithm=input.key_algorithm,
                key_usages=input.key_usages,
                extended_key_usages=input.extended_key_usages,
                validity=input.ttl,
                metadata=cast(dict[str, Any] | None, input.metadata),
                auto_renew=input.auto_renew,
            )
        except ApprovalPending as pending:
            from api.graphql.approval import ApprovalRequest  # noqa: PLC0415 - approval imports this module

            held = pending.request
            return IssueCertificatePayload(
                _scope=Scope(held.organization_id, held.application_id, profile_id=held.profile_id),
                certificate=None,
                approval_request=ApprovalRequest.from_model(held),
            )
        return IssueCertificatePayload(_scope=_scope(model), certificate=Certificate.from_model(model))

    @guarded_mutation(
        Permission.CERTIFICATE_ISSUE,
        description="Renew once: with a new key, the same key (server-held keys only) or a new CSR.",
    )
    async def renew_certificate(self, info: Info, input: RenewCertificateInput) -> RenewCertificatePayload:
        actor = info.context.actor
        certificate_id = parse_id(input.certificate_id, "certificate")
        try:
            model = await service.renew_certificate(
                actor=actor,
                certificate_id=certificate_id,
                mode=service.RenewalMode(input.mode.value),
                csr=input.csr,
            )
        except ApprovalPending as pending:
            from api.graphql.approval import ApprovalRequest  # noqa: PLC0415 - approval imports this module

            held = pending.request
            previous = await service.get_certificate(actor=actor, certificate_id=certificate_id)
            return RenewCertificatePayload(
                _scope=_scope(previous),
                certificate=None,
                previous=Certificate.from_model(previous),
                approval_request=ApprovalRequest.from_model(held),
            )
        previous = await service.get_certificate(actor=actor, certificate_id=certificate_id)
        return RenewCertificatePayload(
            _scope=_scope(model),
            certificate=Certificate.from_model(model),
            previous=Certificate.from_model(previous),
        )

    @guarded_mutation(
        Permission.CERTIFICATE_ISSUE,
        description="Turn automatic renewal on or off, or replace the metadata, of one certificate.",
    )
    async def update_certificate(self, info: Info, input: UpdateCertificateInput) -> UpdateCertificatePayload:
        model = await service.update_certificate(
            actor=info.context.actor,
            certificate_id=parse_id(input.certificate_id, "certificate"),
            auto_renew=input.auto_renew,
            metadata=cast(dict[str, Any] | None, input.metadata),
        )
        return UpdateCertificatePayload(_scope=_scope(model), certificate=Certificate.from_model(model))

    @guarded_mutation(
        Permission.CERTIFICATE_REVOKE,
        description="Revoke with an RFC 5280 reason; the CRL is rebuilt at once.",
    )
    async def revoke_certificate(self, info: Info, input: RevokeCertificateInput) -> RevokeCertificatePayload:
        model = await service.revoke_certificate(
            actor=info.context.actor,
            certificate_id=parse_id(input.certificate_id, "certificate"),
            reason=input.reason.value,
        )
        return RevokeCertificatePayload(_scope=_scope(model), certificate=Certificate.from_model(model))

    @guarded_mutation(
        Permission.CERTIFICATE_READ,
        description="PEM bundle or PKCS#12; including the private key needs the private-key permission.",
    )
    async def export_certificate(self, info: Info, input: ExportCertificateInput) -> ExportCertificatePayload:
        certificate_id = parse_id(input.certificate_id, "certificate")
        result = await service.export_certificate(
            actor=info.context.actor,
            certificate_id=certificate_id,
            format=service.ExportFormat(input.format.value),
            include_private_key=input.include_private_key,
            include_root=input.include_root,
            password=input.password,
        )
        return ExportCertificatePayload(
            _scope=_scope(result.certificate),
            filename=result.filename,
            pem=result.pem,
            pkcs12_base64=base64.b64encode(result.pkcs12).decode("ascii") if result.pkcs12 else None,
        )

    @guarded_mutation(
        Permission.CERTIFICATE_ISSUE,
        description="Add an existing certificate (PEM or PKCS#12) to the inventory.",
    )
    async def import_certificate(self, info: Info, input: ImportCertificateInput) -> ImportCertificatePayload:
        model = await service.import_certificate(
            actor=info.context.actor,
            application_id=parse_id(input.application_id, "application"),
            data=_import_data(input),
            password=input.password,
            profile_id=parse_id(input.profile_id, "profile") if input.profile_id else None,
            metadata=cast(dict[str, Any] | None, input.metadata),
        )
        return ImportCertificatePayload(_scope=_scope(model), certificate=Certificate.from_model(model))
