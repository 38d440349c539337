"""PKCS#10 requests: strict parsing of what clients send, and building our own for external parents."""

import base64
import binascii
from dataclasses import dataclass

from cryptography import x509
from cryptography.exceptions import UnsupportedAlgorithm

from pki.errors import InvalidCsr, PkiError
from pki.key import (
    KeyAlgorithm,
    PrivateKey,
    PublicKey,
    check_public_key,
    hash_for,
    key_algorithm_of,
    signature_algorithm_name,
)
from pki.name import build_name, name_pairs
from pki.san import SubjectAltName, from_extension, make_san, to_general_names
from pki.usage import usages_of

_NOT_A_CSR = "not a PEM or DER PKCS#10 request"


@dataclass(frozen=True)
class CsrInfo:
    csr: x509.CertificateSigningRequest
    public_key: PublicKey
    key_algorithm: KeyAlgorithm
    subject: list[tuple[str, str]]
    sans: list[SubjectAltName]
    key_usages: frozenset[str]
    extended_key_usages: frozenset[str]
    signature_algorithm: str


def load_csr(data: str | bytes) -> x509.CertificateSigningRequest:
    """PEM, DER, or base64 DER without armour (EST) or base64url (ACME); no checks beyond syntax."""
    if isinstance(data, str):
        try:
            raw = data.encode("ascii")
        except UnicodeEncodeError:
            raise InvalidCsr(_NOT_A_CSR) from None
    else:
        raw = bytes(data)
    try:
        if b"-----BEGIN" in raw:
            return x509.load_pem_x509_csr(raw)
        if raw[:1] == b"\x30":
            return x509.load_der_x509_csr(raw)
        return x509.load_der_x509_csr(_decode_base64(raw))
    # InvalidVersion is not a ValueError: a request with a bad version field raised it past every caller.
    except (ValueError, TypeError, UnsupportedAlgorithm, x509.InvalidVersion):
        raise InvalidCsr(_NOT_A_CSR) from None


def parse_csr(data: str | bytes) -> CsrInfo:
    """Load and check a client's CSR: supported key, verifying self-signature, well-formed names."""
    csr = load_csr(data)
    try:
        public_key = csr.public_key()
    except (ValueError, UnsupportedAlgorithm):
        raise InvalidCsr("the request's public key cannot be read or is of an unsupported type") from None
    try:
        public_key = check_public_key(public_key)
    except PkiError as exc:
        raise InvalidCsr(exc.message) from None
    try:
        signature_algorithm = signature_algorithm_name(csr)
    except PkiError as exc:
        raise InvalidCsr(exc.message) from None
    try:
        signature_valid = csr.is_signature_valid
    except (ValueError, UnsupportedAlgorithm):
        signature_valid = False
    if not signature_valid:
        raise InvalidCsr("signature does not verify")
    try:
        subject = name_pairs(csr.subject)
        raw_sans = from_extension(csr)
        key_usages, extended_key_usages = usages_of(csr)
    except (ValueError, x509.DuplicateExtension, x509.UnsupportedGeneralNameType) as exc:
        raise InvalidCsr(f"malformed subject or extension request: {exc}") from None
    sans: list[SubjectAltName] = []
    for san in raw_sans:
        san_type = san.type
        if san.type == "DNS" and _looks_like_ip(san.value):
            san_type = "IP"  # PITFALLS: an IP literal never goes in a dNSName.
        try:
            normalized = make_san(san_type=san_type, value=san.value)
        except PkiError as exc:
            raise InvalidCsr(f"subjectAltName: {exc.message}") from None
        if normalized not in sans:
            sans.append(normalized)
    return CsrInfo(
        csr=csr,
        public_key=public_key,
        key_algorithm=key_algorithm_of(public_key),
        subject=subject,
        sans=sans,
        key_usages=key_usages,
        extended_key_usages=extended_key_usages,
        signature_algorithm=signature_algorithm,
    )


def build_csr(
    *,
    key: PrivateKey,
    subject: x509.Name | list[tuple[str, str]],
    sans: list[SubjectAltName],
    is_ca: bool = False,
    path_length: int | None = None,
) -> x509.CertificateSigningRequest:
    """A CSR signed by `key`; `is_ca` asks for a CA certificate (for a CA with an external parent)."""
    name = subject if isinstance(subject, x509.Name) else build_name(subject)
    builder = x509.CertificateSigningRequestBuilder().subject_name(name)
    if sans:
        builder = builder.add_extension(
            x509.SubjectAlternativeName(to_general_names(sans)), critical=len(name) == 0
        )
    if is_ca:
        builder = builder.add_extension(
            x509.BasicConstraints(ca=True, path_length=path_length), critical=True
        )
        builder = builder.add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
    return builder.sign(key, hash_for(key))


def _decode_base64(raw: bytes) -> bytes:
    text = b"".join(raw.split())
    try:
        if b"-" in text or b"_" in text:
            return base64.urlsafe_b64decode(text + b"=" * (-len(text) % 4))
        return base64.b64decode(text + b"=" * (-len(text) % 4), validate=True)
    except (binascii.Error, ValueError):
        raise InvalidCsr(_NOT_A_CSR) from None


def _looks_like_ip(value: str) -> bool:
    try:
        make_san(san_type="IP", value=value)
    except PkiError:
        return False
    return True
