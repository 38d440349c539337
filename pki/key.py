"""Key generation, identification and serialization for the supported algorithms."""

import enum
from typing import TypeAlias

from cryptography import x509
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa

from pki.errors import PkiError


class KeyAlgorithm(str, enum.Enum):
    RSA_2048 = "RSA_2048"
    RSA_3072 = "RSA_3072"
    RSA_4096 = "RSA_4096"
    EC_P256 = "EC_P256"
    EC_P384 = "EC_P384"
    ED25519 = "ED25519"


PrivateKey: TypeAlias = rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey | ed25519.Ed25519PrivateKey
PublicKey: TypeAlias = rsa.RSAPublicKey | ec.EllipticCurvePublicKey | ed25519.Ed25519PublicKey

SIGNATURE_ALGORITHMS: tuple[str, ...] = (
    "SHA256_WITH_RSA",
    "SHA384_WITH_RSA",
    "SHA512_WITH_RSA",
    "ECDSA_WITH_SHA256",
    "ECDSA_WITH_SHA384",
    "ECDSA_WITH_SHA512",
    "ED25519",
)

_RSA_SIZES = {KeyAlgorithm.RSA_2048: 2048, KeyAlgorithm.RSA_3072: 3072, KeyAlgorithm.RSA_4096: 4096}
_EC_CURVES: dict[KeyAlgorithm, ec.EllipticCurve] = {
    KeyAlgorithm.EC_P256: ec.SECP256R1(),
    KeyAlgorithm.EC_P384: ec.SECP384R1(),
}
_SIGNATURE_NAMES_BY_OID = {
    x509.SignatureAlgorithmOID.RSA_WITH_SHA256: "SHA256_WITH_RSA",
    x509.SignatureAlgorithmOID.RSA_WITH_SHA384: "SHA384_WITH_RSA",
    x509.SignatureAlgorithmOID.RSA_WITH_SHA512: "SHA512_WITH_RSA",
    x509.SignatureAlgorithmOID.ECDSA_WITH_SHA256: "ECDSA_WITH_SHA256",
    x509.SignatureAlgorithmOID.ECDSA_WITH_SHA384: "ECDSA_WITH_SHA384",
    x509.SignatureAlgorithmOID.ECDSA_WITH_SHA512: "ECDSA_WITH_SHA512",
    x509.SignatureAlgorithmOID.ED25519: "ED25519",
}


def generate_private_key(algorithm: KeyAlgorithm) -> PrivateKey:
    algorithm = KeyAlgorithm(algorithm)
    if algorithm in _RSA_SIZES:
        return rsa.generate_private_key(public_exponent=65537, key_size=_RSA_SIZES[algorithm])
    if algorithm in _EC_CURVES:
        return ec.generate_private_key(_EC_CURVES[algorithm])
    return ed25519.Ed25519PrivateKey.generate()


def describe_unsupported_key(public_key: object) -> str | None:
    """Why a key is not acceptable, or None if it is; shared by CSR and import checks."""
    if isinstance(public_key, rsa.RSAPublicKey):
        size = public_key.key_size
        if size < 2048:
            return f"RSA key of {size} bits is too small; use 2048 or more"
        if size not in (2048, 3072, 4096):
            return f"RSA key of {size} bits is not supported; use 2048, 3072 or 4096"
        return None
    if isinstance(public_key, ec.EllipticCurvePublicKey):
        if public_key.curve.name not in ("secp256r1", "secp384r1"):
            return f"EC curve {public_key.curve.name} is not supported; use P-256 or P-384"
        return None
    if isinstance(public_key, ed25519.Ed25519PublicKey):
        return None
    return f"{type(public_key).__name__.removeprefix('_')} keys are not supported; use RSA, ECDSA or Ed25519"


def check_public_key(public_key: object) -> PublicKey:
    """The key typed as PublicKey, or PkiError saying why it is not acceptable."""
    problem = describe_unsupported_key(public_key)
    if problem is not None:
        raise PkiError(problem)
    assert isinstance(public_key, rsa.RSAPublicKey | ec.EllipticCurvePublicKey | ed25519.Ed25519PublicKey)
    return public_key


def key_algorithm_of(public_key: object) -> KeyAlgorithm:
    """Accepts a public or private key."""
    if isinstance(public_key, rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey | ed25519.Ed25519PrivateKey):
        public_key = public_key.public_key()
    public_key = check_public_key(public_key)
    if isinstance(public_key, rsa.RSAPublicKey):
        return KeyAlgorithm(f"RSA_{public_key.key_size}")
    if isinstance(public_key, ec.EllipticCurvePublicKey):
        return KeyAlgorithm.EC_P256 if public_key.curve.name == "secp256r1" else KeyAlgorithm.EC_P384
    return KeyAlgorithm.ED25519


def hash_for(issuer_key: PrivateKey) -> hashes.SHA256 | hashes.SHA384 | None:
    """Hash a CA with this key signs with; None for Ed25519, which hashes internally."""
    if isinstance(issuer_key, ed25519.Ed25519PrivateKey):
        return None
    if isinstance(issuer_key, ec.EllipticCurvePrivateKey) and issuer_key.curve.name == "secp384r1":
        return hashes.SHA384()
    if isinstance(issuer_key, ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey):
        return hashes.SHA256()
    raise PkiError(f"{type(issuer_key).__name__} keys cannot sign certificates here")


def signature_algorithm_for(issuer_key: PrivateKey) -> str:
    algorithm = hash_for(issuer_key)
    if algorithm is None:
        return "ED25519"
    if isinstance(issuer_key, rsa.RSAPrivateKey):
        return f"{algorithm.name.upper()}_WITH_RSA"
    return f"ECDSA_WITH_{algorithm.name.upper()}"


def signature_algorithm_name(signed: x509.Certificate | x509.CertificateSigningRequest) -> str:
    oid = signed.signature_algorithm_oid
    name = _SIGNATURE_NAMES_BY_OID.get(oid)
    if name is None:
        raise PkiError(f"signature algorithm {oid._name} ({oid.dotted_string}) is not supported")
    return name


def serialize_private_key(key: PrivateKey) -> bytes:
    """PKCS#8 PEM, unencrypted: callers seal it before storage."""
    return key.private_bytes(
        encoding=serialization.Encoding.PEM,
        format=serialization.PrivateFormat.PKCS8,
        encryption_algorithm=serialization.NoEncryption(),
    )


def load_private_key(pem: bytes) -> PrivateKey:
    try:
        key = serialization.load_pem_private_key(pem, password=None)
    except (ValueError, TypeError, UnsupportedAlgorithm) as exc:
        raise PkiError(f"not a usable unencrypted PEM private key: {exc}") from exc
    if not isinstance(key, rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey | ed25519.Ed25519PrivateKey):
        raise PkiError(f"{type(key).__name__.removeprefix('_')} keys are not supported")
    key_algorithm_of(key.public_key())
    return key
