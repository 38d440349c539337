"""CA certificate, CRL and OCSP routes against a live server, checked with the real openssl."""

from __future__ import annotations

import asyncio
import base64
import subprocess
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from conftest import OrgAdmin, tool_or_skip, write
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.x509 import ocsp
from pki_admin_support import issue_leaf_row

from core import ca as core_ca
from core.authz import Actor
from models import Certificate, CertificateAuthority
from models.enums import CertificateStatus
from pki.certificate import certificate_pem


def _pem(cert: x509.Certificate) -> str:
    return certificate_pem(cert)


async def _run(*args: str) -> subprocess.CompletedProcess[str]:
    return await asyncio.to_thread(subprocess.run, list(args), capture_output=True, text=True, timeout=60)


async def _hierarchy(org_admin: OrgAdmin) -> tuple[CertificateAuthority, CertificateAuthority]:
    actor = Actor.system(org_admin.organization_id)
    root = await core_ca.create_root_ca(
        actor=actor,
        name="root",
        subject="CN=Test Root,O=Acme",
        key_algorithm="EC_P256",
        validity="5y",
        path_length=1,
    )
    issuing = await core_ca.create_intermediate_ca(
        actor=actor,
        name="issuing",
        parent_ca_id=root.id,
        subject="CN=Test Issuing,O=Acme",
        key_algorithm="EC_P256",
        validity="2y",
        path_length=0,
    )
    return root, issuing


async def _revoke(row: Certificate, reason: str = "keyCompromise") -> None:
    """What the revocation service does: mark the row, rebuild the CRL in the same transaction."""
    row.status = CertificateStatus.REVOKED
    row.revoked_at = datetime.now(UTC).replace(microsecond=0)
    row.revocation_reason = reason
    await row.save()
    await core_ca.rebuild_crl(ca_id=row.ca_id)  # type: ignore[arg-type]


def _ocsp_request(cert: x509.Certificate, issuer: x509.Certificate, nonce: bytes | None = None) -> bytes:
    builder = ocsp.OCSPRequestBuilder().add_certificate(cert, issuer, hashes.SHA1())
    if nonce is not None:
        builder = builder.add_extension(x509.OCSPNonce(nonce), critical=False)
    return builder.build().public_bytes(serialization.Encoding.DER)


async def test_ca_certificate_and_crl_verify_with_openssl(
    live_server: str, org_admin: OrgAdmin, tmp_path: Path
) -> None:
    openssl = tool_or_skip("openssl")
    root, issuing = await _hierarchy(org_admin)
    async with httpx.AsyncClient(base_url=live_server) as http:
        response = await http.get(f"/pki/cas/{root.id}/ca.crt")
        assert response.status_code == 200
        assert response.headers["content-type"] == "application/pkix-cert"
        root_cert = x509.load_der_x509_certificate(response.content)
        assert _pem(root_cert) == root.certificate_pem
        issuing_cert = x509.load_der_x509_certificate(
            (await http.get(f"/pki/cas/{issuing.id}/ca.crt")).content
        )

        response = await http.get(f"/pki/cas/{issuing.id}/crl")
        assert response.status_code == 200
        assert response.headers["content-type"] == "application/pkix-crl"
        crl = x509.load_der_x509_crl(response.content)
        assert crl.next_update_utc is not None and crl.next_update_utc > datetime.now(UTC) + timedelta(
            hours=23
        )
        assert crl.is_signature_valid(issuing_cert.public_key())  # type: ignore[arg-type]
        assert len(crl) == 0

    root_pem = write(tmp_path / "root.pem", _pem(root_cert))
    issuing_pem = write(tmp_path / "issuing.pem", _pem(issuing_cert))
    crl_der = write(tmp_path / "crl.der", response.content)
    result = await _run(
        openssl, "crl", "-inform", "DER", "-in", str(crl_der), "-CAfile", str(issuing_pem), "-noout"
    )
    assert result.returncode == 0, result.stderr
    assert "verify OK" in result.stderr + result.stdout
    # The root's CRL verifies against the root; against the wrong CA it fails (the check can fail).
    async with httpx.AsyncClient(base_url=live_server) as http:
        root_crl = write(tmp_path / "root-crl.der", (await http.get(f"/pki/cas/{root.id}/crl")).content)
    result = await _run(
        openssl, "crl", "-inform", "DER", "-in", str(root_crl), "-CAfile", str(root_pem), "-noout"
    )
    assert result.returncode == 0, result.stderr
    result = await _run(
        openssl, "crl", "-inform", "DER", "-in", str(root_crl), "-CAfile", str(issuing_pem), "-noout"
    )
    assert result.returncode != 0


async def test_revocation_with_openssl_verify_and_ocsp(
    live_server: str, org_admin: OrgAdmin, tmp_path: Path
) -> None:
    openssl = tool_or_skip("openssl")
    root, issuing = await _hierarchy(org_admin)
    material = await core_ca.signing_material(issuing)
    good, good_row = await issue_leaf_row(
        material, organization_id=org_admin.organization_id, common_name="good.example.com"
    )
    bad, bad_row = await issue_leaf_row(
        material, organization_id=org_admin.organization_id, common_name="bad.example.com"
    )
    await _revoke(bad_row)

    async with httpx.AsyncClient(base_url=live_server) as http:
        crl_der = (await http.get(f"/pki/cas/{issuing.id}/crl")).content
    crl = x509.load_der_x509_crl(crl_der)
    entry = crl.get_revoked_certificate_by_serial_number(bad.serial_number)
    assert entry is not None
    assert (
        entry.extensions.get_extension_for_class(x509.CRLReason).value.reason
        == x509.ReasonFlags.key_compromise
    )
    assert crl.get_revoked_certificate_by_serial_number(good.serial_number) is None

    root_pem = write(tmp_path / "root.pem", root.certificate_pem or "")
    chain_pem = write(tmp_path / "chain.pem", "".join(_pem(c) for c in material.chain))
    issuing_pem = write(tmp_path / "issuing.pem", issuing.certificate_pem or "")
    crl_pem = write(
        tmp_path / "crl.pem", x509.load_der_x509_crl(crl_der).public_bytes(serialization.Encoding.PEM)
    )
    good_pem = write(tmp_path / "good.pem", _pem(good))
    bad_pem = write(tmp_path / "bad.pem", _pem(bad))

    verify = [openssl, "verify", "-crl_check", "-CAfile", str(root_pem), "-untrusted", str(chain_pem)]
    result = await _run(*verify, "-CRLfile", str(crl_pem), str(good_pem))
    assert result.returncode == 0, result.stdout + result.stderr
    result = await _run(*verify, "-CRLfile", str(crl_pem), str(bad_pem))
    assert result.returncode != 0
    assert "revoked" in (result.stdout + result.stderr).lower()

    ocsp_url = f"{live_server}/pki/ocsp/{issuing.id}"
    ocsp_base = [openssl, "ocsp", "-issuer", str(issuing_pem), "-url", ocsp_url, "-CAfile", str(root_pem)]
    ocsp_base += ["-verify_other", str(chain_pem)]
    result = await _run(*ocsp_base, "-cert", str(good_pem))
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"{good_pem}: good" in result.stdout, result.stdout + result.stderr
    assert "Response verify OK" in result.stderr + result.stdout
    assert "nonce" not in (result.stderr + result.stdout).lower()  # openssl's nonce came back

    result = await _run(*ocsp_base, "-cert", str(bad_pem))
    assert f"{bad_pem}: revoked" in result.stdout, result.stdout + result.stderr
    assert "Reason: keyCompromise" in result.stdout
    assert "Response verify OK" in result.stderr + result.stdout

    result = await _run(*ocsp_base, "-serial", "0x0123456789ABCDEF0123")
    assert "0x0123456789ABCDEF0123: unknown" in result.stdout, result.stdout + result.stderr
    assert "Response verify OK" in result.stderr + result.stdout

    # Revocation shows at once: the good leaf revoked now answers revoked.
    await _revoke(good_row, reason="superseded")
    result = await _run(*ocsp_base, "-cert", str(good_pem))
    assert f"{good_pem}: revoked" in result.stdout, result.stdout + result.stderr


async def test_ocsp_get_form_and_errors(live_server: str, org_admin: OrgAdmin) -> None:
    root, issuing = await _hierarchy(org_admin)
    root_id = root.id
    material = await core_ca.signing_material(issuing)
    leaf, row = await issue_leaf_row(
        material, organization_id=org_admin.organization_id, common_name="a.example.com"
    )
    request = _ocsp_request(leaf, material.certificate, nonce=b"0123456789abcdef")
    async with httpx.AsyncClient(base_url=live_server) as http:
        for encoded in (
            base64.b64encode(request).decode(),
            base64.urlsafe_b64encode(request).decode().rstrip("="),
        ):
            path = encoded.replace("+", "%2B").replace("/", "%2F").replace("=", "%3D")
            response = await http.get(f"/pki/ocsp/{issuing.id}/{path}")
            assert response.status_code == 200
            assert response.headers["content-type"] == "application/ocsp-response"
            answer = ocsp.load_der_ocsp_response(response.content)
            assert answer.response_status == ocsp.OCSPResponseStatus.SUCCESSFUL
            assert answer.certificate_status == ocsp.OCSPCertStatus.GOOD
            assert answer.serial_number == leaf.serial_number
            nonce = answer.extensions.get_extension_for_class(x509.OCSPNonce).value.nonce
            assert nonce == b"0123456789abcdef"
            material.certificate.public_key().verify(  # type: ignore[call-arg]
                answer.signature, answer.tbs_response_bytes, _ecdsa(answer)
            )

        await _revoke(row, reason="cessationOfOperation")
        response = await http.post(
            f"/pki/ocsp/{issuing.id}", content=request, headers={"content-type": "application/ocsp-request"}
        )
        answer = ocsp.load_der_ocsp_response(response.content)
        assert answer.certificate_status == ocsp.OCSPCertStatus.REVOKED
        assert answer.revocation_reason == x509.ReasonFlags.cessation_of_operation
        assert answer.revocation_time_utc == row.revoked_at

        # Garbage: malformedRequest, still an OCSP response.
        for response in (
            await http.post(f"/pki/ocsp/{issuing.id}", content=b"garbage"),
            await http.post(f"/pki/ocsp/{issuing.id}", content=b""),
            await http.get(f"/pki/ocsp/{issuing.id}/bm90LW9jc3A="),
            await http.get(f"/pki/ocsp/{issuing.id}/!!!"),
        ):
            assert response.status_code == 200
            assert response.headers["content-type"] == "application/ocsp-response"
            assert ocsp.load_der_ocsp_response(response.content).response_status == (
                ocsp.OCSPResponseStatus.MALFORMED_REQUEST
            )

        # The intermediate, asked of its parent's responder, is good (it is no inventory row).
        root_answer = await http.post(
            f"/pki/ocsp/{root_id}",
            content=_ocsp_request(material.certificate, material.root),  # type: ignore[arg-type]
        )
        assert ocsp.load_der_ocsp_response(root_answer.content).certificate_status == ocsp.OCSPCertStatus.GOOD

        # A certificate of another CA: this responder is not authoritative.
        foreign = _ocsp_request(material.certificate, material.root or material.certificate)
        response = await http.post(f"/pki/ocsp/{issuing.id}", content=foreign)
        assert ocsp.load_der_ocsp_response(response.content).response_status == (
            ocsp.OCSPResponseStatus.UNAUTHORIZED
        )

        # Unknown or malformed CA ids: 404 on every route.
        for ca_id in (str(uuid.uuid4()), "nope"):
            assert (await http.get(f"/pki/cas/{ca_id}/ca.crt")).status_code == 404
            assert (await http.get(f"/pki/cas/{ca_id}/crl")).status_code == 404
            assert (await http.post(f"/pki/ocsp/{ca_id}", content=request)).status_code == 404
            encoded = base64.urlsafe_b64encode(request).decode()
            assert (await http.get(f"/pki/ocsp/{ca_id}/{encoded}")).status_code == 404


def _ecdsa(answer: Any) -> Any:
    from cryptography.hazmat.primitives.asymmetric import ec

    return ec.ECDSA(answer.signature_hash_algorithm)


async def test_crl_is_cached_then_refreshed_before_next_update(live_server: str, org_admin: OrgAdmin) -> None:
    _, issuing = await _hierarchy(org_admin)
    async with httpx.AsyncClient(base_url=live_server) as http:
        first = (await http.get(f"/pki/cas/{issuing.id}/crl")).content
        second = (await http.get(f"/pki/cas/{issuing.id}/crl")).content
        assert first == second  # served from the cache, not re-signed
        number = (
            x509.load_der_x509_crl(first).extensions.get_extension_for_class(x509.CRLNumber).value.crl_number
        )

        for next_update in (
            datetime.now(UTC) + timedelta(minutes=30),
            datetime.now(UTC) - timedelta(hours=2),
        ):
            await CertificateAuthority.filter(id=issuing.id).update(crl_next_update=next_update)
            fresh = x509.load_der_x509_crl((await http.get(f"/pki/cas/{issuing.id}/crl")).content)
            assert fresh.next_update_utc is not None
            assert fresh.next_update_utc > datetime.now(UTC) + timedelta(hours=23)
            new_number = fresh.extensions.get_extension_for_class(x509.CRLNumber).value.crl_number
            assert new_number > number
            number = new_number

        # A disabled CA still answers for what it issued.
        await core_ca.set_ca_enabled(
            actor=Actor.system(org_admin.organization_id), ca_id=issuing.id, enabled=False
        )
        assert (await http.get(f"/pki/cas/{issuing.id}/crl")).status_code == 200
        assert (await http.get(f"/pki/cas/{issuing.id}/ca.crt")).status_code == 200


async def test_pending_ca_is_not_served(live_server: str, org_admin: OrgAdmin) -> None:
    pending = await core_ca.create_external_intermediate_ca(
        actor=Actor.system(org_admin.organization_id),
        name="ext",
        subject="CN=Ext",
        key_algorithm="EC_P256",
        path_length=0,
    )
    async with httpx.AsyncClient(base_url=live_server) as http:
        assert (await http.get(f"/pki/cas/{pending.id}/ca.crt")).status_code == 404
        assert (await http.get(f"/pki/cas/{pending.id}/crl")).status_code == 404


@pytest.mark.parametrize("reason", [None, "unspecified"])
async def test_crl_reason_unspecified_is_omitted(org_admin: OrgAdmin, reason: str | None) -> None:
    _, issuing = await _hierarchy(org_admin)
    material = await core_ca.signing_material(issuing)
    leaf, row = await issue_leaf_row(
        material, organization_id=org_admin.organization_id, common_name="u.example.com"
    )
    row.status = CertificateStatus.REVOKED
    row.revoked_at = datetime.now(UTC).replace(microsecond=0)
    row.revocation_reason = reason
    await row.save()
    der = await core_ca.rebuild_crl(ca_id=issuing.id)
    entry = x509.load_der_x509_crl(der).get_revoked_certificate_by_serial_number(leaf.serial_number)
    assert entry is not None and len(entry.extensions) == 0
    stored = await CertificateAuthority.get(id=issuing.id)
    assert stored.crl_der == der and stored.crl_number == 1


async def test_worker_refreshes_due_crls(org_admin: OrgAdmin) -> None:
    root, issuing = await _hierarchy(org_admin)
    await core_ca.create_external_intermediate_ca(
        actor=Actor.system(org_admin.organization_id),
        name="ext",
        subject="CN=Ext",
        key_algorithm="EC_P256",
        path_length=0,
    )
    assert await core_ca.refresh_due_crls() == 2  # never built; the pending CA has nothing to sign with
    assert await core_ca.refresh_due_crls() == 0  # fresh for 24 hours
    await CertificateAuthority.filter(id=issuing.id).update(
        crl_next_update=datetime.now(UTC) + timedelta(hours=3)
    )
    assert await core_ca.refresh_due_crls() == 1
    stored = await CertificateAuthority.get(id=issuing.id)
    assert stored.crl_number == 2
    assert stored.crl_next_update is not None and stored.crl_next_update > datetime.now(UTC) + timedelta(
        hours=23
    )
