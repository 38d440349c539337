"""issueCertificate over GraphQL: CSRs and server-generated keys, bad input, policy, refusals, linting."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from pathlib import Path
from typing import Any

import factories
import pytest
from conftest import GraphQL, GraphQLError, OrgAdmin, tool_or_skip, write
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from factories import CERTIFICATE, ISSUE, Scene, issue_input, row_counts

from models import ApplicationProfile, AuditEvent, CertificateAuthority, CertificateProfile, OutboxEvent
from models.enums import AuditOutcome, CaStatus
from pki.certificate import public_keys_match
from pki.key import KeyAlgorithm

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "pki"))
from pki_support import BLOCKING_SEVERITIES, lint_certificate  # noqa: E402


@pytest.fixture
async def scene(org_admin: OrgAdmin) -> Scene:
    return await factories.make_scene(org_admin.organization_id, org_admin.token)


async def issue(gql: GraphQL, scene: Scene, token: str | None = None, **fields: Any) -> dict[str, Any]:
    data = await gql(ISSUE, issue_input(scene, **fields), token=token or scene.operator.token)
    certificate: dict[str, Any] = data["issueCertificate"]["certificate"]
    return certificate


@pytest.mark.parametrize("algorithm", [KeyAlgorithm.EC_P256, KeyAlgorithm.RSA_2048])
async def test_issue_from_csr(gql: GraphQL, scene: Scene, algorithm: KeyAlgorithm) -> None:
    csr, key = factories.make_csr_pem(algorithm, sans=["DNS:www.example.com", "IP:10.1.2.3"])
    before = await row_counts()
    cert = await issue(gql, scene, csr=csr, metadata={"team": "payments"})
    assert cert["commonName"] == "www.example.com"
    assert cert["sans"] == [{"type": "DNS", "value": "www.example.com"}, {"type": "IP", "value": "10.1.2.3"}]
    assert cert["keyAlgorithm"] == algorithm.value
    assert cert["signatureAlgorithm"] == "ECDSA_WITH_SHA256"
    assert cert["status"] == "ACTIVE"
    assert (cert["source"], cert["enrollmentMethod"]) == ("ISSUED", "API")
    assert cert["hasPrivateKey"] is False and cert["autoRenew"] is False
    assert cert["metadata"] == {"team": "payments"}
    expected_usages = ["digitalSignature"] if algorithm == KeyAlgorithm.EC_P256 else None
    if expected_usages:
        assert cert["keyUsages"] == expected_usages
    leaf = x509.load_pem_x509_certificate(cert["certificatePem"].encode())
    assert public_keys_match(leaf.public_key(), key)
    chain = x509.load_pem_x509_certificates(cert["chainPem"].encode())
    assert [c.subject for c in chain] == [scene.pki.intermediate_certificate.subject]
    assert await row_counts() == {k: v + 1 for k, v in before.items()}
    event = await OutboxEvent.get(certificate_id=cert["id"])
    assert event.event_type == "certificate.issued"
    assert "PRIVATE KEY" not in str(event.payload)
    audit = await AuditEvent.get(resource_id=cert["id"], action="certificate.issue")
    assert audit.application_id == scene.application.id and audit.source_address == "127.0.0.1"


@pytest.mark.parametrize("algorithm", list(KeyAlgorithm))
async def test_issue_with_server_generated_key(gql: GraphQL, scene: Scene, algorithm: KeyAlgorithm) -> None:
    cert = await issue(
        gql,
        scene,
        commonName="api.example.com",
        sans=["api.example.com", "DNS:*.api.example.com"],
        keyAlgorithm=algorithm.value,
        ttl="30d",
        extendedKeyUsages=["serverAuth"],
    )
    assert cert["keyAlgorithm"] == algorithm.value
    assert cert["hasPrivateKey"] is True
    assert cert["extendedKeyUsages"] == ["serverAuth"]
    leaf = x509.load_pem_x509_certificate(cert["certificatePem"].encode())
    lifetime = leaf.not_valid_after_utc - leaf.not_valid_before_utc
    assert 29 < lifetime.days <= 30
    data = await gql(
        "query($id: ID!) { certificate(id: $id) { privateKeyPem } }",
        {"id": cert["id"]},
        token=scene.operator.token,
    )
    key = serialization.load_pem_private_key(data["certificate"]["privateKeyPem"].encode(), password=None)
    assert public_keys_match(leaf.public_key(), key)
    assert await AuditEvent.filter(resource_id=cert["id"], action="certificate.private_key_read").count() == 1


async def test_profile_defaults_fill_the_request(gql: GraphQL, org_admin: OrgAdmin) -> None:
    scene = await factories.make_scene(
        org_admin.organization_id,
        org_admin.token,
        default_subject=[["O", "Acme Corp"]],
        default_extended_key_usages=["serverAuth", "clientAuth"],
        default_validity="10d",
    )
    cert = await issue(gql, scene, commonName="svc.example.com", sans=["svc.example.com"])
    assert cert["subjectDn"] == "CN=svc.example.com,O=Acme Corp"
    assert cert["extendedKeyUsages"] == ["clientAuth", "serverAuth"]
    assert cert["keyAlgorithm"] == "EC_P256"
    leaf = x509.load_pem_x509_certificate(cert["certificatePem"].encode())
    assert 9 < (leaf.not_valid_after_utc - leaf.not_valid_before_utc).days <= 10


async def test_empty_subject_gets_a_critical_san(gql: GraphQL, scene: Scene) -> None:
    cert = await issue(gql, scene, sans=["only.example.com"])
    leaf = x509.load_pem_x509_certificate(cert["certificatePem"].encode())
    assert len(leaf.subject) == 0
    assert leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName).critical is True


async def test_auto_renew_and_renew_before_days_come_from_the_attachment(gql: GraphQL, scene: Scene) -> None:
    await ApplicationProfile.filter(application_id=scene.application.id).update(
        api_auto_renew=True, api_renew_before_days=12
    )
    cert = await issue(gql, scene, commonName="auto.example.com", sans=["auto.example.com"])
    assert (cert["autoRenew"], cert["renewBeforeDays"]) == (True, 12)
    csr, _ = factories.make_csr_pem(common_name="csr.example.com", sans=["csr.example.com"])
    cert = await issue(gql, scene, csr=csr)
    assert cert["autoRenew"] is False  # the server cannot renew a key it does not hold
    with pytest.raises(GraphQLError) as caught:
        await issue(gql, scene, csr=csr, autoRenew=True)
    assert caught.value.codes == ["INVALID_INPUT"]


async def expect_refused(
    gql: GraphQL, scene: Scene, code: str, token: str | None = None, **fields: Any
) -> str:
    """The request fails with `code` and writes no certificate, no successful audit entry, no event."""
    before = await row_counts()
    with pytest.raises(GraphQLError) as caught:
        await issue(gql, scene, token=token, **fields)
    assert caught.value.codes == [code], caught.value.errors
    assert await row_counts() == before
    message: str = caught.value.errors[0]["message"]
    return message


async def test_malformed_csr_is_invalid_csr(gql: GraphQL, scene: Scene) -> None:
    message = await expect_refused(
        gql, scene, "INVALID_CSR", csr="-----BEGIN CERTIFICATE REQUEST-----\nnope\n"
    )
    assert "PKCS#10" in message
    await expect_refused(gql, scene, "INVALID_CSR", csr="not a csr at all")
    failures = await AuditEvent.filter(
        outcome=AuditOutcome.FAILURE, action="mutation.issueCertificate"
    ).count()
    assert failures == 2


async def test_csr_with_bad_signature_is_invalid_csr(gql: GraphQL, scene: Scene) -> None:
    csr_pem, _ = factories.make_csr_pem(KeyAlgorithm.RSA_2048, sans=["www.example.com"])
    der = bytearray(x509.load_pem_x509_csr(csr_pem.encode()).public_bytes(serialization.Encoding.DER))
    der[-5] ^= 0xFF  # inside the signature bits
    tampered = x509.load_der_x509_csr(bytes(der)).public_bytes(serialization.Encoding.PEM).decode()
    message = await expect_refused(gql, scene, "INVALID_CSR", csr=tampered)
    assert "signature" in message


async def test_policy_violation_names_every_violation(gql: GraphQL, scene: Scene) -> None:
    before = await row_counts()
    with pytest.raises(GraphQLError) as caught:
        await issue(
            gql,
            scene,
            commonName="www.evil.org",
            sans=["DNS:www.evil.org", "IP:192.168.1.1", "DNS:ok.example.com"],
            extendedKeyUsages=["codeSigning"],
            ttl="800d",
        )
    assert caught.value.codes == ["POLICY_VIOLATION"]
    violations = caught.value.errors[0]["extensions"]["violations"]
    fields = sorted((v["field"], v["value"]) for v in violations)
    assert fields == [
        ("extendedKeyUsages", "codeSigning"),
        ("sans.DNS", "www.evil.org"),
        ("sans.IP", "192.168.1.1"),
        ("subject.CN", "www.evil.org"),
        ("validity", "800d"),
    ]
    assert all(v["message"] for v in violations)
    assert await row_counts() == before


async def test_refusals_write_nothing(gql: GraphQL, scene: Scene) -> None:
    fields = {"commonName": "x.example.com", "sans": ["x.example.com"]}
    org = scene.org
    # A profile of the organization that is not attached to the application.
    other = await factories.make_pki(org)
    message = await expect_refused(
        gql, scene, "INVALID_INPUT", **{**fields, "profileId": str(other.profile.id)}
    )
    assert "not attached" in message
    await expect_refused(
        gql, scene, "NOT_FOUND", **{**fields, "profileId": "8a4c2c4e-0000-4000-8000-000000000000"}
    )
    await expect_refused(gql, scene, "NOT_FOUND", **{**fields, "applicationId": "not-a-uuid"})
    # API enrollment disabled for the pair.
    await ApplicationProfile.filter(application_id=scene.application.id).update(api_enabled=False)
    assert "API enrollment is disabled" in await expect_refused(gql, scene, "INVALID_STATE", **fields)
    await ApplicationProfile.filter(application_id=scene.application.id).update(api_enabled=True)
    # Disabled CA.
    await CertificateAuthority.filter(id=scene.pki.intermediate.id).update(status=CaStatus.DISABLED)
    assert "disabled" in await expect_refused(gql, scene, "INVALID_STATE", **fields)
    await CertificateAuthority.filter(id=scene.pki.intermediate.id).update(status=CaStatus.ACTIVE)
    # Deleted profile.
    from datetime import UTC, datetime

    await CertificateProfile.filter(id=scene.pki.profile.id).update(deleted_at=datetime.now(UTC))
    assert "deleted" in await expect_refused(gql, scene, "INVALID_STATE", **fields)
    await CertificateProfile.filter(id=scene.pki.profile.id).update(deleted_at=None)
    # Bad input of every kind.
    await expect_refused(gql, scene, "INVALID_INPUT", **{**fields, "ttl": "ninety days"})
    await expect_refused(gql, scene, "INVALID_INPUT", **{**fields, "keyAlgorithm": "DSA_1024"})
    await expect_refused(gql, scene, "INVALID_INPUT", **{**fields, "sans": ["DNS:bad..name"]})
    await expect_refused(gql, scene, "INVALID_INPUT", **{**fields, "keyUsages": ["keyEncipherment"]})
    await expect_refused(gql, scene, "INVALID_INPUT", **{**fields, "keyUsages": ["keyCertSign"]})
    await expect_refused(gql, scene, "INVALID_INPUT", **{**fields, "metadata": {"k": {"nested": 1}}})
    csr, _ = factories.make_csr_pem()
    await expect_refused(gql, scene, "INVALID_INPUT", **{**fields, "csr": csr})
    await expect_refused(gql, scene, "INVALID_INPUT", sans=[])
    # After all that, the same request goes through.
    await issue(gql, scene, **fields)


async def test_who_may_issue(gql: GraphQL, scene: Scene) -> None:
    fields = {"commonName": "x.example.com", "sans": ["x.example.com"]}
    await expect_refused(gql, scene, "FORBIDDEN", token=scene.auditor.token, **fields)
    await expect_refused(gql, scene, "NOT_FOUND", token=scene.outsider.token, **fields)
    with pytest.raises(GraphQLError) as caught:
        await gql(ISSUE, issue_input(scene, **fields), token=None)
    assert caught.value.codes == ["UNAUTHENTICATED"]
    _, foreign_admin = await factories.make_org()
    await expect_refused(gql, scene, "NOT_FOUND", token=foreign_admin.token, **fields)
    cert = await issue(gql, scene, token=scene.admin_token, **fields)
    # The auditor reads the certificate but never its key; the outsider does not see it at all.
    data = await gql(CERTIFICATE, {"id": cert["id"]}, token=scene.auditor.token)
    assert data["certificate"]["hasPrivateKey"] is True
    with pytest.raises(GraphQLError) as caught:
        await gql(
            "query($id: ID!) { certificate(id: $id) { privateKeyPem } }",
            {"id": cert["id"]},
            token=scene.auditor.token,
        )
    assert caught.value.codes == ["FORBIDDEN"]
    with pytest.raises(GraphQLError) as caught:
        await gql(CERTIFICATE, {"id": cert["id"]}, token=scene.outsider.token)
    assert caught.value.codes == ["NOT_FOUND"]


async def test_issued_leaf_chains_to_the_root_and_lints_clean(
    gql: GraphQL, scene: Scene, tmp_path: Path
) -> None:
    openssl = tool_or_skip("openssl")
    cert = await issue(gql, scene, commonName="www.example.com", sans=["www.example.com", "10.9.8.7"])
    root = write(tmp_path / "root.pem", scene.pki.root_certificate.public_bytes(serialization.Encoding.PEM))
    chain = write(tmp_path / "chain.pem", cert["chainPem"])
    leaf_path = write(tmp_path / "leaf.pem", cert["certificatePem"])
    result = await asyncio.to_thread(
        subprocess.run,
        [
            openssl,
            "verify",
            "-CAfile",
            str(root),
            "-untrusted",
            str(chain),
            "-purpose",
            "sslserver",
            str(leaf_path),
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.strip().endswith("OK")
    # Without the chain the leaf does not verify: the test can fail.
    result = await asyncio.to_thread(
        subprocess.run,
        [openssl, "verify", "-CAfile", str(root), str(leaf_path)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode != 0
    leaf = x509.load_pem_x509_certificate(cert["certificatePem"].encode())
    findings = lint_certificate(leaf)
    assert [f for f in findings if f[0] in BLOCKING_SEVERITIES] == []
    aia = leaf.extensions.get_extension_for_class(x509.AuthorityInformationAccess).value
    assert any(str(scene.pki.intermediate.id) in d.access_location.value for d in aia)
