import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import dsa, ec, rsa
from pki_support import cached_key

from pki.errors import PkiError
from pki.key import (
    KeyAlgorithm,
    hash_for,
    key_algorithm_of,
    load_private_key,
    serialize_private_key,
    signature_algorithm_for,
)
from pki.sealing import generate_kek, seal, unseal

EXPECTED_SIGNATURES = {
    KeyAlgorithm.RSA_2048: ("SHA256_WITH_RSA", hashes.SHA256),
    KeyAlgorithm.RSA_3072: ("SHA256_WITH_RSA", hashes.SHA256),
    KeyAlgorithm.RSA_4096: ("SHA256_WITH_RSA", hashes.SHA256),
    KeyAlgorithm.EC_P256: ("ECDSA_WITH_SHA256", hashes.SHA256),
    KeyAlgorithm.EC_P384: ("ECDSA_WITH_SHA384", hashes.SHA384),
    KeyAlgorithm.ED25519: ("ED25519", None),
}


def test_key_algorithm_values_equal_names() -> None:
    assert all(algorithm.value == algorithm.name for algorithm in KeyAlgorithm)


@pytest.mark.parametrize("algorithm", list(KeyAlgorithm))
def test_key_round_trip(algorithm: KeyAlgorithm) -> None:
    key = cached_key(algorithm, "leaf")
    assert key_algorithm_of(key.public_key()) is algorithm
    assert key_algorithm_of(key) is algorithm
    pem = serialize_private_key(key)
    assert pem.startswith(b"-----BEGIN PRIVATE KEY-----")
    loaded = load_private_key(pem)
    assert serialize_private_key(loaded) == pem
    name, hash_type = EXPECTED_SIGNATURES[algorithm]
    assert signature_algorithm_for(key) == name
    hash_algorithm = hash_for(key)
    assert (hash_algorithm is None) if hash_type is None else isinstance(hash_algorithm, hash_type)


@pytest.mark.parametrize(
    ("key", "message"),
    [
        (rsa.generate_private_key(public_exponent=65537, key_size=1024), "too small"),
        (ec.generate_private_key(ec.SECP521R1()), "secp521r1"),
        (dsa.generate_private_key(key_size=2048), "not supported"),
    ],
    ids=["rsa1024", "p521", "dsa"],
)
def test_unsupported_keys_are_refused(key: object, message: str) -> None:
    with pytest.raises(PkiError, match=message):
        key_algorithm_of(key.public_key())  # type: ignore[attr-defined]


def test_load_private_key_garbage() -> None:
    with pytest.raises(PkiError):
        load_private_key(b"not a key")


def test_seal_round_trip() -> None:
    kek = generate_kek()
    assert len(kek) == 32
    sealed = seal(kek=kek, plaintext=b"secret key material", context=b"ca:1")
    assert sealed[0] == 1 and len(sealed) == 1 + 12 + len(b"secret key material") + 16
    assert unseal(kek=kek, sealed=sealed, context=b"ca:1") == b"secret key material"
    assert seal(kek=kek, plaintext=b"x", context=b"ca:1") != seal(kek=kek, plaintext=b"x", context=b"ca:1")


def test_unseal_refuses_tamper_wrong_context_and_wrong_key() -> None:
    kek = generate_kek()
    sealed = seal(kek=kek, plaintext=b"secret", context=b"ca:1")
    tampered = bytearray(sealed)
    tampered[-1] ^= 1
    with pytest.raises(PkiError):
        unseal(kek=kek, sealed=bytes(tampered), context=b"ca:1")
    with pytest.raises(PkiError):
        unseal(kek=kek, sealed=sealed, context=b"ca:2")
    with pytest.raises(PkiError):
        unseal(kek=generate_kek(), sealed=sealed, context=b"ca:1")
    with pytest.raises(PkiError):
        unseal(kek=kek, sealed=sealed[:10], context=b"ca:1")
    with pytest.raises(PkiError):
        unseal(kek=kek, sealed=b"\x02" + sealed[1:], context=b"ca:1")
    with pytest.raises(PkiError):
        seal(kek=b"short", plaintext=b"x", context=b"ca:1")
