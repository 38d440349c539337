"""Names of key usages and extended key usages as policies and the API spell them."""

import re

from cryptography import x509
from cryptography.x509.oid import ExtendedKeyUsageOID

from pki.errors import PkiError
from pki.key import KeyAlgorithm

KEY_USAGES: tuple[str, ...] = (
    "digitalSignature",
    "contentCommitment",
    "keyEncipherment",
    "dataEncipherment",
    "keyAgreement",
    "keyCertSign",
    "cRLSign",
    "encipherOnly",
    "decipherOnly",
)
EXTENDED_KEY_USAGES: dict[str, x509.ObjectIdentifier] = {
    "serverAuth": ExtendedKeyUsageOID.SERVER_AUTH,
    "clientAuth": ExtendedKeyUsageOID.CLIENT_AUTH,
    "codeSigning": ExtendedKeyUsageOID.CODE_SIGNING,
    "emailProtection": ExtendedKeyUsageOID.EMAIL_PROTECTION,
    "timeStamping": ExtendedKeyUsageOID.TIME_STAMPING,
    "OCSPSigning": ExtendedKeyUsageOID.OCSP_SIGNING,
}
_EKU_NAMES_BY_OID = {oid: name for name, oid in EXTENDED_KEY_USAGES.items()}
_DOTTED_OID = re.compile(r"^[0-2](\.(0|[1-9][0-9]*))+$")
# Usages that need the key to encrypt/agree, which EdDSA keys cannot do and ECDSA keys must not claim.
_RSA_ONLY_USAGES = frozenset({"keyEncipherment", "dataEncipherment"})
_NON_RSA_FORBIDDEN = {
    KeyAlgorithm.EC_P256: _RSA_ONLY_USAGES,
    KeyAlgorithm.EC_P384: _RSA_ONLY_USAGES,
    KeyAlgorithm.ED25519: _RSA_ONLY_USAGES | {"keyAgreement", "encipherOnly", "decipherOnly"},
}


def normalize_key_usage(name: str) -> str:
    """Canonical spelling of a key usage name (case-insensitive input)."""
    for known in KEY_USAGES:
        if known.lower() == name.strip().lower():
            return known
    raise PkiError(f"unknown key usage '{name}' (use {', '.join(KEY_USAGES)})")


def normalize_extended_key_usage(name: str) -> str:
    """Known name for a name or dotted OID; other dotted OIDs stay dotted."""
    text = name.strip()
    for known in EXTENDED_KEY_USAGES:
        if known.lower() == text.lower():
            return known
    if _DOTTED_OID.match(text):
        return _EKU_NAMES_BY_OID.get(x509.ObjectIdentifier(text), text)
    raise PkiError(
        f"unknown extended key usage '{name}' (use {', '.join(EXTENDED_KEY_USAGES)} or a dotted OID)"
    )


def extended_key_usage_oid(name: str) -> x509.ObjectIdentifier:
    normalized = normalize_extended_key_usage(name)
    return EXTENDED_KEY_USAGES.get(normalized) or x509.ObjectIdentifier(normalized)


def extended_key_usage_name(oid: x509.ObjectIdentifier) -> str:
    return _EKU_NAMES_BY_OID.get(oid, oid.dotted_string)


def default_key_usages(key_algorithm: KeyAlgorithm) -> frozenset[str]:
    """What a leaf gets when nobody asked: RSA may encrypt session keys, EC and Ed25519 only sign."""
    if key_algorithm.name.startswith("RSA"):
        return frozenset({"digitalSignature", "keyEncipherment"})
    return frozenset({"digitalSignature"})


def check_key_usages_for_key(*, key_usages: frozenset[str], key_algorithm: KeyAlgorithm) -> None:
    """Raise PkiError for usages the key type cannot honour (e.g. keyEncipherment on an EC key)."""
    forbidden = sorted(key_usages & _NON_RSA_FORBIDDEN.get(key_algorithm, frozenset()))
    if forbidden:
        raise PkiError(f"key usage {', '.join(forbidden)} is not possible with a {key_algorithm.value} key")


def key_usage_extension(key_usages: frozenset[str]) -> x509.KeyUsage:
    names = {normalize_key_usage(name) for name in key_usages}
    if not names:
        raise PkiError("at least one key usage is needed")
    if ("encipherOnly" in names or "decipherOnly" in names) and "keyAgreement" not in names:
        raise PkiError("encipherOnly and decipherOnly need keyAgreement")
    return x509.KeyUsage(
        digital_signature="digitalSignature" in names,
        content_commitment="contentCommitment" in names,
        key_encipherment="keyEncipherment" in names,
        data_encipherment="dataEncipherment" in names,
        key_agreement="keyAgreement" in names,
        key_cert_sign="keyCertSign" in names,
        crl_sign="cRLSign" in names,
        encipher_only="encipherOnly" in names,
        decipher_only="decipherOnly" in names,
    )


def key_usage_names(key_usage: x509.KeyUsage) -> frozenset[str]:
    names = {
        "digitalSignature": key_usage.digital_signature,
        "contentCommitment": key_usage.content_commitment,
        "keyEncipherment": key_usage.key_encipherment,
        "dataEncipherment": key_usage.data_encipherment,
        "keyAgreement": key_usage.key_agreement,
        "keyCertSign": key_usage.key_cert_sign,
        "cRLSign": key_usage.crl_sign,
    }
    if key_usage.key_agreement:
        names["encipherOnly"] = key_usage.encipher_only
        names["decipherOnly"] = key_usage.decipher_only
    return frozenset(name for name, present in names.items() if present)


def usages_of(
    signed: x509.Certificate | x509.CertificateSigningRequest,
) -> tuple[frozenset[str], frozenset[str]]:
    """(key usages, extended key usages) present in a certificate or requested by a CSR."""
    try:
        key_usages = key_usage_names(signed.extensions.get_extension_for_class(x509.KeyUsage).value)
    except x509.ExtensionNotFound:
        key_usages = frozenset()
    try:
        eku = signed.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
        extended = frozenset(extended_key_usage_name(oid) for oid in eku)
    except x509.ExtensionNotFound:
        extended = frozenset()
    return key_usages, extended
