import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.serialization import pkcs12
from pki_support import Hierarchy, cached_key

from pki.bundle import load_bundle, pem_bundle, pkcs12_bundle
from pki.certificate import certificate_pem
from pki.errors import InvalidBundle
from pki.key import KeyAlgorithm, serialize_private_key


def test_pem_bundle_order(hierarchy_for: Callable[[KeyAlgorithm], Hierarchy]) -> None:
    h = hierarchy_for(KeyAlgorithm.EC_P256)
    text = pem_bundle(certificate=h.leaf, chain=[h.intermediate, h.root], private_key=h.leaf_key)
    assert text.startswith(
        certificate_pem(h.leaf) + certificate_pem(h.intermediate) + certificate_pem(h.root)
    )
    assert text.endswith(serialize_private_key(h.leaf_key).decode())
    assert "PRIVATE KEY" not in pem_bundle(certificate=h.leaf, chain=[], private_key=None)


@pytest.mark.parametrize("algorithm", [KeyAlgorithm.RSA_2048, KeyAlgorithm.EC_P384, KeyAlgorithm.ED25519])
def test_pkcs12_read_by_openssl(
    algorithm: KeyAlgorithm, hierarchy_for: Callable[[KeyAlgorithm], Hierarchy], tmp_path: Path
) -> None:
    h = hierarchy_for(algorithm)
    data = pkcs12_bundle(
        certificate=h.leaf,
        chain=[h.intermediate, h.root],
        private_key=h.leaf_key,
        password="s3cret pass",
        friendly_name="www.example.com",
    )
    path = tmp_path / "bundle.p12"
    path.write_bytes(data)
    result = subprocess.run(
        ["/usr/bin/openssl", "pkcs12", "-info", "-nokeys", "-in", str(path), "-passin", "pass:s3cret pass"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert "AES-256-CBC" in result.stderr and "sha256" in result.stderr.lower()
    assert "friendlyName: www.example.com" in result.stdout
    assert result.stdout.count("BEGIN CERTIFICATE") == 3
    wrong = subprocess.run(
        ["/usr/bin/openssl", "pkcs12", "-info", "-nokeys", "-in", str(path), "-passin", "pass:nope"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert wrong.returncode != 0
    imported = load_bundle(data, "s3cret pass")
    assert imported.certificate == h.leaf
    assert imported.chain == [h.intermediate, h.root]
    assert imported.private_key is not None
    assert serialize_private_key(imported.private_key) == serialize_private_key(h.leaf_key)


def test_pkcs12_password_rules(hierarchy_for: Callable[[KeyAlgorithm], Hierarchy]) -> None:
    h = hierarchy_for(KeyAlgorithm.EC_P256)
    with pytest.raises(InvalidBundle, match="non-empty password"):
        pkcs12_bundle(certificate=h.leaf, chain=[], private_key=h.leaf_key, password="", friendly_name="x")
    data = pkcs12_bundle(certificate=h.leaf, chain=[], private_key=None, password="pw", friendly_name="x")
    with pytest.raises(InvalidBundle, match="wrong PKCS#12 password"):
        load_bundle(data, "other")
    with pytest.raises(InvalidBundle, match="wrong PKCS#12 password"):
        load_bundle(data, None)
    imported = load_bundle(data, "pw")
    assert imported.certificate == h.leaf and imported.private_key is None and imported.chain == []


def test_pkcs12_key_mismatch(hierarchy_for: Callable[[KeyAlgorithm], Hierarchy]) -> None:
    h = hierarchy_for(KeyAlgorithm.EC_P256)
    mismatched = pkcs12.serialize_key_and_certificates(
        b"x",
        cached_key(KeyAlgorithm.EC_P256, "other"),
        None,
        [h.leaf],
        serialization.BestAvailableEncryption(b"pw"),
    )
    with pytest.raises(InvalidBundle, match="does not match"):
        load_bundle(mismatched, "pw")


def test_pem_import_picks_leaf_and_orders_chain(hierarchy_for: Callable[[KeyAlgorithm], Hierarchy]) -> None:
    h = hierarchy_for(KeyAlgorithm.EC_P384)
    key_pem = serialize_private_key(h.leaf_key).decode()
    shuffled = certificate_pem(h.root) + key_pem + certificate_pem(h.leaf) + certificate_pem(h.intermediate)
    imported = load_bundle(shuffled.encode(), None)
    assert imported.certificate == h.leaf
    assert imported.chain == [h.intermediate, h.root]
    assert imported.private_key is not None
    without_key = load_bundle((certificate_pem(h.intermediate) + certificate_pem(h.leaf)).encode(), None)
    assert without_key.certificate == h.leaf and without_key.private_key is None
    # A key that belongs to the intermediate makes the intermediate the certificate being imported.
    ca_import = load_bundle(
        (certificate_pem(h.leaf) + certificate_pem(h.intermediate) + certificate_pem(h.root)).encode()
        + serialize_private_key(h.intermediate_key),
        None,
    )
    assert ca_import.certificate == h.intermediate and ca_import.chain == [h.root, h.leaf]


def test_pem_import_errors(hierarchy_for: Callable[[KeyAlgorithm], Hierarchy]) -> None:
    h = hierarchy_for(KeyAlgorithm.EC_P256)
    other_key = serialize_private_key(cached_key(KeyAlgorithm.EC_P256, "other")).decode()
    with pytest.raises(InvalidBundle, match="does not match"):
        load_bundle((certificate_pem(h.leaf) + other_key).encode(), None)
    with pytest.raises(InvalidBundle, match="no readable certificate"):
        load_bundle(other_key.encode(), None)
    with pytest.raises(InvalidBundle, match="not a PEM bundle or a PKCS#12"):
        load_bundle(b"garbage", "pw")
    encrypted = h.leaf_key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.BestAvailableEncryption(b"kpw"),
    ).decode()
    with pytest.raises(InvalidBundle, match="encrypted"):
        load_bundle((certificate_pem(h.leaf) + encrypted).encode(), None)
    with pytest.raises(InvalidBundle, match="wrong password"):
        load_bundle((certificate_pem(h.leaf) + encrypted).encode(), "bad")
    assert load_bundle((certificate_pem(h.leaf) + encrypted).encode(), "kpw").private_key is not None
