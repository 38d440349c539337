"""ACME challenges (RFC 8555 §8, RFC 8737, RFC 8738): tokens, key authorizations and the pure checks of
what a validation found; the network side lives in core.acme_validation."""

from __future__ import annotations

import base64
import hashlib
import ipaddress
import secrets
from datetime import UTC, datetime, timedelta
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from cryptography.x509.oid import NameOID, ObjectIdentifier

from pki.key import PrivateKey, hash_for

HTTP_01 = "http-01"
DNS_01 = "dns-01"
TLS_ALPN_01 = "tls-alpn-01"
CHALLENGE_TYPES = (HTTP_01, DNS_01, TLS_ALPN_01)
# RFC 8737 §3 / §6.1: the ALPN protocol name and the acmeIdentifier extension.
ACME_TLS_ALPN_PROTOCOL = "acme-tls/1"
ACME_IDENTIFIER_OID = ObjectIdentifier("1.3.6.1.5.5.7.1.31")
HTTP_01_PATH = "/.well-known/acme-challenge/"


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def new_token() -> str:
    """128 random bits, base64url without padding (RFC 8555 §8.1 asks for at least 128 bits)."""
    return b64url(secrets.token_bytes(16))


def challenge_types_for(identifier_type: str, *, wildcard: bool) -> tuple[str, ...]:
    """Wildcards prove control of the whole zone: dns-01 only. IPs have no DNS zone: no dns-01 (RFC 8738)."""
    if wildcard:
        return (DNS_01,)
    if identifier_type == "ip":
        return (HTTP_01, TLS_ALPN_01)
    return CHALLENGE_TYPES


def key_authorization(token: str, thumbprint: str) -> str:
    return f"{token}.{thumbprint}"


def dns01_txt_value(key_authorization_text: str) -> str:
    """The TXT record's value: base64url(SHA-256(key authorization)) (RFC 8555 §8.4)."""
    return b64url(hashlib.sha256(key_authorization_text.encode("ascii")).digest())


def dns01_record_name(domain: str) -> str:
    return f"_acme-challenge.{domain.rstrip('.')}"


def http01_body_matches(body: bytes, key_authorization_text: str) -> bool:
    """RFC 8555 §8.3: trailing whitespace is ignored."""
    try:
        text = body.decode("ascii")
    except UnicodeDecodeError:
        return False
    return text.rstrip() == key_authorization_text


def tls_alpn01_extension_value(key_authorization_text: str) -> bytes:
    """DER of the acmeIdentifier extension value: an OCTET STRING of SHA-256(key authorization)."""
    digest = hashlib.sha256(key_authorization_text.encode("ascii")).digest()
    return b"\x04\x20" + digest


def tls_alpn01_server_name(identifier_type: str, value: str) -> str:
    """SNI for tls-alpn-01: the DNS name, or for an IP the reverse-mapping name (RFC 8738 §6)."""
    if identifier_type == "ip":
        return ipaddress.ip_address(value).reverse_pointer
    return value


def check_tls_alpn01_certificate(
    der: bytes, *, identifier_type: str, identifier_value: str, key_authorization_text: str
) -> str | None:
    """None when the certificate proves control per RFC 8737 §3, else why not (no chain validation)."""
    try:
        cert = x509.load_der_x509_certificate(der)
    except ValueError:
        return "the presented certificate cannot be parsed"
    try:
        sans = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except (x509.ExtensionNotFound, ValueError, x509.DuplicateExtension):
        return "the presented certificate has no subjectAltName extension"
    names = list(sans)
    if identifier_type == "ip":
        expected: Any = x509.IPAddress(ipaddress.ip_address(identifier_value))
    else:
        expected = x509.DNSName(identifier_value)
    if len(names) != 1 or not _same_name(names[0], expected):
        presented = ", ".join(str(getattr(name, "value", name)) for name in names) or "none"
        return (
            f"the presented certificate's subjectAltName must be exactly {identifier_value} "
            f"(found: {presented})"
        )
    try:
        extension = cert.extensions.get_extension_for_oid(ACME_IDENTIFIER_OID)
    except x509.ExtensionNotFound:
        return "the presented certificate has no acmeIdentifier extension (1.3.6.1.5.5.7.1.31)"
    except (ValueError, x509.DuplicateExtension):
        return "the presented certificate's extensions cannot be parsed"
    if not extension.critical:
        return "the presented certificate's acmeIdentifier extension must be critical"
    value = getattr(extension.value, "value", None)
    if value != tls_alpn01_extension_value(key_authorization_text):
        return "the presented certificate's acmeIdentifier does not match the key authorization"
    return None


def _same_name(found: x509.GeneralName, expected: x509.GeneralName) -> bool:
    if isinstance(found, x509.DNSName) and isinstance(expected, x509.DNSName):
        return found.value.rstrip(".").lower() == expected.value.lower()
    return found == expected


def build_tls_alpn01_certificate(
    key: PrivateKey, *, identifier_type: str, identifier_value: str, key_authorization_text: str
) -> x509.Certificate:
    """A self-signed RFC 8737 validation certificate (what a client presents; used by tests and tools)."""
    now = datetime.now(UTC)
    if identifier_type == "ip":
        san: x509.GeneralName = x509.IPAddress(ipaddress.ip_address(identifier_value))
    else:
        san = x509.DNSName(identifier_value)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "acme-tls-alpn-01")])
    acme_identifier = x509.UnrecognizedExtension(
        ACME_IDENTIFIER_OID, tls_alpn01_extension_value(key_authorization_text)
    )
    builder = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(minutes=5))
        .not_valid_after(now + timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([san]), critical=False)
        .add_extension(acme_identifier, critical=True)
    )
    return builder.sign(key, hash_for(key))


def public_key_jwk(public_key: Any) -> dict[str, str] | None:
    """The RFC 7638 required members of a public key's JWK, or None for a key type ACME does not use."""
    if isinstance(public_key, rsa.RSAPublicKey):
        numbers = public_key.public_numbers()
        return {"kty": "RSA", "n": b64url(_int_bytes(numbers.n)), "e": b64url(_int_bytes(numbers.e))}
    if isinstance(public_key, ec.EllipticCurvePublicKey):
        curves = {"secp256r1": ("P-256", 32), "secp384r1": ("P-384", 48), "secp521r1": ("P-521", 66)}
        if public_key.curve.name not in curves:
            return None
        crv, size = curves[public_key.curve.name]
        point = public_key.public_numbers()
        return {
            "kty": "EC",
            "crv": crv,
            "x": b64url(point.x.to_bytes(size, "big")),
            "y": b64url(point.y.to_bytes(size, "big")),
        }
    if isinstance(public_key, ed25519.Ed25519PublicKey):
        raw = public_key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
        return {"kty": "OKP", "crv": "Ed25519", "x": b64url(raw)}
    return None


def jwk_matches_public_key(jwk: dict[str, Any], public_key: Any) -> bool:
    """True when `jwk` is the same key as `public_key` (revokeCert signed with the certificate's key)."""
    expected = public_key_jwk(public_key)
    if expected is None or not isinstance(jwk, dict):
        return False
    if expected["kty"] == "RSA":
        # Leading zero octets are not allowed in JWK integers, but compare numerically to be lenient.
        try:
            return _b64int(jwk.get("n")) == _b64int(expected["n"]) and _b64int(jwk.get("e")) == _b64int(
                expected["e"]
            )
        except ValueError:
            return False
    return all(jwk.get(member) == value for member, value in expected.items())


def _int_bytes(value: int) -> bytes:
    return value.to_bytes(max(1, (value.bit_length() + 7) // 8), "big")


def _b64int(value: Any) -> int:
    if not isinstance(value, str):
        raise ValueError("not a string")
    try:
        return int.from_bytes(base64.urlsafe_b64decode(value + "=" * (-len(value) % 4)), "big")
    except (ValueError, TypeError) as exc:
        raise ValueError("not base64url") from exc
