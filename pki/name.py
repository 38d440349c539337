"""Subject distinguished names as ordered (type, value) pairs."""

from cryptography import x509
from cryptography.x509.oid import NameOID

from pki.errors import PkiError

SUBJECT_TYPES: dict[str, x509.ObjectIdentifier] = {
    "CN": NameOID.COMMON_NAME,
    "O": NameOID.ORGANIZATION_NAME,
    "OU": NameOID.ORGANIZATIONAL_UNIT_NAME,
    "C": NameOID.COUNTRY_NAME,
    "ST": NameOID.STATE_OR_PROVINCE_NAME,
    "L": NameOID.LOCALITY_NAME,
    "SERIALNUMBER": NameOID.SERIAL_NUMBER,
}
_TYPES_BY_OID = {oid: short for short, oid in SUBJECT_TYPES.items()}
_ALIASES = {"SN": "SERIALNUMBER", "S": "ST"}
# RFC 5280 Appendix A upper bounds.
_MAX_LENGTHS = {"CN": 64, "O": 64, "OU": 64, "C": 2, "ST": 128, "L": 128, "SERIALNUMBER": 64}


def normalize_type(attribute_type: str) -> str:
    """Canonical short name ("cn" → "CN"), raising PkiError for types Keyward does not issue."""
    upper = attribute_type.strip().upper()
    upper = _ALIASES.get(upper, upper)
    if upper not in SUBJECT_TYPES:
        raise PkiError(f"unknown subject attribute type '{attribute_type}' (use {', '.join(SUBJECT_TYPES)})")
    return upper


def build_name(pairs: list[tuple[str, str]]) -> x509.Name:
    attributes: list[x509.NameAttribute] = []
    for raw_type, value in pairs:
        attribute_type = normalize_type(raw_type)
        if not value or value != value.strip():
            raise PkiError(f"subject {attribute_type} must be non-empty without surrounding spaces")
        if len(value) > _MAX_LENGTHS[attribute_type]:
            raise PkiError(
                f"subject {attribute_type} is {len(value)} characters; "
                f"the limit is {_MAX_LENGTHS[attribute_type]}"
            )
        if attribute_type == "C" and not (len(value) == 2 and value.isascii() and value.isalpha()):
            raise PkiError(f"subject C must be a two-letter country code, got '{value}'")
        if attribute_type == "C":
            value = value.upper()
        if attribute_type == "SERIALNUMBER" and not value.isascii():
            raise PkiError("subject SERIALNUMBER must be printable ASCII")
        attributes.append(x509.NameAttribute(SUBJECT_TYPES[attribute_type], value))
    return x509.Name(attributes)


def name_pairs(name: x509.Name) -> list[tuple[str, str]]:
    """Pairs in encoding order; unknown attribute types keep their dotted OID as type."""
    pairs: list[tuple[str, str]] = []
    for attribute in name:
        short = _TYPES_BY_OID.get(attribute.oid, attribute.oid.dotted_string)
        value = attribute.value
        pairs.append((short, value if isinstance(value, str) else value.hex()))
    return pairs


def format_name(name: x509.Name) -> str:
    return name.rfc4514_string()


def parse_dn(text: str) -> list[tuple[str, str]]:
    """Encoding-order pairs from RFC 4514 "CN=x,O=y" (read reversed) or OpenSSL "/O=y/CN=x" text."""
    stripped = text.strip()
    slash_form = stripped.startswith("/")
    parts = _split_unescaped(stripped[1:] if slash_form else stripped, "/" if slash_form else ",")
    pairs: list[tuple[str, str]] = []
    for index, part in enumerate(parts):
        if not part.strip():
            if stripped and not (slash_form and index == len(parts) - 1):
                raise PkiError(f"empty component in distinguished name '{text}'")
            continue
        pieces = _split_unescaped(part, "=", maxsplit=1)
        if len(pieces) != 2:
            raise PkiError(f"'{part.strip()}' is not TYPE=value")
        attribute_type = normalize_type(pieces[0])
        pairs.append((attribute_type, _unescape(pieces[1].strip())))
    if not slash_form:
        pairs.reverse()
    return name_pairs(build_name(pairs))


def _split_unescaped(text: str, separator: str, maxsplit: int = -1) -> list[str]:
    parts: list[str] = []
    current: list[str] = []
    escaped = False
    for char in text:
        if escaped:
            current.append("\\" + char)
            escaped = False
        elif char == "\\":
            escaped = True
        elif char == separator and (maxsplit < 0 or len(parts) < maxsplit):
            parts.append("".join(current))
            current = []
        else:
            current.append(char)
    if escaped:
        current.append("\\")
    parts.append("".join(current))
    return parts


def _unescape(text: str) -> str:
    out: list[str] = []
    escaped = False
    for char in text:
        if escaped:
            out.append(char)
            escaped = False
        elif char == "\\":
            escaped = True
        else:
            out.append(char)
    return "".join(out)
