"""What relying parties fetch without a token: CA certificates, CRLs and OCSP answers (SPEC §3, §7)."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from cryptography.hazmat.primitives import serialization

from core import ca as core_ca
from core.errors import NotFound
from models import Certificate, CertificateAuthority
from models.enums import CaStatus, CertificateStatus
from pki import ocsp as pki_ocsp
from pki.certificate import load_certificate, serial_hex
from pki.errors import InvalidOcspRequest, PkiError

# A cached CRL closer than this to its nextUpdate is rebuilt before it is served.
CRL_REFRESH_MARGIN = timedelta(hours=1)
# How long an OCSP answer may be cached by clients; answers are computed live, so revocation shows at once.
OCSP_VALIDITY = timedelta(hours=1)


@dataclass(frozen=True)
class OcspAnswer:
    der: bytes
    # "good" | "revoked" | "unknown" for a signed answer, else the error status (malformedRequest, ...).
    status: str


async def _load_ca(ca_id: str | uuid.UUID) -> CertificateAuthority:
    """Any organization's CA that has a certificate; unknown, malformed or pending ids are not found."""
    try:
        parsed = uuid.UUID(str(ca_id))
    except ValueError:
        raise NotFound(f"certificate authority {ca_id!r} not found") from None
    ca = await CertificateAuthority.get_or_none(id=parsed)
    if ca is None or ca.certificate_pem is None or CaStatus(ca.status) == CaStatus.PENDING_CERTIFICATE:
        raise NotFound(f"certificate authority {ca_id!r} not found")
    return ca


async def ca_certificate_der(ca_id: str | uuid.UUID) -> bytes:
    ca = await _load_ca(ca_id)
    assert ca.certificate_pem is not None
    return load_certificate(ca.certificate_pem).public_bytes(serialization.Encoding.DER)


async def current_crl(ca_id: str | uuid.UUID) -> bytes:
    """The cached CRL while it has more than an hour left; otherwise a fresh one (never an expired one)."""
    ca = await _load_ca(ca_id)
    now = datetime.now(UTC)
    if (
        ca.crl_der is not None
        and ca.crl_next_update is not None
        and ca.crl_next_update - now > CRL_REFRESH_MARGIN
    ):
        return bytes(ca.crl_der)
    return await core_ca.rebuild_crl(ca_id=ca.id)


async def ocsp_answer(ca_id: str | uuid.UUID, request_der: bytes) -> OcspAnswer:
    """RFC 6960 answer for one serial: good, revoked (time and reason) or unknown, signed by the CA."""
    ca = await _load_ca(ca_id)
    try:
        query = pki_ocsp.parse_ocsp_request(request_der)
    except InvalidOcspRequest:
        return OcspAnswer(pki_ocsp.ocsp_error_response("malformedRequest"), "malformedRequest")
    material = await core_ca.signing_material(ca)
    if not pki_ocsp.query_matches_issuer(query, material.certificate):
        # Not a certificate of this CA: this responder is not authoritative for it (RFC 5019 §2.2.3).
        return OcspAnswer(pki_ocsp.ocsp_error_response("unauthorized"), "unauthorized")
    serial = serial_hex(query.serial)
    row = (
        await Certificate.filter(ca_id=ca.id, serial_hex=serial)
        .only("status", "revoked_at", "revocation_reason")
        .first()
    )
    revoked_at = None
    reason = None
    if row is None:
        # An intermediate this CA signed is no inventory row; Keyward never revokes CAs, so it is good.
        child_ca = await CertificateAuthority.exists(parent_id=ca.id, serial_hex=serial)
        status = "good" if child_ca else "unknown"
    elif CertificateStatus(row.status) == CertificateStatus.REVOKED:
        status = "revoked"
        revoked_at = row.revoked_at or datetime.now(UTC)
        reason = row.revocation_reason
    else:
        status = "good"
    now = datetime.now(UTC).replace(microsecond=0)
    try:
        der = pki_ocsp.build_ocsp_response(
            query=query,
            issuer_cert=material.certificate,
            issuer_key=material.private_key,
            status=status,
            revoked_at=revoked_at,
            reason=reason,
            this_update=now,
            next_update=now + OCSP_VALIDITY,
        )
    except PkiError:
        return OcspAnswer(pki_ocsp.ocsp_error_response("internalError"), "internalError")
    return OcspAnswer(der, status)
