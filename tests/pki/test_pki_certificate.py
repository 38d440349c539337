import subprocess
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from pki_support import URLS, Hierarchy, cached_key

from pki.certificate import (
    build_root_ca,
    certificate_pem,
    describe_certificate,
    load_certificate,
    load_certificates,
    new_serial,
    sign_ca_certificate,
    sign_leaf_certificate,
    verify_issued_by,
)
from pki.errors import PkiError
from pki.key import KeyAlgorithm, signature_algorithm_name
from pki.name import build_name
from pki.san import SubjectAltName

OPENSSL = "/usr/bin/openssl"


def make_root(
    algorithm: KeyAlgorithm, *, days: int = 3650, path_length: int | None = None
) -> x509.Certificate:
    return build_root_ca(
        key=cached_key(algorithm, "root"),
        subject=build_name([("O", "Keyward Test"), ("CN", "Root")]),
        not_after=datetime.now(UTC) + timedelta(days=days),
        path_length=path_length,
    )


def sign_leaf(
    issuer: x509.Certificate, issuer_key_algorithm: KeyAlgorithm, **overrides: object
) -> x509.Certificate:
    arguments: dict[str, object] = {
        "issuer_cert": issuer,
        "issuer_key": cached_key(issuer_key_algorithm, "root"),
        "public_key": cached_key(KeyAlgorithm.EC_P256, "leaf").public_key(),
        "subject": build_name([("CN", "www.example.com")]),
        "sans": [SubjectAltName("DNS", "www.example.com")],
        "key_usages": frozenset(),
        "extended_key_usages": frozenset({"serverAuth"}),
        "not_after": datetime.now(UTC) + timedelta(days=30),
        "urls": URLS,
    }
    arguments.update(overrides)
    return sign_leaf_certificate(**arguments)  # type: ignore[arg-type]


def test_new_serial_constraints() -> None:
    serials = {new_serial() for _ in range(2000)}
    assert len(serials) == 2000
    assert all(1 << 64 <= serial < 1 << 159 for serial in serials)
    assert max(serials).bit_length() > 150


@pytest.mark.parametrize("algorithm", list(KeyAlgorithm))
def test_hierarchy_for_each_algorithm(
    algorithm: KeyAlgorithm, hierarchy_for: Callable[[KeyAlgorithm], Hierarchy]
) -> None:
    h = hierarchy_for(algorithm)
    assert verify_issued_by(h.leaf, h.intermediate)
    assert verify_issued_by(h.intermediate, h.root)
    assert verify_issued_by(h.root, h.root)
    assert not verify_issued_by(h.leaf, h.root)
    root_facts = describe_certificate(h.root)
    assert root_facts.is_ca and root_facts.path_length is None
    assert root_facts.key_usages == frozenset({"digitalSignature", "keyCertSign", "cRLSign"})
    assert root_facts.ski_hex == root_facts.aki_hex
    inter_facts = describe_certificate(h.intermediate)
    assert inter_facts.is_ca and inter_facts.path_length == 0
    assert inter_facts.aki_hex == root_facts.ski_hex
    leaf = describe_certificate(h.leaf)
    assert not leaf.is_ca
    assert leaf.key_algorithm is algorithm
    assert leaf.signature_algorithm == signature_algorithm_name(h.leaf)
    assert leaf.aki_hex == inter_facts.ski_hex
    assert leaf.common_name == "www.example.com"
    assert leaf.sans == [SubjectAltName("DNS", "www.example.com"), SubjectAltName("DNS", "api.example.com")]
    assert leaf.extended_key_usages == frozenset({"serverAuth"})
    rsa = algorithm.value.startswith("RSA")
    assert leaf.key_usages == (
        frozenset({"digitalSignature", "keyEncipherment"}) if rsa else frozenset({"digitalSignature"})
    )
    assert leaf.not_before.tzinfo is UTC
    assert len(leaf.fingerprint_sha256) == 64 and leaf.serial_hex == leaf.serial_hex.upper()
    assert int(leaf.serial_hex, 16) == h.leaf.serial_number
    exts = h.leaf.extensions
    assert exts.get_extension_for_class(x509.BasicConstraints).critical
    assert exts.get_extension_for_class(x509.KeyUsage).critical
    assert not exts.get_extension_for_class(x509.SubjectAlternativeName).critical
    aia = exts.get_extension_for_class(x509.AuthorityInformationAccess).value
    assert {d.access_location.value for d in aia} == {URLS.ca_issuers, URLS.ocsp}
    cdp = exts.get_extension_for_class(x509.CRLDistributionPoints).value
    assert cdp[0].full_name is not None and cdp[0].full_name[0].value == URLS.crl
    now = datetime.now(UTC)
    assert timedelta(seconds=50) <= now - leaf.not_before <= timedelta(seconds=75)


def test_openssl_verifies_two_intermediate_chain(tmp_path: Path) -> None:
    now = datetime.now(UTC)
    root_key = cached_key(KeyAlgorithm.EC_P384, "root")
    root = make_root(KeyAlgorithm.EC_P384, path_length=2)
    first_key = cached_key(KeyAlgorithm.RSA_2048, "intermediate")
    first = sign_ca_certificate(
        issuer_cert=root,
        issuer_key=root_key,
        public_key=first_key.public_key(),
        subject=build_name([("CN", "Intermediate 1")]),
        not_after=now + timedelta(days=1000),
        path_length=None,
        urls=URLS,
    )
    assert describe_certificate(first).path_length == 1  # inherited: issuer's 2 minus one
    second_key = cached_key(KeyAlgorithm.ED25519, "intermediate")
    second = sign_ca_certificate(
        issuer_cert=first,
        issuer_key=first_key,
        public_key=second_key.public_key(),
        subject=build_name([("CN", "Intermediate 2")]),
        not_after=now + timedelta(days=900),
        path_length=0,
        urls=URLS,
    )
    with pytest.raises(PkiError, match="path length 0"):
        sign_ca_certificate(
            issuer_cert=second,
            issuer_key=second_key,
            public_key=cached_key(KeyAlgorithm.EC_P256).public_key(),
            subject=build_name([("CN", "Too deep")]),
            not_after=now + timedelta(days=10),
            path_length=None,
            urls=URLS,
        )
    leaf = sign_leaf_certificate(
        issuer_cert=second,
        issuer_key=second_key,
        public_key=cached_key(KeyAlgorithm.EC_P256, "leaf").public_key(),
        subject=build_name([("CN", "deep.example.com")]),
        sans=[SubjectAltName("DNS", "deep.example.com")],
        key_usages=frozenset({"digitalSignature"}),
        extended_key_usages=frozenset({"serverAuth", "clientAuth"}),
        not_after=now + timedelta(days=30),
        urls=URLS,
    )
    (tmp_path / "root.pem").write_text(certificate_pem(root))
    (tmp_path / "untrusted.pem").write_text(certificate_pem(second) + certificate_pem(first))
    (tmp_path / "leaf.pem").write_text(certificate_pem(leaf))
    result = subprocess.run(
        [
            OPENSSL,
            "verify",
            "-CAfile",
            str(tmp_path / "root.pem"),
            "-untrusted",
            str(tmp_path / "untrusted.pem"),
            "-purpose",
            "sslserver",
            str(tmp_path / "leaf.pem"),
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    # Without the first intermediate the chain must not verify.
    (tmp_path / "partial.pem").write_text(certificate_pem(second))
    result = subprocess.run(
        [
            OPENSSL,
            "verify",
            "-CAfile",
            str(tmp_path / "root.pem"),
            "-untrusted",
            str(tmp_path / "partial.pem"),
            str(tmp_path / "leaf.pem"),
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode != 0


def test_empty_subject_leaf_has_critical_san() -> None:
    root = make_root(KeyAlgorithm.EC_P256)
    leaf = sign_leaf(
        root,
        KeyAlgorithm.EC_P256,
        subject=build_name([]),
        sans=[SubjectAltName("DNS", "a.example.com"), SubjectAltName("IP", "10.0.0.1")],
    )
    san = leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName)
    assert san.critical
    assert isinstance(san.value[1], x509.IPAddress)
    assert describe_certificate(leaf).common_name is None
    with pytest.raises(PkiError, match="subject or at least one"):
        sign_leaf(root, KeyAlgorithm.EC_P256, subject=build_name([]), sans=[])


def test_not_after_capped_at_issuer() -> None:
    root = make_root(KeyAlgorithm.EC_P256, days=10)
    leaf = sign_leaf(root, KeyAlgorithm.EC_P256, not_after=datetime.now(UTC) + timedelta(days=365))
    assert leaf.not_valid_after_utc == root.not_valid_after_utc
    with pytest.raises(PkiError):
        sign_leaf(root, KeyAlgorithm.EC_P256, not_after=datetime.now(UTC) - timedelta(days=1))
    with pytest.raises(PkiError, match="timezone"):
        sign_leaf(root, KeyAlgorithm.EC_P256, not_after=datetime.now() + timedelta(days=1))


def test_key_usage_rules() -> None:
    root = make_root(KeyAlgorithm.EC_P256)
    with pytest.raises(PkiError, match="keyEncipherment"):
        sign_leaf(root, KeyAlgorithm.EC_P256, key_usages=frozenset({"digitalSignature", "keyEncipherment"}))
    with pytest.raises(PkiError, match="keyCertSign"):
        sign_leaf(root, KeyAlgorithm.EC_P256, key_usages=frozenset({"keyCertSign"}))
    rsa_leaf = sign_leaf(
        root,
        KeyAlgorithm.EC_P256,
        public_key=cached_key(KeyAlgorithm.RSA_2048, "leaf").public_key(),
        key_usages=frozenset({"keyEncipherment"}),
    )
    assert describe_certificate(rsa_leaf).key_usages == frozenset({"keyEncipherment"})


def test_explicit_serial_and_leaf_cannot_issue() -> None:
    root = make_root(KeyAlgorithm.EC_P256)
    leaf = sign_leaf(root, KeyAlgorithm.EC_P256, serial=0x1234)
    assert describe_certificate(leaf).serial_hex == "1234"
    with pytest.raises(PkiError):
        sign_leaf(root, KeyAlgorithm.EC_P256, serial=0)
    with pytest.raises(PkiError, match="not a CA"):
        sign_leaf(leaf, KeyAlgorithm.EC_P256, issuer_key=cached_key(KeyAlgorithm.EC_P256, "leaf"))
    with pytest.raises(PkiError, match="issuer key does not belong"):
        sign_leaf(root, KeyAlgorithm.EC_P256, issuer_key=cached_key(KeyAlgorithm.EC_P256, "other"))


def test_load_certificate_forms() -> None:
    root = make_root(KeyAlgorithm.ED25519)
    pem = certificate_pem(root)
    der = root.public_bytes(serialization.Encoding.DER)
    import base64

    for data in (pem, pem.encode(), der, base64.b64encode(der)):
        assert load_certificate(data) == root
    assert load_certificates(pem + pem) == [root, root]
    for garbage in (b"", b"garbage", "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n"):
        with pytest.raises(PkiError):
            load_certificate(garbage)
    with pytest.raises(PkiError):
        load_certificates("nothing")
