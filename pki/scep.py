"""SCEP (RFC 8894) messages: parse and verify a pkiMessage, open its envelope, build CertRep and GetCACert.

Parsing goes through asn1crypto (cryptography has no CMS verify and no custom signed attributes). What we
send is encoded here by hand, so that every byte is under control: signed attributes as a DER SET OF
(sorted), certificates in the order clients expect (the issued certificate first; micromdm's client takes
the first one), content type and message digest attributes as strict peers (certmonger, OpenSSL's
PKCS7_verify) check them.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from enum import Enum
from typing import Any

from asn1crypto import algos as asn1_algos
from asn1crypto import cms as asn1_cms
from asn1crypto import core as asn1_core
from asn1crypto import parser as asn1_parser
from cryptography import x509
from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.decrepit.ciphers.algorithms import TripleDES
from cryptography.hazmat.primitives import hashes, padding, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.asymmetric import padding as asym_padding
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from cryptography.x509.oid import AttributeOID

from pki.errors import PkiError

# Largest pkiMessage accepted: a CSR with a 4096-bit key, a signer certificate and the CMS wrapping fit in
# a few KiB.
MAX_MESSAGE_BYTES = 64 * 1024

CA_CAPS = ("POSTPKIOperation", "SHA-256", "SHA-1", "AES", "DES3", "Renewal", "SCEPStandard")

_OID_DATA = "1.2.840.113549.1.7.1"
_OID_SIGNED_DATA = "1.2.840.113549.1.7.2"
_OID_ENVELOPED_DATA = "1.2.840.113549.1.7.3"
_OID_RSA = "1.2.840.113549.1.1.1"
_OID_CONTENT_TYPE = "1.2.840.113549.1.9.3"
_OID_MESSAGE_DIGEST = "1.2.840.113549.1.9.4"
_SCEP = "2.16.840.1.113733.1.9."
OID_MESSAGE_TYPE = _SCEP + "2"
OID_PKI_STATUS = _SCEP + "3"
OID_FAIL_INFO = _SCEP + "4"
OID_SENDER_NONCE = _SCEP + "5"
OID_RECIPIENT_NONCE = _SCEP + "6"
OID_TRANSACTION_ID = _SCEP + "7"

_DIGESTS: dict[str, tuple[str, type[hashes.HashAlgorithm]]] = {
    "sha1": ("1.3.14.3.2.26", hashes.SHA1),
    "sha256": ("2.16.840.1.101.3.4.2.1", hashes.SHA256),
    "sha384": ("2.16.840.1.101.3.4.2.2", hashes.SHA384),
    "sha512": ("2.16.840.1.101.3.4.2.3", hashes.SHA512),
}
# Digests we answer with: a client that signed with SHA-1 gets SHA-256 (Go refuses SHA-1 signatures).
_REPLY_DIGESTS = frozenset({"sha256", "sha384", "sha512"})

# Content-encryption algorithms: OID -> (name, key bytes). DES-CBC only to read old clients' requests.
_CIPHERS: dict[str, tuple[str, int]] = {
    "2.16.840.1.101.3.4.1.2": ("aes128_cbc", 16),
    "2.16.840.1.101.3.4.1.22": ("aes192_cbc", 24),
    "2.16.840.1.101.3.4.1.42": ("aes256_cbc", 32),
    "1.2.840.113549.3.7": ("des_ede3_cbc", 24),
    "1.3.14.3.2.7": ("des_cbc", 8),
}
_CIPHER_OIDS = {name: oid for oid, (name, _) in _CIPHERS.items()}
_KEY_SIZES = {name: size for name, size in _CIPHERS.values()}


class MessageType(str, Enum):
    CERT_REP = "3"
    RENEWAL_REQ = "17"
    UPDATE_REQ = "18"
    PKCS_REQ = "19"
    CERT_POLL = "20"  # GetCertInitial
    GET_CERT = "21"
    GET_CRL = "22"


class PkiStatus(str, Enum):
    SUCCESS = "0"
    FAILURE = "2"
    PENDING = "3"


class FailInfo(str, Enum):
    BAD_ALG = "0"
    BAD_MESSAGE_CHECK = "1"
    BAD_REQUEST = "2"
    BAD_TIME = "3"
    BAD_CERT_ID = "4"


@dataclass(frozen=True)
class ReplyTo:
    """What a CertRep needs from the request it answers, known once the signed attributes are read."""

    transaction_id: str
    sender_nonce: bytes
    digest: str  # the digest name the CertRep is signed with
    # The transactionID value's DER as received, echoed byte for byte (its string type included).
    transaction_id_der: bytes | None = None


class ScepError(PkiError):
    """A request we refuse; with `reply_to` the refusal goes back as a CertRep FAILURE, else HTTP 400."""

    def __init__(self, message: str, fail_info: FailInfo, reply_to: ReplyTo | None = None) -> None:
        super().__init__(message)
        self.fail_info = fail_info
        self.reply_to = reply_to


@dataclass(frozen=True)
class PkiMessage:
    message_type: MessageType
    reply_to: ReplyTo
    signer_certificate: x509.Certificate
    # The pkcsPKIEnvelope: a ContentInfo of EnvelopedData (None when the message carries none).
    envelope: bytes | None


@dataclass(frozen=True)
class Envelope:
    plaintext: bytes
    cipher: str  # the content-encryption algorithm's name, e.g. "aes256_cbc"


# ---------------------------------------------------------------- DER encoding


def _length(size: int) -> bytes:
    if size < 0x80:
        return bytes([size])
    body = size.to_bytes((size.bit_length() + 7) // 8, "big")
    return bytes([0x80 | len(body)]) + body


def _tlv(tag: int, content: bytes) -> bytes:
    return bytes([tag]) + _length(len(content)) + content


def _seq(*parts: bytes) -> bytes:
    return _tlv(0x30, b"".join(parts))


def _set(*parts: bytes) -> bytes:
    """A DER SET OF: elements sorted by their encodings."""
    return _tlv(0x31, b"".join(sorted(parts)))


def _octets(data: bytes) -> bytes:
    return _tlv(0x04, data)


def _printable(text: str) -> bytes:
    return _tlv(0x13, text.encode("ascii"))


def _integer(value: int) -> bytes:
    return asn1_core.Integer(value).dump()


def _oid(dotted: str) -> bytes:
    return asn1_core.ObjectIdentifier(dotted).dump()


def _explicit(number: int, content: bytes) -> bytes:
    return _tlv(0xA0 | number, content)


def _algorithm(oid: str, parameters: bytes | None = b"\x05\x00") -> bytes:
    return _seq(_oid(oid), parameters or b"")


def _attribute(oid: str, value: bytes) -> bytes:
    return _seq(_oid(oid), _set(value))


def _issuer_and_serial(cert: x509.Certificate) -> bytes:
    return _seq(cert.issuer.public_bytes(), _integer(cert.serial_number))


def _content_info(content_type: str, content: bytes) -> bytes:
    return _seq(_oid(content_type), _explicit(0, content))


# ---------------------------------------------------------------- parsing


def _attribute_values(signed_attrs: asn1_cms.CMSAttributes) -> dict[str, list[bytes]]:
    """Signed attributes by OID, each value as its DER encoding."""
    found: dict[str, list[bytes]] = {}
    for attribute in signed_attrs:
        oid = attribute["type"].dotted
        if oid in found:
            raise ScepError(f"signed attribute {oid} appears twice", FailInfo.BAD_REQUEST)
        found[oid] = [value.dump() for value in attribute["values"]]
    return found


def _single(attributes: dict[str, list[bytes]], oid: str, name: str) -> bytes | None:
    values = attributes.get(oid)
    if values is None:
        return None
    if len(values) != 1:
        raise ScepError(f"the {name} attribute must hold exactly one value", FailInfo.BAD_REQUEST)
    return values[0]


def _string_value(der: bytes | None, name: str) -> str | None:
    if der is None:
        return None
    try:
        value = asn1_core.Asn1Value.load(der, strict=True)
        if not isinstance(value, asn1_core.AbstractString):
            raise ValueError(name)
        text = value.native
    except (ValueError, TypeError):
        raise ScepError(f"the {name} attribute is not a string", FailInfo.BAD_REQUEST) from None
    if (
        not isinstance(text, str)
        or not text
        or len(text) > 128
        or not (text.isascii() and text.isprintable())
    ):
        raise ScepError(f"the {name} attribute is empty, too long or not printable", FailInfo.BAD_REQUEST)
    return text


def _octet_value(der: bytes | None, name: str) -> bytes | None:
    if der is None:
        return None
    try:
        value = asn1_core.OctetString.load(der, strict=True).native
    except (ValueError, TypeError):
        raise ScepError(f"the {name} attribute is not an OCTET STRING", FailInfo.BAD_REQUEST) from None
    return bytes(value)


def _digest_name(algorithm: Any) -> str:
    oid = algorithm["algorithm"].dotted
    for name, (digest_oid, _) in _DIGESTS.items():
        if digest_oid == oid:
            return name
    raise ScepError(f"unsupported digest algorithm {oid}", FailInfo.BAD_ALG)


def _hash(name: str) -> hashes.HashAlgorithm:
    return _DIGESTS[name][1]()


def load_message(data: bytes) -> asn1_cms.SignedData:
    """The SignedData of a pkiMessage, syntax only; HTTP 400 material when this fails."""
    if not data or len(data) > MAX_MESSAGE_BYTES:
        raise ScepError("the pkiMessage is empty or too large", FailInfo.BAD_REQUEST)
    try:
        info = asn1_cms.ContentInfo.load(data, strict=True)
        if info["content_type"].dotted != _OID_SIGNED_DATA:
            raise ScepError("the pkiMessage is not CMS SignedData", FailInfo.BAD_REQUEST)
        signed = info["content"]
        # Touch every part we use, so a malformed structure fails here and not halfway through.
        signed["signer_infos"].native  # noqa: B018
        signed["encap_content_info"]["content_type"].dotted  # noqa: B018
        return signed
    except ScepError:
        raise
    except Exception:  # noqa: BLE001 - asn1crypto raises many types on malformed input
        raise ScepError("the pkiMessage is not valid DER CMS", FailInfo.BAD_REQUEST) from None


def _signer_certificate(signed: asn1_cms.SignedData, signer: asn1_cms.SignerInfo) -> x509.Certificate:
    sid = signer["sid"]
    if sid.name != "issuer_and_serial_number":
        raise ScepError("the signer must be named by issuer and serial number", FailInfo.BAD_REQUEST)
    wanted_issuer = sid.chosen["issuer"].dump()
    wanted_serial = sid.chosen["serial_number"].native
    for choice in signed["certificates"] or []:
        if choice.name != "certificate":
            continue
        tbs = choice.chosen["tbs_certificate"]
        if tbs["serial_number"].native == wanted_serial and tbs["issuer"].dump() == wanted_issuer:
            try:
                return x509.load_der_x509_certificate(choice.chosen.dump())
            except ValueError:
                break
    raise ScepError("the pkiMessage does not carry its signer's certificate", FailInfo.BAD_REQUEST)


def _verify_signature(
    public_key: Any, signature: bytes, data: bytes, digest: str, signature_oid: str
) -> None:
    try:
        if isinstance(public_key, rsa.RSAPublicKey):
            public_key.verify(signature, data, asym_padding.PKCS1v15(), _hash(digest))
        elif isinstance(public_key, ec.EllipticCurvePublicKey):
            public_key.verify(signature, data, ec.ECDSA(_hash(digest)))
        else:
            raise ScepError(f"unsupported signer key for algorithm {signature_oid}", FailInfo.BAD_ALG)
    except InvalidSignature:
        raise ScepError("the pkiMessage signature does not verify", FailInfo.BAD_MESSAGE_CHECK) from None


def parse_pki_message(data: bytes) -> PkiMessage:
    """Read and verify a client's pkiMessage (RFC 8894 §3.2): attributes, digest, signature.

    Once the transaction id and sender nonce are read, every later refusal carries `reply_to` so it can be
    answered as a CertRep FAILURE.
    """
    signed = load_message(data)
    signer_infos = list(signed["signer_infos"])
    if len(signer_infos) != 1:
        raise ScepError("a pkiMessage has exactly one signer", FailInfo.BAD_REQUEST)
    signer = signer_infos[0]
    signed_attrs = signer["signed_attrs"]
    if not isinstance(signed_attrs, asn1_cms.CMSAttributes) or len(signed_attrs) == 0:
        raise ScepError("the pkiMessage has no signed attributes", FailInfo.BAD_REQUEST)
    try:
        attributes = _attribute_values(signed_attrs)
    except ScepError:
        raise
    except Exception:  # noqa: BLE001 - malformed attributes
        raise ScepError("the signed attributes are malformed", FailInfo.BAD_REQUEST) from None
    transaction_id_der = _single(attributes, OID_TRANSACTION_ID, "transactionID")
    transaction_id = _string_value(transaction_id_der, "transactionID")
    sender_nonce = _octet_value(_single(attributes, OID_SENDER_NONCE, "senderNonce"), "senderNonce")
    message_type_text = _string_value(_single(attributes, OID_MESSAGE_TYPE, "messageType"), "messageType")
    if transaction_id is None or sender_nonce is None or message_type_text is None:
        raise ScepError(
            "the pkiMessage lacks transactionID, senderNonce or messageType", FailInfo.BAD_REQUEST
        )
    if not 8 <= len(sender_nonce) <= 64:
        raise ScepError("the senderNonce must be 8 to 64 bytes (16 recommended)", FailInfo.BAD_REQUEST)
    try:
        client_digest = _digest_name(signer["digest_algorithm"])
    except ScepError as exc:
        raise ScepError(
            exc.message, exc.fail_info, ReplyTo(transaction_id, sender_nonce, "sha256", transaction_id_der)
        ) from None
    reply_to = ReplyTo(
        transaction_id,
        sender_nonce,
        client_digest if client_digest in _REPLY_DIGESTS else "sha256",
        transaction_id_der,
    )
    try:
        message_type = MessageType(message_type_text)
    except ValueError:
        raise ScepError(
            f"unknown messageType {message_type_text!r}", FailInfo.BAD_REQUEST, reply_to
        ) from None

    try:
        return _verified(signed, signer, attributes, message_type, reply_to, client_digest)
    except ScepError as exc:
        if exc.reply_to is None:
            exc.reply_to = reply_to
        raise
    except Exception:  # noqa: BLE001 - anything malformed past the attributes
        raise ScepError("the pkiMessage is malformed", FailInfo.BAD_REQUEST, reply_to) from None


def _verified(
    signed: asn1_cms.SignedData,
    signer: asn1_cms.SignerInfo,
    attributes: dict[str, list[bytes]],
    message_type: MessageType,
    reply_to: ReplyTo,
    digest: str,
) -> PkiMessage:
    encap = signed["encap_content_info"]
    if encap["content_type"].dotted != _OID_DATA:
        raise ScepError("the signed content must be of type data", FailInfo.BAD_REQUEST)
    content_value = encap["content"]
    content = b"" if content_value.native is None else bytes(content_value.native)
    content_type = _single(attributes, _OID_CONTENT_TYPE, "contentType")
    if content_type is not None and content_type != _oid(_OID_DATA):
        raise ScepError("the contentType attribute does not match the content", FailInfo.BAD_MESSAGE_CHECK)
    message_digest = _octet_value(_single(attributes, _OID_MESSAGE_DIGEST, "messageDigest"), "messageDigest")
    if message_digest is None:
        raise ScepError("the pkiMessage has no messageDigest attribute", FailInfo.BAD_MESSAGE_CHECK)
    computed = hashes.Hash(_hash(digest))
    computed.update(content)
    if computed.finalize() != message_digest:
        raise ScepError("the messageDigest does not match the content", FailInfo.BAD_MESSAGE_CHECK)
    certificate = _signer_certificate(signed, signer)
    # The signature covers the DER SET OF the attributes exactly as received (tag [0] replaced by SET).
    raw_attrs = signer["signed_attrs"].dump()
    to_verify = b"\x31" + raw_attrs[1:]
    signature_oid = signer["signature_algorithm"]["algorithm"].dotted
    try:
        public_key = certificate.public_key()
    except (ValueError, UnsupportedAlgorithm):
        raise ScepError("the signer certificate's key cannot be read", FailInfo.BAD_ALG) from None
    _verify_signature(public_key, bytes(signer["signature"].native), to_verify, digest, signature_oid)
    envelope = content or None
    if envelope is None and message_type in (MessageType.PKCS_REQ, MessageType.RENEWAL_REQ):
        raise ScepError("the request carries no pkcsPKIEnvelope", FailInfo.BAD_REQUEST)
    return PkiMessage(message_type, reply_to, certificate, envelope)


# ---------------------------------------------------------------- envelopes


def _content_cipher(name: str, key: bytes, iv: bytes) -> Cipher[modes.CBC]:
    if name.startswith("aes"):
        return Cipher(algorithms.AES(key), modes.CBC(iv))
    # Single DES is 3DES with K1 = K2 = K3 (old clients, micromdm's among them, still send it).
    return Cipher(TripleDES(key * 3 if len(key) == 8 else key), modes.CBC(iv))


def decrypt_envelope(
    envelope: bytes, ra_certificate: x509.Certificate, ra_key: rsa.RSAPrivateKey
) -> Envelope:
    """Open the pkcsPKIEnvelope addressed to the RA: RSA key transport, AES-CBC or (3)DES-CBC content."""
    try:
        info = asn1_cms.ContentInfo.load(envelope, strict=True)
        if info["content_type"].dotted != _OID_ENVELOPED_DATA:
            raise ScepError("the pkcsPKIEnvelope is not EnvelopedData", FailInfo.BAD_REQUEST)
        enveloped = info["content"]
        recipients = list(enveloped["recipient_infos"])
        cipher_oid, iv, ciphertext = _encrypted_content(enveloped["encrypted_content_info"].dump())
    except ScepError:
        raise
    except Exception:  # noqa: BLE001 - malformed envelope
        raise ScepError("the pkcsPKIEnvelope is malformed", FailInfo.BAD_REQUEST) from None
    if cipher_oid not in _CIPHERS:
        raise ScepError(f"unsupported content encryption algorithm {cipher_oid}", FailInfo.BAD_ALG)
    cipher_name, key_size = _CIPHERS[cipher_oid]
    block = 16 if cipher_name.startswith("aes") else 8
    if len(iv) != block or not ciphertext or len(ciphertext) % block:
        raise ScepError("the pkcsPKIEnvelope's IV or ciphertext has a wrong length", FailInfo.BAD_REQUEST)
    encrypted_key = _our_encrypted_key(recipients, ra_certificate)
    try:
        content_key = ra_key.decrypt(encrypted_key, asym_padding.PKCS1v15())
    except ValueError:
        raise ScepError("the pkcsPKIEnvelope cannot be decrypted", FailInfo.BAD_MESSAGE_CHECK) from None
    if len(content_key) != key_size:
        raise ScepError("the content-encryption key has a wrong length", FailInfo.BAD_MESSAGE_CHECK)
    decryptor = _content_cipher(cipher_name, content_key, iv).decryptor()
    padded = decryptor.update(ciphertext) + decryptor.finalize()
    unpadder = padding.PKCS7(block * 8).unpadder()
    try:
        plaintext = unpadder.update(padded) + unpadder.finalize()
    except ValueError:
        raise ScepError("the pkcsPKIEnvelope's padding is wrong", FailInfo.BAD_MESSAGE_CHECK) from None
    return Envelope(plaintext, cipher_name)


def _values(contents: bytes) -> list[tuple[int, int, int, bytes, bytes]]:
    """The (class, method, tag, header, contents) of each BER value in `contents`, in order."""
    found = []
    while contents:
        size = asn1_parser.peek(contents)
        class_, method, tag, header, inner, _ = asn1_parser.parse(contents[:size])
        found.append((class_, method, tag, header, inner))
        contents = contents[size:]
    return found


def _octet_string_bytes(method: int, contents: bytes) -> bytes:
    """A primitive or (BER) constructed OCTET STRING's bytes."""
    if method == 0:
        return contents
    return b"".join(_octet_string_bytes(m, inner) for _, m, _, _, inner in _values(contents))


def _encrypted_content(der: bytes) -> tuple[str, bytes, bytes]:
    """(cipher OID, IV, ciphertext) of an EncryptedContentInfo.

    Read by hand: Go's pkcs7 (micromdm's scepclient) sends encryptedContent as a constructed [0] holding an
    OCTET STRING, which asn1crypto's strict model refuses.
    """
    contents = asn1_parser.parse(der, strict=True)[4]
    values = _values(contents)
    if len(values) < 3 or values[2][0] != 2 or values[2][2] != 0:
        raise ScepError("the EncryptedContentInfo has no encryptedContent", FailInfo.BAD_REQUEST)
    algorithm = asn1_algos.EncryptionAlgorithm.load(values[1][3] + values[1][4])
    iv_value = algorithm["parameters"]
    iv = iv_value.native if iv_value is not None else None
    if not isinstance(iv, bytes):
        raise ScepError("the content-encryption algorithm has no IV", FailInfo.BAD_ALG)
    return algorithm["algorithm"].dotted, iv, _octet_string_bytes(values[2][1], values[2][4])


def _our_encrypted_key(recipients: list[Any], ra_certificate: x509.Certificate) -> bytes:
    """The encrypted key of the KeyTransRecipientInfo naming the RA certificate (clients may add the CA)."""
    issuer = ra_certificate.issuer.public_bytes()
    for recipient in recipients:
        if recipient.name != "ktri":
            continue
        ktri = recipient.chosen
        rid = ktri["rid"]
        if rid.name != "issuer_and_serial_number":
            continue
        if (
            rid.chosen["serial_number"].native == ra_certificate.serial_number
            and rid.chosen["issuer"].dump() == issuer
        ):
            if ktri["key_encryption_algorithm"]["algorithm"].dotted != _OID_RSA:
                raise ScepError("the key must be transported with rsaEncryption", FailInfo.BAD_ALG)
            return bytes(ktri["encrypted_key"].native)
    raise ScepError("the pkcsPKIEnvelope is not encrypted to this RA certificate", FailInfo.BAD_REQUEST)


def envelope_for(content: bytes, recipient: x509.Certificate, cipher: str = "aes256_cbc") -> bytes:
    """A ContentInfo of EnvelopedData: `content` encrypted for `recipient`'s RSA key."""
    public_key = recipient.public_key()
    if not isinstance(public_key, rsa.RSAPublicKey):
        raise ScepError(
            "the client's certificate must hold an RSA key to receive the reply", FailInfo.BAD_ALG
        )
    key = os.urandom(_KEY_SIZES[cipher])
    block = 16 if cipher.startswith("aes") else 8
    iv = os.urandom(block)
    padder = padding.PKCS7(block * 8).padder()
    padded = padder.update(content) + padder.finalize()
    encryptor = _content_cipher(cipher, key, iv).encryptor()
    ciphertext = encryptor.update(padded) + encryptor.finalize()
    recipient_info = _seq(
        _integer(0),
        _issuer_and_serial(recipient),
        _algorithm(_OID_RSA),
        _octets(public_key.encrypt(key, asym_padding.PKCS1v15())),
    )
    encrypted_content_info = _seq(
        _oid(_OID_DATA),
        _algorithm(_CIPHER_OIDS[cipher], _octets(iv)),
        _tlv(0x80, ciphertext),  # [0] IMPLICIT OCTET STRING
    )
    enveloped = _seq(_integer(0), _set(recipient_info), encrypted_content_info)
    return _content_info(_OID_ENVELOPED_DATA, enveloped)


def reply_cipher(request_cipher: str) -> str:
    """The cipher of our reply: the client's AES, or 3DES for a client that used (3)DES."""
    if request_cipher in ("aes128_cbc", "aes192_cbc", "aes256_cbc"):
        return request_cipher
    return "des_ede3_cbc"


# ---------------------------------------------------------------- building replies


def degenerate_certificates(certificates: list[x509.Certificate]) -> bytes:
    """A certs-only SignedData, certificates in the given order (RFC 8894 §3.4)."""
    certs = b"".join(cert.public_bytes(serialization.Encoding.DER) for cert in certificates)
    signed = _seq(
        _integer(1),
        _tlv(0x31, b""),  # no digest algorithms
        _seq(_oid(_OID_DATA)),  # no content
        _tlv(0xA0, certs),  # [0] IMPLICIT certificates
        _tlv(0x31, b""),  # no signers
    )
    return _content_info(_OID_SIGNED_DATA, signed)


def _sign(
    key: rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey, data: bytes, digest: str
) -> tuple[bytes, bytes]:
    """(signature, signatureAlgorithm) for the RA's key."""
    if isinstance(key, rsa.RSAPrivateKey):
        return key.sign(data, asym_padding.PKCS1v15(), _hash(digest)), _algorithm(_OID_RSA)
    ecdsa_oids = {
        "sha1": "1.2.840.10045.4.1",
        "sha256": "1.2.840.10045.4.3.2",
        "sha384": "1.2.840.10045.4.3.3",
        "sha512": "1.2.840.10045.4.3.4",
    }
    return key.sign(data, ec.ECDSA(_hash(digest))), _algorithm(ecdsa_oids[digest], None)


def build_cert_rep(
    *,
    ra_certificate: x509.Certificate,
    ra_key: rsa.RSAPrivateKey,
    reply_to: ReplyTo,
    status: PkiStatus,
    fail_info: FailInfo | None = None,
    certificates: list[x509.Certificate] | None = None,
    recipient: x509.Certificate | None = None,
    cipher: str = "aes256_cbc",
    ra_chain: list[x509.Certificate] | None = None,
) -> bytes:
    """CertRep (RFC 8894 §3.3.2) signed by the RA.

    `ra_chain`: the RA's issuers (without the root), sent along with the RA certificate.
    SUCCESS: the content is an EnvelopedData to `recipient` (the client's signer certificate) holding a
    certs-only SignedData, the issued certificate first. FAILURE carries failInfo; FAILURE and PENDING
    have an empty data content (OpenSSL's PKCS7_verify refuses a signed-data without any content).
    """
    if status == PkiStatus.FAILURE and fail_info is None:
        raise PkiError("a FAILURE CertRep needs a failInfo")
    content = b""
    if status == PkiStatus.SUCCESS:
        if not certificates or recipient is None:
            raise PkiError("a SUCCESS CertRep needs the certificates and the recipient")
        content = envelope_for(degenerate_certificates(certificates), recipient, cipher)
    digest_oid = _DIGESTS[reply_to.digest][0]
    message_digest = hashlib.new(reply_to.digest, content).digest()
    attributes = [
        _attribute(_OID_CONTENT_TYPE, _oid(_OID_DATA)),
        _attribute(_OID_MESSAGE_DIGEST, _octets(message_digest)),
        _attribute(OID_MESSAGE_TYPE, _printable(MessageType.CERT_REP.value)),
        _attribute(OID_PKI_STATUS, _printable(status.value)),
        _attribute(OID_TRANSACTION_ID, reply_to.transaction_id_der or _printable(reply_to.transaction_id)),
        _attribute(OID_RECIPIENT_NONCE, _octets(reply_to.sender_nonce)),
        _attribute(OID_SENDER_NONCE, _octets(os.urandom(16))),
    ]
    if status == PkiStatus.FAILURE:
        assert fail_info is not None
        attributes.append(_attribute(OID_FAIL_INFO, _printable(fail_info.value)))
    signed_attrs = _set(*attributes)
    signature, signature_algorithm = _sign(ra_key, signed_attrs, reply_to.digest)
    signer_info = _seq(
        _integer(1),
        _issuer_and_serial(ra_certificate),
        _algorithm(digest_oid),
        b"\xa0" + signed_attrs[1:],  # [0] IMPLICIT: the same SET with its tag replaced
        signature_algorithm,
        _octets(signature),
    )
    signed_data = _seq(
        _integer(1),
        _set(_algorithm(digest_oid)),
        _seq(_oid(_OID_DATA), _explicit(0, _octets(content))),
        # The RA first, then its issuers: a peer that trusts only the root still builds the chain.
        _tlv(
            0xA0,
            b"".join(
                cert.public_bytes(serialization.Encoding.DER) for cert in [ra_certificate, *(ra_chain or [])]
            ),
        ),
        _set(signer_info),
    )
    return _content_info(_OID_SIGNED_DATA, signed_data)


def ca_certificates(ca_chain: list[x509.Certificate], ra_certificate: x509.Certificate) -> bytes:
    """GetCACert's body (application/x-x509-ca-ra-cert): the issuing CA, its issuers up to the root, then
    the RA. certmonger takes the certificate no other one issued as its trust anchor: the root."""
    return degenerate_certificates([*ca_chain, ra_certificate])


def ca_caps() -> str:
    return "\n".join(CA_CAPS) + "\n"


def challenge_password(csr_der: bytes) -> str | None:
    """The CSR's challengePassword attribute (PKCS#9), or None."""
    try:
        csr = x509.load_der_x509_csr(csr_der)
        value = csr.attributes.get_attribute_for_oid(AttributeOID.CHALLENGE_PASSWORD).value
    except x509.AttributeNotFound:
        return None
    except (ValueError, UnsupportedAlgorithm):
        raise ScepError("the request's CSR cannot be read", FailInfo.BAD_REQUEST) from None
    try:
        return value.decode("utf-8")
    except UnicodeDecodeError:
        raise ScepError("the challengePassword is not text", FailInfo.BAD_REQUEST) from None


def issuer_and_subject(plaintext: bytes) -> tuple[bytes, bytes]:
    """GetCertInitial's content (IssuerAndSubject): DER of the issuer and of the subject name."""
    try:
        parsed = asn1_core.Sequence.load(plaintext, strict=True)
        issuer, subject = parsed[0], parsed[1]
        return issuer.dump(), subject.dump()
    except Exception:  # noqa: BLE001 - malformed
        raise ScepError("the GetCertInitial content is not IssuerAndSubject", FailInfo.BAD_REQUEST) from None
