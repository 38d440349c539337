"""Export (PEM, PKCS#12) and import of a certificate with its chain and optional private key."""

import re
from dataclasses import dataclass, field

from asn1crypto import pkcs12 as asn1_pkcs12
from cryptography import x509
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from cryptography.hazmat.primitives.serialization import pkcs12

from pki.certificate import certificate_pem, public_keys_match, verify_issued_by
from pki.errors import InvalidBundle, PkiError
from pki.key import PrivateKey, key_algorithm_of, serialize_private_key

_PKCS12_KDF_ROUNDS = 100_000
_PRIVATE_KEY_BLOCK = re.compile(
    rb"-----BEGIN ((?:RSA |EC |ENCRYPTED )?PRIVATE KEY)-----.+?-----END \1-----", re.DOTALL
)


@dataclass
class ImportedBundle:
    certificate: x509.Certificate
    private_key: PrivateKey | None
    chain: list[x509.Certificate] = field(default_factory=list)


def pem_bundle(
    *, certificate: x509.Certificate, chain: list[x509.Certificate], private_key: PrivateKey | None
) -> str:
    """Leaf, then the chain in order, then the key (PKCS#8) if given."""
    parts = [certificate_pem(certificate)] + [certificate_pem(cert) for cert in chain]
    if private_key is not None:
        parts.append(serialize_private_key(private_key).decode("ascii"))
    return "".join(parts)


def pkcs12_bundle(
    *,
    certificate: x509.Certificate,
    chain: list[x509.Certificate],
    private_key: PrivateKey | None,
    password: str,
    friendly_name: str,
) -> bytes:
    """AES-256-CBC + PBKDF2-SHA256 with a SHA-256 MAC, which OpenSSL 3 and current platforms read."""
    if not password:
        raise InvalidBundle("a PKCS#12 export needs a non-empty password")
    encryption = (
        serialization.PrivateFormat.PKCS12.encryption_builder()
        .kdf_rounds(_PKCS12_KDF_ROUNDS)
        .key_cert_algorithm(pkcs12.PBES.PBESv2SHA256AndAES256CBC)
        .hmac_hash(hashes.SHA256())
        .build(password.encode("utf-8"))
    )
    return pkcs12.serialize_key_and_certificates(
        name=friendly_name.encode("utf-8") or None,
        key=private_key,
        cert=certificate,
        cas=chain or None,
        encryption_algorithm=encryption,
    )


def load_bundle(data: bytes, password: str | None) -> ImportedBundle:
    """A PEM bundle (certificates and optional key) or PKCS#12; the key must match the certificate."""
    if b"-----BEGIN" in data:
        return _load_pem_bundle(data, password)
    return _load_pkcs12(data, password)


def _load_pem_bundle(data: bytes, password: str | None) -> ImportedBundle:
    try:
        certificates = x509.load_pem_x509_certificates(data)
    except ValueError:
        raise InvalidBundle("the PEM data holds no readable certificate") from None
    key_blocks = [match.group(0) for match in _PRIVATE_KEY_BLOCK.finditer(data)]
    if len(key_blocks) > 1:
        raise InvalidBundle("the PEM data holds more than one private key")
    private_key = _load_pem_key(key_blocks[0], password) if key_blocks else None
    if private_key is not None:
        matching = [cert for cert in certificates if public_keys_match(cert.public_key(), private_key)]
        if not matching:
            raise InvalidBundle("the private key does not match any certificate in the bundle")
        leaf = matching[0]
    else:
        leaf = next((cert for cert in certificates if not _is_ca(cert)), certificates[0])
    others = [cert for cert in certificates if cert is not leaf]
    return ImportedBundle(certificate=leaf, private_key=private_key, chain=_order_chain(leaf, others))


def _load_pem_key(block: bytes, password: str | None) -> PrivateKey:
    encrypted = b"ENCRYPTED" in block.split(b"\n", 1)[0] or b"Proc-Type: 4,ENCRYPTED" in block
    if encrypted and not password:
        raise InvalidBundle("the private key is encrypted; give its password")
    try:
        key = serialization.load_pem_private_key(
            block, password=password.encode("utf-8") if encrypted and password else None
        )
    except (ValueError, TypeError) as exc:
        if encrypted:
            raise InvalidBundle("wrong password for the encrypted private key") from None
        raise InvalidBundle(f"the private key cannot be read: {exc}") from None
    except UnsupportedAlgorithm:
        raise InvalidBundle("the private key is of an unsupported type") from None
    return _supported_key(key)


def _load_pkcs12(data: bytes, password: str | None) -> ImportedBundle:
    secret = password.encode("utf-8") if password else None
    try:
        loaded = pkcs12.load_pkcs12(data, secret)
    except (ValueError, TypeError):
        if _is_pkcs12(data):
            raise InvalidBundle("wrong PKCS#12 password") from None
        raise InvalidBundle("not a PEM bundle or a PKCS#12 file") from None
    except UnsupportedAlgorithm:
        raise InvalidBundle("the PKCS#12 file uses an unsupported algorithm") from None
    private_key = _supported_key(loaded.key) if loaded.key is not None else None
    certificates = ([loaded.cert.certificate] if loaded.cert is not None else []) + [
        cert.certificate for cert in loaded.additional_certs
    ]
    if not certificates:
        raise InvalidBundle("the PKCS#12 file holds no certificate")
    if private_key is not None:
        matching = [cert for cert in certificates if public_keys_match(cert.public_key(), private_key)]
        if not matching:
            raise InvalidBundle("the private key does not match the certificate")
        leaf = matching[0]
    elif loaded.cert is not None:
        leaf = loaded.cert.certificate
    else:
        leaf = next((cert for cert in certificates if not _is_ca(cert)), certificates[0])
    others = [cert for cert in certificates if cert is not leaf]
    return ImportedBundle(certificate=leaf, private_key=private_key, chain=_order_chain(leaf, others))


def _supported_key(key: object) -> PrivateKey:
    if not isinstance(key, rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey | ed25519.Ed25519PrivateKey):
        raise InvalidBundle(f"{type(key).__name__.removeprefix('_')} private keys are not supported")
    try:
        key_algorithm_of(key.public_key())
    except PkiError as exc:
        raise InvalidBundle(exc.message) from None
    return key


def _order_chain(leaf: x509.Certificate, others: list[x509.Certificate]) -> list[x509.Certificate]:
    """Issuer order from the leaf upwards; certificates that do not chain keep their place at the end."""
    remaining = list(others)
    ordered: list[x509.Certificate] = []
    current = leaf
    while remaining:
        issuer = next((cert for cert in remaining if verify_issued_by(current, cert)), None)
        if issuer is None:
            break
        ordered.append(issuer)
        remaining.remove(issuer)
        if verify_issued_by(issuer, issuer):
            break
        current = issuer
    return ordered + remaining


def _is_ca(cert: x509.Certificate) -> bool:
    try:
        return cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    except x509.ExtensionNotFound:
        return False


def _is_pkcs12(data: bytes) -> bool:
    try:
        pfx = asn1_pkcs12.Pfx.load(data, strict=True)
        return pfx["version"].native == "v3" and pfx["auth_safe"]["content_type"].native == "data"
    except (ValueError, TypeError, KeyError):
        return False
