"""ACME Renewal Information (RFC 9773): certificate identifiers and suggested renewal windows."""

from __future__ import annotations

import base64
import binascii
import re
from dataclasses import dataclass
from datetime import datetime, timedelta

from cryptography import x509

from pki.acme.problem import AcmeProblem

# How long a client should wait before asking about the same certificate again (RFC 9773 §4.3).
RETRY_AFTER_SECONDS = 6 * 60 * 60
# Unpadded base64url: what both halves of a certificate identifier are made of.
_BASE64URL = re.compile(r"[A-Za-z0-9_-]+")


@dataclass(frozen=True)
class CertId:
    """RFC 9773 §4.1: the issuer's key identifier (the certificate's AKI) and the certificate's serial."""

    key_identifier: bytes
    serial: int

    def __str__(self) -> str:
        length = (self.serial.bit_length() + 8) // 8  # room for the sign bit, as DER encodes an INTEGER
        return f"{_encode(self.key_identifier)}.{_encode(self.serial.to_bytes(length, 'big', signed=True))}"


def _encode(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _decode(part: str) -> bytes:
    if not _BASE64URL.fullmatch(part):
        raise ValueError("not unpadded base64url")
    try:
        return base64.urlsafe_b64decode(part + "=" * (-len(part) % 4))
    except (binascii.Error, ValueError):
        raise ValueError("not base64url") from None


def cert_id_of(cert: x509.Certificate) -> CertId | None:
    """The certificate's identifier; None without an Authority Key Identifier (it has none then)."""
    try:
        aki = cert.extensions.get_extension_for_class(x509.AuthorityKeyIdentifier).value
    except x509.ExtensionNotFound:
        return None
    if aki.key_identifier is None:
        return None
    return CertId(aki.key_identifier, cert.serial_number)


def parse_cert_id(text: str) -> CertId:
    """`base64url(AKI keyIdentifier) "." base64url(serial's DER content octets)`; malformed otherwise."""
    parts = text.split(".")
    if len(parts) != 2 or len(text) > 512:
        raise AcmeProblem("malformed", "a certificate identifier is two base64url parts joined by a period")
    try:
        key_identifier, serial_octets = _decode(parts[0]), _decode(parts[1])
    except ValueError as error:
        raise AcmeProblem("malformed", f"certificate identifier {text!r}: {error}") from None
    serial = int.from_bytes(serial_octets, "big", signed=True)
    if not key_identifier or serial <= 0:
        raise AcmeProblem("malformed", f"certificate identifier {text!r} names no key identifier or serial")
    return CertId(key_identifier, serial)


def suggested_window(
    *, not_before: datetime, not_after: datetime, renew_at: datetime, replace_now: bool, now: datetime
) -> tuple[datetime, datetime]:
    """When to renew (RFC 9773 §4.2): a window ending at `renew_at` and a thirtieth of the lifetime long,
    so clients spread over it; already past when the certificate must be replaced now (revoked)."""
    if replace_now:
        return now - timedelta(hours=2), now - timedelta(hours=1)
    spread = max((not_after - not_before) / 30, timedelta(minutes=1))
    end = min(renew_at, not_after)
    return end - spread, end
