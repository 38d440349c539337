"""Building CA and leaf certificates, and describing any certificate for storage and display."""

import base64
import binascii
import os
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from cryptography import x509
from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.x509.oid import NameOID

from pki.errors import PkiError
from pki.key import (
    KeyAlgorithm,
    PrivateKey,
    PublicKey,
    check_public_key,
    hash_for,
    key_algorithm_of,
    signature_algorithm_name,
)
from pki.name import format_name
from pki.san import SubjectAltName, from_extension, to_general_names
from pki.usage import (
    check_key_usages_for_key,
    default_key_usages,
    extended_key_usage_oid,
    key_usage_extension,
    normalize_key_usage,
    usages_of,
)

CLOCK_SKEW = timedelta(seconds=60)


@dataclass(frozen=True)
class IssuerUrls:
    """Where relying parties fetch the issuer certificate, OCSP answers and the CRL."""

    ca_issuers: str
    ocsp: str
    crl: str


@dataclass(frozen=True)
class CertificateFacts:
    serial_hex: str
    subject_dn: str
    common_name: str | None
    sans: list[SubjectAltName]
    key_algorithm: KeyAlgorithm
    signature_algorithm: str
    not_before: datetime
    not_after: datetime
    key_usages: frozenset[str]
    extended_key_usages: frozenset[str]
    is_ca: bool
    path_length: int | None
    fingerprint_sha256: str
    issuer_dn: str
    ski_hex: str | None
    aki_hex: str | None


def new_serial() -> int:
    """159 random bits: positive, at most 20 DER octets, far more than the 64 bits of entropy required."""
    while True:
        serial = int.from_bytes(os.urandom(20), "big") >> 1
        if serial >= 1 << 64:
            return serial


def serial_hex(serial: int) -> str:
    """Uppercase hex without colons, padded to whole octets."""
    text = f"{serial:X}"
    return text if len(text) % 2 == 0 else "0" + text


def build_root_ca(
    *, key: PrivateKey, subject: x509.Name, not_after: datetime, path_length: int | None
) -> x509.Certificate:
    now = _now()
    not_after = _as_utc(not_after)
    if not_after <= now:
        raise PkiError("the root CA's notAfter must be in the future")
    public_key = key.public_key()
    ski = x509.SubjectKeyIdentifier.from_public_key(public_key)
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(public_key)
        .serial_number(new_serial())
        .not_valid_before(now - CLOCK_SKEW)
        .not_valid_after(not_after)
        .add_extension(x509.BasicConstraints(ca=True, path_length=path_length), critical=True)
        .add_extension(_ca_key_usage(), critical=True)
        .add_extension(ski, critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ski), critical=False)
    )
    return builder.sign(key, hash_for(key))


def sign_ca_certificate(
    *,
    issuer_cert: x509.Certificate,
    issuer_key: PrivateKey,
    public_key: PublicKey,
    subject: x509.Name,
    not_after: datetime,
    path_length: int | None,
    urls: IssuerUrls | None,
) -> x509.Certificate:
    """An intermediate CA; its path length must fit under the issuer's (None inherits issuer − 1)."""
    issuer_path_length = _check_issuer(issuer_cert, issuer_key)
    if issuer_path_length is not None:
        if issuer_path_length == 0:
            raise PkiError("the issuing CA has path length 0 and cannot sign another CA")
        if path_length is None:
            path_length = issuer_path_length - 1
        elif path_length > issuer_path_length - 1:
            raise PkiError(
                f"path length {path_length} is too long: "
                f"the issuing CA allows at most {issuer_path_length - 1}"
            )
    if path_length is not None and path_length < 0:
        raise PkiError("path length cannot be negative")
    check_public_key(public_key)
    not_before, capped = _validity(issuer_cert, not_after)
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer_cert.subject)
        .public_key(public_key)
        .serial_number(new_serial())
        .not_valid_before(not_before)
        .not_valid_after(capped)
        .add_extension(x509.BasicConstraints(ca=True, path_length=path_length), critical=True)
        .add_extension(_ca_key_usage(), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(public_key), critical=False)
        .add_extension(_authority_key_identifier(issuer_cert), critical=False)
    )
    if urls is not None:
        builder = _add_urls(builder, urls)
    return builder.sign(issuer_key, hash_for(issuer_key))


def sign_leaf_certificate(
    *,
    issuer_cert: x509.Certificate,
    issuer_key: PrivateKey,
    public_key: PublicKey,
    subject: x509.Name,
    sans: list[SubjectAltName],
    key_usages: frozenset[str],
    extended_key_usages: frozenset[str],
    not_after: datetime,
    urls: IssuerUrls,
    serial: int | None = None,
) -> x509.Certificate:
    """An end-entity certificate; empty key_usages gets the key type's default (see default_key_usages)."""
    _check_issuer(issuer_cert, issuer_key)
    key_algorithm = key_algorithm_of(public_key)
    usages = frozenset(normalize_key_usage(name) for name in key_usages) or default_key_usages(key_algorithm)
    if "keyCertSign" in usages:
        raise PkiError("keyCertSign is only for CA certificates")
    check_key_usages_for_key(key_usages=usages, key_algorithm=key_algorithm)
    if len(subject) == 0 and not sans:
        raise PkiError("a certificate needs a subject or at least one subject alternative name")
    if serial is not None and not 0 < serial < 1 << 159:
        raise PkiError("serial must be positive and fit in 20 octets")
    not_before, capped = _validity(issuer_cert, not_after)
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer_cert.subject)
        .public_key(public_key)
        .serial_number(serial if serial is not None else new_serial())
        .not_valid_before(not_before)
        .not_valid_after(capped)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(key_usage_extension(usages), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(public_key), critical=False)
        .add_extension(_authority_key_identifier(issuer_cert), critical=False)
    )
    if sans:
        # RFC 5280 4.2.1.6: with an empty subject the SAN carries the identity and must be critical.
        builder = builder.add_extension(
            x509.SubjectAlternativeName(to_general_names(sans)), critical=len(subject) == 0
        )
    if extended_key_usages:
        oids = list(dict.fromkeys(extended_key_usage_oid(name) for name in sorted(extended_key_usages)))
        builder = builder.add_extension(x509.ExtendedKeyUsage(oids), critical=False)
    builder = _add_urls(builder, urls)
    return builder.sign(issuer_key, hash_for(issuer_key))


def describe_certificate(cert: x509.Certificate) -> CertificateFacts:
    try:
        basic = cert.extensions.get_extension_for_class(x509.BasicConstraints).value
        is_ca, path_length = basic.ca, basic.path_length
    except x509.ExtensionNotFound:
        is_ca, path_length = False, None
    key_usages, extended_key_usages = usages_of(cert)
    common_names = cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    common_name = common_names[0].value if common_names else None
    return CertificateFacts(
        serial_hex=serial_hex(cert.serial_number),
        subject_dn=format_name(cert.subject),
        common_name=common_name if isinstance(common_name, str) else None,
        sans=from_extension(cert),
        key_algorithm=key_algorithm_of(cert.public_key()),
        signature_algorithm=_signature_name_or_oid(cert),
        not_before=cert.not_valid_before_utc,
        not_after=cert.not_valid_after_utc,
        key_usages=key_usages,
        extended_key_usages=extended_key_usages,
        is_ca=is_ca,
        path_length=path_length,
        fingerprint_sha256=cert.fingerprint(hashes.SHA256()).hex(),
        issuer_dn=format_name(cert.issuer),
        ski_hex=_ski_hex(cert),
        aki_hex=_aki_hex(cert),
    )


def load_certificate(data: str | bytes) -> x509.Certificate:
    """The first certificate of PEM, or DER, or base64 DER without armour."""
    raw = data.encode("ascii", errors="replace") if isinstance(data, str) else bytes(data)
    try:
        if b"-----BEGIN" in raw:
            return x509.load_pem_x509_certificate(raw)
        if raw[:1] == b"\x30":
            return x509.load_der_x509_certificate(raw)
        return x509.load_der_x509_certificate(base64.b64decode(b"".join(raw.split()), validate=True))
    except (ValueError, TypeError, binascii.Error, UnsupportedAlgorithm):
        raise PkiError("not a PEM or DER X.509 certificate") from None


def load_certificates(pem: str | bytes) -> list[x509.Certificate]:
    """Every certificate of a PEM bundle, in order."""
    raw = pem.encode("ascii", errors="replace") if isinstance(pem, str) else bytes(pem)
    try:
        certificates = x509.load_pem_x509_certificates(raw)
    except ValueError:
        raise PkiError("no readable PEM certificate found") from None
    return certificates


def certificate_pem(cert: x509.Certificate) -> str:
    return cert.public_bytes(serialization.Encoding.PEM).decode("ascii")


def verify_issued_by(cert: x509.Certificate, issuer_cert: x509.Certificate) -> bool:
    """True when the issuer's name matches and its key verifies the signature."""
    try:
        cert.verify_directly_issued_by(issuer_cert)
    except (ValueError, TypeError, InvalidSignature, UnsupportedAlgorithm):
        return False
    return True


def public_keys_match(left: Any, right: Any) -> bool:
    """Whether two keys (public or private, of any type cryptography loads) share the same public key."""
    return _spki(left) == _spki(right)


def _spki(key: Any) -> bytes:
    public = key.public_key() if hasattr(key, "private_bytes") else key
    return bytes(
        public.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    )


def _now() -> datetime:
    return datetime.now(UTC).replace(microsecond=0)


def _as_utc(moment: datetime) -> datetime:
    if moment.tzinfo is None:
        raise PkiError("datetimes must be timezone-aware")
    return moment.astimezone(UTC)


def _validity(issuer_cert: x509.Certificate, not_after: datetime) -> tuple[datetime, datetime]:
    """(notBefore a minute ago, notAfter capped at the issuer's notAfter)."""
    now = _now()
    issuer_not_after = issuer_cert.not_valid_after_utc
    if issuer_not_after <= now:
        raise PkiError("the issuing CA has expired")
    capped = min(_as_utc(not_after), issuer_not_after)
    if capped <= now:
        raise PkiError("notAfter must be in the future")
    return max(now - CLOCK_SKEW, issuer_cert.not_valid_before_utc), capped


def _check_issuer(issuer_cert: x509.Certificate, issuer_key: PrivateKey) -> int | None:
    """The issuer's path length, after checking it is a CA allowed to sign and the key is its own."""
    if not public_keys_match(issuer_key, issuer_cert.public_key()):
        raise PkiError("the issuer key does not belong to the issuer certificate")
    try:
        basic = issuer_cert.extensions.get_extension_for_class(x509.BasicConstraints).value
    except x509.ExtensionNotFound:
        raise PkiError("the issuer certificate is not a CA (no basicConstraints)") from None
    if not basic.ca:
        raise PkiError("the issuer certificate is not a CA")
    key_usages, _ = usages_of(issuer_cert)
    if key_usages and "keyCertSign" not in key_usages:
        raise PkiError("the issuer certificate's key usage does not include keyCertSign")
    return basic.path_length


def _ca_key_usage() -> x509.KeyUsage:
    # digitalSignature lets the CA sign OCSP responses itself (RFC 6960 4.2.2.2).
    return key_usage_extension(frozenset({"digitalSignature", "keyCertSign", "cRLSign"}))


def _authority_key_identifier(issuer_cert: x509.Certificate) -> x509.AuthorityKeyIdentifier:
    try:
        ski = issuer_cert.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
    except x509.ExtensionNotFound:
        return x509.AuthorityKeyIdentifier.from_issuer_public_key(issuer_cert.public_key())  # type: ignore[arg-type]
    return x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ski)


def _add_urls(builder: x509.CertificateBuilder, urls: IssuerUrls) -> x509.CertificateBuilder:
    builder = builder.add_extension(
        x509.AuthorityInformationAccess(
            [
                x509.AccessDescription(
                    x509.AuthorityInformationAccessOID.CA_ISSUERS,
                    x509.UniformResourceIdentifier(urls.ca_issuers),
                ),
                x509.AccessDescription(
                    x509.AuthorityInformationAccessOID.OCSP, x509.UniformResourceIdentifier(urls.ocsp)
                ),
            ]
        ),
        critical=False,
    )
    return builder.add_extension(
        x509.CRLDistributionPoints(
            [
                x509.DistributionPoint(
                    full_name=[x509.UniformResourceIdentifier(urls.crl)],
                    relative_name=None,
                    reasons=None,
                    crl_issuer=None,
                )
            ]
        ),
        critical=False,
    )


def _signature_name_or_oid(cert: x509.Certificate) -> str:
    try:
        return signature_algorithm_name(cert)
    except PkiError:
        oid = cert.signature_algorithm_oid
        return getattr(oid, "_name", None) or oid.dotted_string


def _ski_hex(cert: x509.Certificate) -> str | None:
    try:
        return cert.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value.digest.hex()
    except x509.ExtensionNotFound:
        return None


def _aki_hex(cert: x509.Certificate) -> str | None:
    try:
        identifier = cert.extensions.get_extension_for_class(x509.AuthorityKeyIdentifier).value.key_identifier
    except x509.ExtensionNotFound:
        return None
    return identifier.hex() if identifier is not None else None
