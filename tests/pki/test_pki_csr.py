import base64

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID
from pki_support import cached_key

from pki.csr import build_csr, parse_csr
from pki.errors import InvalidCsr
from pki.key import KeyAlgorithm
from pki.san import SubjectAltName

SANS = [SubjectAltName("DNS", "www.example.com"), SubjectAltName("IP", "10.0.0.1")]


@pytest.mark.parametrize("algorithm", list(KeyAlgorithm))
def test_build_and_parse_each_algorithm(algorithm: KeyAlgorithm) -> None:
    key = cached_key(algorithm, "leaf")
    csr = build_csr(key=key, subject=[("O", "Acme"), ("CN", "www.example.com")], sans=SANS)
    info = parse_csr(csr.public_bytes(serialization.Encoding.PEM))
    assert info.key_algorithm is algorithm
    assert info.subject == [("O", "Acme"), ("CN", "www.example.com")]
    assert info.sans == SANS
    assert info.key_usages == frozenset() and info.extended_key_usages == frozenset()


def test_pem_der_base64_and_str_inputs() -> None:
    csr = build_csr(key=cached_key(KeyAlgorithm.EC_P256), subject=[], sans=SANS)
    der = csr.public_bytes(serialization.Encoding.DER)
    pem = csr.public_bytes(serialization.Encoding.PEM)
    b64 = base64.b64encode(der)
    wrapped = b"\n".join(b64[i : i + 64] for i in range(0, len(b64), 64))
    b64url = base64.urlsafe_b64encode(der).rstrip(b"=")
    for data in (pem, pem.decode(), der, b64, wrapped, wrapped.decode(), b64url):
        info = parse_csr(data)
        assert info.sans == SANS
        assert info.signature_algorithm == "ECDSA_WITH_SHA256"
    assert parse_csr(pem).csr.extensions.get_extension_for_class(x509.SubjectAlternativeName).critical


def test_requested_usages_and_ip_in_dns_name() -> None:
    key = cached_key(KeyAlgorithm.EC_P384)
    csr = (
        x509.CertificateSigningRequestBuilder()
        .subject_name(x509.Name([x509.NameAttribute(x509.NameOID.COMMON_NAME, "x")]))
        .add_extension(
            x509.SubjectAlternativeName([x509.DNSName("192.0.2.7"), x509.DNSName("A.example.com")]), False
        )
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH]), False)
        .add_extension(
            x509.KeyUsage(True, False, False, False, True, False, False, False, False), critical=True
        )
        .sign(key, hashes.SHA384())
    )
    info = parse_csr(csr.public_bytes(serialization.Encoding.PEM))
    assert info.sans == [SubjectAltName("IP", "192.0.2.7"), SubjectAltName("DNS", "a.example.com")]
    assert info.extended_key_usages == frozenset({"clientAuth"})
    assert info.key_usages == frozenset({"digitalSignature", "keyAgreement"})
    assert info.signature_algorithm == "ECDSA_WITH_SHA384"


@pytest.mark.parametrize(
    "data",
    [
        b"",
        b"garbage",
        "not base64 !!",
        b"\x30\x03\x02\x01\x01",
        "-----BEGIN CERTIFICATE REQUEST-----\nAAAA\n-----END CERTIFICATE REQUEST-----\n",
        "caf\u00e9",
    ],
)
def test_garbage(data: str | bytes) -> None:
    with pytest.raises(InvalidCsr, match="not a PEM or DER PKCS#10 request"):
        parse_csr(data)


def test_tampered_signature() -> None:
    csr = build_csr(key=cached_key(KeyAlgorithm.EC_P256), subject=[("CN", "good.example.com")], sans=[])
    der = bytearray(csr.public_bytes(serialization.Encoding.DER))
    index = der.find(b"good.example.com")
    der[index : index + 4] = b"evil"
    with pytest.raises(InvalidCsr, match="signature does not verify"):
        parse_csr(bytes(der))


def test_small_rsa_and_unsupported_curve() -> None:
    small = rsa.generate_private_key(public_exponent=65537, key_size=1024)
    csr = x509.CertificateSigningRequestBuilder().subject_name(x509.Name([])).sign(small, hashes.SHA256())
    with pytest.raises(InvalidCsr, match="RSA key of 1024 bits is too small; use 2048 or more"):
        parse_csr(csr.public_bytes(serialization.Encoding.PEM))
    p521 = ec.generate_private_key(ec.SECP521R1())
    csr = x509.CertificateSigningRequestBuilder().subject_name(x509.Name([])).sign(p521, hashes.SHA512())
    with pytest.raises(InvalidCsr, match="secp521r1"):
        parse_csr(csr.public_bytes(serialization.Encoding.PEM))


def test_unlisted_signature_algorithm_refused() -> None:
    key = cached_key(KeyAlgorithm.RSA_2048)
    csr = x509.CertificateSigningRequestBuilder().subject_name(x509.Name([])).sign(key, hashes.SHA224())
    with pytest.raises(InvalidCsr, match="not supported"):
        parse_csr(csr.public_bytes(serialization.Encoding.PEM))


def test_invalid_san_in_csr() -> None:
    key = cached_key(KeyAlgorithm.EC_P256)
    csr = (
        x509.CertificateSigningRequestBuilder()
        .subject_name(x509.Name([]))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName("a.*.example.com")]), False)
        .sign(key, hashes.SHA256())
    )
    with pytest.raises(InvalidCsr, match="subjectAltName"):
        parse_csr(csr.public_bytes(serialization.Encoding.PEM))


def test_ca_csr() -> None:
    csr = build_csr(
        key=cached_key(KeyAlgorithm.EC_P384), subject=x509.Name([]), sans=[], is_ca=True, path_length=0
    )
    basic = csr.extensions.get_extension_for_class(x509.BasicConstraints).value
    assert basic.ca and basic.path_length == 0
    assert parse_csr(csr.public_bytes(serialization.Encoding.DER)).key_usages == frozenset(
        {"digitalSignature", "keyCertSign", "cRLSign"}
    )
