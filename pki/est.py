"""EST (RFC 7030) messages: base64 PKCS#10 in, base64 PKCS#7 certs-only out, CSR attributes, server keygen.

Pure encodings and checks; the enrollment itself (authentication, policy, issuance) is core/est.py's.
"""

from __future__ import annotations

import base64
import binascii
import secrets
from collections.abc import Sequence
from datetime import UTC, datetime

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.serialization import pkcs7

from pki.certificate import load_certificates, verify_issued_by
from pki.errors import InvalidCsr, PkiError
from pki.key import KeyAlgorithm
from pki.san import SubjectAltName, from_extension, san_keys

PKCS10 = "application/pkcs10"
CERTS_ONLY = "application/pkcs7-mime; smime-type=certs-only"
CACERTS = "application/pkcs7-mime"
CSRATTRS = "application/csrattrs"
PKCS8 = "application/pkcs8"
# Largest request body accepted: an RSA-4096 CSR with many SANs is a few KiB of base64.
MAX_BODY = 64 * 1024
# Largest bootstrap CA chain an admin may upload.
MAX_CLIENT_CA_PEM = 256 * 1024


class EstError(Exception):
    """An EST refusal: the HTTP status, a plain-text reason safe to show, and headers (WWW-Authenticate)."""

    def __init__(self, status: int, message: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.headers = headers or {}


class EstPending(Exception):
    """The request waits for a decision (approvals): answer 202 with Retry-After, the client asks again."""

    def __init__(self, retry_after: int, message: str = "the request is pending approval") -> None:
        super().__init__(message)
        self.retry_after = retry_after
        self.message = message


# ---------------------------------------------------------------- requests


def decode_pkcs10(body: bytes) -> bytes:
    """The DER of a base64 PKCS#10 body (RFC 7030 §4.2.1); whitespace and line breaks anywhere are fine.

    Also tolerated, as clients in the field send them: PEM armour and raw DER.
    """
    raw = bytes(body)
    if raw[:1] == b"\x30":
        # Raw DER, taken as sent: stripping would eat a final byte that happens to be whitespace.
        return raw
    data = raw.strip()
    if not data:
        raise InvalidCsr("the request body is empty: send the base64 DER of a PKCS#10 request")
    if data.startswith(b"-----BEGIN"):
        try:
            return x509.load_pem_x509_csr(data).public_bytes(serialization.Encoding.DER)
        except ValueError:
            raise InvalidCsr("the PEM body is not a PKCS#10 request") from None
    compact = b"".join(data.split())
    try:
        der = base64.b64decode(compact + b"=" * (-len(compact) % 4), validate=True)
    except (binascii.Error, ValueError):
        raise InvalidCsr("the body is not base64 (RFC 7030 sends the PKCS#10 DER in base64)") from None
    if not der:
        raise InvalidCsr("the body decodes to nothing")
    return der


# ---------------------------------------------------------------- responses


def base64_lines(der: bytes, width: int = 64) -> bytes:
    """Base64 in lines of `width` characters with CRLF, as MIME's base64 transfer encoding has it."""
    text = base64.b64encode(der)
    return b"".join(text[i : i + width] + b"\r\n" for i in range(0, len(text), width))


def certs_only(certificates: Sequence[x509.Certificate]) -> bytes:
    """A degenerate PKCS#7 SignedData holding only certificates, DER."""
    return pkcs7.serialize_certificates(list(certificates), serialization.Encoding.DER)


def _der(tag: int, content: bytes) -> bytes:
    length = len(content)
    if length < 0x80:
        return bytes([tag, length]) + content
    encoded = length.to_bytes((length.bit_length() + 7) // 8, "big")
    return bytes([tag, 0x80 | len(encoded)]) + encoded + content


def _oid(dotted: str) -> bytes:
    return _der(0x06, _oid_body(dotted))


def _oid_body(dotted: str) -> bytes:
    arcs = [int(part) for part in dotted.split(".")]
    body = bytearray([40 * arcs[0] + arcs[1]])
    for arc in arcs[2:]:
        chunk = [arc & 0x7F]
        arc >>= 7
        while arc:
            chunk.append(0x80 | (arc & 0x7F))
            arc >>= 7
        body += bytes(reversed(chunk))
    return bytes(body)


def _integer(value: int) -> bytes:
    return _der(0x02, value.to_bytes(value.bit_length() // 8 + 1, "big"))


def _sequence(*items: bytes) -> bytes:
    return _der(0x30, b"".join(items))


def _attribute(oid: str, *values: bytes) -> bytes:
    return _sequence(_oid(oid), _der(0x31, b"".join(values)))


_EC_PUBLIC_KEY = "1.2.840.10045.2.1"
_RSA_ENCRYPTION = "1.2.840.113549.1.1.1"
_CSR_ATTRIBUTE_HINTS: dict[KeyAlgorithm, tuple[str, bytes | None]] = {
    # signature algorithm OID, then the key attribute (type and value)
    KeyAlgorithm.EC_P256: ("1.2.840.10045.4.3.2", _attribute(_EC_PUBLIC_KEY, _oid("1.2.840.10045.3.1.7"))),
    KeyAlgorithm.EC_P384: ("1.2.840.10045.4.3.3", _attribute(_EC_PUBLIC_KEY, _oid("1.3.132.0.34"))),
    KeyAlgorithm.RSA_2048: ("1.2.840.113549.1.1.11", _attribute(_RSA_ENCRYPTION, _integer(2048))),
    KeyAlgorithm.RSA_3072: ("1.2.840.113549.1.1.11", _attribute(_RSA_ENCRYPTION, _integer(3072))),
    KeyAlgorithm.RSA_4096: ("1.2.840.113549.1.1.11", _attribute(_RSA_ENCRYPTION, _integer(4096))),
    KeyAlgorithm.ED25519: ("1.3.101.112", None),
}


def csr_attributes(key_algorithm: KeyAlgorithm | None) -> bytes:
    """CsrAttrs (RFC 7030 §4.5.2) DER: the signature algorithm and key the profile expects.

    CsrAttrs ::= SEQUENCE SIZE (0..MAX) OF AttrOrOID; AttrOrOID ::= CHOICE (oid, attribute). The key
    attribute follows the RFC's own example (id-ecPublicKey with the curve) and RFC 8951's for RSA sizes.
    """
    if key_algorithm is None or key_algorithm not in _CSR_ATTRIBUTE_HINTS:
        return _sequence()
    signature, key = _CSR_ATTRIBUTE_HINTS[key_algorithm]
    return _sequence(*(item for item in (_oid(signature), key) if item is not None))


def server_keygen_multipart(
    private_key_pkcs8_der: bytes, certificates: Sequence[x509.Certificate], boundary: str | None = None
) -> tuple[bytes, str]:
    """The multipart/mixed response of /serverkeygen (RFC 7030 §4.4.2): the PKCS#8 key, then the certs.

    Returns (body, content type). Each part is base64 with its own Content-Transfer-Encoding header.
    """
    boundary = boundary or f"est-{secrets.token_hex(12)}"
    parts = [
        (PKCS8, base64_lines(private_key_pkcs8_der)),
        (CERTS_ONLY, base64_lines(certs_only(certificates))),
    ]
    body = bytearray()
    for content_type, payload in parts:
        body += f"--{boundary}\r\n".encode()
        body += f"Content-Type: {content_type}\r\nContent-Transfer-Encoding: base64\r\n\r\n".encode()
        body += payload
    body += f"--{boundary}--\r\n".encode()
    return bytes(body), f"multipart/mixed; boundary={boundary}"


# ---------------------------------------------------------------- client certificates


def load_ca_bundle(pem: str) -> list[x509.Certificate]:
    """An uploaded bootstrap CA chain: PEM certificates, each a CA (basicConstraints cA=TRUE)."""
    if len(pem) > MAX_CLIENT_CA_PEM:
        raise PkiError(f"the CA chain is larger than {MAX_CLIENT_CA_PEM // 1024} KiB")
    certificates = load_certificates(pem)
    for cert in certificates:
        try:
            constraints = cert.extensions.get_extension_for_class(x509.BasicConstraints).value
        except (x509.ExtensionNotFound, ValueError):
            constraints = None
        if constraints is None or not constraints.ca:
            raise PkiError(f"'{cert.subject.rfc4514_string()}' is not a CA certificate (basicConstraints cA)")
    return certificates


def _within_validity(cert: x509.Certificate, now: datetime) -> bool:
    return cert.not_valid_before_utc <= now <= cert.not_valid_after_utc


def issued_by_any(
    cert: x509.Certificate, issuers: Sequence[x509.Certificate], now: datetime | None = None
) -> x509.Certificate | None:
    """The issuer among `issuers` that signed `cert`, when both are within their validity; else None."""
    now = now or datetime.now(UTC)
    if not _within_validity(cert, now):
        return None
    for issuer in issuers:
        if _within_validity(issuer, now) and verify_issued_by(cert, issuer):
            return issuer
    return None


def reenroll_mismatch(
    csr: x509.CertificateSigningRequest,
    csr_sans: Sequence[SubjectAltName],
    cert: x509.Certificate,
    common_name_sans: Sequence[SubjectAltName] = (),
) -> str | None:
    """Why a re-enrollment CSR does not match the certificate being renewed (RFC 7030 §4.2.2), or None.

    The subject must be identical; so must the SANs, except that a CSR without SANs matches a certificate
    whose only SANs are the ones its common name produced (`common_name_sans`, as issuance adds them).
    """
    if csr.subject != cert.subject:
        return (
            f"the CSR's subject '{csr.subject.rfc4514_string()}' differs from the certificate's "
            f"'{cert.subject.rfc4514_string()}'"
        )
    try:
        cert_sans = from_extension(cert)
    except (ValueError, x509.UnsupportedGeneralNameType):
        return "the certificate's subjectAltName cannot be read"
    wanted = san_keys(csr_sans) if csr_sans else san_keys(common_name_sans)
    if wanted != san_keys(cert_sans):
        shown = ", ".join(str(san) for san in csr_sans) or "none"
        held = ", ".join(str(san) for san in cert_sans) or "none"
        return f"the CSR's subjectAltNames ({shown}) differ from the certificate's ({held})"
    return None
