"""Encryption at rest of private keys under a key-encryption key kept outside the database."""

import os

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from pki.errors import PkiError

_VERSION = b"\x01"
_NONCE_SIZE = 12
_KEK_SIZE = 32


def generate_kek() -> bytes:
    return os.urandom(_KEK_SIZE)


def _cipher(kek: bytes) -> AESGCM:
    if len(kek) != _KEK_SIZE:
        raise PkiError(f"key-encryption key must be {_KEK_SIZE} bytes, got {len(kek)}")
    return AESGCM(kek)


def seal(*, kek: bytes, plaintext: bytes, context: bytes) -> bytes:
    """AES-256-GCM with `context` as associated data so a blob cannot be moved to another row."""
    nonce = os.urandom(_NONCE_SIZE)
    return _VERSION + nonce + _cipher(kek).encrypt(nonce, plaintext, context)


def unseal(*, kek: bytes, sealed: bytes, context: bytes) -> bytes:
    cipher = _cipher(kek)
    if len(sealed) < 1 + _NONCE_SIZE + 16 or sealed[:1] != _VERSION:
        raise PkiError("sealed data is truncated or of an unknown version")
    nonce = sealed[1 : 1 + _NONCE_SIZE]
    try:
        return cipher.decrypt(nonce, sealed[1 + _NONCE_SIZE :], context)
    except InvalidTag as exc:
        raise PkiError("sealed data does not decrypt: wrong key, wrong context or tampered") from exc
