"""pki/est.py: the RFC 7030 encodings (base64 PKCS#10 in, certs-only and CsrAttrs out, the serverkeygen
multipart) and the re-enrollment match, checked with asn1crypto and cryptography as independent readers."""

from __future__ import annotations

import base64
import email
import email.policy

import pytest
from asn1crypto import core as asn1
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.serialization import pkcs7
from est_support import make_ca, make_leaf
from factories import cached_key, make_csr_pem

from pki import est as pki_est
from pki.csr import parse_csr
from pki.errors import InvalidCsr, PkiError
from pki.key import KeyAlgorithm
from pki.san import SubjectAltName


def _der() -> bytes:
    pem, _ = make_csr_pem(common_name="a.example.com", sans=["DNS:a.example.com"])
    return x509.load_pem_x509_csr(pem.encode()).public_bytes(serialization.Encoding.DER)


def test_pkcs10_body_in_every_shape_clients_send() -> None:
    der = _der()
    text = base64.b64encode(der)
    for body in (
        text,
        pki_est.base64_lines(der),
        b"\n  " + b"\n".join(text[i : i + 10] for i in range(0, len(text), 10)) + b"\r\n",
        text.rstrip(b"="),
        der,
        x509.load_der_x509_csr(der).public_bytes(serialization.Encoding.PEM),
    ):
        assert pki_est.decode_pkcs10(body) == der
    for bad in (b"", b"   ", b"!!!not base64!!!", b"-----BEGIN CERTIFICATE REQUEST-----\nxx\n"):
        with pytest.raises(InvalidCsr):
            pki_est.decode_pkcs10(bad)


def test_a_csr_with_an_invalid_version_is_an_invalid_csr() -> None:
    """cryptography raises InvalidVersion (not a ValueError) for version 8: it must not escape as a crash."""
    der = bytearray(_der())
    version_at = der.index(b"\x02\x01\x00")  # the first INTEGER 0 is CertificationRequestInfo.version
    der[version_at + 2] = 8
    with pytest.raises(InvalidCsr):
        parse_csr(bytes(der))


def test_certs_only_and_base64_lines() -> None:
    ca, _ = make_ca("Lines CA")
    encoded = pki_est.base64_lines(pki_est.certs_only([ca]))
    lines = encoded.split(b"\r\n")
    assert lines[-1] == b"" and all(len(line) <= 64 for line in lines)
    assert pkcs7.load_der_pkcs7_certificates(base64.b64decode(encoded)) == [ca]


class _Items(asn1.SequenceOf):
    _child_spec = asn1.Any


class _Values(asn1.SetOf):
    _child_spec = asn1.Any


@pytest.mark.parametrize(
    ("algorithm", "expected"),
    [
        (KeyAlgorithm.EC_P256, ["1.2.840.10045.4.3.2", ("1.2.840.10045.2.1", "1.2.840.10045.3.1.7")]),
        (KeyAlgorithm.EC_P384, ["1.2.840.10045.4.3.3", ("1.2.840.10045.2.1", "1.3.132.0.34")]),
        (KeyAlgorithm.RSA_3072, ["1.2.840.113549.1.1.11", ("1.2.840.113549.1.1.1", 3072)]),
        (KeyAlgorithm.ED25519, ["1.3.101.112"]),
    ],
)
def test_csr_attributes_decode_as_csrattrs(algorithm: KeyAlgorithm, expected: list[object]) -> None:
    items: list[object] = []
    for child in _Items.load(pki_est.csr_attributes(algorithm)):
        raw = child.dump()
        if raw[0] == 0x06:  # AttrOrOID: an OID
            items.append(asn1.ObjectIdentifier.load(raw).dotted)
            continue
        kind, values = _Items.load(raw)  # an Attribute: type, SET OF values
        value = _Values.load(values.dump())[0].dump()
        decoded = (
            asn1.ObjectIdentifier.load(value).dotted if value[0] == 0x06 else asn1.Integer.load(value).native
        )
        items.append((asn1.ObjectIdentifier.load(kind.dump()).dotted, decoded))
    assert items == expected
    assert pki_est.csr_attributes(None) == b"\x30\x00"


def test_serverkeygen_multipart_is_mime() -> None:
    ca, key = make_ca("Keygen CA")
    key_der = key.private_bytes(
        serialization.Encoding.DER, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    body, content_type = pki_est.server_keygen_multipart(key_der, [ca], boundary="b1")
    assert content_type == "multipart/mixed; boundary=b1"
    message = email.message_from_bytes(
        f"Content-Type: {content_type}\r\n\r\n".encode() + body, policy=email.policy.default
    )
    parts = list(message.iter_parts())
    assert [part.get_content_type() for part in parts] == ["application/pkcs8", "application/pkcs7-mime"]
    assert parts[1].get_param("smime-type") == "certs-only"
    assert all(part["Content-Transfer-Encoding"] == "base64" for part in parts)
    assert parts[0].get_payload(decode=True) == key_der
    assert pkcs7.load_der_pkcs7_certificates(parts[1].get_payload(decode=True)) == [ca]


def test_bootstrap_bundle_and_issuer_check() -> None:
    ca = make_ca("Bootstrap")
    other = make_ca("Other")
    leaf, _ = make_leaf(ca, "d.example.com")
    bundle = pki_est.load_ca_bundle(ca[0].public_bytes(serialization.Encoding.PEM).decode())
    assert pki_est.issued_by_any(leaf, bundle) == ca[0]
    assert pki_est.issued_by_any(leaf, [other[0]]) is None
    with pytest.raises(PkiError, match="not a CA"):
        pki_est.load_ca_bundle(leaf.public_bytes(serialization.Encoding.PEM).decode())
    with pytest.raises(PkiError):
        pki_est.load_ca_bundle("not pem")


def test_reenroll_match_subject_and_sans() -> None:
    ca = make_ca("Match CA")
    cert, _ = make_leaf(ca, "d.example.com")  # CN and DNS SAN d.example.com
    key = cached_key(KeyAlgorithm.EC_P256, "reenroll")

    def csr(
        common_name: str, sans: list[str] | None
    ) -> tuple[x509.CertificateSigningRequest, list[SubjectAltName]]:
        pem, _ = make_csr_pem(common_name=common_name, sans=sans, key=key)
        info = parse_csr(pem)
        return info.csr, info.sans

    same = csr("d.example.com", ["DNS:d.example.com"])
    assert pki_est.reenroll_mismatch(*same, cert) is None
    only_cn = csr("d.example.com", None)
    assert pki_est.reenroll_mismatch(*only_cn, cert, [SubjectAltName("DNS", "d.example.com")]) is None
    assert "subject" in (pki_est.reenroll_mismatch(*csr("e.example.com", ["DNS:d.example.com"]), cert) or "")
    assert "subjectAltNames" in (
        pki_est.reenroll_mismatch(*csr("d.example.com", ["DNS:d.example.com", "DNS:x.example.com"]), cert)
        or ""
    )
