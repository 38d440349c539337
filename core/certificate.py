"""The certificate inventory and its lifecycle: renew, revoke, export, private keys, import, listing."""

from __future__ import annotations

import dataclasses
import enum
import re
import uuid
from collections.abc import Awaitable, Callable, Collection
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from cryptography import x509
from tortoise.backends.base.client import BaseDBAsyncClient
from tortoise.exceptions import IntegrityError
from tortoise.expressions import Q
from tortoise.queryset import QuerySet
from tortoise.transactions import in_transaction

from core import audit, authz, outbox, runtime
from core.access import load_application
from core.authz import Actor, Permission, Scope
from core.ca import rebuild_crl, signing_material
from core.errors import Conflict, InvalidInput, InvalidState, NotFound
from core.issuance import (
    KeyMaterial,
    StoreOptions,
    chain_pem_of,
    check_metadata,
    check_policy,
    fact_columns,
    generate_key,
    load_issuance_context,
    mark_renewed,
    parse_request_csr,
    prepare_request,
    private_key_context,
    renewal_due_at,
    seal_private_key,
    sign,
    store_certificate,
    with_common_name_san,
)
from models import Application, ApplicationProfile, Certificate, CertificateAuthority
from models.enums import CertificateSource, CertificateStatus, EnrollmentMethod
from pki import errors as pki_errors
from pki import sealing
from pki.bundle import load_bundle, pem_bundle, pkcs12_bundle
from pki.certificate import (
    certificate_pem,
    describe_certificate,
    load_certificate,
    load_certificates,
    verify_issued_by,
)
from pki.crl import REVOCATION_REASONS
from pki.duration import parse_duration
from pki.key import KeyAlgorithm, PrivateKey, load_private_key
from pki.name import name_pairs
from pki.san import SubjectAltName

MAX_PAGE_SIZE = 500
# removeFromCRL only exists in delta CRLs; it is not a reason to revoke.
REVOKE_REASONS = tuple(reason for reason in REVOCATION_REASONS if reason != "removeFromCRL")


class RenewalMode(str, enum.Enum):
    NEW_KEY = "new_key"
    SAME_KEY = "same_key"
    CSR = "csr"


class ExportFormat(str, enum.Enum):
    PEM = "pem"
    PKCS12 = "pkcs12"


def certificate_scope(certificate: Certificate) -> Scope:
    return Scope(
        organization_id=certificate.organization_id,
        application_id=certificate.application_id,
        profile_id=certificate.profile_id,
    )


def effective_status(certificate: Certificate, now: datetime | None = None) -> CertificateStatus:
    """An active certificate past notAfter is expired, even before the sweep updates its row."""
    status = CertificateStatus(certificate.status)
    if status == CertificateStatus.ACTIVE and certificate.not_after <= (now or datetime.now(UTC)):
        return CertificateStatus.EXPIRED
    return status


async def get_certificate(
    *, actor: Actor, certificate_id: uuid.UUID, permission: Permission = Permission.CERTIFICATE_READ
) -> Certificate:
    """The certificate if the actor may see its application (else NOT_FOUND), then `permission` on it."""
    authz.require(actor, Permission.SELF)
    certificate = await Certificate.get_or_none(id=certificate_id, organization_id=actor.organization_id)
    if certificate is None:
        raise NotFound(f"certificate {certificate_id} not found")
    scope = certificate_scope(certificate)
    if not authz.can(actor, Permission.CERTIFICATE_READ, scope):
        raise NotFound(f"certificate {certificate_id} not found")
    authz.require(actor, permission, scope)
    return certificate


async def _successor(
    certificate_id: uuid.UUID, connection: BaseDBAsyncClient | None = None
) -> Certificate | None:
    return (
        await Certificate.filter(renewed_from_id=certificate_id)
        .using_db(connection)
        .order_by("created_at")
        .first()
    )


def _already_renewed(certificate_id: uuid.UUID, successor: Certificate | None) -> InvalidState:
    if successor is None:
        return InvalidState(f"certificate {certificate_id} was already renewed")
    return InvalidState(
        f"certificate {certificate_id} was already renewed by certificate {successor.id}; renew that one",
        successor_id=str(successor.id),
    )


# ---------------------------------------------------------------- renewal


async def renew_certificate(
    *,
    actor: Actor,
    certificate_id: uuid.UUID,
    mode: RenewalMode | str,
    csr: str | bytes | None = None,
    enrollment_method: EnrollmentMethod = EnrollmentMethod.API,
    source_address: str | None = None,
    approval_correlation: str | None = None,
    approved_request_id: uuid.UUID | None = None,
    after_insert: Callable[[Certificate, BaseDBAsyncClient], Awaitable[None]] | None = None,
) -> Certificate:
    """A successor from the same profile, policy checked again; the old one becomes `renewed`, still valid.

    Under an active approval policy it raises core.approval.ApprovalPending (the renewal waits) unless
    `approved_request_id` says this is that request, approved; `after_insert` runs in the storing
    transaction (the request turning issued).
    """
    try:
        mode = RenewalMode(mode)
    except ValueError:
        raise InvalidInput(
            f"unknown renewal mode {mode!r}; use new_key, same_key or csr", field="mode"
        ) from None
    if source_address is not None:
        actor = dataclasses.replace(actor, source_address=source_address)
    if mode == RenewalMode.CSR and not csr:
        raise InvalidInput("renewal with mode CSR needs a csr", field="csr")
    if mode != RenewalMode.CSR and csr:
        raise InvalidInput("a csr is only used with mode CSR", field="csr")
    csr_info = parse_request_csr(csr) if csr else None
    old = await get_certificate(
        actor=actor, certificate_id=certificate_id, permission=Permission.CERTIFICATE_ISSUE
    )
    status = CertificateStatus(old.status)
    if status == CertificateStatus.RENEWED:
        raise _already_renewed(old.id, await _successor(old.id))
    if status == CertificateStatus.REVOKED:
        raise InvalidState(f"certificate {old.id} is revoked and cannot be renewed; issue a new one")
    if old.application_id is None or old.profile_id is None:
        raise InvalidState(
            f"certificate {old.id} has no profile to renew from; issue a new certificate from a profile"
        )
    if mode == RenewalMode.SAME_KEY and old.encrypted_private_key is None:
        raise InvalidState(
            "the server does not hold this certificate's private key: renew with NEW_KEY or with a CSR",
            field="mode",
        )
    context = await load_issuance_context(
        actor=actor, application_id=old.application_id, profile_id=old.profile_id, method=enrollment_method
    )
    previous = load_certificate(old.certificate_pem)
    lifetime = _profile_validity(context.profile.default_validity)
    if csr_info is not None:
        subject, algorithm = csr_info.subject, csr_info.key_algorithm
        # As on issuance (and EST re-enrollment): a CSR with no SANs gets its host-name CN as one.
        sans = with_common_name_san(subject, list(csr_info.sans))
    else:
        subject = name_pairs(previous.subject)
        sans = [SubjectAltName(item["type"], item["value"]) for item in old.sans]
        algorithm = KeyAlgorithm(old.key_algorithm)
    prepared = prepare_request(
        context,
        subject=subject,
        sans=sans,
        key_algorithm=algorithm,
        key_usages=frozenset(old.key_usages) or None,
        extended_key_usages=frozenset(old.extended_key_usages),
        validity=lifetime,
    )
    check_policy(context, prepared)
    if approved_request_id is None:
        from core import approval  # noqa: PLC0415 - approval renews through this module

        await approval.hold_renewal_if_required(
            context, prepared, old=old, mode=mode.value, csr=csr, correlation=approval_correlation
        )
    if csr_info is not None:
        key = KeyMaterial(csr_info.public_key, None, csr_info.key_algorithm)
    elif mode == RenewalMode.SAME_KEY:
        private_key = _unseal_private_key(old)
        key = KeyMaterial(private_key.public_key(), private_key, algorithm)
    else:
        private_key = await generate_key(algorithm)
        key = KeyMaterial(private_key.public_key(), private_key, algorithm)
    cert = sign(context, prepared, key)

    async def renew_predecessor(conn: BaseDBAsyncClient) -> None:
        # Conditional update: of two concurrent renewals exactly one succeeds (PITFALLS: renew once).
        renewable = (CertificateStatus.ACTIVE, CertificateStatus.EXPIRED)
        if await mark_renewed(old.id, conn, while_in=renewable) == 0:
            raise _already_renewed(old.id, await _successor(old.id, conn))

    options = StoreOptions(
        metadata=dict(old.metadata or {}),
        auto_renew=bool(old.auto_renew) and key.private_key is not None,
        renew_before_days=old.renew_before_days,
        renewed_from=old,
        audit_action="certificate.renew",
        event_type=outbox.CERTIFICATE_RENEWED,
        extra_details={"renewed_from": str(old.id), "mode": mode.value},
        before_insert=renew_predecessor,
        after_insert=after_insert,
    )
    new = await store_certificate(context, cert, key, options)
    old.status = CertificateStatus.RENEWED
    old.renewal_due_at = None
    old.next_renewal_attempt_at = None
    return new


def _profile_validity(text: str) -> timedelta:
    try:
        return parse_duration(text)
    except pki_errors.PkiError:
        raise InvalidState(f"the profile's default validity {text!r} is malformed") from None


def _unseal_private_key(certificate: Certificate) -> PrivateKey:
    assert certificate.encrypted_private_key is not None
    pem = sealing.unseal(
        kek=runtime.kek(),
        sealed=bytes(certificate.encrypted_private_key),
        context=private_key_context(certificate.id),
    )
    return load_private_key(pem)


# ---------------------------------------------------------------- revocation


def normalize_reason(reason: str) -> str:
    """RFC 5280 reason name, case-insensitively (`keyCompromise`, `KEY_COMPROMISE`)."""
    wanted = reason.replace("_", "").strip().lower()
    for known in REVOKE_REASONS:
        if known.lower() == wanted:
            return known
    raise InvalidInput(
        f"unknown revocation reason {reason!r}; use one of {', '.join(REVOKE_REASONS)}", field="reason"
    )


async def revoke_certificate(
    *, actor: Actor, certificate_id: uuid.UUID, reason: str, source_address: str | None = None
) -> Certificate:
    """Revoke, rebuild the CA's CRL and queue the event in one transaction; OCSP reads the same row."""
    reason = normalize_reason(reason)
    if source_address is not None:
        actor = dataclasses.replace(actor, source_address=source_address)
    certificate = await get_certificate(
        actor=actor, certificate_id=certificate_id, permission=Permission.CERTIFICATE_REVOKE
    )
    if CertificateStatus(certificate.status) == CertificateStatus.REVOKED:
        raise InvalidState(f"certificate {certificate.id} is already revoked")
    now = datetime.now(UTC).replace(microsecond=0)
    previous_status = effective_status(certificate, now)
    async with in_transaction() as conn:
        updated = (
            await Certificate.filter(id=certificate.id)
            .exclude(status=CertificateStatus.REVOKED)
            .using_db(conn)
            .update(
                status=CertificateStatus.REVOKED,
                revoked_at=now,
                revocation_reason=reason,
                renewal_due_at=None,  # the worker never renews a revoked certificate
                next_renewal_attempt_at=None,
                updated_at=now,
            )
        )
        if updated == 0:
            raise InvalidState(f"certificate {certificate.id} is already revoked")
        if certificate.ca_id is not None:
            await rebuild_crl(ca_id=certificate.ca_id, connection=conn)
        await audit.record(
            actor=actor,
            action="certificate.revoke",
            resource_type="certificate",
            resource_id=certificate.id,
            application_id=certificate.application_id,
            details={
                "serial": certificate.serial_hex,
                "reason": reason,
                "previous_status": previous_status.value,
            },
            connection=conn,
        )
        await outbox.emit(
            event_type=outbox.CERTIFICATE_REVOKED,
            organization_id=certificate.organization_id,
            application_id=certificate.application_id,
            certificate_id=certificate.id,
            payload={
                "certificate_id": str(certificate.id),
                "serial": certificate.serial_hex,
                "common_name": certificate.common_name,
                "reason": reason,
                "revoked_at": now.isoformat(),
                "profile_id": str(certificate.profile_id) if certificate.profile_id else None,
            },
            connection=conn,
        )
    certificate.status = CertificateStatus.REVOKED
    certificate.revoked_at = now
    certificate.revocation_reason = reason
    certificate.renewal_due_at = None
    certificate.next_renewal_attempt_at = None
    return certificate


# ---------------------------------------------------------------- settings of one certificate


async def update_certificate(
    *,
    actor: Actor,
    certificate_id: uuid.UUID,
    auto_renew: bool | None = None,
    metadata: dict[str, Any] | None = None,
    source_address: str | None = None,
) -> Certificate:
    """Turn auto-renewal on or off and replace metadata; the renewal schedule follows auto-renew."""
    if source_address is not None:
        actor = dataclasses.replace(actor, source_address=source_address)
    checked_metadata = check_metadata(metadata) if metadata is not None else None
    certificate = await get_certificate(
        actor=actor, certificate_id=certificate_id, permission=Permission.CERTIFICATE_ISSUE
    )
    changes: dict[str, Any] = {}
    details: dict[str, Any] = {"serial": certificate.serial_hex}
    if auto_renew is not None and auto_renew != certificate.auto_renew:
        if auto_renew and certificate.encrypted_private_key is None:
            raise InvalidInput(
                "auto-renewal needs a server-generated key; renew a certificate issued from a CSR "
                "with a new CSR",
                field="autoRenew",
            )
        if auto_renew and CertificateStatus(certificate.status) != CertificateStatus.ACTIVE:
            raise InvalidState(
                f"certificate {certificate.id} is {CertificateStatus(certificate.status).value}; "
                "only an active certificate can be auto-renewed",
                field="autoRenew",
            )
        changes.update(
            auto_renew=auto_renew,
            renewal_due_at=renewal_due_at(
                not_before=certificate.not_before,
                not_after=certificate.not_after,
                renew_before_days=certificate.renew_before_days,
                auto_renew=auto_renew,
                server_key=True,
            ),
            # A person acted: earlier failures no longer hold the next attempt back.
            renewal_attempts=0,
            renewal_error=None,
            next_renewal_attempt_at=None,
        )
        details["auto_renew"] = auto_renew
    if checked_metadata is not None and checked_metadata != (certificate.metadata or {}):
        changes["metadata"] = checked_metadata
        details["metadata_keys"] = sorted(checked_metadata)
    if not changes:
        return certificate
    now = datetime.now(UTC)
    async with in_transaction() as conn:
        await Certificate.filter(id=certificate.id).using_db(conn).update(**changes, updated_at=now)
        await audit.record(
            actor=actor,
            action="certificate.update",
            resource_type="certificate",
            resource_id=certificate.id,
            application_id=certificate.application_id,
            details=details,
            connection=conn,
        )
    for name, value in changes.items():
        setattr(certificate, name, value)
    certificate.updated_at = now
    return certificate


# ---------------------------------------------------------------- export and private keys


@dataclass(frozen=True)
class ExportedCertificate:
    certificate: Certificate
    filename: str
    pem: str | None = None
    pkcs12: bytes | None = None


_UNSAFE_FILENAME = re.compile(r"[^A-Za-z0-9._-]+")


def _filename(certificate: Certificate, extension: str) -> str:
    base = (certificate.common_name or certificate.serial_hex).replace("*", "wildcard")
    base = _UNSAFE_FILENAME.sub("_", base).strip("._") or certificate.serial_hex
    return f"{base[:80]}.{extension}"


async def _root_of(certificate: Certificate) -> x509.Certificate:
    if certificate.ca_id is not None:
        ca = await CertificateAuthority.get(id=certificate.ca_id)
        material = await signing_material(ca)
        if material.root is not None:
            return material.root
    elif certificate.root_pem:
        return load_certificate(certificate.root_pem)
    raise InvalidState("the root CA certificate of this certificate is not known; export without includeRoot")


async def export_certificate(
    *,
    actor: Actor,
    certificate_id: uuid.UUID,
    format: ExportFormat | str = ExportFormat.PEM,
    include_private_key: bool = False,
    include_root: bool = False,
    password: str | None = None,
) -> ExportedCertificate:
    """PEM bundle (leaf, chain, optional root and key) or PKCS#12; the key needs PRIVATE_KEY_READ."""
    try:
        export_format = format if isinstance(format, ExportFormat) else ExportFormat(format.lower())
    except ValueError:
        raise InvalidInput(f"unknown export format {format!r}; use pem or pkcs12", field="format") from None
    certificate = await get_certificate(actor=actor, certificate_id=certificate_id)
    if include_private_key:
        authz.require(actor, Permission.PRIVATE_KEY_READ, certificate_scope(certificate))
        if certificate.encrypted_private_key is None:
            raise InvalidState(
                "the server does not hold this certificate's private key (it was issued from a CSR)",
                field="includePrivateKey",
            )
    if export_format == ExportFormat.PKCS12 and not password:
        raise InvalidInput("a PKCS#12 export needs a password", field="password")
    if export_format == ExportFormat.PEM and password and include_private_key:
        raise InvalidInput(
            "a PEM export does not encrypt the key; use format PKCS12 for a password-protected file",
            field="password",
        )
    leaf = load_certificate(certificate.certificate_pem)
    chain = load_certificates(certificate.chain_pem) if certificate.chain_pem.strip() else []
    if include_root:
        chain.append(await _root_of(certificate))
    private_key = _unseal_private_key(certificate) if include_private_key else None
    if export_format == ExportFormat.PKCS12:
        assert password is not None
        try:
            data = pkcs12_bundle(
                certificate=leaf,
                chain=chain,
                private_key=private_key,
                password=password,
                friendly_name=certificate.common_name or certificate.serial_hex,
            )
        except pki_errors.PkiError as exc:
            raise InvalidInput(exc.message, field="password") from None
        result = ExportedCertificate(
            certificate=certificate, filename=_filename(certificate, "p12"), pkcs12=data
        )
    else:
        text = pem_bundle(certificate=leaf, chain=chain, private_key=private_key)
        result = ExportedCertificate(
            certificate=certificate, filename=_filename(certificate, "pem"), pem=text
        )
    await audit.record(
        actor=actor,
        action="certificate.export",
        resource_type="certificate",
        resource_id=certificate.id,
        application_id=certificate.application_id,
        details={
            "format": export_format.value,
            "include_private_key": include_private_key,
            "include_root": include_root,
        },
    )
    return result


async def read_private_key(
    *, actor: Actor, certificate_id: uuid.UUID, certificate: Certificate | None = None
) -> str:
    """The PKCS#8 PEM of a server-held key; every read is an audit event."""
    if certificate is None:
        certificate = await get_certificate(
            actor=actor, certificate_id=certificate_id, permission=Permission.PRIVATE_KEY_READ
        )
    else:
        authz.require(actor, Permission.PRIVATE_KEY_READ, certificate_scope(certificate))
    if certificate.encrypted_private_key is None:
        raise InvalidState(
            "the server does not hold this certificate's private key (it was issued from a CSR)"
        )
    pem = sealing.unseal(
        kek=runtime.kek(),
        sealed=bytes(certificate.encrypted_private_key),
        context=private_key_context(certificate.id),
    )
    await audit.record(
        actor=actor,
        action="certificate.private_key_read",
        resource_type="certificate",
        resource_id=certificate.id,
        application_id=certificate.application_id,
        details={"serial": certificate.serial_hex},
    )
    return pem.decode("ascii")


# ---------------------------------------------------------------- import


def _is_self_signed(cert: x509.Certificate) -> bool:
    return cert.subject == cert.issuer and verify_issued_by(cert, cert)


async def _issuing_ca(
    organization_id: uuid.UUID, cert: x509.Certificate, issuer_dn: str
) -> CertificateAuthority | None:
    """One of the organization's CAs whose key verifies the certificate's signature, if any."""
    candidates = await CertificateAuthority.filter(
        organization_id=organization_id, subject_dn=issuer_dn, certificate_pem__not_isnull=True
    )
    for candidate in candidates:
        assert candidate.certificate_pem is not None
        if verify_issued_by(cert, load_certificate(candidate.certificate_pem)):
            return candidate
    return None


async def import_certificate(
    *,
    actor: Actor,
    application_id: uuid.UUID,
    data: bytes,
    password: str | None = None,
    profile_id: uuid.UUID | None = None,
    metadata: dict[str, Any] | None = None,
) -> Certificate:
    """Bring an existing certificate (PEM or PKCS#12, key optional) into an application's inventory."""
    application = await load_application(
        actor, application_id, Permission.CERTIFICATE_ISSUE, profile_id=profile_id
    )
    checked_metadata = check_metadata(metadata)
    try:
        bundle = load_bundle(data, password)
        facts = describe_certificate(bundle.certificate)
    except pki_errors.PkiError as exc:
        raise InvalidInput(f"the certificate cannot be imported: {exc.message}", field="pem") from None
    if facts.is_ca:
        raise InvalidInput(
            "this is a CA certificate; the inventory holds end-entity certificates "
            "(a Product Admin manages CAs)",
            field="pem",
        )
    profile_renew_before = 30
    if profile_id is not None:
        attachment = (
            await ApplicationProfile.filter(application_id=application.id, profile_id=profile_id)
            .select_related("profile")
            .first()
        )
        if attachment is None:
            raise InvalidInput(
                f"profile {profile_id} is not attached to application '{application.name}'", field="profileId"
            )
        profile_renew_before = attachment.api_renew_before_days or attachment.profile.renew_before_days
    existing = await Certificate.filter(
        application_id=application.id, fingerprint_sha256=facts.fingerprint_sha256
    ).first()
    if existing is not None:
        raise Conflict(
            f"this certificate is already in application '{application.name}' as {existing.id}",
            certificate_id=str(existing.id),
        )
    ca = await _issuing_ca(application.organization_id, bundle.certificate, facts.issuer_dn)
    root_pem: str | None = None
    if ca is not None:
        chain_pem = chain_pem_of(await signing_material(ca))
    else:
        intermediates = [cert for cert in bundle.chain if not _is_self_signed(cert)]
        roots = [cert for cert in bundle.chain if _is_self_signed(cert)]
        chain_pem = "".join(certificate_pem(cert) for cert in intermediates)
        root_pem = certificate_pem(roots[0]) if roots else None
    certificate_id = uuid.uuid4()
    row = Certificate(
        id=certificate_id,
        organization_id=application.organization_id,
        application_id=application.id,
        profile_id=profile_id,
        ca_id=ca.id if ca else None,
        **fact_columns(facts),
        status=CertificateStatus.ACTIVE,
        source=CertificateSource.IMPORTED,
        enrollment_method=EnrollmentMethod.IMPORT,
        auto_renew=False,
        renew_before_days=profile_renew_before,
        certificate_pem=certificate_pem(bundle.certificate),
        chain_pem=chain_pem,
        root_pem=root_pem,
        encrypted_private_key=(
            seal_private_key(certificate_id, bundle.private_key) if bundle.private_key is not None else None
        ),
        fingerprint_sha256=facts.fingerprint_sha256,
        metadata=checked_metadata,
        created_by_id=actor.principal_id,
    )
    try:
        async with in_transaction() as conn:
            await row.save(using_db=conn, force_create=True)
            await audit.record(
                actor=actor,
                action="certificate.import",
                resource_type="certificate",
                resource_id=certificate_id,
                application_id=application.id,
                details={
                    "serial": facts.serial_hex,
                    "common_name": facts.common_name,
                    "issuer": facts.issuer_dn,
                    "ca_id": str(ca.id) if ca else None,
                    "with_private_key": bundle.private_key is not None,
                },
                connection=conn,
            )
    except IntegrityError:
        raise Conflict(
            "this certificate is already in an inventory (same issuing CA and serial number)"
        ) from None
    return row


# ---------------------------------------------------------------- listing


@dataclass(frozen=True)
class CertificatePage:
    items: list[Certificate]
    has_next_page: bool


async def list_certificates(
    *,
    actor: Actor,
    application_id: uuid.UUID,
    status: CertificateStatus | str | None = None,
    profile_id: uuid.UUID | None = None,
    name_contains: str | None = None,
    expires_before: datetime | None = None,
    first: int = 50,
    after: tuple[datetime, uuid.UUID] | None = None,
    application: Application | None = None,
) -> CertificatePage:
    """Keyset page on (created_at DESC, id DESC) in one application: index-served, stable under inserts.

    A legacy role limited to some profiles lists the certificates of those profiles only."""
    if application is None:
        application = await load_application(actor, application_id, Permission.APPLICATION_READ)
    allowed_profiles = authz.require_for_some_profiles(
        actor,
        Permission.CERTIFICATE_READ,
        Scope(organization_id=application.organization_id, application_id=application.id),
    )
    if not 1 <= first <= MAX_PAGE_SIZE:
        raise InvalidInput(f"`first` must be between 1 and {MAX_PAGE_SIZE}", field="first")
    query = inventory_query(
        application_id=application.id,
        status=status,
        profile_id=profile_id,
        name_contains=name_contains,
        expires_before=expires_before,
        after=after,
        profile_ids=allowed_profiles,
    )
    rows = await query.limit(first + 1)
    return CertificatePage(items=list(rows[:first]), has_next_page=len(rows) > first)


def inventory_query(
    *,
    application_id: uuid.UUID,
    status: CertificateStatus | str | None = None,
    profile_id: uuid.UUID | None = None,
    name_contains: str | None = None,
    expires_before: datetime | None = None,
    after: tuple[datetime, uuid.UUID] | None = None,
    now: datetime | None = None,
    profile_ids: Collection[uuid.UUID] | None = None,
) -> QuerySet[Certificate]:
    """The filtered, ordered inventory of one application; every filter narrows an application-led index.

    `profile_ids`: only certificates of these profiles (None: any)."""
    now = now or datetime.now(UTC)
    query = Certificate.filter(application_id=application_id)
    if status is not None:
        wanted = CertificateStatus(status)
        if wanted == CertificateStatus.ACTIVE:
            query = query.filter(status=CertificateStatus.ACTIVE, not_after__gt=now)
        elif wanted == CertificateStatus.EXPIRED:
            query = query.filter(
                Q(status=CertificateStatus.EXPIRED) | Q(status=CertificateStatus.ACTIVE, not_after__lte=now)
            )
        else:
            query = query.filter(status=wanted)
    if profile_id is not None:
        query = query.filter(profile_id=profile_id)
    if profile_ids is not None:
        query = query.filter(profile_id__in=list(profile_ids))
    if name_contains is not None and name_contains.strip():
        query = query.filter(name_search__contains=name_contains.strip().lower())
    if expires_before is not None:
        query = query.filter(not_after__lt=expires_before)
    if after is not None:
        created_at, row_id = after
        # The redundant `<=` bounds the index range; the OR alone would be a filter over the whole range.
        query = query.filter(created_at__lte=created_at).filter(
            Q(created_at__lt=created_at) | Q(created_at=created_at, id__lt=row_id)
        )
    return query.order_by("-created_at", "-id")
