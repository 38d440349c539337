"""Certificate authorities of the shared PKI (SPEC §3): creation, external parents, status, CRLs, keys."""

from __future__ import annotations

import asyncio
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from tortoise.backends.base.client import BaseDBAsyncClient
from tortoise.exceptions import IntegrityError
from tortoise.expressions import Q
from tortoise.transactions import in_transaction

from core import audit, authz, runtime
from core.access import organization_scope
from core.authz import Actor, Permission
from core.errors import Conflict, InvalidInput, InvalidState, NotFound
from core.naming import clean_name
from models import Certificate, CertificateAuthority
from models.enums import CaKind, CaStatus, CertificateStatus
from pki import certificate as pki_certificate
from pki import crl as pki_crl
from pki import csr as pki_csr
from pki import key as pki_key
from pki import name as pki_name
from pki import sealing
from pki.certificate import IssuerUrls
from pki.duration import parse_duration
from pki.errors import PkiError
from pki.key import KeyAlgorithm, PrivateKey

CRL_VALIDITY = timedelta(hours=24)
# The worker rebuilds a CRL this long before its nextUpdate; the CRL route itself rebuilds at 1 hour.
CRL_REFRESH_AHEAD = timedelta(hours=12)


@dataclass(frozen=True)
class SigningMaterial:
    """Everything issuance needs from a CA, unsealed once and cached per (CA, version)."""

    ca_id: uuid.UUID
    certificate: x509.Certificate
    private_key: PrivateKey
    # The issuing CA first, then its issuers, up to but not including the root (PITFALLS: whole chain).
    # For a root CA the chain is empty and `root` is the CA itself.
    chain: list[x509.Certificate]
    # None when an external parent's chain was imported without its root.
    root: x509.Certificate | None
    urls: IssuerUrls
    signature_algorithm: str


_material_cache: dict[uuid.UUID, tuple[tuple[Any, ...], SigningMaterial]] = {}


def issuer_urls(ca_id: uuid.UUID) -> IssuerUrls:
    public = runtime.settings().public_url.rstrip("/")
    return IssuerUrls(
        ca_issuers=f"{public}/pki/cas/{ca_id}/ca.crt",
        ocsp=f"{public}/pki/ocsp/{ca_id}",
        crl=f"{public}/pki/cas/{ca_id}/crl",
    )


def require_active(ca: CertificateAuthority) -> None:
    """Issuance from a CA that is disabled or still waiting for its certificate is refused."""
    status = CaStatus(ca.status)
    if status == CaStatus.DISABLED:
        raise InvalidState(f"certificate authority '{ca.name}' is disabled; enable it before issuing from it")
    if status == CaStatus.PENDING_CERTIFICATE:
        raise InvalidState(
            f"certificate authority '{ca.name}' has no certificate yet; "
            "import the certificate its external parent signed (importCaCertificate)"
        )


def _unseal_key(ca: CertificateAuthority) -> PrivateKey:
    pem = sealing.unseal(
        kek=runtime.kek(), sealed=bytes(ca.encrypted_private_key), context=f"ca:{ca.id}".encode()
    )
    return pki_key.load_private_key(pem)


def _seal_key(ca_id: uuid.UUID, key: PrivateKey) -> bytes:
    return sealing.seal(
        kek=runtime.kek(), plaintext=pki_key.serialize_private_key(key), context=f"ca:{ca_id}".encode()
    )


def _is_self_signed(cert: x509.Certificate) -> bool:
    return cert.subject == cert.issuer and pki_certificate.verify_issued_by(cert, cert)


def _external_chain(ca: CertificateAuthority) -> tuple[list[x509.Certificate], x509.Certificate | None]:
    """An external parent's stored chain split into (intermediates in order, root or None)."""
    chain_pem = getattr(ca, "chain_pem", None)
    if not chain_pem:
        return [], None
    certs = pki_certificate.load_certificates(chain_pem)
    intermediates = [cert for cert in certs if not _is_self_signed(cert)]
    roots = [cert for cert in certs if _is_self_signed(cert)]
    return intermediates, roots[0] if roots else None


async def _build_chain(
    ca: CertificateAuthority, certificate: x509.Certificate, connection: BaseDBAsyncClient | None
) -> tuple[list[x509.Certificate], x509.Certificate | None]:
    if CaKind(ca.kind) == CaKind.ROOT:
        return [], certificate
    chain = [certificate]
    current = ca
    seen = {ca.id}
    while True:
        if current.external_parent:
            intermediates, root = _external_chain(current)
            return chain + intermediates, root
        if current.parent_id is None:
            return chain, None
        if current.parent_id in seen:
            raise InvalidState(f"certificate authority '{ca.name}' has a cyclic parent chain")
        seen.add(current.parent_id)
        parent = await CertificateAuthority.get(id=current.parent_id, using_db=connection)
        if parent.certificate_pem is None:
            raise InvalidState(f"parent certificate authority '{parent.name}' has no certificate")
        parent_cert = pki_certificate.load_certificate(parent.certificate_pem)
        if CaKind(parent.kind) == CaKind.ROOT:
            return chain, parent_cert
        chain.append(parent_cert)
        current = parent


async def signing_material(
    ca: CertificateAuthority, *, connection: BaseDBAsyncClient | None = None
) -> SigningMaterial:
    """The CA's unsealed key, certificate, chain and URLs; cached in memory until the CA row changes."""
    version = (ca.updated_at, ca.certificate_pem is not None, runtime.settings().public_url)
    cached = _material_cache.get(ca.id)
    if cached is not None and cached[0] == version:
        return cached[1]
    if ca.certificate_pem is None:
        raise InvalidState(
            f"certificate authority '{ca.name}' has no certificate yet; import the one its parent signed"
        )
    certificate = pki_certificate.load_certificate(ca.certificate_pem)
    private_key = _unseal_key(ca)
    chain, root = await _build_chain(ca, certificate, connection)
    material = SigningMaterial(
        ca_id=ca.id,
        certificate=certificate,
        private_key=private_key,
        chain=chain,
        root=root,
        urls=issuer_urls(ca.id),
        signature_algorithm=pki_key.signature_algorithm_for(private_key),
    )
    _material_cache[ca.id] = (version, material)
    return material


async def rebuild_crl(*, ca_id: uuid.UUID, connection: BaseDBAsyncClient | None = None) -> bytes:
    """Sign a fresh CRL from every revoked certificate of the CA and store it; returns the DER."""
    if connection is None:
        async with in_transaction() as conn:
            return await _rebuild_crl(ca_id, conn)
    return await _rebuild_crl(ca_id, connection)


async def _rebuild_crl(ca_id: uuid.UUID, conn: BaseDBAsyncClient) -> bytes:
    # Locking the CA row serializes CRL numbers between concurrent revocations (PostgreSQL).
    ca = await CertificateAuthority.select_for_update().using_db(conn).get_or_none(id=ca_id)
    if ca is None:
        raise NotFound(f"certificate authority {ca_id} not found")
    material = await signing_material(ca, connection=conn)
    rows = await (
        Certificate.filter(ca_id=ca_id, status=CertificateStatus.REVOKED)
        .using_db(conn)
        .values_list("serial_hex", "revoked_at", "revocation_reason")
    )
    now = datetime.now(UTC).replace(microsecond=0)
    revoked = [
        pki_crl.RevokedEntry(serial=int(serial, 16), revoked_at=revoked_at or now, reason=reason)
        for serial, revoked_at, reason in rows
    ]
    crl_number = int(ca.crl_number) + 1
    next_update = now + CRL_VALIDITY
    der = pki_crl.build_crl(
        issuer_cert=material.certificate,
        issuer_key=material.private_key,
        revoked=revoked,
        crl_number=crl_number,
        this_update=now,
        next_update=next_update,
    )
    # A queryset update leaves updated_at alone, so the signing-material cache stays warm.
    await (
        CertificateAuthority.filter(id=ca_id)
        .using_db(conn)
        .update(crl_number=crl_number, crl_der=der, crl_next_update=next_update)
    )
    return der


async def refresh_due_crls(*, ahead: timedelta = CRL_REFRESH_AHEAD, batch_size: int = 50) -> int:
    """Rebuild every CRL within `ahead` of its nextUpdate (or never built); returns how many were rebuilt.

    Rows are claimed with FOR UPDATE SKIP LOCKED, so worker replicas on PostgreSQL never rebuild the same CRL.
    """
    rebuilt = 0
    while True:
        async with in_transaction() as conn:
            due = datetime.now(UTC) + ahead
            ids = await (
                CertificateAuthority.select_for_update(skip_locked=True)
                .using_db(conn)
                .filter(status__in=[CaStatus.ACTIVE, CaStatus.DISABLED], certificate_pem__isnull=False)
                .filter(Q(crl_next_update__isnull=True) | Q(crl_next_update__lt=due))
                .order_by("crl_next_update")
                .limit(batch_size)
                .only("id")  # not values_list: Tortoise drops FOR UPDATE from values queries
            )
            for row in ids:
                await _rebuild_crl(row.id, conn)
        rebuilt += len(ids)
        if len(ids) < batch_size:
            return rebuilt


# ---------------------------------------------------------------- input checks


def _check_subject(subject: str | list[tuple[str, str]]) -> x509.Name:
    try:
        pairs = pki_name.parse_dn(subject) if isinstance(subject, str) else list(subject)
        name = pki_name.build_name(pairs)
    except PkiError as exc:
        raise InvalidInput(f"subject: {exc.message}", field="subject") from None
    if len(name) == 0:
        raise InvalidInput("a CA needs a non-empty subject, e.g. 'CN=Acme Root CA,O=Acme'", field="subject")
    return name


def _check_key_algorithm(key_algorithm: str | KeyAlgorithm) -> KeyAlgorithm:
    try:
        return KeyAlgorithm(key_algorithm)
    except ValueError:
        accepted = ", ".join(a.value for a in KeyAlgorithm)
        raise InvalidInput(
            f"unknown key algorithm {key_algorithm!r}; use one of {accepted}", field="keyAlgorithm"
        ) from None


def _check_validity(validity: str) -> timedelta:
    try:
        return parse_duration(validity)
    except PkiError as exc:
        raise InvalidInput(exc.message, field="validity") from None


def _check_path_length(path_length: int | None) -> int | None:
    if path_length is not None and not 0 <= path_length <= 16:
        raise InvalidInput(
            "path length must be between 0 and 16, or left unset for no limit", field="pathLength"
        )
    return path_length


async def _check_unique_name(
    organization_id: uuid.UUID, name: str, *, exclude: uuid.UUID | None = None
) -> None:
    query = CertificateAuthority.filter(organization_id=organization_id, name=name)
    if exclude is not None:
        query = query.exclude(id=exclude)
    if await query.exists():
        raise Conflict(
            f"a certificate authority named '{name}' already exists; choose another name", field="name"
        )


async def _generate_key(algorithm: KeyAlgorithm) -> PrivateKey:
    # RSA generation takes up to seconds: keep the event loop serving meanwhile.
    return await asyncio.to_thread(pki_key.generate_private_key, algorithm)


def _facts_fields(cert: x509.Certificate) -> dict[str, Any]:
    facts = pki_certificate.describe_certificate(cert)
    return {
        "certificate_pem": pki_certificate.certificate_pem(cert),
        "serial_hex": facts.serial_hex,
        "subject_dn": facts.subject_dn,
        "not_before": facts.not_before,
        "not_after": facts.not_after,
        "path_length": facts.path_length,
    }


async def _create_row(
    *, actor: Actor, action: str, fields: dict[str, Any], details: dict[str, Any]
) -> CertificateAuthority:
    try:
        async with in_transaction() as conn:
            ca = await CertificateAuthority.create(**fields, using_db=conn)
            await audit.record(
                actor=actor,
                action=action,
                resource_type="certificate_authority",
                resource_id=ca.id,
                details=details,
                connection=conn,
            )
    except IntegrityError:
        raise Conflict(
            f"a certificate authority named '{fields['name']}' already exists; choose another name",
            field="name",
        ) from None
    return ca


# ---------------------------------------------------------------- services


async def get_ca(
    *, actor: Actor, ca_id: uuid.UUID, permission: Permission = Permission.PKI_READ
) -> CertificateAuthority:
    authz.require(actor, permission, organization_scope(actor))
    ca = await CertificateAuthority.get_or_none(id=ca_id, organization_id=actor.organization_id)
    if ca is None:
        raise NotFound(f"certificate authority {ca_id} not found")
    return ca


async def list_cas(*, actor: Actor) -> list[CertificateAuthority]:
    authz.require(actor, Permission.PKI_READ, organization_scope(actor))
    return await CertificateAuthority.filter(organization_id=actor.organization_id).order_by(
        "created_at", "name"
    )


async def create_root_ca(
    *,
    actor: Actor,
    name: str,
    subject: str | list[tuple[str, str]],
    key_algorithm: str | KeyAlgorithm,
    validity: str,
    path_length: int | None,
) -> CertificateAuthority:
    scope = organization_scope(actor)
    authz.require(actor, Permission.PKI_MANAGE, scope)
    name = clean_name(name)
    subject_name = _check_subject(subject)
    algorithm = _check_key_algorithm(key_algorithm)
    lifetime = _check_validity(validity)
    path_length = _check_path_length(path_length)
    await _check_unique_name(scope.organization_id, name)
    key = await _generate_key(algorithm)
    try:
        cert = pki_certificate.build_root_ca(
            key=key, subject=subject_name, not_after=datetime.now(UTC) + lifetime, path_length=path_length
        )
    except PkiError as exc:
        raise InvalidInput(exc.message) from None
    ca_id = uuid.uuid4()
    return await _create_row(
        actor=actor,
        action="ca.create_root",
        fields={
            "id": ca_id,
            "organization_id": scope.organization_id,
            "name": name,
            "kind": CaKind.ROOT,
            "status": CaStatus.ACTIVE,
            "key_algorithm": algorithm.value,
            "encrypted_private_key": _seal_key(ca_id, key),
            **_facts_fields(cert),
        },
        details={
            "name": name,
            "subject": pki_name.format_name(subject_name),
            "key_algorithm": algorithm.value,
        },
    )


async def create_intermediate_ca(
    *,
    actor: Actor,
    name: str,
    parent_ca_id: uuid.UUID,
    subject: str | list[tuple[str, str]],
    key_algorithm: str | KeyAlgorithm,
    validity: str,
    path_length: int | None,
) -> CertificateAuthority:
    """Signed by an internal parent; never outlives it (notAfter is capped at the parent's)."""
    scope = organization_scope(actor)
    authz.require(actor, Permission.PKI_MANAGE, scope)
    name = clean_name(name)
    subject_name = _check_subject(subject)
    algorithm = _check_key_algorithm(key_algorithm)
    lifetime = _check_validity(validity)
    path_length = _check_path_length(path_length)
    parent = await CertificateAuthority.get_or_none(id=parent_ca_id, organization_id=scope.organization_id)
    if parent is None:
        raise NotFound(f"parent certificate authority {parent_ca_id} not found", field="parentCaId")
    require_active(parent)
    if parent.path_length == 0:
        raise InvalidInput(
            f"parent certificate authority '{parent.name}' has path length 0 and cannot sign another CA; "
            "pick a parent with a larger path length",
            field="parentCaId",
        )
    if parent.path_length is not None and path_length is not None and path_length > parent.path_length - 1:
        raise InvalidInput(
            f"path length {path_length} is too long: parent '{parent.name}' allows at most "
            f"{parent.path_length - 1}",
            field="pathLength",
        )
    await _check_unique_name(scope.organization_id, name)
    material = await signing_material(parent)
    key = await _generate_key(algorithm)
    requested_not_after = datetime.now(UTC) + lifetime
    try:
        cert = pki_certificate.sign_ca_certificate(
            issuer_cert=material.certificate,
            issuer_key=material.private_key,
            public_key=key.public_key(),
            subject=subject_name,
            not_after=requested_not_after,
            path_length=path_length,
            urls=material.urls,
        )
    except PkiError as exc:
        raise InvalidInput(exc.message) from None
    ca_id = uuid.uuid4()
    return await _create_row(
        actor=actor,
        action="ca.create_intermediate",
        fields={
            "id": ca_id,
            "organization_id": scope.organization_id,
            "name": name,
            "kind": CaKind.INTERMEDIATE,
            "parent_id": parent.id,
            "status": CaStatus.ACTIVE,
            "key_algorithm": algorithm.value,
            "encrypted_private_key": _seal_key(ca_id, key),
            **_facts_fields(cert),
        },
        details={
            "name": name,
            "parent_ca_id": str(parent.id),
            "subject": pki_name.format_name(subject_name),
            "key_algorithm": algorithm.value,
            "capped_to_parent": cert.not_valid_after_utc < requested_not_after.replace(microsecond=0),
        },
    )


async def create_external_intermediate_ca(
    *,
    actor: Actor,
    name: str,
    subject: str | list[tuple[str, str]],
    key_algorithm: str | KeyAlgorithm,
    path_length: int | None,
) -> CertificateAuthority:
    """Keyward keeps the key and hands out a CSR; the CA stays pending until its certificate is imported."""
    scope = organization_scope(actor)
    authz.require(actor, Permission.PKI_MANAGE, scope)
    name = clean_name(name)
    subject_name = _check_subject(subject)
    algorithm = _check_key_algorithm(key_algorithm)
    path_length = _check_path_length(path_length)
    await _check_unique_name(scope.organization_id, name)
    key = await _generate_key(algorithm)
    csr = pki_csr.build_csr(key=key, subject=subject_name, sans=[], is_ca=True, path_length=path_length)
    ca_id = uuid.uuid4()
    return await _create_row(
        actor=actor,
        action="ca.create_external_intermediate",
        fields={
            "id": ca_id,
            "organization_id": scope.organization_id,
            "name": name,
            "kind": CaKind.INTERMEDIATE,
            "external_parent": True,
            "status": CaStatus.PENDING_CERTIFICATE,
            "key_algorithm": algorithm.value,
            "subject_dn": pki_name.format_name(subject_name),
            "path_length": path_length,
            "csr_pem": csr.public_bytes(serialization.Encoding.PEM).decode("ascii"),
            "encrypted_private_key": _seal_key(ca_id, key),
        },
        details={
            "name": name,
            "subject": pki_name.format_name(subject_name),
            "key_algorithm": algorithm.value,
        },
    )


async def import_ca_certificate(
    *, actor: Actor, ca_id: uuid.UUID, certificate_pem: str, chain_pem: str
) -> CertificateAuthority:
    """Complete an external-parent CA: the certificate must hold our key, be a CA and chain to its parent."""
    ca = await get_ca(actor=actor, ca_id=ca_id, permission=Permission.PKI_MANAGE)
    if CaStatus(ca.status) != CaStatus.PENDING_CERTIFICATE or not ca.external_parent:
        raise InvalidState(
            f"certificate authority '{ca.name}' is not waiting for a certificate "
            f"(status {CaStatus(ca.status).value})"
        )
    try:
        cert = pki_certificate.load_certificate(certificate_pem)
    except PkiError as exc:
        raise InvalidInput(f"certificatePem: {exc.message}", field="certificatePem") from None
    key = _unseal_key(ca)
    if not pki_certificate.public_keys_match(key, cert.public_key()):
        raise InvalidInput(
            "the certificate's public key is not this CA's key; sign the CSR this CA returned (csrPem)",
            field="certificatePem",
        )
    facts = pki_certificate.describe_certificate(cert)
    if not facts.is_ca:
        raise InvalidInput(
            "the certificate is not a CA certificate (basicConstraints CA:TRUE)", field="certificatePem"
        )
    if facts.key_usages and "keyCertSign" not in facts.key_usages:
        raise InvalidInput("the certificate's key usage lacks keyCertSign", field="certificatePem")
    now = datetime.now(UTC)
    if facts.not_after <= now:
        raise InvalidInput("the certificate has already expired", field="certificatePem")
    chain: list[x509.Certificate] = []
    if chain_pem.strip():
        try:
            chain = pki_certificate.load_certificates(chain_pem)
        except PkiError as exc:
            raise InvalidInput(f"chainPem: {exc.message}", field="chainPem") from None
    if not chain:
        raise InvalidInput(
            "chainPem must hold the external parent's certificate (and its issuers up to the root)",
            field="chainPem",
        )
    if not pki_certificate.verify_issued_by(cert, chain[0]):
        raise InvalidInput(
            "the certificate was not signed by the first certificate of chainPem", field="chainPem"
        )
    for child, issuer in zip(chain, chain[1:], strict=False):
        if not pki_certificate.verify_issued_by(child, issuer):
            raise InvalidInput(
                f"chainPem is out of order: '{pki_name.format_name(child.subject)}' "
                f"was not signed by '{pki_name.format_name(issuer.subject)}'",
                field="chainPem",
            )
    async with in_transaction() as conn:
        fields = _facts_fields(cert)
        for attribute, value in fields.items():
            setattr(ca, attribute, value)
        ca.chain_pem = "".join(pki_certificate.certificate_pem(c) for c in chain)
        ca.status = CaStatus.ACTIVE
        await ca.save(using_db=conn)
        await audit.record(
            actor=actor,
            action="ca.import_certificate",
            resource_type="certificate_authority",
            resource_id=ca.id,
            details={
                "serial": facts.serial_hex,
                "issuer": facts.issuer_dn,
                "not_after": facts.not_after.isoformat(),
            },
            connection=conn,
        )
    return ca


async def set_ca_enabled(*, actor: Actor, ca_id: uuid.UUID, enabled: bool) -> CertificateAuthority:
    """A disabled CA issues nothing; its CRL and OCSP keep being served for what it already issued."""
    ca = await get_ca(actor=actor, ca_id=ca_id, permission=Permission.PKI_MANAGE)
    status = CaStatus(ca.status)
    if status == CaStatus.PENDING_CERTIFICATE:
        raise InvalidState(
            f"certificate authority '{ca.name}' is waiting for its certificate; import it first"
        )
    wanted = CaStatus.ACTIVE if enabled else CaStatus.DISABLED
    if status == wanted:
        raise InvalidState(f"certificate authority '{ca.name}' is already {wanted.value}")
    async with in_transaction() as conn:
        ca.status = wanted
        await ca.save(using_db=conn, update_fields=["status", "updated_at"])
        await audit.record(
            actor=actor,
            action="ca.enable" if enabled else "ca.disable",
            resource_type="certificate_authority",
            resource_id=ca.id,
            details={"name": ca.name},
            connection=conn,
        )
    return ca
