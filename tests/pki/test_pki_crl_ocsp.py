import subprocess
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, padding, rsa
from cryptography.x509 import ocsp
from pki_support import Hierarchy

from pki.certificate import certificate_pem
from pki.crl import REVOCATION_REASONS, RevokedEntry, build_crl
from pki.errors import InvalidOcspRequest, PkiError
from pki.key import KeyAlgorithm
from pki.ocsp import build_ocsp_response, ocsp_error_response, parse_ocsp_request, query_matches_issuer


@pytest.mark.parametrize("algorithm", [KeyAlgorithm.RSA_2048, KeyAlgorithm.EC_P384, KeyAlgorithm.ED25519])
def test_crl_parses_back(
    algorithm: KeyAlgorithm, hierarchy_for: Callable[[KeyAlgorithm], Hierarchy], tmp_path: Path
) -> None:
    h = hierarchy_for(algorithm)
    now = datetime.now(UTC).replace(microsecond=0)
    entries = [
        RevokedEntry(serial=1000 + index, revoked_at=now - timedelta(hours=index), reason=reason)
        for index, reason in enumerate([*REVOCATION_REASONS, None])
    ]
    der = build_crl(
        issuer_cert=h.intermediate,
        issuer_key=h.intermediate_key,
        revoked=entries,
        crl_number=7,
        this_update=now,
        next_update=now + timedelta(days=7),
    )
    crl = x509.load_der_x509_crl(der)
    assert crl.is_signature_valid(h.intermediate.public_key())  # type: ignore[arg-type]
    assert crl.issuer == h.intermediate.subject
    assert crl.next_update_utc == now + timedelta(days=7)
    assert crl.extensions.get_extension_for_class(x509.CRLNumber).value.crl_number == 7
    aki = crl.extensions.get_extension_for_class(x509.AuthorityKeyIdentifier).value
    ski = h.intermediate.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
    assert aki.key_identifier == ski.digest
    assert len(crl) == len(entries)
    revoked = crl.get_revoked_certificate_by_serial_number(1001)
    assert revoked is not None
    assert (
        revoked.extensions.get_extension_for_class(x509.CRLReason).value.reason
        is x509.ReasonFlags.key_compromise
    )
    unspecified = crl.get_revoked_certificate_by_serial_number(1000)
    assert unspecified is not None and len(unspecified.extensions) == 0  # RFC 5280: omit reason code 0
    (tmp_path / "crl.der").write_bytes(der)
    result = subprocess.run(
        ["/usr/bin/openssl", "crl", "-inform", "DER", "-noout", "-text", "-in", str(tmp_path / "crl.der")],
        capture_output=True,
        text=True,
        check=True,
    )
    assert "Key Compromise" in result.stdout and "X509v3 CRL Number" in result.stdout
    assert "Serial Number: 03E9" in result.stdout


def test_crl_rejects_bad_input(hierarchy_for: Callable[[KeyAlgorithm], Hierarchy]) -> None:
    h = hierarchy_for(KeyAlgorithm.EC_P256)
    now = datetime.now(UTC)
    with pytest.raises(PkiError, match="nextUpdate"):
        build_crl(
            issuer_cert=h.root,
            issuer_key=h.root_key,
            revoked=[],
            crl_number=1,
            this_update=now,
            next_update=now,
        )
    with pytest.raises(PkiError, match="unknown revocation reason"):
        build_crl(
            issuer_cert=h.root,
            issuer_key=h.root_key,
            revoked=[RevokedEntry(1, now, "stolen")],
            crl_number=1,
            this_update=now,
            next_update=now + timedelta(days=1),
        )
    empty = x509.load_der_x509_crl(
        build_crl(
            issuer_cert=h.root,
            issuer_key=h.root_key,
            revoked=[],
            crl_number=1,
            this_update=now,
            next_update=now + timedelta(days=1),
        )
    )
    assert len(empty) == 0


def request_for(
    h: Hierarchy,
    *,
    nonce: bytes | None = b"0123456789abcdef",
    algorithm: hashes.HashAlgorithm = hashes.SHA1(),
) -> bytes:
    builder = ocsp.OCSPRequestBuilder().add_certificate(h.leaf, h.intermediate, algorithm)
    if nonce is not None:
        builder = builder.add_extension(x509.OCSPNonce(nonce), critical=False)
    return builder.build().public_bytes(serialization.Encoding.DER)


@pytest.mark.parametrize("algorithm", [KeyAlgorithm.RSA_3072, KeyAlgorithm.EC_P256, KeyAlgorithm.ED25519])
@pytest.mark.parametrize("status", ["good", "revoked", "unknown"])
def test_ocsp_round_trip(
    algorithm: KeyAlgorithm, status: str, hierarchy_for: Callable[[KeyAlgorithm], Hierarchy]
) -> None:
    h = hierarchy_for(algorithm)
    query = parse_ocsp_request(request_for(h))
    assert query.serial == h.leaf.serial_number
    assert query.nonce == b"0123456789abcdef"
    assert query_matches_issuer(query, h.intermediate)
    assert not query_matches_issuer(query, h.root)
    now = datetime.now(UTC).replace(microsecond=0)
    der = build_ocsp_response(
        query=query,
        issuer_cert=h.intermediate,
        issuer_key=h.intermediate_key,
        status=status,
        revoked_at=now - timedelta(hours=1) if status == "revoked" else None,
        reason="keyCompromise" if status == "revoked" else None,
        this_update=now,
        next_update=now + timedelta(hours=12),
    )
    response = ocsp.load_der_ocsp_response(der)
    assert response.response_status is ocsp.OCSPResponseStatus.SUCCESSFUL
    assert (
        response.certificate_status
        is {
            "good": ocsp.OCSPCertStatus.GOOD,
            "revoked": ocsp.OCSPCertStatus.REVOKED,
            "unknown": ocsp.OCSPCertStatus.UNKNOWN,
        }[status]
    )
    assert response.serial_number == h.leaf.serial_number
    assert (
        response.responder_key_hash
        == h.intermediate.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value.digest
    )
    assert response.extensions.get_extension_for_class(x509.OCSPNonce).value.nonce == b"0123456789abcdef"
    assert response.next_update_utc == now + timedelta(hours=12)
    if status == "revoked":
        assert response.revocation_time_utc == now - timedelta(hours=1)
        assert response.revocation_reason is x509.ReasonFlags.key_compromise
    # The signature verifies under the CA key (responder is the CA itself).
    key = h.intermediate.public_key()
    digest = response.signature_hash_algorithm
    if isinstance(key, rsa.RSAPublicKey):
        assert digest is not None
        key.verify(response.signature, response.tbs_response_bytes, padding.PKCS1v15(), digest)
    elif isinstance(key, ec.EllipticCurvePublicKey):
        assert digest is not None
        key.verify(response.signature, response.tbs_response_bytes, ec.ECDSA(digest))
    else:
        assert isinstance(key, ed25519.Ed25519PublicKey)
        key.verify(response.signature, response.tbs_response_bytes)


def test_ocsp_openssl_checks_response(
    hierarchy_for: Callable[[KeyAlgorithm], Hierarchy], tmp_path: Path
) -> None:
    h = hierarchy_for(KeyAlgorithm.EC_P256)
    request = request_for(h, algorithm=hashes.SHA256())
    query = parse_ocsp_request(request)
    now = datetime.now(UTC)
    der = build_ocsp_response(
        query=query,
        issuer_cert=h.intermediate,
        issuer_key=h.intermediate_key,
        status="revoked",
        revoked_at=now - timedelta(minutes=5),
        reason="superseded",
        this_update=now,
        next_update=now + timedelta(hours=1),
    )
    (tmp_path / "resp.der").write_bytes(der)
    (tmp_path / "issuer.pem").write_text(certificate_pem(h.intermediate))
    (tmp_path / "chain.pem").write_text(certificate_pem(h.intermediate) + certificate_pem(h.root))
    (tmp_path / "leaf.pem").write_text(certificate_pem(h.leaf))
    result = subprocess.run(
        [
            "/usr/bin/openssl",
            "ocsp",
            "-no_nonce",
            "-sha256",
            "-respin",
            str(tmp_path / "resp.der"),
            "-issuer",
            str(tmp_path / "issuer.pem"),
            "-CAfile",
            str(tmp_path / "chain.pem"),
            "-cert",
            str(tmp_path / "leaf.pem"),
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    output = result.stdout + result.stderr
    assert "Response verify OK" in output, output
    assert result.returncode == 0, output
    assert "leaf.pem: revoked" in output and "superseded" in output.lower()


def test_ocsp_unknown_serial_and_errors(hierarchy_for: Callable[[KeyAlgorithm], Hierarchy]) -> None:
    h = hierarchy_for(KeyAlgorithm.EC_P256)
    query = parse_ocsp_request(request_for(h, nonce=None))
    assert query.nonce is None
    now = datetime.now(UTC)
    der = build_ocsp_response(
        query=query,
        issuer_cert=h.intermediate,
        issuer_key=h.intermediate_key,
        status="unknown",
        revoked_at=None,
        reason=None,
        this_update=now,
        next_update=now + timedelta(hours=1),
    )
    response = ocsp.load_der_ocsp_response(der)
    assert response.certificate_status is ocsp.OCSPCertStatus.UNKNOWN
    assert len(response.extensions) == 0
    for name, expected in [
        ("malformedRequest", ocsp.OCSPResponseStatus.MALFORMED_REQUEST),
        ("unauthorized", ocsp.OCSPResponseStatus.UNAUTHORIZED),
        ("internalError", ocsp.OCSPResponseStatus.INTERNAL_ERROR),
    ]:
        assert ocsp.load_der_ocsp_response(ocsp_error_response(name)).response_status is expected
    with pytest.raises(PkiError):
        ocsp_error_response("successful")
    with pytest.raises(PkiError):
        build_ocsp_response(
            query=query,
            issuer_cert=h.intermediate,
            issuer_key=h.intermediate_key,
            status="revoked",
            revoked_at=None,
            reason=None,
            this_update=now,
            next_update=now + timedelta(hours=1),
        )


@pytest.mark.parametrize("data", [b"", b"garbage", b"\x30\x00", b"\x30\x03\x02\x01\x01"])
def test_ocsp_garbage(data: bytes) -> None:
    with pytest.raises(InvalidOcspRequest):
        parse_ocsp_request(data)
