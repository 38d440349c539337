"""Subject alternative names: parsing, validation and conversion to and from X.509."""

import ipaddress
import re
from collections.abc import Iterable
from dataclasses import dataclass

from cryptography import x509

from pki.errors import PkiError

SAN_TYPES: tuple[str, ...] = ("DNS", "IP", "EMAIL", "URI")

_LABEL = re.compile(r"^[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?$")
_URI_SCHEME = re.compile(r"^[a-z][a-z0-9+.-]*:", re.IGNORECASE)
_EMAIL_LOCAL = re.compile(r"^[A-Za-z0-9!#$%&'*+/=?^_`{|}~.-]{1,64}$")
_PREFIX_ALIASES = {"DNS": "DNS", "IP": "IP", "EMAIL": "EMAIL", "RFC822": "EMAIL", "URI": "URI"}


@dataclass(frozen=True)
class SubjectAltName:
    type: str  # "DNS" | "IP" | "EMAIL" | "URI"
    value: str

    def __str__(self) -> str:
        return f"{self.type}:{self.value}"


def validate_dns_name(value: str, *, allow_wildcard: bool = True) -> str:
    """Lowercased name; a wildcard is allowed only as the whole leftmost label."""
    name = value.strip().lower()
    if not name:
        raise PkiError("DNS name is empty")
    if not name.isascii():
        raise PkiError(f"DNS name '{value}' is not ASCII; use its punycode (xn--) form")
    if len(name) > 253:
        raise PkiError(f"DNS name '{value}' is longer than 253 characters")
    labels = name.split(".")
    if labels[0] == "*":
        if not allow_wildcard:
            raise PkiError(f"wildcard DNS name '{value}' is not allowed here")
        if len(labels) < 2:
            raise PkiError(f"wildcard DNS name '{value}' needs a domain after '*.'")
        rest = labels[1:]
    else:
        rest = labels
    for label in rest:
        if label == "":
            raise PkiError(f"DNS name '{value}' has an empty label")
        if "*" in label:
            raise PkiError(f"DNS name '{value}': a wildcard may only be the whole leftmost label")
        if len(label) > 63:
            raise PkiError(f"DNS name '{value}' has a label longer than 63 characters")
        if not _LABEL.match(label):
            raise PkiError(
                f"DNS name '{value}' has an invalid label '{label}' (letters, digits and inner hyphens only)"
            )
    if rest[-1].isdigit():
        raise PkiError(f"'{value}' is neither a valid IP address nor a DNS name")
    return name


def validate_ip(value: str) -> str:
    """Canonical text form of an IPv4 or IPv6 address (brackets tolerated)."""
    text = value.strip()
    if text.startswith("[") and text.endswith("]"):
        text = text[1:-1]
    try:
        return str(ipaddress.ip_address(text))
    except ValueError as exc:
        raise PkiError(f"'{value}' is not an IP address") from exc


def validate_email(value: str) -> str:
    text = value.strip()
    local, at, domain = text.rpartition("@")
    if not at or not local or not domain:
        raise PkiError(f"'{value}' is not an email address (local@domain)")
    if not _EMAIL_LOCAL.match(local) or local.startswith(".") or local.endswith(".") or ".." in local:
        raise PkiError(f"email address '{value}' has an invalid local part")
    try:
        domain = validate_dns_name(domain, allow_wildcard=False)
    except PkiError as exc:
        raise PkiError(f"email address '{value}': {exc.message}") from exc
    return f"{local}@{domain}"


def validate_uri(value: str) -> str:
    text = value.strip()
    if not text.isascii() or any(char.isspace() for char in text):
        raise PkiError(f"URI '{value}' must be ASCII without spaces")
    if not _URI_SCHEME.match(text) or text.endswith(":"):
        raise PkiError(f"'{value}' is not an absolute URI (scheme:...)")
    return text


def make_san(*, san_type: str, value: str) -> SubjectAltName:
    """Validated and normalized SubjectAltName of an explicit type."""
    kind = _PREFIX_ALIASES.get(san_type.strip().upper())
    if kind is None:
        raise PkiError(f"unknown SAN type '{san_type}' (use {', '.join(SAN_TYPES)})")
    if kind == "DNS":
        if _is_ip(value):
            raise PkiError(f"'{value}' is an IP address; use an IP SAN, never a DNS one")
        return SubjectAltName("DNS", validate_dns_name(value))
    if kind == "IP":
        return SubjectAltName("IP", validate_ip(value))
    if kind == "EMAIL":
        return SubjectAltName("EMAIL", validate_email(value))
    return SubjectAltName("URI", validate_uri(value))


def classify_name(value: str) -> SubjectAltName:
    """An identifier without a type prefix: IP literals become IP SANs, everything else DNS."""
    if _is_ip(value):
        return SubjectAltName("IP", validate_ip(value))
    return SubjectAltName("DNS", validate_dns_name(value))


def parse_san(text: str) -> SubjectAltName:
    """ "DNS:a.example.com", "IP:10.0.0.1", "EMAIL:x@y", "URI:https://..."; bare values are guessed."""
    prefix, colon, rest = text.strip().partition(":")
    if colon and prefix.upper() in _PREFIX_ALIASES:
        return make_san(san_type=prefix, value=rest)
    bare = text.strip()
    if "://" in bare:
        return SubjectAltName("URI", validate_uri(bare))
    if "@" in bare:
        return SubjectAltName("EMAIL", validate_email(bare))
    return classify_name(bare)


def san_keys(sans: Iterable[SubjectAltName]) -> set[tuple[str, str]]:
    """The names as comparable (type, value) pairs: DNS names and e-mail addresses are case-insensitive."""
    return {(san.type, san.value.lower() if san.type in {"DNS", "EMAIL"} else san.value) for san in sans}


def to_general_names(sans: list[SubjectAltName]) -> list[x509.GeneralName]:
    """GeneralNames in input order, duplicates dropped."""
    names: list[x509.GeneralName] = []
    seen: set[SubjectAltName] = set()
    for san in sans:
        if san in seen:
            continue
        seen.add(san)
        if san.type == "DNS":
            names.append(x509.DNSName(san.value))
        elif san.type == "IP":
            names.append(x509.IPAddress(ipaddress.ip_address(san.value)))
        elif san.type == "EMAIL":
            names.append(x509.RFC822Name(san.value))
        elif san.type == "URI":
            names.append(x509.UniformResourceIdentifier(san.value))
        else:
            raise PkiError(f"unknown SAN type '{san.type}'")
    return names


def from_general_names(names: list[x509.GeneralName]) -> list[SubjectAltName]:
    """Our four SAN types, other GeneralName forms (otherName, directoryName…) skipped."""
    sans: list[SubjectAltName] = []
    for general_name in names:
        if isinstance(general_name, x509.DNSName):
            sans.append(SubjectAltName("DNS", general_name.value))
        elif isinstance(general_name, x509.IPAddress):
            sans.append(SubjectAltName("IP", str(general_name.value)))
        elif isinstance(general_name, x509.RFC822Name):
            sans.append(SubjectAltName("EMAIL", general_name.value))
        elif isinstance(general_name, x509.UniformResourceIdentifier):
            sans.append(SubjectAltName("URI", general_name.value))
    return sans


def from_extension(cert_or_csr: x509.Certificate | x509.CertificateSigningRequest) -> list[SubjectAltName]:
    try:
        extension = cert_or_csr.extensions.get_extension_for_class(x509.SubjectAlternativeName)
    except x509.ExtensionNotFound:
        return []
    return from_general_names(list(extension.value))


def _is_ip(value: str) -> bool:
    try:
        validate_ip(value)
    except PkiError:
        return False
    return True
