"""A Java KeyStore (JKS) writer: one private-key entry with its chain, or trusted certificates only.

JKS protects keys with Sun's proprietary SHA-1 keystream (KeyProtector) and the store with a SHA-1 digest
keyed by the password; both are what `keytool` and every JVM read. Prefer PKCS#12 where clients allow it.
"""

from __future__ import annotations

import hashlib
import os
import struct
import time

from cryptography import x509
from cryptography.hazmat.primitives import serialization

from pki.errors import InvalidBundle
from pki.key import PrivateKey

_MAGIC = 0xFEEDFEED
_VERSION = 2
_PRIVATE_KEY_ENTRY = 1
_TRUSTED_CERT_ENTRY = 2
# 1.3.6.1.4.1.42.2.17.1.1: Sun's KeyProtector algorithm, DER-encoded with a NULL parameter.
_KEY_PROTECTOR_ALGORITHM = bytes.fromhex("300e060a2b060104012a021101010500")


def _der_length(length: int) -> bytes:
    if length < 0x80:
        return bytes([length])
    body = length.to_bytes((length.bit_length() + 7) // 8, "big")
    return bytes([0x80 | len(body)]) + body


def _utf(text: str) -> bytes:
    data = text.encode("utf-8")
    return struct.pack(">H", len(data)) + data


def _password_bytes(password: str) -> bytes:
    return password.encode("utf-16-be")


def _protect(plain: bytes, password: str) -> bytes:
    """KeyProtector.protect: salt, keystream XOR, then SHA-1(password || plaintext) as the check."""
    secret = _password_bytes(password)
    salt = os.urandom(20)
    stream = bytearray()
    digest = salt
    while len(stream) < len(plain):
        digest = hashlib.sha1(secret + digest).digest()
        stream += digest
    encrypted = bytes(a ^ b for a, b in zip(plain, stream, strict=False))
    return salt + encrypted + hashlib.sha1(secret + plain).digest()


def _encrypted_private_key_info(key: PrivateKey, password: str) -> bytes:
    plain = key.private_bytes(
        serialization.Encoding.DER, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    protected = _protect(plain, password)
    octets = b"\x04" + _der_length(len(protected)) + protected
    body = _KEY_PROTECTOR_ALGORITHM + octets
    return b"\x30" + _der_length(len(body)) + body


def _certificate(cert: x509.Certificate) -> bytes:
    der = cert.public_bytes(serialization.Encoding.DER)
    return _utf("X.509") + struct.pack(">I", len(der)) + der


def jks_keystore(
    *,
    certificate: x509.Certificate,
    chain: list[x509.Certificate],
    private_key: PrivateKey | None,
    password: str,
    alias: str,
) -> bytes:
    """With a key: one PrivateKeyEntry (leaf then chain). Without: the leaf and chain as trusted entries."""
    if not password:
        raise InvalidBundle("a JKS keystore needs a non-empty password")
    alias = alias.lower() or "certificate"
    now_ms = int(time.time() * 1000)
    entries: list[bytes] = []
    if private_key is not None:
        key_info = _encrypted_private_key_info(private_key, password)
        certs = [certificate, *chain]
        entry = (
            struct.pack(">I", _PRIVATE_KEY_ENTRY)
            + _utf(alias)
            + struct.pack(">Q", now_ms)
            + struct.pack(">I", len(key_info))
            + key_info
            + struct.pack(">I", len(certs))
            + b"".join(_certificate(cert) for cert in certs)
        )
        entries.append(entry)
    else:
        for index, cert in enumerate([certificate, *chain]):
            name = alias if index == 0 else f"{alias}-ca{index}"
            entries.append(
                struct.pack(">I", _TRUSTED_CERT_ENTRY)
                + _utf(name)
                + struct.pack(">Q", now_ms)
                + _certificate(cert)
            )
    body = struct.pack(">III", _MAGIC, _VERSION, len(entries)) + b"".join(entries)
    check = hashlib.sha1(_password_bytes(password) + b"Mighty Aphrodite" + body).digest()
    return body + check
