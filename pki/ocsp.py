"""OCSP (RFC 6960): parse requests, answer them signed directly by the CA."""

import hmac
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Literal

from asn1crypto import keys as asn1_keys
from cryptography import x509
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.x509 import ocsp

from pki.crl import reason_flag
from pki.errors import InvalidOcspRequest, PkiError
from pki.key import PrivateKey, hash_for

OcspStatus = Literal["good", "revoked", "unknown"]

_CERT_STATUS = {
    "good": ocsp.OCSPCertStatus.GOOD,
    "revoked": ocsp.OCSPCertStatus.REVOKED,
    "unknown": ocsp.OCSPCertStatus.UNKNOWN,
}
_ERROR_STATUS = {
    "malformedRequest": ocsp.OCSPResponseStatus.MALFORMED_REQUEST,
    "internalError": ocsp.OCSPResponseStatus.INTERNAL_ERROR,
    "tryLater": ocsp.OCSPResponseStatus.TRY_LATER,
    "sigRequired": ocsp.OCSPResponseStatus.SIG_REQUIRED,
    "unauthorized": ocsp.OCSPResponseStatus.UNAUTHORIZED,
}


@dataclass(frozen=True)
class OcspQuery:
    serial: int
    issuer_name_hash: bytes
    issuer_key_hash: bytes
    hash_algorithm: hashes.HashAlgorithm
    nonce: bytes | None


def parse_ocsp_request(der: bytes) -> OcspQuery:
    """The single CertID and nonce of a DER request (multi-certificate requests are refused)."""
    try:
        request = ocsp.load_der_ocsp_request(der)
        nonce: bytes | None
        try:
            nonce = request.extensions.get_extension_for_class(x509.OCSPNonce).value.nonce
        except x509.ExtensionNotFound:
            nonce = None
        return OcspQuery(
            serial=request.serial_number,
            issuer_name_hash=request.issuer_name_hash,
            issuer_key_hash=request.issuer_key_hash,
            hash_algorithm=request.hash_algorithm,
            nonce=nonce,
        )
    except UnsupportedAlgorithm as exc:
        raise InvalidOcspRequest(f"unsupported CertID hash algorithm: {exc}") from None
    except (ValueError, TypeError, NotImplementedError) as exc:
        raise InvalidOcspRequest(f"not a DER OCSP request with one certificate: {exc}") from None


def issuer_hashes(issuer_cert: x509.Certificate, algorithm: hashes.HashAlgorithm) -> tuple[bytes, bytes]:
    """(issuerNameHash, issuerKeyHash) of RFC 6960 CertID for this issuer."""
    name_der = issuer_cert.subject.public_bytes()
    spki = issuer_cert.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    key_bits = asn1_keys.PublicKeyInfo.load(spki)["public_key"].contents[1:]  # skip the unused-bits octet
    return _digest(algorithm, name_der), _digest(algorithm, key_bits)


def query_matches_issuer(query: OcspQuery, issuer_cert: x509.Certificate) -> bool:
    name_hash, key_hash = issuer_hashes(issuer_cert, query.hash_algorithm)
    return hmac.compare_digest(name_hash, query.issuer_name_hash) and hmac.compare_digest(
        key_hash, query.issuer_key_hash
    )


def build_ocsp_response(
    *,
    query: OcspQuery,
    issuer_cert: x509.Certificate,
    issuer_key: PrivateKey,
    status: str,
    revoked_at: datetime | None,
    reason: str | None,
    this_update: datetime,
    next_update: datetime,
) -> bytes:
    """Signed DER response for one serial; responder ID by key hash, nonce echoed."""
    cert_status = _CERT_STATUS.get(status)
    if cert_status is None:
        raise PkiError(f"unknown OCSP status '{status}' (use good, revoked or unknown)")
    if status == "revoked" and revoked_at is None:
        raise PkiError("a revoked status needs revoked_at")
    builder = ocsp.OCSPResponseBuilder().add_response_by_hash(
        issuer_name_hash=query.issuer_name_hash,
        issuer_key_hash=query.issuer_key_hash,
        serial_number=query.serial,
        algorithm=query.hash_algorithm,
        cert_status=cert_status,
        this_update=this_update.astimezone(UTC),
        next_update=next_update.astimezone(UTC),
        revocation_time=revoked_at.astimezone(UTC) if status == "revoked" and revoked_at else None,
        revocation_reason=reason_flag(reason) if status == "revoked" else None,
    )
    builder = builder.responder_id(ocsp.OCSPResponderEncoding.HASH, issuer_cert)
    if query.nonce is not None:
        builder = builder.add_extension(x509.OCSPNonce(query.nonce), critical=False)
    response = builder.sign(issuer_key, hash_for(issuer_key))
    return response.public_bytes(serialization.Encoding.DER)


def ocsp_error_response(status: str) -> bytes:
    """Unsigned error response: malformedRequest, internalError, tryLater, sigRequired or unauthorized."""
    response_status = _ERROR_STATUS.get(status)
    if response_status is None:
        raise PkiError(f"unknown OCSP error status '{status}' (use {', '.join(_ERROR_STATUS)})")
    return ocsp.OCSPResponseBuilder.build_unsuccessful(response_status).public_bytes(
        serialization.Encoding.DER
    )


def _digest(algorithm: hashes.HashAlgorithm, data: bytes) -> bytes:
    digest = hashes.Hash(algorithm)
    digest.update(data)
    return digest.finalize()
