"""Certificate revocation lists (RFC 5280 §5), built from the full revoked list in one go."""

from dataclasses import dataclass
from datetime import UTC, datetime

from cryptography import x509
from cryptography.hazmat.primitives import serialization

from pki.errors import PkiError
from pki.key import PrivateKey, hash_for

REVOCATION_REASONS: tuple[str, ...] = (
    "unspecified",
    "keyCompromise",
    "cACompromise",
    "affiliationChanged",
    "superseded",
    "cessationOfOperation",
    "certificateHold",
    "removeFromCRL",
    "privilegeWithdrawn",
    "aACompromise",
)
_REASON_FLAGS: dict[str, x509.ReasonFlags] = {
    "unspecified": x509.ReasonFlags.unspecified,
    "keyCompromise": x509.ReasonFlags.key_compromise,
    "cACompromise": x509.ReasonFlags.ca_compromise,
    "affiliationChanged": x509.ReasonFlags.affiliation_changed,
    "superseded": x509.ReasonFlags.superseded,
    "cessationOfOperation": x509.ReasonFlags.cessation_of_operation,
    "certificateHold": x509.ReasonFlags.certificate_hold,
    "removeFromCRL": x509.ReasonFlags.remove_from_crl,
    "privilegeWithdrawn": x509.ReasonFlags.privilege_withdrawn,
    "aACompromise": x509.ReasonFlags.aa_compromise,
}
_REASON_NAMES = {flag: name for name, flag in _REASON_FLAGS.items()}


@dataclass(frozen=True)
class RevokedEntry:
    serial: int
    revoked_at: datetime
    reason: str | None


def reason_flag(reason: str | None) -> x509.ReasonFlags | None:
    """ReasonFlags for a reason name; None and "unspecified" give None (RFC 5280: omit code 0)."""
    if reason is None:
        return None
    flag = _REASON_FLAGS.get(reason)
    if flag is None:
        raise PkiError(f"unknown revocation reason '{reason}' (use {', '.join(REVOCATION_REASONS)})")
    return None if flag is x509.ReasonFlags.unspecified else flag


def reason_name(flag: x509.ReasonFlags | None) -> str | None:
    return None if flag is None else _REASON_NAMES[flag]


def build_crl(
    *,
    issuer_cert: x509.Certificate,
    issuer_key: PrivateKey,
    revoked: list[RevokedEntry],
    crl_number: int,
    this_update: datetime,
    next_update: datetime,
) -> bytes:
    """DER CRL signed by the CA itself, with AKI and CRL number."""
    if next_update <= this_update:
        raise PkiError("the CRL's nextUpdate must be after thisUpdate")
    if crl_number < 0 or crl_number >= 1 << 159:
        raise PkiError("CRL number must be non-negative and fit in 20 octets")
    entries = [_revoked_certificate(entry) for entry in revoked]
    try:
        ski = issuer_cert.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
        aki = x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ski)
    except x509.ExtensionNotFound:
        aki = x509.AuthorityKeyIdentifier.from_issuer_public_key(issuer_cert.public_key())  # type: ignore[arg-type]
    builder = x509.CertificateRevocationListBuilder(
        issuer_name=issuer_cert.subject,
        last_update=this_update.astimezone(UTC),
        next_update=next_update.astimezone(UTC),
        revoked_certificates=entries,
    )
    builder = builder.add_extension(aki, critical=False).add_extension(
        x509.CRLNumber(crl_number), critical=False
    )
    crl = builder.sign(issuer_key, hash_for(issuer_key))
    return crl.public_bytes(serialization.Encoding.DER)


def _revoked_certificate(entry: RevokedEntry) -> x509.RevokedCertificate:
    builder = (
        x509.RevokedCertificateBuilder()
        .serial_number(entry.serial)
        .revocation_date(entry.revoked_at.astimezone(UTC))
    )
    flag = reason_flag(entry.reason)
    if flag is not None:
        builder = builder.add_extension(x509.CRLReason(flag), critical=False)
    return builder.build()
